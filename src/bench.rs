//! Synthetic pictures for the decode benchmark (`sieve bench --decode` writes them) and tests:
//! photo-like JPEGs with smooth gradients and texture, deterministic per seed.

use crate::error::Result;

/// A seeded picture with the structure of a photo (smooth shading plus objects with hard
/// edges), different for each seed. Used for synthetic benchmark inputs and by the tests.
pub fn photo_like(seed: u64, w: u32, h: u32) -> image::RgbImage {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s % 10_000) as f32 / 10_000.0
    };
    let (wf, hf) = (w as f32, h as f32);
    let blobs: Vec<(f32, f32, f32, [f32; 3])> =
        (0..5).map(|_| (next() * wf, next() * hf, (0.1 + next() * 0.3) * wf, [next(), next(), next()])).collect();
    let rects: Vec<(f32, f32, f32, f32, [f32; 3])> = (0..6)
        .map(|_| {
            let (x, y) = (next() * wf, next() * hf);
            (x, y, x + (0.1 + next() * 0.4) * wf, y + (0.1 + next() * 0.4) * hf, [next(), next(), next()])
        })
        .collect();
    image::RgbImage::from_fn(w, h, |x, y| {
        let (xf, yf) = (x as f32, y as f32);
        let mut c = [30.0 + 60.0 * yf / hf; 3];
        for (bx, by, r, col) in &blobs {
            let wgt = (-((xf - bx).powi(2) + (yf - by).powi(2)) / (r * r)).exp();
            for k in 0..3 {
                c[k] += 150.0 * col[k] * wgt;
            }
        }
        for (x0, y0, x1, y1, col) in &rects {
            if xf >= *x0 && xf < *x1 && yf >= *y0 && yf < *y1 {
                for k in 0..3 {
                    c[k] = c[k] * 0.3 + 170.0 * col[k];
                }
            }
        }
        image::Rgb(c.map(|v| v.clamp(0.0, 255.0) as u8))
    })
}

/// Writes `count` photo-like 500×375 JPEGs (quality 90, with a little sensor-like noise so they
/// compress like photographs) named `img-NNNNNN.jpg` into `dir`, in parallel.
pub fn write_jpegs(dir: &std::path::Path, count: usize) -> Result<()> {
    use image::ImageEncoder;
    use rayon::prelude::*;
    std::fs::create_dir_all(dir).map_err(|e| crate::Error::io("creating", dir, e))?;
    (0..count).into_par_iter().try_for_each(|i| {
        let mut img = photo_like(i as u64 + 1, 500, 375);
        let mut s = (i as u32).wrapping_mul(2_654_435_761) | 1;
        for p in img.pixels_mut() {
            for c in p.0.iter_mut() {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                *c = c.saturating_add((s % 9) as u8).saturating_sub(4);
            }
        }
        let mut buf = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, 90)
            .write_image(img.as_raw(), 500, 375, image::ExtendedColorType::Rgb8)
            .map_err(|e| crate::Error::Pipeline(format!("encoding a synthetic JPEG: {e}")))?;
        let path = dir.join(format!("img-{i:06}.jpg"));
        std::fs::write(&path, buf).map_err(|e| crate::Error::io("writing", &path, e))
    })
}
