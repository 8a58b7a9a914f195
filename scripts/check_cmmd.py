#!/usr/bin/env python3
"""Independent NumPy reference for `sieve compare`'s CMMD (src/compare/cmmd.rs).

Writes tests/fixtures/cmmd/expected.json: a few seeded pairs of embedding sets (float32 rows,
L2-normalised, stored inline) and, per pair, computed in float64 the direct way, as
google-research/cmmd's distance.py does (full kernel matrices from squared norms, sigma = 10,
scale = 1000):

- `biased`: the paper code's estimate, mean(k_xx) + mean(k_yy) - 2 mean(k_xy), diagonals included;
- `unbiased`: the U-statistic (Gretton et al. 2012, Lemma 6), the diagonals of k_xx and k_yy
  dropped from their means.

Usage: /tmp/sieve-ref-venv/bin/python scripts/check_cmmd.py   (needs only numpy).
Deterministic: rerunning gives the same file. tests/compare.rs checks sieve against it.
"""
import json
import pathlib

import numpy as np

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "cmmd"
SIGMA = 10.0
SCALE = 1000.0


def unit32(x):
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def kernel(x, y):
    x, y = x.astype(np.float64), y.astype(np.float64)
    x, y = x / np.linalg.norm(x, axis=1, keepdims=True), y / np.linalg.norm(y, axis=1, keepdims=True)
    xs, ys = (x * x).sum(1), (y * y).sum(1)
    gamma = 1.0 / (2.0 * SIGMA**2)
    return np.exp(-gamma * (-2.0 * x @ y.T + xs[:, None] + ys[None, :]))


def cmmd(x, y):
    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    m, n = len(x), len(y)
    biased = kxx.mean() + kyy.mean() - 2.0 * kxy.mean()
    unbiased = (
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
        + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
        - 2.0 * kxy.mean()
    )
    return SCALE * unbiased, SCALE * biased


def cases(rng):
    # A shifted distribution: a mean offset along a few directions.
    shift = np.zeros(16)
    shift[:3] = 0.8
    yield "shifted", unit32(rng.standard_normal((50, 16))), unit32(rng.standard_normal((40, 16)) + shift)
    # Two samples of one distribution.
    yield "same_distribution", unit32(rng.standard_normal((60, 32))), unit32(rng.standard_normal((45, 32)))
    # CLIP-like: rows sharing a common direction (cosines around 0.5), a small offset between sets.
    common = rng.standard_normal(64)
    x = unit32(common + 0.9 * rng.standard_normal((30, 64)) * np.linalg.norm(common) / 8)
    y = unit32(common + 0.9 * rng.standard_normal((35, 64)) * np.linalg.norm(common) / 8 + 0.3)
    yield "clip_like", x, y


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20240101)
    out = {"sigma": SIGMA, "scale": SCALE, "cases": []}
    for name, x, y in cases(rng):
        unbiased, biased = cmmd(x, y)
        out["cases"].append(
            {
                "name": name,
                "x": [[float(v) for v in row] for row in x],
                "y": [[float(v) for v in row] for row in y],
                "unbiased": float(unbiased),
                "biased": float(biased),
            }
        )
        print(f"{name}: {len(x)}x{x.shape[1]} vs {len(y)}: unbiased {unbiased:.6f}, biased {biased:.6f}")
    (OUT / "expected.json").write_text(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
