//! Image preprocessing as transformers' `CLIPImageProcessor` (PIL backend) does it, driven by the
//! model's `preprocessor_config.json`: convert to RGB as transformers does (transparency
//! composited onto white, grey replicated, palette expanded; done in [`super::decode`]), resize so
//! the short side matches `size` with a bit-exact port of Pillow's resampler
//! ([`super::resample`]), centre crop, rescale, and mean/std normalise into CHW f32.

use image::RgbImage;

use super::resample::{resize_nearest_rgb8, resize_rgb8_window, Filter, Window};

use crate::model::config::{PreprocessorConfig, SizeSpec};

/// Turns RGB images into the model's normalised pixel tensors.
#[derive(Debug, Clone)]
pub struct Preprocessor {
    cfg: PreprocessorConfig,
    out_h: u32,
    out_w: u32,
}

impl Preprocessor {
    pub fn new(cfg: PreprocessorConfig) -> Self {
        let (out_h, out_w) = cfg.output_size();
        Self { cfg, out_h, out_w }
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

    /// Preprocesses one RGB image into `out` (CHW, length [`Self::output_len`]).
    pub fn preprocess_into(&self, img: &RgbImage, out: &mut [f32]) {
        assert_eq!(out.len(), self.output_len(), "output buffer has the wrong length");
        let (w, h) = img.dimensions();
        let (nw, nh) = self.resize_target(w, h);
        if (nw, nh) == (w, h) {
            self.crop_normalize(img.as_raw(), w, h, out);
            return;
        }
        let (src, w, h, nw_, nh_) = (img.as_raw(), w as usize, h as usize, nw as usize, nh as usize);
        match Filter::from_pil(self.cfg.resample) {
            Some(f) => {
                // Resize only what the crop keeps (same values; see `resize_rgb8_window`).
                let win = self.crop_window(nw_, nh_);
                let part = resize_rgb8_window(src, w, h, nw_, nh_, f, win);
                self.crop_normalize(&part, (win.x1 - win.x0) as u32, (win.y1 - win.y0) as u32, out);
            }
            None => self.crop_normalize(&resize_nearest_rgb8(src, w, h, nw_, nh_), nw, nh, out),
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
                let off = (full - crop) / 2;
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
    /// normalise, writing CHW. Each 8-bit value maps through a 256-entry table per channel,
    /// computed with transformers' formula `(v * rescale - mean) / std` in f32.
    fn crop_normalize(&self, rgb: &[u8], w: u32, h: u32, out: &mut [f32]) {
        let (ch, cw) = (self.out_h as usize, self.out_w as usize);
        let (top, left) =
            if self.cfg.do_center_crop { ((h as i64 - ch as i64) / 2, (w as i64 - cw as i64) / 2) } else { (0, 0) };
        let plane = ch * cw;
        let scale = if self.cfg.do_rescale { self.cfg.rescale_factor as f32 } else { 1.0 };
        let (mean, std) =
            if self.cfg.do_normalize { (self.cfg.image_mean, self.cfg.image_std) } else { ([0.0; 3], [1.0; 3]) };
        let lut: [[f32; 256]; 3] =
            std::array::from_fn(|c| std::array::from_fn(|v| (v as f32 * scale - mean[c]) / std[c]));
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
