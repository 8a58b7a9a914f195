#!/usr/bin/env python3
"""OpenCLIP reference data for sieve, generated with open_clip_torch's own code.

Writes (relative to --root):
  models/tiny-openclip/            tiny seeded open_clip ViT (quick_gelu, shortest-edge resize,
                                   bicubic) in open_clip's Hub layout: open_clip_config.json,
                                   open_clip_model.safetensors (f16), tokenizer.json (the CLIP BPE,
                                   the same file as models/tiny-clip's)
  models/tiny-openclip-gelu/       the same shape with GELU, `resize_mode: longest`, bilinear, its
                                   own mean/std and a non-default LayerNorm eps, weights only as
                                   open_clip_pytorch_model.bin (a PyTorch pickle)
  models/openclip-configs/REPO/    open_clip_config.json of real checkpoints (config only, no
                                   weights): open_clip's bundled model config and the pretrained
                                   tag's preprocess, as its Hub export writes them
  tests/fixtures/golden/openclip/  real_configs.json: each real config's parameter count and
                                   tensor shapes, from open_clip's model built on the meta device;
                                   for each model NAME: NAME_pixels_<stem>.npy (open_clip's own
                                   preprocess of the fixture files), NAME_image_embeds.npy,
                                   NAME_image_embeds_single.npy, NAME_text_embeds.npy (encode_*,
                                   not normalised); squash_pixels_<stem>.npy (resize_mode squash);
                                   tokens.json (open_clip's tokenizer on the captions, 77 ids with
                                   its 0 padding); ftfy.json (ftfy.fix_text and open_clip's
                                   whole clean-up on a list of strings); manifest.json

Models and tokenizers are reloaded through open_clip's `local-dir:` schema, the code path of a
Hub checkpoint. Inputs are the committed fixture pictures tests/fixtures/images.
  /tmp/sieve-ref-venv/bin/python scripts/make_reference_openclip.py
Everything is seeded; running it twice gives the same output.
"""

import argparse
import json
import os
import platform
import shutil
import sys
from pathlib import Path

import ftfy
import numpy as np
import open_clip
import PIL
import torch
from open_clip.tokenizer import basic_clean, whitespace_clean
from PIL import Image
from safetensors.torch import save_file

OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]

TEXT_CFG = {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 2}
MODELS = {
    "tiny-openclip": {
        "model_cfg": {
            "embed_dim": 16,
            "quick_gelu": True,
            "vision_cfg": {"image_size": 64, "layers": 2, "width": 32, "head_width": 8, "patch_size": 16},
            "text_cfg": TEXT_CFG,
        },
        "preprocess_cfg": {
            "mean": OPENAI_MEAN,
            "std": OPENAI_STD,
            "interpolation": "bicubic",
            "resize_mode": "shortest",
        },
    },
    "tiny-openclip-gelu": {
        "model_cfg": {
            "embed_dim": 16,
            "vision_cfg": {
                "image_size": 48,
                "layers": 2,
                "width": 32,
                "head_width": 16,
                "mlp_ratio": 2.5,
                "patch_size": 16,
                "norm_kwargs": {"eps": 1e-6},
            },
            "text_cfg": dict(TEXT_CFG, layers=1, norm_kwargs={"eps": 1e-6}),
        },
        "preprocess_cfg": {
            "mean": [0.5, 0.5, 0.5],
            "std": [0.5, 0.5, 0.5],
            "interpolation": "bilinear",
            "resize_mode": "longest",
        },
    },
}
SQUASH = {"size": 40, "mean": OPENAI_MEAN, "std": OPENAI_STD, "interpolation": "bicubic", "resize_mode": "squash"}

# Strings for the clean-up golden: what ftfy's deterministic fixes and open_clip's clean-up do.
# Mojibake (ftfy's fix_encoding) is deliberately absent: sieve does not reproduce it.
CLEANUP = [
    "a photo of a cat",
    "Don\u2019t panic \u2014 it\u2019s \u201cfine\u201d",
    "\u2018single\u2019 \u201bodd\u201b \u201fdouble\u201f \u02bcmodifier",
    "fish &amp; chips",
    "fish &amp;amp; chips",
    "Tom &amp;amp;amp; Jerry",
    "caf&eacute; &#233; &#xE9; &#39;quoted&#39; &quot;hi&quot;",
    "&NTILDE;o&ntilde;o &Ntilde; &nTILDE;",
    "5 &lt; 6 &gt; 4",
    "<b>bold</b> &amp; tags",
    "first line\nsecond &amp; line <b>\nthird &amp; line",
    "&ampx &amp &notit; &hellip; &#128; &#x1F600; &#65",
    "&#1; control ref",
    "\ufb01ne \ufb02ow \ufb00 of\ufb03ce \u0133 \u01c4",
    "\uff21\uff22\uff23 \uff11\uff12\uff13 \u3000wide\u3000space \uff8a\uff9d\uff76\uff78",
    "windows\r\nline\rbreaks\u2028and\u2029more\x85",
    "bell\x07 null\x00 esc\x1b[31mred\x1b[0m \ufeffbom \u200bzwsp \u200dzwj \ufffctag",
    "c1 \x80 \x91quote\x92 \x9d",
    "  lots   of\t\twhitespace \u00a0nbsp\u2009thin  ",
    "Cafe\u0301 NFD e\u0301",
    "\u00c9COLE UPPER \u0130stanbul \u03a3\u039f\u03a3",
    "emoji \U0001F600\U0001F3F4\U000E0067\U000E0062\U000E0077\U000E006C\U000E0073\U000E007F flag",
    "\u65e5\u672c\u8a9e\u306e\u30ad\u30e3\u30d7\u30b7\u30e7\u30f3",
    "&lt;i&gt;escaped tags&lt;/i&gt;",
    "it&#8217;s &rsquo;quoted&rsquo; &ldquo;too&rdquo;",
    "",
    "   ",
    "\x1c\x1d\x1e\x1f separators",
]

CAPTIONS = [
    "a photo of a cat",
    "A PHOTO OF A DOG!!",
    "Don\u2019t stop \u2014 it\u2019s the \u201cbest\u201d caf\u00e9",
    "fish &amp; chips &amp;amp; peas &lt;3",
    "\ufb01sh \uff26\uff29\uff33\uff28 \u00a0 spaced\n\nout",
    "<b>html</b> &quot;kept&quot;",
    "",
    " ".join(["a long caption about a red boat on a river at sunset"] * 12),
    "caf\u00e9 cafe\u0301 na\u00efve \u65e5\u672c\u8a9e",
]


# Real checkpoints: (Hub repo, open_clip model name, pretrained tag).
REAL = [
    ("laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "ViT-B-32", "laion2b_s34b_b79k"),
    ("laion/CLIP-ViT-B-16-DataComp.XL-s13B-b90K", "ViT-B-16", "datacomp_xl_s13b_b90k"),
    ("laion/CLIP-ViT-L-14-DataComp.XL-s13B-b90K", "ViT-L-14", "datacomp_xl_s13b_b90k"),
    ("laion/CLIP-ViT-H-14-laion2B-s32B-b79K", "ViT-H-14", "laion2b_s32b_b79k"),
    ("apple/DFN5B-CLIP-ViT-H-14", "ViT-H-14-quickgelu", "dfn5b"),
    ("timm/vit_huge_patch14_clip_224.metaclip_2pt5b", "ViT-H-14-quickgelu", "metaclip_fullcc"),
]


def real_configs(root, gold):
    """open_clip_config.json as `push_to_hf_hub` writes it, and the built model's shapes."""
    out = {}
    for repo, name, tag in REAL:
        model_cfg = open_clip.get_model_config(name)
        pre = open_clip.pretrained.get_pretrained_cfg(name, tag)
        assert pre["hf_hub"].rstrip("/") == repo, (pre["hf_hub"], repo)
        cfg = {
            "model_cfg": model_cfg,
            "preprocess_cfg": {k: list(pre[k]) if isinstance(pre[k], tuple) else pre[k]
                               for k in ("mean", "std", "interpolation", "resize_mode")},
        }
        d = root / "models" / "openclip-configs" / repo.split("/")[1]
        write_json(d / "open_clip_config.json", cfg)
        with torch.device("meta"):
            model = open_clip.model.CLIP(**model_cfg)
        shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
        out[repo] = {
            "dir": str(d.relative_to(root)),
            "model": name,
            "pretrained": tag,
            "parameters": sum(int(np.prod(v)) for v in shapes.values()),
            "shapes": shapes,
        }
    write_json(gold / "real_configs.json", out)


def write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=True) + "\n")


def build(name, cfg, seed):
    torch.manual_seed(seed)
    model = open_clip.model.CLIP(**cfg["model_cfg"])
    # open_clip's init leaves layer norms at 1/0 and biases at 0: perturb them, and make the
    # patch and attention weights larger so the picture dominates the pooled row.
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n == "logit_scale":
                continue
            if ("ln" in n) and n.endswith("weight"):
                p.add_(0.1 * torch.randn(p.shape, generator=g))
            elif n.endswith("bias"):
                p.add_(0.02 * torch.randn(p.shape, generator=g))
            elif "conv1" in n or "in_proj_weight" in n:
                p.mul_(4.0)
            elif "positional_embedding" in n or n.endswith("class_embedding"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
        model.logit_scale.fill_(4.0)
    # Weights stored in f16 (the tiny file); the reference computes in f32 on those values.
    return {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=str(Path(__file__).resolve().parent.parent))
    args = ap.parse_args()
    root = Path(args.root)
    gold = root / "tests" / "fixtures" / "golden" / "openclip"
    img_dir = root / "tests" / "fixtures" / "images"
    gold.mkdir(parents=True, exist_ok=True)
    images = sorted(p.name for p in img_dir.iterdir() if p.is_file())
    summary = {}

    for i, (name, cfg) in enumerate(MODELS.items()):
        d = root / "models" / name
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        sd = build(name, cfg, 1000 + i)
        if name == "tiny-openclip":
            save_file(sd, str(d / "open_clip_model.safetensors"))
        else:
            torch.save(sd, d / "open_clip_pytorch_model.bin")
        write_json(d / "open_clip_config.json", cfg)
        shutil.copy(root / "models" / "tiny-clip" / "tokenizer.json", d / "tokenizer.json")
        (d / "README.md").write_text(
            f"# {name}\n\nA tiny seeded open_clip `CLIP` ViT in open_clip's Hub layout, made by "
            f"`scripts/make_reference_openclip.py` with open_clip_torch {open_clip.__version__}.\n"
            "Random weights: it exists so sieve's OpenCLIP path can be checked against open_clip offline.\n"
            "`tokenizer.json` is the CLIP BPE (the same file as `models/tiny-clip/tokenizer.json`).\n"
        )
        for f in d.iterdir():
            os.chmod(f, 0o644)

        model, preprocess = open_clip.create_model_from_pretrained(f"local-dir:{d}")
        model = model.float().eval()
        tok = open_clip.get_tokenizer(f"local-dir:{d}")
        assert isinstance(tok, open_clip.tokenizer.SimpleTokenizer), type(tok)
        pixels = []
        for f in images:
            with Image.open(img_dir / f) as im:
                pv = preprocess(im).numpy().astype(np.float32)
            np.save(gold / f"{name}_pixels_{Path(f).stem}.npy", pv)
            pixels.append(pv)
        batch = torch.from_numpy(np.stack(pixels))
        ids = tok(CAPTIONS)
        with torch.inference_mode():
            img = model.encode_image(batch).numpy().astype(np.float32)
            single = np.concatenate([model.encode_image(batch[j : j + 1]).numpy() for j in range(len(images))])
            txt = model.encode_text(ids).numpy().astype(np.float32)
        np.save(gold / f"{name}_image_embeds.npy", img)
        np.save(gold / f"{name}_image_embeds_single.npy", single.astype(np.float32))
        np.save(gold / f"{name}_text_embeds.npy", txt)
        summary[name] = {
            "logit_scale": float(model.logit_scale.item()),
            "batched_vs_single_max_abs": float(np.abs(img - single).max()),
        }
        if name == "tiny-openclip":
            write_json(gold / "tokens.json", {"captions": CAPTIONS, "ids": ids.tolist()})

    real_configs(root, gold)
    squash = open_clip.transform.image_transform_v2(open_clip.transform.PreprocessCfg(**SQUASH), is_train=False)
    for f in images:
        with Image.open(img_dir / f) as im:
            np.save(gold / f"squash_pixels_{Path(f).stem}.npy", squash(im).numpy().astype(np.float32))

    cases = [
        {"input": s, "fix_text": ftfy.fix_text(s), "clean": whitespace_clean(basic_clean(s)).lower()} for s in CLEANUP
    ]
    write_json(gold / "ftfy.json", cases)
    write_json(
        gold / "manifest.json",
        {
            "images": images,
            "models": summary,
            "squash": SQUASH,
            "embeddings": "model.encode_image / encode_text (not normalised), f32 on the f16-stored weights",
            "pixels": "the preprocess create_model_from_pretrained('local-dir:...') returns, on Image.open(file)",
            "tokens": "open_clip.get_tokenizer('local-dir:models/tiny-openclip') (SimpleTokenizer, clean 'lower')",
            "versions": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "open_clip": open_clip.__version__,
                "ftfy": ftfy.__version__,
                "PIL": PIL.__version__,
                "numpy": np.__version__,
            },
        },
    )
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    sys.exit(main())
