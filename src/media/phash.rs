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

use image::RgbImage;
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
    u64::from_be_bytes(HASHER.with(|hs| hs.hash_image(thumb)).into_inner())
}

/// Area-average shrink by an integer factor `f`: each output pixel is the rounded mean of its
/// `f × f` block (smaller at the right and bottom edges). One pass over the source rows with
/// integer sums; `imageops::thumbnail` did the same job at a third of the CPU stage's time.
fn box_shrink(rgb: &RgbImage, f: u32) -> RgbImage {
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    let f = f as usize;
    let (ow, oh) = (w.div_ceil(f), h.div_ceil(f));
    let src = rgb.as_raw();
    let mut out = vec![0u8; ow * oh * 3];
    let mut acc = vec![0u32; ow * 3];
    for (oy, out_row) in out.chunks_exact_mut(ow * 3).enumerate() {
        acc.fill(0);
        let (y0, y1) = (oy * f, ((oy + 1) * f).min(h));
        for y in y0..y1 {
            let row = &src[y * w * 3..(y + 1) * w * 3];
            for (ox, block) in row.chunks(f * 3).enumerate() {
                let a = &mut acc[ox * 3..ox * 3 + 3];
                for p in block.chunks_exact(3) {
                    a[0] += p[0] as u32;
                    a[1] += p[1] as u32;
                    a[2] += p[2] as u32;
                }
            }
        }
        for (ox, (o, a)) in out_row.chunks_exact_mut(3).zip(acc.chunks_exact(3)).enumerate() {
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
