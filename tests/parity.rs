//! Parity with transformers' CLIP on the same weights and inputs (golden files from
//! scripts/make_reference.py): pixels, token ids, both towers, and batched = one-at-a-time.

use candle_core::Tensor;
use sieve::media::decode::{decode, Limits};

use crate::util::*;

/// Max-abs tolerance for pixel tensors (normalised units; 1/255 of range ≈ 0.015 after /std).
const PIXEL_TOL: f32 = 0.02;
/// Cosine similarity required against transformers' embeddings.
const COSINE_MIN: f64 = 0.9999;

#[test]
fn pixels_match_clip_image_processor() {
    let g = golden();
    let clip = tiny_clip();
    let mut worst = (0.0f32, String::new());
    for file in &g.images {
        let bytes = std::fs::read(fixtures().join("images").join(file)).unwrap();
        let decoded = decode(&bytes, &Limits::default()).unwrap_or_else(|s| panic!("{file}: {s:?}"));
        let ours = clip.preprocessor.preprocess(&decoded.rgb);
        let theirs = golden_pixels(stem(file)).flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let d = max_abs(&ours, &theirs);
        eprintln!("{file}: pixel max-abs {d:.5}");
        if d > worst.0 {
            worst = (d, file.clone());
        }
    }
    eprintln!("worst pixel max-abs {:.5} ({})", worst.0, worst.1);
    // Decoding (libjpeg-turbo, as Pillow) and resampling (a port of Pillow's) are exact, so
    // anything above float rounding means one of them drifted from the reference.
    assert!(worst.0 <= 1e-4, "{}: pixels are no longer bit-exact (max-abs {})", worst.1, worst.0);
    assert!(
        worst.0 <= PIXEL_TOL,
        "{}: pixel max-abs {} > {PIXEL_TOL} (reference: {})",
        worst.1,
        worst.0,
        g.image_processor
    );
}

#[test]
fn token_ids_match_clip_tokenizer() {
    let g = golden();
    let clip = tiny_clip();
    assert!(g.captions.len() >= 8, "golden set has too few captions");
    for ((caption, want), full_len) in g.captions.iter().zip(&g.input_ids).zip(&g.untruncated_lengths) {
        let got = clip.tokenizer.encode(caption).unwrap();
        assert_eq!(&got.ids, want, "caption {caption:?}");
        assert!(got.ids.len() <= 77);
        assert_eq!(got.truncated, *full_len > 77, "truncation flag for {caption:?} ({full_len} tokens)");
        assert_eq!(got.len, *full_len, "untruncated length of {caption:?}");
    }
    // The well-known OpenAI ids, independent of the golden file.
    assert_eq!(clip.tokenizer.encode("a photo of a cat").unwrap().ids, vec![49406, 320, 1125, 539, 320, 2368, 49407]);
}

#[test]
fn image_embeddings_match_transformers() {
    let g = golden();
    let clip = tiny_clip();
    let want = golden_rows("image_embeds.npy");
    // Model alone, on transformers' own pixels.
    let pixels: Vec<Tensor> = g.images.iter().map(|f| golden_pixels(stem(f))).collect();
    let batch = Tensor::stack(&pixels, 0).unwrap();
    let got = clip.model.embed_images(&batch).unwrap().to_vec2::<f32>().unwrap();
    for (i, file) in g.images.iter().enumerate() {
        let c = cosine(&got[i], &want[i]);
        eprintln!("{file}: model-only cosine {c:.7}");
        assert!(c >= COSINE_MIN, "{file}: cosine {c} < {COSINE_MIN}");
    }
    // Whole pipeline: our decoding and preprocessing feeding the model.
    for (i, file) in g.images.iter().enumerate() {
        let bytes = std::fs::read(fixtures().join("images").join(file)).unwrap();
        let px = clip.preprocessor.preprocess(&decode(&bytes, &Limits::default()).unwrap().rgb);
        let t = Tensor::from_vec(px, (1, 3, 224, 224), &candle_core::Device::Cpu).unwrap();
        let ours = clip.model.embed_images(&t).unwrap().to_vec2::<f32>().unwrap();
        let c = cosine(&ours[0], &want[i]);
        eprintln!("{file}: end-to-end cosine {c:.7}");
        assert!(c >= COSINE_MIN, "{file}: end-to-end cosine {c} < {COSINE_MIN}");
    }
}

#[test]
fn text_embeddings_match_transformers() {
    let g = golden();
    let clip = tiny_clip();
    let want = golden_rows("text_embeds.npy");
    for (i, caption) in g.captions.iter().enumerate() {
        let ids = clip.tokenizer.encode(caption).unwrap().ids;
        let got = clip.model.embed_texts(&[ids]).unwrap().to_vec2::<f32>().unwrap();
        let c = cosine(&got[0], &want[i]);
        assert!(c >= COSINE_MIN, "caption {caption:?}: cosine {c} < {COSINE_MIN}");
    }
}

#[test]
fn batched_equals_one_at_a_time() {
    let g = golden();
    let clip = tiny_clip();
    let pixels: Vec<Tensor> = g.images.iter().map(|f| golden_pixels(stem(f))).collect();
    let batched = clip.model.embed_images(&Tensor::stack(&pixels, 0).unwrap()).unwrap().to_vec2::<f32>().unwrap();
    for (i, p) in pixels.iter().enumerate() {
        let single = clip.model.embed_images(&p.unsqueeze(0).unwrap()).unwrap().to_vec2::<f32>().unwrap();
        let d = max_abs(&batched[i], &single[0]);
        assert!(d <= 1e-5, "image {i}: batched vs single max-abs {d}");
    }
    // Captions of very different lengths in one padded batch.
    let ids: Vec<Vec<u32>> = g.captions.iter().map(|c| clip.tokenizer.encode(c).unwrap().ids).collect();
    let lens: std::collections::BTreeSet<usize> = ids.iter().map(Vec::len).collect();
    assert!(lens.len() >= 3, "captions should have different lengths to exercise padding");
    let batched = clip.model.embed_texts(&ids).unwrap().to_vec2::<f32>().unwrap();
    for (i, one) in ids.iter().enumerate() {
        let single = clip.model.embed_texts(std::slice::from_ref(one)).unwrap().to_vec2::<f32>().unwrap();
        let d = max_abs(&batched[i], &single[0]);
        assert!(d <= 1e-5, "caption {i}: batched vs single max-abs {d}");
    }
}

/// Pillow's own bicubic resizes (scripts/make_resample_golden.py, Pillow 13), byte for byte:
/// both of its pass orders (vertical first when the height shrinks by more than twice as many
/// pixels as the width), the boundary between them, and a window of each equal to the same
/// part of the whole.
#[test]
fn resizes_match_pillow_in_both_pass_orders() {
    use sieve::media::resample::{resize_rgb8, resize_rgb8_window, Filter, Window};
    #[derive(serde::Deserialize)]
    struct Case {
        image: String,
        width: usize,
        height: usize,
        file: String,
    }
    #[derive(serde::Deserialize)]
    struct Manifest {
        cases: Vec<Case>,
    }
    let dir = fixtures().join("golden/resample");
    let m: Manifest = serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    assert!(m.cases.len() >= 7);
    for c in &m.cases {
        let bytes = std::fs::read(fixtures().join("images").join(&c.image)).unwrap();
        let rgb = decode(&bytes, &Limits::default()).unwrap().rgb;
        let (w, h) = (rgb.width() as usize, rgb.height() as usize);
        let want = Tensor::read_npy(dir.join(&c.file)).unwrap().flatten_all().unwrap().to_vec1::<u8>().unwrap();
        let got = resize_rgb8(rgb.as_raw(), w, h, c.width, c.height, Filter::Bicubic);
        let differ = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(differ, 0, "{} to {}x{}: {differ} values differ from Pillow", c.image, c.width, c.height);
        let win = Window { x0: c.width / 4, x1: c.width * 3 / 4 + 1, y0: c.height / 3, y1: c.height - 1 };
        let part = resize_rgb8_window(rgb.as_raw(), w, h, c.width, c.height, Filter::Bicubic, win);
        let crop: Vec<u8> = (win.y0..win.y1)
            .flat_map(|y| got[(y * c.width + win.x0) * 3..(y * c.width + win.x1) * 3].to_vec())
            .collect();
        assert_eq!(part, crop, "{} to {}x{}: window", c.image, c.width, c.height);
    }
}
