#!/usr/bin/env python3
"""Independent NumPy reference for `sieve diversity`'s metrics.

Writes tests/fixtures/diversity/: a few seeded embedding sets (`<name>.npy`, float32 rows,
L2-normalised), cluster labels for each (`<name>_labels.npy`, uint32) and `expected.json` with,
per set, computed the direct way (not through sieve's d×d dual):

- Vendi scores of orders 1, 2 and inf from the eigenvalues of the n×n kernel K = X Xᵀ / n;
- effective rank from the singular values of X (numpy.linalg.svd);
- nearest-neighbour cosine of every row (brute force, self excluded): mean and percentiles
  (numpy.percentile, linear interpolation);
- cluster entropy (nats), normalised entropy and coverage (share of the k clusters holding at
  least max(1, min_share * n / k) rows) of the labels.

Usage: python scripts/make_diversity_reference.py   (needs only numpy; any venv, e.g. the one
scripts/make_reference.sh makes). Deterministic: rerunning gives the same files.
"""
import json
import pathlib

import numpy as np

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "diversity"
PERCENTILES = [1, 5, 10, 25, 50, 75, 90, 95, 99]
MIN_SHARE = 0.1


def unit(x):
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(n == 0, 1, n)


def sets(rng):
    # Isotropic Gaussian directions: high diversity.
    yield "gaussian", unit(rng.standard_normal((300, 16))), 8
    # Five tight clusters of unequal size: low diversity.
    centres = unit(rng.standard_normal((5, 24)))
    sizes = [120, 60, 30, 15, 5]
    rows = np.concatenate([centres[i] + 0.15 * rng.standard_normal((s, 24)) for i, s in enumerate(sizes)])
    yield "clusters", unit(rows), 5
    # Rank-3 data in 12 dimensions with a little noise.
    basis = np.linalg.qr(rng.standard_normal((12, 3)))[0].T
    rows = rng.standard_normal((150, 3)) @ basis + 0.01 * rng.standard_normal((150, 12))
    yield "low_rank", unit(rows), 4


def entropy(p):
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20261126)
    expected = {"numpy": np.__version__, "min_share": MIN_SHARE, "sets": {}}
    for name, x, k in sets(rng):
        x = x.astype(np.float32)
        n = x.shape[0]
        xd = x.astype(np.float64)
        lam = np.clip(np.linalg.eigvalsh(xd @ xd.T / n), 0, None)
        lam = lam / lam.sum()
        sv = np.linalg.svd(xd, compute_uv=False)
        sims = xd @ xd.T
        np.fill_diagonal(sims, -np.inf)
        nn = sims.max(axis=1)
        labels = rng.integers(0, k, size=n).astype(np.uint32)
        # Make the last cluster small so coverage is below 1.
        labels[labels == k - 1] = rng.integers(0, k - 1, size=int((labels == k - 1).sum())).astype(np.uint32)
        labels[:1] = k - 1
        counts = np.bincount(labels, minlength=k)
        need = max(1.0, MIN_SHARE * n / k)
        h = entropy(counts / n)
        expected["sets"][name] = {
            "rows": n,
            "dim": int(x.shape[1]),
            "clusters": k,
            "vendi_q1": float(np.exp(entropy(lam))),
            "vendi_q2": float(1.0 / (lam**2).sum()),
            "vendi_inf": float(1.0 / lam.max()),
            "effective_rank": float(np.exp(entropy(sv / sv.sum()))),
            "nn_mean": float(nn.mean()),
            "nn_percentiles": {f"p{p}": float(np.percentile(nn, p)) for p in PERCENTILES},
            "cluster_entropy": h,
            "cluster_entropy_normalised": h / np.log(k),
            "coverage": float((counts >= need).sum() / k),
        }
        np.save(OUT / f"{name}.npy", x)
        np.save(OUT / f"{name}_labels.npy", labels)
    (OUT / "expected.json").write_text(json.dumps(expected, indent=2, sort_keys=True) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
