//! The small copy of a decoded image that the CPU stage measures: the perceptual fingerprint
//! ([`super::fingerprint`]) and the quality signals ([`super::quality`]) are computed from it,
//! so they cost the same for a 40 MP photo as for a thumbnail.
//!
//! Images whose longest side is over 128 px are shrunk by an integer factor with an
//! area-averaging box filter (the mean of each block, rounded), which is deterministic for the
//! same decoded pixels.
//!
//! (Runs made before 2026-12 also stored a 64-bit median hash of this copy in the metadata's
//! `phash` column; dedup reads `phash_dct*` since, so new runs leave `phash` null and the CPU
//! stage no longer spends 2–3% of its time on it.)

use image::RgbImage;

/// Longest side images are reduced to.
const PRE_SHRINK: u32 = 128;

/// The copy of `rgb` the CPU stage measures: `rgb` itself when its longest side is at most
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
