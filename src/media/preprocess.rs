//! Image preprocessing as transformers' `CLIPImageProcessor` (PIL backend) does it, driven by the
//! model's `preprocessor_config.json`: convert to RGB as transformers does (transparency
//! composited onto white, grey replicated, palette expanded; done in [`super::decode`]), resize so
//! the short side matches `size` with a bit-exact port of Pillow's resampler
//! ([`super::resample`]), centre crop, rescale, and mean/std normalise into CHW f32.

use image::RgbImage;

use super::resample::{resize_nearest_rgb8, resize_rgb8_window, Filter, Window};

/// Where [`Preprocessor::preprocess_pixels`] writes one image: f32, or the f16 a GPU model
/// takes. Written directly in f16 from an f16 table, there is no f32 copy to write, read back
/// and convert per image; each f16 is `f16::from_f32` of the f32 value, so the same bits as
/// converting the f32 output.
pub enum PixelsMut<'a> {
    F32(&'a mut [f32]),
    F16(&'a mut [half::f16]),
}

pub use super::preprocess_config::{PreprocessorConfig, SizeSpec};

/// Turns RGB images into the model's normalised pixel tensors.
#[derive(Debug, Clone)]
pub struct Preprocessor {
    cfg: PreprocessorConfig,
    out_h: u32,
    out_w: u32,
    /// Per channel, the normalised value of each 8-bit level, with transformers' formula
    /// `(v * rescale - mean) / std` in f32; and the same rounded to f16.
    lut: [[f32; 256]; 3],
    lut16: [[half::f16; 256]; 3],
}

impl Preprocessor {
    pub fn new(cfg: PreprocessorConfig) -> Self {
        let (out_h, out_w) = cfg.output_size();
        let scale = if cfg.do_rescale { cfg.rescale_factor as f32 } else { 1.0 };
        let (mean, std) = if cfg.do_normalize { (cfg.image_mean, cfg.image_std) } else { ([0.0; 3], [1.0; 3]) };
        let lut: [[f32; 256]; 3] =
            std::array::from_fn(|c| std::array::from_fn(|v| (v as f32 * scale - mean[c]) / std[c]));
        let lut16 = lut.map(|l| l.map(half::f16::from_f32));
        Self { cfg, out_h, out_w, lut, lut16 }
    }

    pub fn config(&self) -> &PreprocessorConfig {
        &self.cfg
    }

    /// (height, width) of the produced pixel arrays.
    pub fn output_size(&self) -> (u32, u32) {
        (self.out_h, self.out_w)
    }

    /// Number of f32 values one image produces (3 × height × width).
    pub fn output_len(&self) -> usize {
        3 * self.out_h as usize * self.out_w as usize
    }

    /// Size after the resize step, as transformers' `get_resize_output_image_size` computes it:
    /// the short side becomes `shortest_edge`, the long side is scaled and truncated.
    pub fn resize_target(&self, width: u32, height: u32) -> (u32, u32) {
        if !self.cfg.do_resize {
            return (width, height);
        }
        if self.cfg.resize_longest {
            return self.fit_inside(width, height);
        }
        match self.cfg.size {
            SizeSpec::ShortestEdge { shortest_edge: s } | SizeSpec::Square(s) => {
                let (short, long) = if width <= height { (width, height) } else { (height, width) };
                let new_long = ((s as u64 * long as u64) / short.max(1) as u64).max(1) as u32;
                if width <= height {
                    (s, new_long)
                } else {
                    (new_long, s)
                }
            }
            SizeSpec::HeightWidth { height: h, width: w } => (w, h),
        }
    }

    /// open_clip's `ResizeKeepRatio(longest=1)`: both sides divided by the larger of the two
    /// ratios to the target size, rounded half to even (Python's `round`), at least 1.
    fn fit_inside(&self, width: u32, height: u32) -> (u32, u32) {
        let (th, tw) = match self.cfg.size {
            SizeSpec::ShortestEdge { shortest_edge: s } | SizeSpec::Square(s) => (s, s),
            SizeSpec::HeightWidth { height, width } => (height, width),
        };
        let ratio = (height as f64 / th as f64).max(width as f64 / tw as f64);
        let side = |x: u32| ((x as f64 / ratio).round_ties_even() as u32).max(1);
        (side(width), side(height))
    }

    /// Where the centre crop of `crop` out of `full` starts; negative where the image is
    /// smaller and is padded (by `(crop - full) / 2` before, as both libraries pad).
    fn crop_offset(&self, full: usize, crop: usize) -> i64 {
        let d = full as i64 - crop as i64;
        if d > 0 && self.cfg.crop_round_half_even {
            (d as f64 / 2.0).round_ties_even() as i64
        } else {
            d / 2
        }
    }

    /// Preprocesses one RGB image into `out` (CHW, length [`Self::output_len`]).
    pub fn preprocess_into(&self, img: &RgbImage, out: &mut [f32]) {
        self.preprocess_pixels(img, PixelsMut::F32(out))
    }

    /// [`Self::preprocess_into`] for an f32 or f16 destination.
    pub fn preprocess_pixels(&self, img: &RgbImage, mut out: PixelsMut<'_>) {
        let len = match &out {
            PixelsMut::F32(o) => o.len(),
            PixelsMut::F16(o) => o.len(),
        };
        assert_eq!(len, self.output_len(), "output buffer has the wrong length");
        let (w, h) = img.dimensions();
        let (nw, nh) = self.resize_target(w, h);
        if (nw, nh) == (w, h) {
            self.crop_normalize(img.as_raw(), w, h, &mut out);
            return;
        }
        let (src, w, h, nw_, nh_) = (img.as_raw(), w as usize, h as usize, nw as usize, nh as usize);
        match Filter::from_pil(self.cfg.resample) {
            Some(f) => {
                // Resize only what the crop keeps (same values; see `resize_rgb8_window`).
                let win = self.crop_window(nw_, nh_);
                let part = resize_rgb8_window(src, w, h, nw_, nh_, f, win);
                self.crop_normalize(&part, (win.x1 - win.x0) as u32, (win.y1 - win.y0) as u32, &mut out);
            }
            None => self.crop_normalize(&resize_nearest_rgb8(src, w, h, nw_, nh_), nw, nh, &mut out),
        }
    }

    /// The part of a `w × h` resized image that [`Self::crop_normalize`] reads: per axis the
    /// centred crop where the image is larger than the crop (or its start, without centre
    /// cropping), else the whole axis (which is then padded). Cropping the window again puts
    /// it at offset 0 on the cropped axes and gives the same padding on the others.
    fn crop_window(&self, w: usize, h: usize) -> Window {
        let axis = |full: usize, crop: usize| -> (usize, usize) {
            if full <= crop {
                (0, full)
            } else if self.cfg.do_center_crop {
                let off = self.crop_offset(full, crop) as usize;
                (off, off + crop)
            } else {
                (0, crop)
            }
        };
        let (x0, x1) = axis(w, self.out_w as usize);
        let (y0, y1) = axis(h, self.out_h as usize);
        Window { x0, x1, y0, y1 }
    }

    /// Convenience wrapper that allocates the output.
    pub fn preprocess(&self, img: &RgbImage) -> Vec<f32> {
        let mut out = vec![0f32; self.output_len()];
        self.preprocess_into(img, &mut out);
        out
    }

    /// Centre crop (zero padding where the image is smaller, as transformers pads), rescale and
    /// normalise, writing CHW. Each 8-bit value maps through a 256-entry table per channel
    /// (`lut`, or `lut16` for f16).
    fn crop_normalize(&self, rgb: &[u8], w: u32, h: u32, out: &mut PixelsMut<'_>) {
        match out {
            PixelsMut::F32(o) => self.crop_normalize_with(rgb, w, h, &self.lut, o),
            PixelsMut::F16(o) => self.crop_normalize_with(rgb, w, h, &self.lut16, o),
        }
    }

    fn crop_normalize_with<T: Copy>(&self, rgb: &[u8], w: u32, h: u32, lut: &[[T; 256]; 3], out: &mut [T]) {
        let (ch, cw) = (self.out_h as usize, self.out_w as usize);
        let (top, left) = if self.cfg.do_center_crop {
            (self.crop_offset(h as usize, ch), self.crop_offset(w as usize, cw))
        } else {
            (0, 0)
        };
        let plane = ch * cw;
        // Padded pixels are value 0 before rescale/normalise.
        for c in 0..3 {
            out[c * plane..(c + 1) * plane].fill(lut[c][0]);
        }
        // The crop window clipped to the image.
        let (y0, y1) = ((-top).max(0) as usize, ((h as i64 - top).min(ch as i64)).max(0) as usize);
        let (x0, x1) = ((-left).max(0) as usize, ((w as i64 - left).min(cw as i64)).max(0) as usize);
        let (r_plane, rest) = out.split_at_mut(plane);
        let (g_plane, b_plane) = rest.split_at_mut(plane);
        for y in y0..y1 {
            let sy = (y as i64 + top) as usize;
            let sx0 = (x0 as i64 + left) as usize;
            let src = &rgb[(sy * w as usize + sx0) * 3..(sy * w as usize + sx0 + (x1 - x0)) * 3];
            let o = y * cw + x0..y * cw + x1;
            for (((px, r), g), b) in
                src.chunks_exact(3).zip(&mut r_plane[o.clone()]).zip(&mut g_plane[o.clone()]).zip(&mut b_plane[o])
            {
                *r = lut[0][px[0] as usize];
                *g = lut[1][px[1] as usize];
                *b = lut[2][px[2] as usize];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// open_clip's torchvision rounding: Python's `round` (half to even) for the crop offset and
    /// the longest-edge resize, where transformers truncates.
    #[test]
    fn torchvision_rounding_is_half_to_even() {
        let img = |w: u32| RgbImage::from_fn(w, 4, |x, _| image::Rgb([x as u8, 0, 0]));
        let crop = SizeSpec::HeightWidth { height: 4, width: 4 };
        for (w, floor, even) in [(7u32, 1u8, 2u8), (9, 2, 2), (11, 3, 4)] {
            for (round, want) in [(false, floor), (true, even)] {
                let cfg = PreprocessorConfig {
                    do_resize: false,
                    crop_size: crop,
                    crop_round_half_even: round,
                    do_rescale: false,
                    do_normalize: false,
                    ..Default::default()
                };
                assert_eq!(Preprocessor::new(cfg).preprocess(&img(w))[0], want as f32, "width {w}, half-even {round}");
            }
        }
        let cfg = PreprocessorConfig {
            size: SizeSpec::HeightWidth { height: 8, width: 8 },
            resize_longest: true,
            crop_size: SizeSpec::HeightWidth { height: 8, width: 8 },
            ..Default::default()
        };
        let p = Preprocessor::new(cfg);
        assert_eq!(p.resize_target(32, 10), (8, 2), "2.5 rounds to 2");
        assert_eq!(p.resize_target(14, 32), (4, 8), "3.5 rounds to 4");
        assert_eq!(p.resize_target(1000, 1), (8, 1), "never 0");
    }

    #[test]
    fn f16_output_equals_the_f32_output_converted() {
        use half::slice::HalfFloatSliceExt;
        // Every byte value in every channel; downscaled, upscaled (padding-free) and smaller
        // than the crop (padded), odd sizes, with and without centre crop.
        for (w, h) in [(500, 375), (37, 301), (224, 224), (100, 61), (3, 5)] {
            let img = RgbImage::from_fn(w, h, |x, y| {
                let i = (y * w + x) * 3;
                image::Rgb([(i % 256) as u8, ((i * 7 + 1) % 256) as u8, ((i * 13 + 2) % 256) as u8])
            });
            for (crop, size) in [(true, SizeSpec::ShortestEdge { shortest_edge: 224 }), (false, SizeSpec::Square(50))] {
                let cfg = PreprocessorConfig { do_center_crop: crop, size, ..Default::default() };
                let p = Preprocessor::new(cfg);
                // Every table entry, as the f32 → f16 slice conversion rounds it.
                for c in 0..3 {
                    let mut conv = [half::f16::ZERO; 256];
                    conv.convert_from_f32_slice(&p.lut[c]);
                    assert!(conv.iter().zip(&p.lut16[c]).all(|(a, b)| a.to_bits() == b.to_bits()), "channel {c}");
                }
                let full = p.preprocess(&img);
                let mut want = vec![half::f16::ZERO; full.len()];
                want.convert_from_f32_slice(&full);
                let mut got = vec![half::f16::ONE; full.len()];
                p.preprocess_pixels(&img, PixelsMut::F16(&mut got));
                let bits = |v: &[half::f16]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "{w}×{h} crop {crop}");
            }
        }
    }
}
