#!/usr/bin/env python3
# Copied from the shared CUDA notes (../shared/cuda/torch_clip_bench.py) so GPU machines, which get
# only this repository, can run it from scripts/gpu_check.sh.
"""PyTorch reference timing for CLIP ViT-B/32 towers (random init, fp16, cuda, sdpa).

Usage: python3 torch_clip_bench.py [batch=256] [iters=10]

Uses transformers' CLIPModel with a CLIPConfig matching openai/clip-vit-base-patch32
(vision 768/12 layers/12 heads/patch 32/image 224, text 512/12 layers/8 heads/
vocab 49408/max pos 77, projection 512), attn_implementation="sdpa".
If transformers cannot be imported, falls back to a small self-contained torch
re-implementation of the same architecture (also using SDPA) and says so.

Prints:
  torch image_tower imgs_per_s=...
  torch text_tower caps_per_s=...
"""
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

BATCH = int(sys.argv[1]) if len(sys.argv) > 1 else 256
ITERS = int(sys.argv[2]) if len(sys.argv) > 2 else 10
WARMUP = 2
SEQ = 77
VOCAB = 49408
DEV = "cuda"
DTYPE = torch.float16


def as_tensor(out):
    """get_*_features returns a tensor in transformers 4.x; be tolerant of output objects."""
    if isinstance(out, torch.Tensor):
        return out
    for attr in ("pooler_output", "image_embeds", "text_embeds"):
        v = getattr(out, attr, None)
        if isinstance(v, torch.Tensor):
            return v
    return out[0]


def build_hf():
    import transformers
    from transformers import CLIPConfig, CLIPModel

    text_config = dict(
        vocab_size=VOCAB,
        hidden_size=512,
        intermediate_size=2048,
        num_hidden_layers=12,
        num_attention_heads=8,
        max_position_embeddings=SEQ,
        hidden_act="quick_gelu",
        projection_dim=512,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=1,
    )
    vision_config = dict(
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        num_channels=3,
        image_size=224,
        patch_size=32,
        hidden_act="quick_gelu",
        projection_dim=512,
    )
    config = CLIPConfig(text_config=text_config, vision_config=vision_config, projection_dim=512)
    model = None
    for kw in ({"attn_implementation": "sdpa", "dtype": DTYPE},
               {"attn_implementation": "sdpa", "torch_dtype": DTYPE},
               {"attn_implementation": "sdpa"}):
        try:
            model = CLIPModel._from_config(config, **kw)
            break
        except TypeError:
            continue
    if model is None:
        config._attn_implementation = "sdpa"
        model = CLIPModel(config)
    model = model.to(device=DEV, dtype=DTYPE).eval()
    attn = getattr(model.config, "_attn_implementation", "?")
    desc = f"transformers {transformers.__version__} CLIPModel attn_implementation={attn}"
    return model.get_image_features, model.get_text_features, model, desc


# ---- fallback: self-contained CLIP towers (same shapes/ops as HF CLIP, SDPA attention) ----
class Layer(nn.Module):
    def __init__(self, d, heads, mlp):
        super().__init__()
        self.h = heads
        self.ln1 = nn.LayerNorm(d, eps=1e-5)
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)
        self.v = nn.Linear(d, d)
        self.o = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d, eps=1e-5)
        self.fc1 = nn.Linear(d, mlp)
        self.fc2 = nn.Linear(mlp, d)

    def forward(self, x, causal):
        b, s, d = x.shape
        y = self.ln1(x)
        q, k, v = (t(y).view(b, s, self.h, d // self.h).transpose(1, 2) for t in (self.q, self.k, self.v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        x = x + self.o(a.transpose(1, 2).reshape(b, s, d))
        y = self.fc1(self.ln2(x))
        y = y * torch.sigmoid(1.702 * y)
        return x + self.fc2(y)


class Vision(nn.Module):
    def __init__(self, d=768, layers=12, heads=12, mlp=3072, patch=32, img=224, proj=512):
        super().__init__()
        self.patch = nn.Conv2d(3, d, patch, patch, bias=False)
        self.cls = nn.Parameter(torch.randn(d))
        self.pos = nn.Embedding((img // patch) ** 2 + 1, d)
        self.pre = nn.LayerNorm(d, eps=1e-5)
        self.layers = nn.ModuleList(Layer(d, heads, mlp) for _ in range(layers))
        self.post = nn.LayerNorm(d, eps=1e-5)
        self.proj = nn.Linear(d, proj, bias=False)

    def forward(self, px):
        x = self.patch(px).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], 1, -1), x], 1) + self.pos.weight
        x = self.pre(x)
        for l in self.layers:
            x = l(x, False)
        return self.proj(self.post(x[:, 0]))


class Text(nn.Module):
    def __init__(self, d=512, layers=12, heads=8, mlp=2048, vocab=VOCAB, seq=SEQ, proj=512):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(seq, d)
        self.layers = nn.ModuleList(Layer(d, heads, mlp) for _ in range(layers))
        self.final = nn.LayerNorm(d, eps=1e-5)
        self.proj = nn.Linear(d, proj, bias=False)

    def forward(self, ids):
        x = self.tok(ids) + self.pos.weight[: ids.shape[1]]
        for l in self.layers:
            x = l(x, True)
        x = self.final(x)
        x = x[torch.arange(x.shape[0], device=x.device), ids.argmax(-1)]
        return self.proj(x)


def build_fallback(err):
    v = Vision().to(device=DEV, dtype=DTYPE).eval()
    t = Text().to(device=DEV, dtype=DTYPE).eval()
    return v, t, None, f"FALLBACK pure-torch CLIP (transformers unavailable: {err!r}), SDPA"


def bench(name, unit, fn, x):
    with torch.inference_mode():
        for _ in range(WARMUP):
            as_tensor(fn(x))
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(ITERS):
            out = as_tensor(fn(x))
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
    rate = BATCH * ITERS / dt
    print(f"torch {name} batch={BATCH} iters={ITERS} out={tuple(out.shape)} "
          f"total_s={dt:.4f} ms_per_iter={dt * 1e3 / ITERS:.3f} {unit}={rate:.1f}", flush=True)
    return rate


def main():
    assert torch.cuda.is_available(), "CUDA not available to torch"
    print(f"torch {torch.__version__} cuda {torch.version.cuda} device={torch.cuda.get_device_name(0)}")
    torch.manual_seed(0)
    try:
        img_fn, txt_fn, _model, desc = build_hf()
    except ImportError as e:
        img_fn, txt_fn, _model, desc = build_fallback(e)
    print(f"model: {desc} dtype={DTYPE}")
    g = torch.Generator(device=DEV).manual_seed(0)
    images = torch.randn(BATCH, 3, 224, 224, device=DEV, dtype=DTYPE, generator=g)
    ids = torch.randint(0, VOCAB, (BATCH, SEQ), device=DEV, generator=g)
    bench("image_tower", "imgs_per_s", img_fn, images)
    bench("text_tower", "caps_per_s", txt_fn, ids)


if __name__ == "__main__":
    main()
