//! `--quantize int8` and `--quantize bf16`: every family's tiny model in int8 and bf16 against
//! itself in f32 on the fixture pictures and captions, the run record, and the refusals.

use candle_core::{DType, Device, Tensor};
use sieve::media::decode::{decode, Limits};
use sieve::model::{Encoder, ModelSpec, Quantize};

use crate::cmd::sieve_out;
use crate::util::*;

/// Cosine required between int8 (or bf16) and f32 embeddings of the same input.
const COSINE_MIN: f64 = 0.999;

fn load(dir: &str, q: Quantize) -> Box<dyn Encoder> {
    let spec = ModelSpec::new(root().join(dir).display().to_string(), None);
    sieve::model::load_quantized(&spec, &Device::Cpu, DType::F32, q).unwrap()
}

/// The fixture pictures through the model's own preprocessing, as one batch.
fn pixels(m: &dyn Encoder) -> Tensor {
    let p = m.preprocessor();
    let (h, w) = p.output_size();
    let mut rows = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(fixtures().join("images")).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    for path in &names {
        let img = decode(&std::fs::read(path).unwrap(), &Limits::default()).unwrap();
        rows.extend(p.preprocess(&img.rgb));
    }
    Tensor::from_vec(rows, (names.len(), 3, h as usize, w as usize), &Device::Cpu).unwrap()
}

fn captions(m: &dyn Encoder) -> Option<Vec<Vec<u32>>> {
    let texts: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("captions.json")).unwrap()).unwrap();
    let t = m.tokenizer()?;
    Some(texts.iter().map(|c| t.encode(c).unwrap().ids).collect())
}

/// Rows minus their mean over the batch: the tiny random models' embeddings share a large
/// constant part (different pictures have cosines of 0.95–0.999), so only the part that depends
/// on the input tells whether int8 kept it.
fn centred(rows: &[Vec<f32>]) -> Vec<Vec<f32>> {
    let d = rows[0].len();
    let mean: Vec<f32> = (0..d).map(|j| rows.iter().map(|r| r[j]).sum::<f32>() / rows.len() as f32).collect();
    rows.iter().map(|r| r.iter().zip(&mean).map(|(a, m)| a - m).collect()).collect()
}

fn lowest(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    a.iter().zip(b).map(|(x, y)| cosine(x, y)).fold(f64::INFINITY, f64::min)
}

/// Every family's tiny model converted as `quantize` asks stays within [`COSINE_MIN`] of its
/// f32 self on the fixture pictures and captions (raw and centred).
fn stays_close_to_f32_in_every_family(quantize: Quantize) {
    for dir in ["models/tiny-clip", "models/tiny-openclip", "models/tiny-siglip", "models/tiny-dinov2"] {
        let (f, q) = (load(dir, Quantize::None), load(dir, quantize));
        let px = pixels(&*f);
        let a = f.embed_images(&px).unwrap().to_vec2::<f32>().unwrap();
        let b = q.embed_images(&px).unwrap().to_vec2::<f32>().unwrap();
        assert_ne!(a, b, "{dir}: {quantize:?} computed nothing differently");
        let (raw, centred_images) = (lowest(&a, &b), lowest(&centred(&a), &centred(&b)));
        eprintln!("{dir} {quantize:?}: images lowest cosine {raw:.6}, centred {centred_images:.6}");
        assert!(raw >= COSINE_MIN && centred_images >= COSINE_MIN, "{dir}: images {raw} (centred {centred_images})");
        if let Some(ids) = captions(&*f) {
            let a = f.embed_texts(&ids).unwrap().to_vec2::<f32>().unwrap();
            let b = q.embed_texts(&ids).unwrap().to_vec2::<f32>().unwrap();
            let (raw, c) = (lowest(&a, &b), lowest(&centred(&a), &centred(&b)));
            eprintln!("{dir} {quantize:?}: captions lowest cosine {raw:.6}, centred {c:.6}");
            assert!(raw >= COSINE_MIN && c >= COSINE_MIN, "{dir}: captions {raw} (centred {c})");
        }
    }
}

#[test]
fn int8_embeddings_stay_close_to_f32_in_every_family() {
    stays_close_to_f32_in_every_family(Quantize::Int8);
}

/// Where the CPU has AVX-512 BF16, bf16 stays as close to f32 as int8 must; elsewhere (or with
/// `SIEVE_CPU_KERNEL=avx2`) it is refused at load time, saying why.
#[test]
fn bf16_embeddings_stay_close_to_f32_or_are_refused_without_avx512_bf16() {
    if Quantize::Bf16.available() {
        stays_close_to_f32_in_every_family(Quantize::Bf16);
    } else {
        eprintln!("this CPU (or SIEVE_CPU_KERNEL) rules out AVX-512 BF16: checking the refusal");
        let spec = ModelSpec::new(tiny_model_dir().display().to_string(), None);
        let err = sieve::model::load_quantized(&spec, &Device::Cpu, DType::F32, Quantize::Bf16).unwrap_err();
        assert!(err.to_string().contains("AVX-512 BF16"), "{err}");
    }
}

#[test]
fn embed_records_int8_and_refuses_to_mix_it_with_f32() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let model = tiny_model_dir();
    let images = fixtures().join("images");
    let args = |extra: &[&str]| {
        let mut a = vec!["embed", images.to_str().unwrap(), "--out", out.to_str().unwrap()];
        a.extend(["--model", model.to_str().unwrap(), "--device", "cpu"]);
        a.extend(extra);
        sieve_out(&a)
    };
    let o = args(&["--quantize", "int8"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let run: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["compute_dtype"], "f32+int8");
    // The same command again: already complete. Without --quantize: another job, refused.
    let o = args(&["--quantize", "int8"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = args(&[]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("compute dtype"), "{}", String::from_utf8_lossy(&o.stderr));
    // A search on the int8 run embeds its query in int8 too, and finds something.
    let o = sieve_out(&["search", out.to_str().unwrap(), "--text", "a photo", "--top", "2", "--device", "cpu"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // bf16 is another job again: refused in the same folder (on a CPU without AVX-512 BF16,
    // refused before that, for the CPU).
    let o = args(&["--quantize", "bf16"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("compute dtype") || err.contains("AVX-512 BF16"), "{err}");
}

#[test]
fn embed_records_bf16_where_the_cpu_has_it() {
    if !Quantize::Bf16.available() {
        eprintln!("this CPU (or SIEVE_CPU_KERNEL) rules out AVX-512 BF16: the refusal is checked elsewhere");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let (model, images) = (tiny_model_dir(), fixtures().join("images"));
    let (out_s, model_s) = (out.to_str().unwrap(), model.to_str().unwrap());
    let embed = ["embed", images.to_str().unwrap(), "--out", out_s, "--model", model_s, "--device", "cpu"];
    let o = sieve_out(&[&embed[..], &["--quantize", "bf16"]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let run: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["compute_dtype"], "f32+bf16");
    let o = sieve_out(&[&embed[..], &["--quantize", "int8"]].concat());
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("compute dtype"), "{}", String::from_utf8_lossy(&o.stderr));
    let o = sieve_out(&["search", out_s, "--text", "a photo", "--top", "2", "--device", "cpu"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn int8_is_refused_off_the_cpu_and_named_when_wrong() {
    let o = sieve_out(&["embed", "x", "--out", "y", "--quantize", "int4"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--quantize"), "{}", String::from_utf8_lossy(&o.stderr));
    let o = sieve_out(&["bench", "--stock", "--quantize", "int8", "--device", "cpu"]);
    assert_eq!(o.status.code(), Some(2), "--stock measures candle's model, which has no int8 path");
    // No GPU build here: the refusal is the library's, before any model is read.
    let spec = ModelSpec::new(tiny_model_dir().display().to_string(), None);
    for q in [Quantize::Int8, Quantize::Bf16] {
        let err = sieve::model::load_quantized(&spec, &Device::Cpu, DType::F16, q).unwrap_err();
        assert!(err.to_string().contains("CPU only"), "{err}");
    }
}
