#!/usr/bin/env python3
"""Reference data for sieve, generated with Hugging Face transformers.

Writes (relative to --root):
  models/tiny-clip/                  tiny random CLIPModel (f16 safetensors) + the real CLIP tokenizer
  models/clip-vit-base-patch32/      config.json + preprocessor_config.json of openai/clip-vit-base-patch32
  tests/fixtures/images/             deterministic test images of several modes and shapes
  tests/fixtures/captions.json       test captions
  tests/fixtures/golden/             pixels_<stem>.npy, image_embeds.npy, text_embeds.npy, manifest.json

Run through scripts/make_reference.sh, which sets up the venv and fetches the BPE file.
Everything is seeded; running it twice gives the same output.
"""

import argparse
import gzip
import json
import os
import platform
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import PIL
import torch
from PIL import Image

import safetensors
import tokenizers
import transformers
from safetensors.torch import load_file, save_file
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

CAT_IDS = [49406, 320, 1125, 539, 320, 2368, 49407]
MAX_LEN = 77

IMAGE_MEAN = [0.48145466, 0.4578275, 0.40821073]
IMAGE_STD = [0.26862954, 0.26130258, 0.27577711]

# openai/clip-vit-base-patch32 preprocessor_config.json as stored on the Hub (legacy form:
# integer "size"/"crop_size", feature_extractor_type). transformers reads size=224 as
# {"shortest_edge": 224} and crop_size=224 as {"height": 224, "width": 224}.
HUB_B32_PREPROCESSOR = {
    "crop_size": 224,
    "do_center_crop": True,
    "do_normalize": True,
    "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor",
    "image_mean": IMAGE_MEAN,
    "image_std": IMAGE_STD,
    "resample": 3,
    "size": 224,
}

# The same processing written out in the modern CLIPImageProcessor form (used for tiny-clip).
MODERN_PREPROCESSOR = {
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": IMAGE_MEAN,
    "image_processor_type": "CLIPImageProcessor",
    "image_std": IMAGE_STD,
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 224},
}


def _hub_sub_config(model_type, specific):
    """One sub-config of openai/clip-vit-base-patch32's config.json (written by transformers 4.16)."""
    common = {
        "_name_or_path": "",
        "add_cross_attention": False,
        "architectures": None,
        "attention_dropout": 0.0,
        "bad_words_ids": None,
        "bos_token_id": None,
        "chunk_size_feed_forward": 0,
        "cross_attention_hidden_size": None,
        "decoder_start_token_id": None,
        "diversity_penalty": 0.0,
        "do_sample": False,
        "dropout": 0.0,
        "early_stopping": False,
        "encoder_no_repeat_ngram_size": 0,
        "eos_token_id": None,
        "finetuning_task": None,
        "forced_bos_token_id": None,
        "forced_eos_token_id": None,
        "hidden_act": "quick_gelu",
        "hidden_size": None,
        "id2label": {"0": "LABEL_0", "1": "LABEL_1"},
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": None,
        "is_decoder": False,
        "is_encoder_decoder": False,
        "label2id": {"LABEL_0": 0, "LABEL_1": 1},
        "layer_norm_eps": 1e-05,
        "length_penalty": 1.0,
        "max_length": 20,
        "min_length": 0,
        "model_type": model_type,
        "no_repeat_ngram_size": 0,
        "num_attention_heads": None,
        "num_beam_groups": 1,
        "num_beams": 1,
        "num_hidden_layers": 12,
        "num_return_sequences": 1,
        "output_attentions": False,
        "output_hidden_states": False,
        "output_scores": False,
        "pad_token_id": None,
        "prefix": None,
        "projection_dim": 512,
        "problem_type": None,
        "pruned_heads": {},
        "remove_invalid_values": False,
        "repetition_penalty": 1.0,
        "return_dict": True,
        "return_dict_in_generate": False,
        "sep_token_id": None,
        "task_specific_params": None,
        "temperature": 1.0,
        "tie_encoder_decoder": False,
        "tie_word_embeddings": True,
        "tokenizer_class": None,
        "top_k": 50,
        "top_p": 1.0,
        "torch_dtype": None,
        "torchscript": False,
        "transformers_version": "4.16.0.dev0",
        "use_bfloat16": False,
    }
    common.update(specific)
    return dict(sorted(common.items()))


HUB_B32_CONFIG = {
    "_name_or_path": "openai/clip-vit-base-patch32",
    "architectures": ["CLIPModel"],
    "initializer_factor": 1.0,
    "logit_scale_init_value": 2.6592,
    "model_type": "clip",
    "projection_dim": 512,
    "text_config": _hub_sub_config(
        "clip_text_model",
        {
            "bos_token_id": 0,
            "eos_token_id": 2,
            "pad_token_id": 1,
            "hidden_size": 512,
            "intermediate_size": 2048,
            "num_attention_heads": 8,
            "max_position_embeddings": 77,
            "vocab_size": 49408,
        },
    ),
    "text_config_dict": None,
    "transformers_version": None,
    "vision_config": _hub_sub_config(
        "clip_vision_model",
        {
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_attention_heads": 12,
            "image_size": 224,
            "patch_size": 32,
        },
    ),
    "vision_config_dict": None,
}


def write_json(path, obj):
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- tokenizer


def bytes_to_unicode():
    """OpenAI CLIP / GPT-2 reversible byte -> unicode map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def build_vocab_and_merges(bpe_gz):
    """Exactly what openai/CLIP simple_tokenizer.SimpleTokenizer.__init__ builds."""
    lines = gzip.open(bpe_gz).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    merges = [tuple(m.split()) for m in merges]
    assert len(merges) == 48894 and all(len(m) == 2 for m in merges)
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408 and len(set(vocab)) == 49408
    return {tok: i for i, tok in enumerate(vocab)}, merges


def make_tokenizer(bpe_gz, out_dir):
    vocab, merges = build_vocab_and_merges(bpe_gz)
    # transformers 5.x: CLIPTokenizer(vocab, merges) is tokenizers-backed and takes the vocab
    # dict and merge pairs directly (the keyword is `vocab`, not `vocab_file`: passing
    # vocab_file=... is silently ignored and gives a 3-token vocabulary).
    # NB: CLIPTokenizerFast(vocab_file=..., merges_file=...) likewise builds a broken
    # tokenizer.json (see REFERENCE-NOTES). The ids are checked against known values below.
    tok = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_LEN)
    tok.save_pretrained(str(out_dir))
    return tok


# --------------------------------------------------------------------------- images


def scene(h, w, rng, noise=4.0):
    """Photo-like RGB float image: smooth gradients, a few hard-edged shapes, fine stripes, noise."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    yn, xn = y / max(h - 1, 1), x / max(w - 1, 1)
    img = np.empty((h, w, 3))
    for c in range(3):
        a = rng.uniform(40, 200, size=4)
        f = rng.uniform(0.5, 2.5, size=2)
        ph = rng.uniform(0, 2 * np.pi)
        img[..., c] = a[0] + (a[1] - 120) * xn + (a[2] - 120) * yn + 0.3 * (a[3] - 120) * np.sin(2 * np.pi * (f[0] * xn + f[1] * yn) + ph)
    for _ in range(4):
        color = rng.uniform(0, 255, size=3)
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        kind = rng.integers(0, 3)
        if kind == 0:  # disc
            r = rng.uniform(0.08, 0.3) * min(h, w)
            m = (y - cy) ** 2 + (x - cx) ** 2 < r * r
        elif kind == 1:  # rectangle
            hh, ww = rng.uniform(0.1, 0.35) * h, rng.uniform(0.1, 0.35) * w
            m = (np.abs(y - cy) < hh) & (np.abs(x - cx) < ww)
        else:  # ellipse
            ry, rx = rng.uniform(0.05, 0.3) * h, rng.uniform(0.05, 0.3) * w
            m = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 < 1
        img[m] = 0.25 * img[m] + 0.75 * color
    # a patch of fine stripes (period ~3 px) so down-sampling filters matter
    sy, sx = int(rng.integers(0, max(h // 2, 1))), int(rng.integers(0, max(w // 2, 1)))
    stripes = 40 * np.sin(2 * np.pi * (x[sy : sy + h // 4, sx : sx + w // 4] / 3.1))
    img[sy : sy + h // 4, sx : sx + w // 4] += stripes[..., None]
    img += rng.normal(0, noise, size=img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def make_images(img_dir):
    if img_dir.exists():
        shutil.rmtree(img_dir)
    img_dir.mkdir(parents=True)
    rng = np.random.default_rng(20261126)
    files = []

    def save(name, im, **kw):
        im.save(img_dir / name, **kw)
        files.append(name)

    save("photo.jpg", Image.fromarray(scene(375, 500, rng), "RGB"), quality=90)  # 500x375, 4:2:0
    rgb = scene(300, 300, rng, noise=1.0)
    yy, xx = np.mgrid[0:300, 0:300]
    alpha = np.clip(xx * 255 / 299 * 0.6 + yy * 255 / 299 * 0.4, 0, 255)
    alpha[(yy - 150) ** 2 + (xx - 150) ** 2 < 60**2] = 0  # fully transparent hole, RGB kept underneath
    alpha[:40, :] = 255
    rgba = np.dstack([rgb, alpha.astype(np.uint8)])
    save("alpha.png", Image.fromarray(rgba, "RGBA"), optimize=True)
    gray = scene(256, 256, rng, noise=2.0).astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    save("gray.png", Image.fromarray(np.clip(np.rint(gray), 0, 255).astype(np.uint8), "L"), optimize=True)
    save("tall.jpg", Image.fromarray(scene(800, 200, rng), "RGB"), quality=90)  # 200x800
    save("wide.png", Image.fromarray(scene(150, 900, rng, noise=1.0), "RGB"), optimize=True)  # 900x150
    save("tiny.png", Image.fromarray(scene(12, 16, rng), "RGB"))  # 16x12 -> upscaled
    pal = Image.fromarray(scene(90, 120, rng, noise=2.0), "RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    assert pal.mode == "P"
    save("palette.png", pal, optimize=True)  # 120x90
    save("square.bmp", Image.fromarray(scene(224, 224, rng), "RGB"))  # 224x224, no resize
    return files


def manual_pixels(path):
    """Plain PIL/numpy restatement of what CLIPImageProcessorPil does (checked against it below).

    1. RGB: images with an alpha band (or a `transparency` entry) are alpha-composited onto
       opaque WHITE with PIL.Image.alpha_composite, others use PIL convert("RGB").
    2. Resize so the short side is 224, long side int(224 * long / short) (truncated), PIL
       bicubic on the uint8 image (reducing_gap=None).
    3. Center crop 224x224: top = (h - 224) // 2, left = (w - 224) // 2.
    4. x * (1/255) computed in float64 then cast to float32; (x - mean) / std in float32.
    """
    with Image.open(path) as im:
        if "A" in im.getbands() or im.info.get("transparency") is not None:
            rgba = im.convert("RGBA")
            rgb = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
        else:
            rgb = im.convert("RGB")
    w, h = rgb.size
    short, long = min(w, h), max(w, h)
    new_short, new_long = 224, int(224 * long / short)
    nw, nh = (new_short, new_long) if w <= h else (new_long, new_short)
    arr = np.asarray(rgb.resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=None))
    top, left = (nh - 224) // 2, (nw - 224) // 2
    arr = arr[top : top + 224, left : left + 224].transpose(2, 0, 1)
    x = (arr.astype(np.float64) * (1 / 255)).astype(np.float32)
    mean = np.array(IMAGE_MEAN, dtype=np.float32)[:, None, None]
    std = np.array(IMAGE_STD, dtype=np.float32)[:, None, None]
    return (x - mean) / std, [nw, nh]


# --------------------------------------------------------------------------- captions


def make_captions():
    rnd = random.Random(7)
    words = (
        "the a small large red green blue old new dog cat bird tree house river mountain city street car "
        "boat people child woman man sits runs stands near under over beside with and on in at light "
        "shadow morning evening sunny cloudy wooden stone glass bright dark quiet busy photo picture of"
    ).split()
    long_caption = " ".join(rnd.choice(words) for _ in range(150))
    return [
        "a photo of a cat",
        "A PHOTO OF A DOG!!",
        "Ünïcödé café naïve 日本語のキャプション",
        "",
        "   ",
        long_caption,
        "a happy dog 🐶 on the beach 🏖️ at sunset 🌅👍🏽",
        "fish &amp; chips <b>bold</b>",
        "numbers 1234567 and 3.14",
        "don't won't it's we're",
        "tab\tand\nnewline",
    ]


# --------------------------------------------------------------------------- model


def make_model():
    text_config = dict(
        vocab_size=49408,
        hidden_size=32,
        intermediate_size=64,
        projection_dim=16,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        # legacy openai/clip-vit-base-patch32 values: eos_token_id == 2 makes transformers
        # pool the text at argmax(input_ids), i.e. at the first <|endoftext|> (49407).
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
    )
    vision_config = dict(
        hidden_size=32,
        intermediate_size=64,
        projection_dim=16,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_channels=3,
        image_size=224,
        patch_size=32,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )
    config = CLIPConfig(
        text_config=text_config,
        vision_config=vision_config,
        projection_dim=16,
        logit_scale_init_value=2.6592,
    )
    config.architectures = ["CLIPModel"]
    torch.manual_seed(42)
    model = CLIPModel(config)
    # Perturb LayerNorm affine parameters and Linear biases (HF init sets them to 1 / 0)
    # so the Rust side's handling of those tensors is actually exercised.
    g = torch.Generator().manual_seed(4242)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.LayerNorm):
                mod.weight.add_(0.1 * torch.randn(mod.weight.shape, generator=g))
                mod.bias.add_(0.05 * torch.randn(mod.bias.shape, generator=g))
            elif isinstance(mod, torch.nn.Linear) and mod.bias is not None:
                mod.bias.add_(0.02 * torch.randn(mod.bias.shape, generator=g))
        # round every parameter to an f16-representable value; goldens use these f32 weights
        for p in model.parameters():
            p.copy_(p.half().float())
    model.eval()
    return model


def save_model(model, out_dir):
    sd = {k: v.detach().half().contiguous() for k, v in model.state_dict().items() if not k.endswith("position_ids")}
    for name in (
        "text_model.embeddings.token_embedding.weight",
        "text_model.embeddings.position_embedding.weight",
        "vision_model.embeddings.class_embedding",
        "vision_model.embeddings.patch_embedding.weight",
        "vision_model.pre_layrnorm.weight",
        "vision_model.post_layernorm.weight",
        "text_model.final_layer_norm.weight",
        "visual_projection.weight",
        "text_projection.weight",
        "logit_scale",
    ):
        assert name in sd, f"missing standard tensor {name}; got {sorted(sd)[:10]}..."
    save_file(sd, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    os.chmod(out_dir / "model.safetensors", 0o644)  # save_file creates it 0600
    model.config.save_pretrained(str(out_dir))
    return sorted(sd)


# --------------------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bpe", required=True, help="path to open_clip's bpe_simple_vocab_16e6.txt.gz")
    ap.add_argument("--root", default=str(Path(__file__).resolve().parent.parent))
    args = ap.parse_args()

    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    torch.use_deterministic_algorithms(True)

    root = Path(args.root)
    model_dir = root / "models" / "tiny-clip"
    b32_dir = root / "models" / "clip-vit-base-patch32"
    fix_dir = root / "tests" / "fixtures"
    gold_dir = fix_dir / "golden"
    for d in (model_dir, gold_dir):
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
    b32_dir.mkdir(parents=True, exist_ok=True)

    # ---- ViT-B/32 config files (no weights)
    write_json(b32_dir / "config.json", HUB_B32_CONFIG)
    write_json(b32_dir / "preprocessor_config.json", HUB_B32_PREPROCESSOR)
    b32 = CLIPConfig.from_pretrained(str(b32_dir))
    assert (b32.text_config.hidden_size, b32.vision_config.hidden_size, b32.projection_dim) == (512, 768, 512)
    assert b32.text_config.eos_token_id == 2 and b32.vision_config.patch_size == 32
    b32_proc = CLIPImageProcessor.from_pretrained(str(b32_dir))

    # ---- tokenizer
    tok = make_tokenizer(args.bpe, model_dir)
    ids = tok("a photo of a cat")["input_ids"]
    print(f"python tokenizer ({type(tok).__name__}): 'a photo of a cat' -> {ids}")
    assert ids == CAT_IDS, ids
    fast = tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    ids2 = fast.encode("a photo of a cat").ids
    print(f"tokenizers.Tokenizer.from_file(tokenizer.json): 'a photo of a cat' -> {ids2}")
    assert ids2 == CAT_IDS, ids2

    # ---- model
    model = make_model()
    names = save_model(model, model_dir)
    write_json(model_dir / "preprocessor_config.json", MODERN_PREPROCESSOR)
    (model_dir / "README.md").write_text(
        "# tiny-clip (test fixture, NOT a real model)\n\n"
        "A randomly initialised `CLIPModel` (hidden size 32, 2+2 layers, projection 16, f16 weights) with the real\n"
        "49,408-entry OpenAI CLIP BPE tokenizer, used only to check sieve against Hugging Face transformers.\n"
        "Generated by `scripts/make_reference.sh` (torch.manual_seed(42)); its embeddings are meaningless.\n",
        encoding="utf-8",
    )
    # keep only what's needed: tokenizer.json suffices for both transformers and the tokenizers crate
    keep = {
        "config.json", "preprocessor_config.json", "model.safetensors", "tokenizer.json",
        "tokenizer_config.json", "special_tokens_map.json", "README.md",
    }
    for f in sorted(model_dir.iterdir()):
        if f.name not in keep:
            print(f"removing {f.name} from {model_dir}")
            f.unlink()

    # ---- reload everything the way a user of the directory would
    tok = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    assert tok("a photo of a cat")["input_ids"] == CAT_IDS
    assert tok.model_max_length == MAX_LEN, tok.model_max_length
    fast = tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    processor = CLIPImageProcessor.from_pretrained(str(model_dir))
    proc_name = type(processor).__name__
    print(f"image processor: {proc_name} (openai B/32 legacy config loads as {type(b32_proc).__name__})")
    reloaded = CLIPModel.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    for (k, a), (k2, b) in zip(sorted(model.state_dict().items()), sorted(reloaded.state_dict().items())):
        assert k == k2 and torch.equal(a, b), k

    # ---- fixtures
    img_files = make_images(fix_dir / "images")
    captions = make_captions()
    write_json(fix_dir / "captions.json", captions)

    # ---- pixel goldens
    pixels, resized_to, manual_diff = [], [], {}
    for name in img_files:
        with Image.open(fix_dir / "images" / name) as im:
            pv = processor(images=im, return_tensors="pt")["pixel_values"]
        pv = pv.detach().cpu().numpy().astype(np.float32) if hasattr(pv, "detach") else np.asarray(pv, dtype=np.float32)
        assert pv.shape == (1, 3, 224, 224), pv.shape
        np.save(gold_dir / f"pixels_{Path(name).stem}.npy", pv[0])
        pixels.append(pv[0])
        mp, rs = manual_pixels(fix_dir / "images" / name)
        resized_to.append(rs)
        manual_diff[name] = float(np.abs(mp - pv[0]).max())
    print("pixels: max|processor - manual PIL pipeline| per image:", {k: f"{v:.2g}" for k, v in manual_diff.items()})
    assert max(manual_diff.values()) < 1e-5, manual_diff
    pixel_batch = torch.from_numpy(np.stack(pixels))

    # ---- image embeddings (projected, not normalised), batch of all images
    with torch.inference_mode():
        vis = model.vision_model(pixel_values=pixel_batch)
        image_embeds = model.visual_projection(vis.pooler_output)
        gif = model.get_image_features(pixel_values=pixel_batch)
        gif_kind = type(gif).__name__
        gif_t = gif if isinstance(gif, torch.Tensor) else getattr(gif, "pooler_output", None)
        if gif_t is not None and gif_t.shape == image_embeds.shape:
            print(f"get_image_features returns {gif_kind}; max|diff| vs explicit = {(gif_t - image_embeds).abs().max().item():.3g}")
        else:
            print(f"get_image_features returns {gif_kind} (not comparable directly)")
        # one image at a time must agree with the batch
        single_img = torch.cat([model.visual_projection(model.vision_model(pixel_values=pixel_batch[i : i + 1]).pooler_output) for i in range(len(pixels))])
        print(f"image embeds batch vs single max|diff| = {(single_img - image_embeds).abs().max().item():.3g}")
    np.save(gold_dir / "image_embeds.npy", image_embeds.numpy().astype(np.float32))

    # ---- text embeddings, one caption at a time without padding
    input_ids, untrunc, lib_mismatch = [], [], []
    rows = []
    with torch.inference_mode():
        for cap in captions:
            enc = tok(cap, truncation=True, max_length=MAX_LEN)["input_ids"]
            full = tok(cap, truncation=False)["input_ids"]
            lib = fast.encode(cap).ids
            if lib != full:
                lib_mismatch.append(cap)
            assert enc[0] == 49406 and enc[-1] == 49407 and len(enc) <= MAX_LEN
            assert enc == (full if len(full) <= MAX_LEN else full[: MAX_LEN - 1] + [49407])
            input_ids.append(enc)
            untrunc.append(len(full))
            out = model.text_model(input_ids=torch.tensor([enc]))
            rows.append(model.text_projection(out.pooler_output)[0])
        text_embeds = torch.stack(rows)
        # batched with padding + attention mask must match
        batch = tok(captions, padding=True, truncation=True, max_length=MAX_LEN, return_tensors="pt")
        out = model.text_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        batched = model.text_projection(out.pooler_output)
        diff_text = (batched - text_embeds).abs().max().item()
        print(f"text embeds batched (padding=True, len {batch['input_ids'].shape[1]}) vs one-at-a-time max|diff| = {diff_text:.3g}")
        per_row = (batched - text_embeds).abs().amax(dim=1).tolist()
        print("  per caption:", " ".join(f"{d:.2g}" for d in per_row))
        assert diff_text < 1e-5, diff_text
        # padded to 77 with pad id 49407 (what sieve's bench/batching does) also agrees
        pad77 = tok(captions, padding="max_length", truncation=True, max_length=MAX_LEN, return_tensors="pt")
        out77 = model.text_model(input_ids=pad77["input_ids"], attention_mask=pad77["attention_mask"])
        diff77 = (model.text_projection(out77.pooler_output) - text_embeds).abs().max().item()
        print(f"text embeds padded to 77 vs one-at-a-time max|diff| = {diff77:.3g}")
        assert diff77 < 1e-5, diff77
        # the reloaded (f16 file -> f32) model gives identical numbers
        assert torch.equal(reloaded.visual_projection(reloaded.vision_model(pixel_values=pixel_batch).pooler_output), image_embeds)
    print(f"tokenizers-library ids (untruncated) differ from python tokenizer for: {lib_mismatch or 'none'}")
    assert not lib_mismatch
    np.save(gold_dir / "text_embeds.npy", text_embeds.numpy().astype(np.float32))

    img_norms = image_embeds.norm(dim=1).tolist()
    txt_norms = text_embeds.norm(dim=1).tolist()
    print("image embed norms:", " ".join(f"{v:.3f}" for v in img_norms))
    print("text embed norms: ", " ".join(f"{v:.3f}" for v in txt_norms))

    manifest = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "tokenizers": tokenizers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "python": platform.python_version(),
        "image_processor": proc_name,
        "images": img_files,
        "image_modes_sizes": [list((lambda im: (im.mode, im.size[0], im.size[1]))(Image.open(fix_dir / "images" / f))) for f in img_files],
        "resized_to": resized_to,
        "captions": captions,
        "input_ids": input_ids,
        "untruncated_lengths": untrunc,
        "logit_scale": float(model.logit_scale.item()),
        "notes": [
            "pixels_<stem>.npy: float32 [3,224,224] from CLIPImageProcessor.from_pretrained('models/tiny-clip') on PIL.Image.open(path) (no EXIF transpose).",
            "pixels: RGBA/transparent images are alpha-composited onto WHITE (transformers 5.x convert_to_rgb), then short side -> 224 (long = int(224*long/short), see resized_to [w,h]), PIL bicubic on uint8, center crop ((h-224)//2, (w-224)//2), /255, normalise. make_reference.py:manual_pixels restates it.",
            "image_embeds.npy: float32 [N,16] = visual_projection(vision_model(pixels).pooler_output), batch of all images, NOT normalised.",
            "text_embeds.npy: float32 [M,16] = text_projection(text_model(ids).pooler_output), one caption at a time, no padding, NOT normalised.",
            "input_ids: tokenizer(caption, truncation=True, max_length=77); truncation keeps <|startoftext|> and <|endoftext|>.",
            "text pooling: eos_token_id == 2 (legacy) -> hidden state at argmax(input_ids), the first 49407.",
            "model weights are f16 in the file; goldens computed in f32 with the same (f16-rounded) values.",
        ],
    }
    write_json(gold_dir / "manifest.json", manifest)

    total = 0
    for d in (model_dir, b32_dir, fix_dir):
        for f in sorted(d.rglob("*")):
            if f.is_file():
                total += f.stat().st_size if d == fix_dir else 0
                print(f"  {f.relative_to(root)}  {f.stat().st_size:,} B")
    print(f"tests/fixtures total: {total:,} B")
    print(f"tensors in model.safetensors: {len(names)}")


if __name__ == "__main__":
    main()
