//! The 64-bit perceptual hash recorded for every decoded image (`phash` in the metadata), used by
//! `sieve dedup` to find re-encoded, resized or lightly edited copies by Hamming distance.
//!
//! It is image_hasher's median hash: an 8 × 8 greyscale thumbnail, each bit set when its pixel
//! is above the thumbnail's median, so about half the bits are set. Of image_hasher's 64-bit
//! hashes this one separated edited copies from distinct pictures best on the test corpus
//! (`tests/dedup.rs`: re-encoded, resized, 5 %-cropped and brightened copies within 6 bits of
//! their original, distinct pictures 16 or more apart); its DCT variant (16 × 16 DCT) moved
//! 18 bits under a 5 % crop. Large images are first shrunk to at
//! most 128 px with `image`'s area-averaging `thumbnail`, so hashing costs the same for a 40 MP
//! photo as for a thumbnail; the hash is deterministic for the same decoded pixels.

use image::{GrayImage, RgbImage};
use image_hasher::{FilterType, HashAlg, Hasher, HasherConfig};

/// Longest side images are reduced to before hashing.
const PRE_SHRINK: u32 = 128;

fn hasher() -> Hasher<[u8; 8]> {
    HasherConfig::with_bytes_type::<[u8; 8]>()
        .hash_size(8, 8)
        .hash_alg(HashAlg::Median)
        .resize_filter(FilterType::Triangle)
        .to_hasher()
}

/// Perceptual hash of an RGB image.
pub fn phash(rgb: &RgbImage) -> u64 {
    phash_thumbnail(&thumbnail(rgb))
}

/// The copy of `rgb` the hash is computed from: `rgb` itself when its longest side is at most
/// 128 px, else an integer-factor area-average shrink to at most that. The quality signals
/// ([`super::quality`]) reuse it, so they cost no extra pass over the full image.
pub fn thumbnail(rgb: &RgbImage) -> std::borrow::Cow<'_, RgbImage> {
    let (w, h) = rgb.dimensions();
    if w.max(h) > PRE_SHRINK {
        std::borrow::Cow::Owned(box_shrink(rgb, w.max(h).div_ceil(PRE_SHRINK)))
    } else {
        std::borrow::Cow::Borrowed(rgb)
    }
}

/// Perceptual hash of an image's [`thumbnail`].
pub fn phash_thumbnail(thumb: &RgbImage) -> u64 {
    thread_local! {
        static HASHER: Hasher<[u8; 8]> = hasher();
    }
    // The hasher would make this 8 × 8 grey copy itself, through `image`'s generic per-pixel
    // resize (5% of the CPU stage); given it, it only copies it. Same bytes, so the same hash.
    let grey = grey_8x8(thumb);
    u64::from_be_bytes(HASHER.with(|hs| hs.hash_image(&grey)).into_inner())
}

/// What image_hasher hashes for `rgb`: `imageops::grayscale` (sRGB luma in integers), then
/// `imageops::resize` to 8 × 8 with the triangle filter, redone for one 8-bit channel with the
/// same f32 operations in the same order (columns first, kept as f32; then rows, rounded), so
/// the bytes are identical (`grey_8x8_equals_image_grayscale_and_resize` checks it).
fn grey_8x8(rgb: &RgbImage) -> GrayImage {
    const N: u32 = 8;
    let (w, h) = rgb.dimensions();
    let grey: Vec<u8> = rgb
        .as_raw()
        .chunks_exact(3)
        .map(|p| ((2126 * p[0] as u32 + 7152 * p[1] as u32 + 722 * p[2] as u32) / 10000) as u8)
        .collect();
    if (w, h) == (N, N) {
        return GrayImage::from_raw(N, N, grey).expect("8 × 8");
    }
    // `sample.rs`'s weights: triangle kernel of support 1 scaled by the ratio, normalised.
    let weights = |n_in: u32| -> Vec<(usize, Vec<f32>)> {
        let ratio = n_in as f32 / N as f32;
        let sratio = if ratio < 1.0 { 1.0 } else { ratio };
        let support = sratio;
        (0..N)
            .map(|o| {
                let centre = (o as f32 + 0.5) * ratio;
                let left = ((centre - support).floor() as i64).clamp(0, n_in as i64 - 1);
                let right = ((centre + support).ceil() as i64).clamp(left + 1, n_in as i64);
                let centre = centre - 0.5;
                let mut ws: Vec<f32> = (left..right)
                    .map(|i| {
                        let x = (i as f32 - centre) / sratio;
                        if x.abs() < 1.0 {
                            1.0 - x.abs()
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let sum: f32 = ws.iter().fold(0.0, |s, &w| s + w);
                for v in &mut ws {
                    *v /= sum;
                }
                (left as usize, ws)
            })
            .collect()
    };
    let (w, h) = (w as usize, h as usize);
    // Vertical pass first, as `imageops::resize` does: w × 8, unrounded.
    let mut cols = vec![0f32; w * N as usize];
    for (dst, (top, ws)) in cols.chunks_exact_mut(w).zip(weights(h as u32)) {
        for (x, d) in dst.iter_mut().enumerate() {
            let mut t = 0.0f32;
            for (i, &k) in ws.iter().enumerate() {
                t += grey[(top + i) * w + x] as f32 * k;
            }
            *d = t;
        }
    }
    let xw = weights(w as u32);
    let mut out = vec![0u8; (N * N) as usize];
    for (y, src) in cols.chunks_exact(w).enumerate() {
        for (x, (left, ws)) in xw.iter().enumerate() {
            let mut t = 0.0f32;
            for (i, &k) in ws.iter().enumerate() {
                t += src[left + i] * k;
            }
            out[y * N as usize + x] = t.clamp(0.0, 255.0).round() as u8;
        }
    }
    GrayImage::from_raw(N, N, out).expect("8 × 8")
}

/// Area-average shrink by an integer factor `f`: each output pixel is the rounded mean of its
/// `f × f` block (smaller at the right and bottom edges). Integer sums in two steps per output
/// row: the block's source rows added column by column (a straight, vectorised pass over the
/// bytes), then each block's columns; the same sums as adding pixel by pixel, in a quarter of
/// the time. `imageops::thumbnail` did the same job at a third of the CPU stage's time.
fn box_shrink(rgb: &RgbImage, f: u32) -> RgbImage {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present, checked just above.
        return unsafe { box_shrink_avx2(rgb, f) };
    }
    box_shrink_impl(rgb, f)
}

/// The same code compiled for AVX2, where the column sums widen and add 8 bytes per instruction.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn box_shrink_avx2(rgb: &RgbImage, f: u32) -> RgbImage {
    box_shrink_impl(rgb, f)
}

#[inline(always)]
fn box_shrink_impl(rgb: &RgbImage, f: u32) -> RgbImage {
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    let f = f as usize;
    let (ow, oh) = (w.div_ceil(f), h.div_ceil(f));
    let src = rgb.as_raw();
    let mut out = vec![0u8; ow * oh * 3];
    let mut cols = vec![0u32; w * 3];
    for (oy, out_row) in out.chunks_exact_mut(ow * 3).enumerate() {
        cols.fill(0);
        let (y0, y1) = (oy * f, ((oy + 1) * f).min(h));
        for row in src[y0 * w * 3..y1 * w * 3].chunks_exact(w * 3) {
            // Wrapping (it cannot wrap: f · 255 < 2³²) so that the dev profile's overflow
            // checks do not stop the loop vectorising.
            for (a, &p) in cols.iter_mut().zip(row) {
                *a = a.wrapping_add(p as u32);
            }
        }
        for (ox, (o, block)) in out_row.chunks_exact_mut(3).zip(cols.chunks(f * 3)).enumerate() {
            let mut a = [0u32; 3];
            for p in block.chunks_exact(3) {
                a[0] = a[0].wrapping_add(p[0]);
                a[1] = a[1].wrapping_add(p[1]);
                a[2] = a[2].wrapping_add(p[2]);
            }
            let n = (((ox + 1) * f).min(w) - ox * f) * (y1 - y0);
            for c in 0..3 {
                o[c] = ((a[c] + n as u32 / 2) / n as u32) as u8;
            }
        }
    }
    RgbImage::from_raw(ow as u32, oh as u32, out).expect("buffer matches its size")
}

/// Number of differing bits.
pub fn hamming(a: u64, b: u64) -> u32 {
    (a ^ b).count_ones()
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::imageops;

    #[test]
    fn box_shrink_averages_blocks_including_partial_edges() {
        // 5 × 3 image, factor 2: blocks of 2×2, 1×2 (right), 2×1 (bottom) and 1×1 (corner).
        let img = RgbImage::from_fn(5, 3, |x, y| image::Rgb([(10 * x + y) as u8, 100, (x * y) as u8]));
        let s = box_shrink(&img, 2);
        assert_eq!(s.dimensions(), (3, 2));
        // Top-left block: x 0..2, y 0..2 -> R (0 + 10 + 1 + 11) / 4 = 5.5 -> 6; B (0+0+0+1)/4 -> 0.
        assert_eq!(s.get_pixel(0, 0).0, [6, 100, 0]);
        // Right column: x 4, y 0..2 -> R (40 + 41) / 2 = 40.5 -> 41; B (0 + 4) / 2 = 2.
        assert_eq!(s.get_pixel(2, 0).0, [41, 100, 2]);
        // Bottom-right corner: the single pixel (4, 2).
        assert_eq!(s.get_pixel(2, 1).0, [42, 100, 8]);
    }

    #[test]
    fn grey_8x8_equals_image_grayscale_and_resize() {
        // Thumbnail shapes: landscape, portrait, at most 8 px on a side (upscaled), exactly 8.
        for (w, h) in
            [(125u32, 94u32), (94, 125), (128, 128), (100, 1), (1, 1), (3, 5), (8, 8), (8, 20), (9, 7), (127, 33)]
        {
            for seed in 0..3u32 {
                let img = RgbImage::from_fn(w, h, |x, y| {
                    let v =
                        (x.wrapping_mul(2654435761u32.wrapping_add(seed)) ^ y.wrapping_mul(40503) ^ (seed * 77)) as u8;
                    image::Rgb([v, v.wrapping_mul(3).wrapping_add(x as u8), 255 - v / 2])
                });
                let want = imageops::resize(&imageops::grayscale(&img), 8, 8, imageops::FilterType::Triangle);
                assert_eq!(grey_8x8(&img).as_raw(), want.as_raw(), "{w}×{h} seed {seed}");
                let old = u64::from_be_bytes(hasher().hash_image(&img).into_inner());
                assert_eq!(phash_thumbnail(&img), old, "{w}×{h} seed {seed}");
            }
        }
    }

    #[test]
    fn box_shrink_equals_the_per_block_mean() {
        for (w, h, f) in [(500u32, 375u32, 4u32), (129, 7, 2), (7, 129, 3), (1, 1, 1), (300, 200, 7), (13, 13, 13)] {
            let img = RgbImage::from_fn(w, h, |x, y| {
                image::Rgb([(x * 7 + y * 13) as u8, (x * y + 5) as u8, ((x ^ y) * 29 % 256) as u8])
            });
            let s = box_shrink(&img, f);
            assert_eq!(s.dimensions(), (w.div_ceil(f), h.div_ceil(f)));
            for (ox, oy, px) in s.enumerate_pixels() {
                let (xs, ys) = (ox * f..((ox + 1) * f).min(w), oy * f..((oy + 1) * f).min(h));
                let n = xs.len() as u32 * ys.len() as u32;
                for c in 0..3 {
                    let sum: u32 = ys
                        .clone()
                        .flat_map(|y| xs.clone().map(move |x| (x, y)))
                        .map(|(x, y)| img.get_pixel(x, y)[c] as u32)
                        .sum();
                    assert_eq!(px[c] as u32, (sum + n / 2) / n, "{w}×{h}/{f} at ({ox}, {oy}) channel {c}");
                }
            }
        }
    }

    fn gradient(w: u32, h: u32, gain: f32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let v = ((x as f32 / w as f32 * 200.0 + (y as f32 / h as f32 * 40.0)) * gain).min(255.0) as u8;
            let u = (((x * 7 + y * 3) % 97) as f32 * gain).min(255.0) as u8;
            image::Rgb([v, u, 255 - v])
        })
    }

    #[test]
    fn resized_and_brightened_copies_hash_close_distinct_images_far() {
        let a = phash(&gradient(640, 480, 1.0));
        let resized = phash(&imageops::resize(&gradient(640, 480, 1.0), 200, 150, imageops::FilterType::Triangle));
        let brighter = phash(&gradient(640, 480, 1.15));
        assert!(hamming(a, resized) <= 6, "resized: {}", hamming(a, resized));
        assert!(hamming(a, brighter) <= 6, "brightened: {}", hamming(a, brighter));
        let other = phash(&RgbImage::from_fn(640, 480, |x, y| image::Rgb([(y % 256) as u8, (x % 13 * 19) as u8, 9])));
        assert!(hamming(a, other) > 16, "distinct: {}", hamming(a, other));
    }
}
