//! JPEG decoding with libjpeg-turbo's decoder (through mozjpeg), the library Pillow uses, with
//! Pillow's settings (accurate integer IDCT, fancy upsampling), so decoded pixels are the ones
//! transformers' preprocessing sees. Pure-Rust decoders differ from it by up to a few levels
//! per channel, which is more than the preprocessing parity budget allows.
//!
//! Four-channel (CMYK/YCCK) JPEGs are decoded to CMYK by libjpeg and converted as Pillow does:
//! samples read as Adobe-inverted (`CMYK;I`), then Pillow's `cmyk2rgb`.
//!
//! libjpeg reports fatal errors through a callback that must not return; we unwind out of it
//! and catch the unwind here. Warnings (notably "premature end of JPEG file") are counted, and
//! a truncated file is refused as Pillow refuses it.

use std::cell::Cell;
use std::os::raw::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};

use image::metadata::Orientation;
use image::RgbImage;
use mozjpeg::{ColorSpace, Decompress, Marker};
use mozjpeg_sys as ffi;

use super::decode::{Limits, Skip, SkipReason};

thread_local! {
    /// Warnings libjpeg emitted during the current decode on this thread (code of the first).
    static WARNING: Cell<Option<c_int>> = const { Cell::new(None) };
}

fn message(cinfo: &mut ffi::jpeg_common_struct) -> String {
    // SAFETY: `err` is the error manager installed below, valid for the whole decode.
    unsafe {
        let err = &*cinfo.err;
        match err.format_message {
            Some(fmt) => {
                let buffer = [0u8; 80];
                // libjpeg writes into the buffer; the binding declares it as a shared reference.
                fmt(cinfo, &buffer);
                let text = buffer.split(|&c| c == 0).next().unwrap_or_default();
                String::from_utf8_lossy(text).into_owned()
            }
            None => format!("libjpeg error code {}", err.msg_code),
        }
    }
}

extern "C-unwind" fn error_exit(cinfo: &mut ffi::jpeg_common_struct) {
    let msg = message(cinfo);
    // resume_unwind does not run the panic hook, so nothing is printed.
    std::panic::resume_unwind(Box::new(msg));
}

extern "C-unwind" fn emit_message(cinfo: &mut ffi::jpeg_common_struct, level: c_int) {
    if level < 0 {
        // SAFETY: as above.
        let code = unsafe { (*cinfo.err).msg_code };
        WARNING.with(|w| {
            if w.get().is_none() {
                w.set(Some(code));
            }
        });
    }
}

fn error_mgr() -> ffi::jpeg_error_mgr {
    // SAFETY: jpeg_std_error fills in every field of a zeroed struct.
    let mut err: ffi::jpeg_error_mgr = unsafe { std::mem::zeroed() };
    unsafe { ffi::jpeg_std_error(&mut err) };
    err.error_exit = Some(error_exit);
    err.emit_message = Some(emit_message);
    err
}

/// EXIF orientation from an APP1 segment.
fn orientation(d: &Decompress<&[u8]>) -> Orientation {
    d.markers()
        .filter(|m| m.marker == Marker::APP(1))
        .find_map(|m| m.data.strip_prefix(b"Exif\0\0").and_then(Orientation::from_exif_chunk))
        .unwrap_or(Orientation::NoTransforms)
}

/// One channel of Pillow's `cmyk2rgb` on Adobe-inverted samples (Pillow reads every
/// four-channel JPEG as `CMYK;I`): with `c' = 255 - c` and `k' = 255 - k`,
/// `(255 - k') - MULDIV255(c', 255 - k')`.
fn cmyk_channel(c: u8, k: u8) -> u8 {
    let nk = k as u32;
    let tmp = (255 - c as u32) * nk + 128;
    (nk - (((tmp >> 8) + tmp) >> 8)) as u8
}

/// Decodes a JPEG to RGB (not yet oriented), its EXIF orientation, and whether the file holds
/// colour (false for a one-component, grey JPEG).
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<(RgbImage, Orientation, bool), Skip> {
    WARNING.with(|w| w.set(None));
    let result = catch_unwind(AssertUnwindSafe(|| -> std::io::Result<Result<(RgbImage, Orientation, bool), Skip>> {
        let d = Decompress::with_err(error_mgr()).with_markers(&[Marker::APP(1)]).from_mem(bytes)?;
        let (w, h) = d.size();
        if w == 0 || h == 0 {
            return Ok(Err(Skip::new(SkipReason::DecodeError, format!("Jpeg: header says {w}×{h} pixels"))));
        }
        if w as u64 * h as u64 > limits.max_pixels {
            return Ok(Err(Skip::new(
                SkipReason::TooManyPixels,
                format!("Jpeg: {w}×{h} pixels, over the limit of {} (--max-pixels)", limits.max_pixels),
            )));
        }
        let orient = orientation(&d);
        let colour = d.color_space() != ColorSpace::JCS_GRAYSCALE;
        let pixels = if matches!(d.color_space(), ColorSpace::JCS_CMYK | ColorSpace::JCS_YCCK) {
            // libjpeg turns YCCK into CMYK itself, as it does for Pillow.
            let mut started = d.to_colorspace(ColorSpace::JCS_CMYK)?;
            let cmyk: Vec<u8> = started.read_scanlines::<u8>()?;
            started.finish()?;
            cmyk.chunks_exact(4)
                .flat_map(|p| [cmyk_channel(p[0], p[3]), cmyk_channel(p[1], p[3]), cmyk_channel(p[2], p[3])])
                .collect()
        } else {
            let mut started = d.rgb()?;
            let rgb: Vec<u8> = started.read_scanlines::<u8>()?;
            started.finish()?;
            rgb
        };
        let img = RgbImage::from_raw(w as u32, h as u32, pixels)
            .ok_or_else(|| std::io::Error::other("libjpeg returned fewer pixels than the header promised"))?;
        Ok(Ok((img, orient, colour)))
    }));
    let warning = WARNING.with(|w| w.take());
    match result {
        Ok(Ok(Ok(_))) if warning == Some(ffi::JWRN_JPEG_EOF as c_int) => {
            Err(Skip::new(SkipReason::DecodeError, "Jpeg: file is truncated (premature end of JPEG data)"))
        }
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(Skip::new(SkipReason::DecodeError, format!("Jpeg: {e}"))),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "libjpeg failed".into());
            Err(Skip::new(SkipReason::DecodeError, format!("Jpeg: {msg}")))
        }
    }
}
