#!/usr/bin/env python3
"""CPU throughput of transformers' CLIPModel vs sieve, on this machine, in one run.

Usage:
  python scripts/bench_vs_torch.py [--sieve target/release/sieve] [--batch 32] [--iters 5] [--repeat 3] [--threads N]
                                   [--quantize int8|bf16] [--isa avx2]

With --quantize int8 (or bf16) every round also runs `sieve bench --quantize int8 --parity`, and
its rates are compared with torch's f32 ones (a third column), with the lowest cosine to f32
printed.

Both sides use the ViT-B/32 shape from models/clip-vit-base-patch32/config.json with random
weights in float32: images are [B,3,224,224], captions are [B,77] token ids (full-length
padding, which is what sieve's `bench` subcommand uses too). Embeddings are the projected
features (get_image_features / get_text_features), not normalised.

With --isa avx2 both sides run their AVX2 kernels on an AVX-512 CPU, which is how an AVX2-only
server (an EPYC before Zen 4) compares: sieve through SIEVE_CPU_KERNEL=avx2, torch through
MKL_ENABLE_INSTRUCTIONS=AVX2 (its BLAS), ATEN_CPU_CAPABILITY=avx2 (its own kernels) and
DNNL_MAX_CPU_ISA=AVX2 (oneDNN), set before torch is imported; torch's reported capability is
printed. candle's own matmuls in sieve (the patch embedding, about 1% of the time) still pick
AVX-512.

Needs torch + transformers (e.g. the venv made by scripts/make_reference.sh:
/tmp/sieve-ref-venv/bin/python scripts/bench_vs_torch.py).
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEQ_LEN = 77


def setup_torch(config_path, batch, iters, threads):
    """Builds the model once; returns a function that times one round."""
    import torch
    import transformers
    from transformers import CLIPConfig, CLIPModel

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = CLIPConfig.from_pretrained(str(config_path))
    try:
        model = CLIPModel._from_config(config, attn_implementation="sdpa", dtype=torch.float32)
    except TypeError:  # older transformers spell it torch_dtype
        model = CLIPModel._from_config(config, attn_implementation="sdpa", torch_dtype=torch.float32)
    model = model.float().eval()

    image_size = config.vision_config.image_size
    pixels = torch.randn(batch, 3, image_size, image_size, generator=torch.Generator().manual_seed(1))
    ids = torch.randint(1, 49405, (batch, SEQ_LEN), generator=torch.Generator().manual_seed(2))
    ids[:, 0] = 49406  # <|startoftext|>
    ids[:, -1] = 49407  # <|endoftext|>: pooled position (argmax) is the last one
    mask = torch.ones_like(ids)

    def run(fn):
        with torch.inference_mode():
            fn()  # warm-up
            t0 = time.perf_counter()
            for _ in range(iters):
                out = fn()
            dt = time.perf_counter() - t0
        return out, dt

    def round_():
        img_out, img_dt = run(lambda: model.get_image_features(pixel_values=pixels))
        txt_out, txt_dt = run(lambda: model.get_text_features(input_ids=ids, attention_mask=mask))
        return {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "attn_implementation": getattr(model.config, "_attn_implementation", "?"),
            "image_features_type": type(img_out).__name__,
            "text_features_type": type(txt_out).__name__,
            "images_per_s": batch * iters / img_dt,
            "captions_per_s": batch * iters / txt_dt,
        }

    return round_


def bench_sieve(sieve, config_path, batch, iters, threads, quantize=None):
    exe = Path(sieve)
    if not exe.is_file() or not os.access(exe, os.X_OK):
        return None, f"sieve binary not found at {exe} (build it with `cargo build --release`); showing torch numbers only"
    cmd = [str(exe), "--quiet", "bench", "--config", str(config_path), "--batch-size", str(batch), "--iters", str(iters), "--json"]
    if quantize:
        cmd += ["--quantize", quantize, "--parity"]
    env = dict(os.environ)
    if threads:
        env.setdefault("RAYON_NUM_THREADS", str(threads))
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"running sieve failed: {e}"
    if p.returncode != 0:
        return None, f"sieve exited with status {p.returncode}: {' '.join(cmd)}\n{p.stderr.strip()[-2000:]}"
    for line in reversed(p.stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "images_per_s" in obj and "captions_per_s" in obj:
                return obj, None
    return None, f"could not find a JSON object with images_per_s/captions_per_s in sieve's stdout:\n{p.stdout.strip()[-2000:]}"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or ""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sieve", default=str(ROOT / "target" / "release" / "sieve"), help="path to the sieve binary")
    ap.add_argument("--config", default=str(ROOT / "models" / "clip-vit-base-patch32" / "config.json"))
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (and RAYON_NUM_THREADS for sieve)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds, torch and sieve alternating; medians are compared")
    ap.add_argument("--quantize", choices=["int8", "bf16"], default=None, help="also measure sieve with --quantize int8 or bf16")
    ap.add_argument("--isa", choices=["auto", "avx2"], default="auto", help="avx2: both sides on their AVX2 kernels (see above)")
    args = ap.parse_args()
    if args.isa == "avx2":
        # Before torch is imported (setup_torch imports it); sieve inherits the environment.
        os.environ.update(
            SIEVE_CPU_KERNEL="avx2",
            MKL_ENABLE_INSTRUCTIONS="AVX2",
            ATEN_CPU_CAPABILITY="avx2",
            DNNL_MAX_CPU_ISA="AVX2",
            ONEDNN_MAX_CPU_ISA="AVX2",
        )

    config_path = Path(args.config)
    if not config_path.is_file():
        sys.exit(f"config not found: {config_path} (run scripts/make_reference.sh)")

    print(f"machine: {platform.machine()} {cpu_model()} cpus={os.cpu_count()}  python {platform.python_version()}")
    print(f"model: ViT-B/32 shape from {config_path.relative_to(ROOT) if config_path.is_relative_to(ROOT) else config_path}, random f32 weights")
    print(f"batch={args.batch} iters={args.iters} (+1 warm-up); captions: both sides use sequence length {SEQ_LEN}")
    print(f"rounds: {args.repeat}, torch and sieve alternating so both see the same machine load; medians compared")
    torch_round = setup_torch(config_path, args.batch, args.iters, args.threads)
    torch_runs, sieve_runs, quant_runs, err = [], [], [], None
    for r in range(args.repeat):
        print(f"round {r + 1}: torch ...", end=" ", flush=True)
        torch_runs.append(torch_round())
        print("sieve ...", flush=True)
        s1, err = bench_sieve(args.sieve, config_path, args.batch, args.iters, args.threads)
        if err:
            print(f"NOTE: {err}")
            break
        sieve_runs.append(s1)
        if args.quantize:
            print(f"round {r + 1}: sieve --quantize {args.quantize} ...", flush=True)
            q1, err = bench_sieve(args.sieve, config_path, args.batch, args.iters, args.threads, args.quantize)
            if err:
                print(f"NOTE: {err}")
                break
            quant_runs.append(q1)
    t = dict(torch_runs[-1])
    print(
        f"torch {t['torch']}, transformers {t['transformers']}, torch threads {t['threads']}, "
        f"capability {t['cpu_capability']}, MKL_ENABLE_INSTRUCTIONS={os.environ.get('MKL_ENABLE_INSTRUCTIONS', 'unset')}, "
        f"attn {t['attn_implementation']}, "
        f"get_image_features -> {t['image_features_type']}, get_text_features -> {t['text_features_type']}"
    )
    s = dict(sieve_runs[-1]) if sieve_runs else None
    q = dict(quant_runs[-1]) if quant_runs else None
    for key in ("images_per_s", "captions_per_s"):
        tv = [x[key] for x in torch_runs]
        t[key] = statistics.median(tv)
        print(f"torch {key} per round: " + ", ".join(f"{v:.2f}" for v in tv))
        if s:
            sv = [x[key] for x in sieve_runs]
            s[key] = statistics.median(sv)
            print(f"sieve {key} per round: " + ", ".join(f"{v:.2f}" for v in sv))
        if q:
            qv = [x[key] for x in quant_runs]
            q[key] = statistics.median(qv)
            print(f"sieve {args.quantize} {key} per round: " + ", ".join(f"{v:.2f}" for v in qv))

    def fmt(v):
        return f"{v:10.1f}" if isinstance(v, (int, float)) else f"{'n/a':>10}"

    print()
    def ratio(v, tv):
        return f"{v / tv:12.2f}x" if isinstance(v, (int, float)) and tv > 0 else f"{'n/a':>13}"

    qname = f"sieve {args.quantize}" if q else ""
    head = f"{'':14}{'torch':>10}{'sieve':>10}{'sieve/torch':>13}"
    if q:
        head += f"{qname:>12}{qname + '/torch':>18}"
    print(head)
    for key, label in (("images_per_s", "images/s"), ("captions_per_s", "captions/s")):
        tv = t[key]
        sv = s.get(key) if s else None
        line = f"{label:14}{fmt(tv)}{fmt(sv)}{ratio(sv, tv)}"
        if q:
            line += f"{fmt(q[key]):>12}{ratio(q[key], tv):>18}"
        print(line)
    print(f"(medians of {len(torch_runs)} rounds) torch threads: {t['threads']}" + (f"; sieve: {json.dumps(s)}" if s else ""))
    if q:
        p = q.get("parity") or {}
        print(
            f"sieve {args.quantize}: lowest cosine to sieve f32 over {p.get('items')} random inputs: "
            f"images {p.get('min_cosine_images')}, captions {p.get('min_cosine_captions')}; "
            f"kernel {q.get('cpu_kernel')}"
        )


if __name__ == "__main__":
    main()
