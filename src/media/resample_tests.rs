//! Tests of the Pillow-exact resampler (kept beside it, out of `resample.rs` to keep files short).

use super::*;

#[test]
fn a_window_equals_the_same_crop_of_the_full_resize() {
    // Down- and upscaling, one axis unchanged, tiny images, odd and even tap counts.
    for (w, h, sizes) in [
        (61, 37, &[(30, 24), (61, 20), (40, 37), (100, 80), (7, 5)][..]),
        (1, 1, &[(3, 2), (1, 4)][..]),
        (2, 3, &[(1, 1), (5, 7)][..]),
        (500, 375, &[(299, 224)][..]),
    ] {
        let src: Vec<u8> = (0..w * h * 3).map(|i| ((i * 7919) % 251) as u8).collect();
        for &(nw, nh) in sizes {
            for filter in [Filter::Bicubic, Filter::Lanczos, Filter::Bilinear] {
                let full = resize_rgb8(&src, w, h, nw, nh, filter);
                for win in [
                    Window { x0: 0, x1: nw, y0: 0, y1: nh },
                    Window { x0: nw / 4, x1: nw - nw / 4, y0: nh / 4, y1: nh },
                    Window { x0: nw / 2, x1: nw / 2 + 1, y0: nh - 1, y1: nh },
                    Window { x0: nw - 1, x1: nw, y0: 0, y1: 1 },
                    Window { x0: 0, x1: 1, y0: nh / 2, y1: nh / 2 + 1 },
                ] {
                    let part = resize_rgb8_window(&src, w, h, nw, nh, filter, win);
                    let want: Vec<u8> = (win.y0..win.y1)
                        .flat_map(|y| full[(y * nw + win.x0) * 3..(y * nw + win.x1) * 3].to_vec())
                        .collect();
                    assert_eq!(part, want, "{w}×{h} → {nw}×{nh} {filter:?} {win:?}");
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn avx2_horizontal_pass_equals_the_plain_one() {
    if !std::is_x86_feature_detected!("avx2") {
        eprintln!("skipped: no AVX2 on this CPU");
        return;
    }
    // Weights of both signs (bicubic, lanczos), odd and even tap counts, up- and downscaling,
    // the rightmost pixels (where a pair's neighbour is padding or the next row), windows
    // of one column and at either edge, odd and even window widths, a row block that starts
    // inside the image and one that ends at the buffer's end, all byte values.
    for (w, nw) in
        [(500, 299), (61, 30), (37, 100), (9, 4), (224, 223), (333, 7), (2, 1), (1, 3), (1, 1), (5, 5), (3, 2)]
    {
        let h = 5;
        let src: Vec<u8> = (0..w * h * 3).map(|i| ((i * 7919 + 13) % 256) as u8).collect();
        for filter in [Filter::Bicubic, Filter::Lanczos, Filter::Bilinear, Filter::Box, Filter::Hamming] {
            let c = coeffs(w, nw, filter);
            for (x0, x1) in [(0, nw), (nw / 3, nw - nw / 4), (0, 1), (nw - 1, nw), (nw / 2, nw), (1, nw)] {
                if x0 >= x1 {
                    continue;
                }
                for (first, rows) in [(0, h), (1, 2), (h - 1, 1)] {
                    let mut a = vec![0u8; (x1 - x0) * rows * 3];
                    let mut b = a.clone();
                    horizontal(&src, w, first, x0, x1, &c, &mut a);
                    // SAFETY: AVX2 checked above.
                    unsafe { horizontal_avx2(&src, w, first, x0, x1, &c, &mut b) };
                    assert_eq!(a, b, "{w}->{nw} {filter:?} columns {x0}..{x1} rows {first}+{rows}");
                }
            }
        }
    }
}

#[test]
fn cached_coefficients_equal_fresh_ones() {
    // More sizes than the cache holds, each asked for twice, so hits and evictions both
    // happen; a hit must be the coefficients of its own size and filter.
    for round in 0..2 {
        for n in 1..40 {
            for filter in [Filter::Bicubic, Filter::Lanczos] {
                let (i, o) = (n * 7 + round, n * 3 + 1);
                assert_eq!(*cached_coeffs(i, o, filter), coeffs(i, o, filter), "{i}->{o} {filter:?}");
                assert_eq!(*cached_coeffs(i, o, filter), coeffs(i, o, filter), "{i}->{o} {filter:?} again");
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn avx2_vertical_pass_equals_the_plain_one() {
    if !std::is_x86_feature_detected!("avx2") {
        eprintln!("skipped: no AVX2 on this CPU");
        return;
    }
    // Row lengths below, at and past 32 bytes (the scalar tail), odd and even tap counts,
    // weights of both signs, up- and downscaling, all byte values, windows of rows at
    // either edge and a block of rows that starts inside the image.
    for (h, nh) in [(375, 224), (37, 100), (61, 30), (9, 4), (2, 1), (1, 3), (5, 5), (224, 223)] {
        for row_len in [3, 30, 32, 96, 99, 672, 675] {
            let tmp: Vec<u8> = (0..h * row_len).map(|i| ((i * 7919 + 13) % 256) as u8).collect();
            for filter in [Filter::Bicubic, Filter::Lanczos, Filter::Bilinear, Filter::Box, Filter::Hamming] {
                let c = coeffs(h, nh, filter);
                for (y0, y1) in [(0, nh), (nh / 3, nh - nh / 4), (nh - 1, nh), (0, 1)] {
                    if y0 >= y1 {
                        continue;
                    }
                    // The rows the window reads, as the resize passes them.
                    let first = c.bounds[y0].0;
                    let last = c.bounds[y1 - 1].0 + c.bounds[y1 - 1].1;
                    let block = &tmp[first * row_len..last * row_len];
                    let mut a = vec![0u8; row_len * (y1 - y0)];
                    let mut b = a.clone();
                    vertical(block, row_len, first, y0, &c, &mut a);
                    // SAFETY: AVX2 checked above.
                    unsafe { vertical_avx2(block, row_len, first, y0, &c, &mut b) };
                    assert_eq!(a, b, "{h}->{nh} {filter:?} rows {y0}..{y1} row length {row_len}");
                }
            }
        }
    }
}

/// Times both horizontal passes on a 500×375 photo-sized row block, interleaved so that
/// machine load affects both alike: `cargo test --release --lib horizontal_pass_speed --
/// --ignored --nocapture`.
#[cfg(target_arch = "x86_64")]
#[test]
#[ignore]
fn horizontal_pass_speed() {
    let (w, h, nw) = (500, 375, 299);
    let src: Vec<u8> = (0..w * h * 3).map(|i| ((i * 7919 + 13) % 256) as u8).collect();
    let c = coeffs(w, nw, Filter::Bicubic);
    let (x0, x1) = (37, 261);
    let mut out = vec![0u8; (x1 - x0) * h * 3];
    // The plain pass as the resize runs it: compiled for AVX2.
    #[target_feature(enable = "avx2")]
    unsafe fn plain_avx2(src: &[u8], w: usize, x0: usize, x1: usize, c: &Coeffs, out: &mut [u8]) {
        horizontal(src, w, 0, x0, x1, c, out)
    }
    let (mut plain, mut avx2) = (0.0, 0.0);
    for _ in 0..40 {
        let t = std::time::Instant::now();
        // SAFETY: test machine has AVX2 (the other test checks).
        unsafe { plain_avx2(&src, w, x0, x1, &c, &mut out) };
        plain += t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        // SAFETY: test machine has AVX2 (the other test checks).
        unsafe { horizontal_avx2(&src, w, 0, x0, x1, &c, &mut out) };
        avx2 += t.elapsed().as_secs_f64();
    }
    eprintln!("horizontal pass, 40 images: plain {plain:.3}s, avx2 pairs {avx2:.3}s");
}
