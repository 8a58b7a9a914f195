//! The prompts a concept is embedded with: a small ensemble of templates, each embedded by the
//! run's text tower, the rows averaged and the mean re-normalised to unit length, as CLIP's
//! zero-shot ImageNet notebook does (Radford et al., 2021, section 3.1.4: "prompt engineering
//! and ensembling").
//!
//! - CLIP and OpenCLIP: [`CLIP_TEMPLATES`], eight of CLIP's 80 ImageNet templates, those that
//!   read as general photo descriptions (the ones that name origami, tattoos, video games or
//!   plushies are left out: a curator's concepts are lighting, backgrounds, places, people).
//! - SigLIP: [`SIGLIP_TEMPLATES`], the same sentences in lower case without the final full
//!   stop, the form SigLIP's own zero-shot examples use (`"a photo of 2 cats"`).
//!
//! A concept that gives its own prompt (`night = a photo taken at night`) is embedded from that
//! one text alone. Which set a run used is recorded in `audit_summary.json` (`templates`).

use crate::model::Family;

/// CLIP's and OpenCLIP's ensemble; `{}` is the concept.
pub const CLIP_TEMPLATES: [&str; 8] = [
    "a photo of a {}.",
    "a bad photo of a {}.",
    "a blurry photo of a {}.",
    "a close-up photo of a {}.",
    "a bright photo of a {}.",
    "a dark photo of a {}.",
    "a good photo of a {}.",
    "a photo of the {}.",
];

/// SigLIP's ensemble; `{}` is the concept.
pub const SIGLIP_TEMPLATES: [&str; 8] = [
    "a photo of a {}",
    "a bad photo of a {}",
    "a blurry photo of a {}",
    "a close-up photo of a {}",
    "a bright photo of a {}",
    "a dark photo of a {}",
    "a good photo of a {}",
    "a photo of the {}",
];

/// The template set of `family` and its name (`clip` or `siglip`); `None` for a family without
/// a text tower.
pub fn templates(family: Family) -> Option<(&'static str, &'static [&'static str])> {
    match family {
        Family::Clip | Family::OpenClip => Some(("clip", &CLIP_TEMPLATES)),
        Family::Siglip => Some(("siglip", &SIGLIP_TEMPLATES)),
        Family::Dinov2 => None,
    }
}

/// The prompts of a concept: its own prompt, or every template filled with its name.
pub fn prompts(name: &str, own: Option<&str>, templates: &[&str]) -> Vec<String> {
    match own {
        Some(p) => vec![p.to_string()],
        None => templates.iter().map(|t| t.replace("{}", name)).collect(),
    }
}

/// The unit mean of unit rows (`rows.len() / d` of them): the ensemble's embedding.
pub fn mean_direction(rows: &[f32], d: usize) -> Vec<f32> {
    let mut m = vec![0f32; d];
    for r in rows.chunks_exact(d) {
        for (a, b) in m.iter_mut().zip(r) {
            *a += b;
        }
    }
    let norm = m.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        m.iter_mut().for_each(|x| *x /= norm);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_and_means_are_unit() {
        let p = prompts("night sky", None, &CLIP_TEMPLATES);
        assert_eq!(p.len(), 8);
        assert_eq!(p[0], "a photo of a night sky.");
        assert_eq!(prompts("x", Some("a photo taken at night"), &CLIP_TEMPLATES), ["a photo taken at night"]);
        assert!(templates(Family::Dinov2).is_none());
        assert_eq!(templates(Family::Siglip).unwrap().0, "siglip");
        let m = mean_direction(&[1.0, 0.0, 0.0, 1.0], 2);
        assert!((m[0] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6 && (m[1] - m[0]).abs() < 1e-6);
    }
}
