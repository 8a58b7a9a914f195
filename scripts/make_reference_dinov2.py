#!/usr/bin/env python3
"""DINOv2 reference data for sieve, generated with Hugging Face transformers.

Writes (relative to --root):
  models/tiny-dinov2/              tiny seeded Dinov2Model (f32 safetensors), config.json and a
                                   BitImageProcessor preprocessor_config.json; its config's
                                   image_size (98, a 7x7 patch grid) differs from the crop (56, 4x4)
                                   so the position embeddings are interpolated as transformers does
  tests/fixtures/golden/dinov2/    pixels_<stem>.npy (BitImageProcessorPil, the PIL backend),
                                   image_embeds.npy (pooler_output, not normalised, batch of all
                                   fixture images), image_embeds_single.npy (one image at a time),
                                   manifest.json

Inputs are the committed fixture pictures tests/fixtures/images (made by make_reference.py).
Run with the venv scripts/make_reference.sh creates:
  /tmp/sieve-ref-venv/bin/python scripts/make_reference_dinov2.py
Everything is seeded; running it twice gives the same output.
"""

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np
import PIL
import torch
import transformers
from PIL import Image
from safetensors.torch import save_file
from transformers import BitImageProcessorPil, Dinov2Config, Dinov2Model

PREPROCESSOR = {
    "crop_size": {"height": 56, "width": 56},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_processor_type": "BitImageProcessor",
    "image_std": [0.229, 0.224, 0.225],
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 64},
}


def write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def make_model():
    config = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        mlp_ratio=4,
        hidden_act="gelu",
        layer_norm_eps=1e-6,
        image_size=98,
        patch_size=14,
        num_channels=3,
        qkv_bias=True,
        layerscale_value=1.0,
        use_swiglu_ffn=False,
    )
    config.architectures = ["Dinov2Model"]
    torch.manual_seed(42)
    model = Dinov2Model(config)
    # HF init sets layer norms to 1/0, biases to 0 and layer scales to layerscale_value: perturb
    # them so the Rust side's handling of each tensor is exercised.
    g = torch.Generator().manual_seed(4242)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_scale" in name:
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
            elif "norm" in name and name.endswith("weight"):
                p.add_(0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.add_(0.02 * torch.randn(p.shape, generator=g))
            elif "position_embeddings" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "projection.weight" in name or "q_proj" in name or "k_proj" in name:
                # Larger patch and attention weights, so the picture (not the class token's
                # constant start) dominates the pooled output and the images differ clearly.
                p.mul_(8.0)
    model.eval()
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=str(Path(__file__).resolve().parent.parent))
    args = ap.parse_args()
    root = Path(args.root)
    model_dir = root / "models" / "tiny-dinov2"
    gold_dir = root / "tests" / "fixtures" / "golden" / "dinov2"
    img_dir = root / "tests" / "fixtures" / "images"
    model_dir.mkdir(parents=True, exist_ok=True)
    gold_dir.mkdir(parents=True, exist_ok=True)

    model = make_model()
    # Saved under the tensor names the Hub's checkpoints use (facebook/dinov2-*: transformers 4's
    # `attention.attention.query` ... `attention.output.dense`); transformers 5 renames them at
    # load, and the reload below checks that it reads them back unchanged.
    hub_names = {
        "attention.q_proj": "attention.attention.query",
        "attention.k_proj": "attention.attention.key",
        "attention.v_proj": "attention.attention.value",
        "attention.o_proj": "attention.output.dense",
    }

    def hub_name(k):
        for new, old in hub_names.items():
            k = k.replace(new, old)
        return k

    sd = {hub_name(k): v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(model_dir / "model.safetensors"), metadata={"format": "pt"})
    os.chmod(model_dir / "model.safetensors", 0o644)
    model.config.save_pretrained(str(model_dir))
    write_json(model_dir / "preprocessor_config.json", PREPROCESSOR)
    (model_dir / "README.md").write_text(
        "# tiny-dinov2\n\nA tiny seeded `Dinov2Model` (hidden 32, 2 layers, 4 heads, patch 14, config image_size 98)\n"
        "with random weights, made by `scripts/make_reference_dinov2.py` with transformers "
        f"{transformers.__version__}. Its crop (56 px, a 4x4 grid) differs from the config's 7x7 grid, so the\n"
        "position embeddings are interpolated exactly as for the real checkpoints (518 px configs, 224 px crops).\n"
        "Not a useful model: it exists so sieve's DINOv2 path can be checked against transformers offline.\n"
    )

    reloaded = Dinov2Model.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    for (k, a), (k2, b) in zip(sorted(model.state_dict().items()), sorted(reloaded.state_dict().items())):
        assert k == k2 and torch.equal(a, b), k
    # The PIL backend: Pillow's resampling, which sieve ports bit for bit. (transformers 5's
    # default `BitImageProcessor` is the torchvision backend, whose bicubic resize differs from
    # Pillow's by a level here and there.)
    processor = BitImageProcessorPil.from_pretrained(str(model_dir))

    names = sorted(p.name for p in img_dir.iterdir() if p.is_file())
    pixels = []
    for name in names:
        with Image.open(img_dir / name) as im:
            pv = processor(images=im, return_tensors="pt")["pixel_values"]
        pv = pv.detach().cpu().numpy().astype(np.float32)
        assert pv.shape == (1, 3, 56, 56), pv.shape
        np.save(gold_dir / f"pixels_{Path(name).stem}.npy", pv[0])
        pixels.append(pv[0])
    batch = torch.from_numpy(np.stack(pixels))
    with torch.inference_mode():
        out = reloaded(pixel_values=batch)
        pooled = out.pooler_output.numpy().astype(np.float32)
        cls = out.last_hidden_state[:, 0].numpy()
        single = np.concatenate([reloaded(pixel_values=batch[i : i + 1]).pooler_output.numpy() for i in range(len(names))])
    assert np.allclose(pooled, cls, atol=0), "pooler_output is the normed CLS token"
    np.save(gold_dir / "image_embeds.npy", pooled)
    np.save(gold_dir / "image_embeds_single.npy", single.astype(np.float32))
    write_json(
        gold_dir / "manifest.json",
        {
            "images": names,
            "embedding": "Dinov2Model(...).pooler_output (layernorm of the CLS token), not normalised",
            "pixels": "BitImageProcessorPil (the PIL backend) of models/tiny-dinov2",
            "versions": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "PIL": PIL.__version__,
                "numpy": np.__version__,
            },
        },
    )
    diff = float(np.abs(pooled - single).max())
    print(f"{len(names)} images; batched vs single max |diff| {diff:.2e}; norms", np.linalg.norm(pooled, axis=1).round(3))


if __name__ == "__main__":
    sys.exit(main())
