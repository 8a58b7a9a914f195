#!/usr/bin/env python3
"""Near-duplicate search at scale: `sieve dedup` vs faiss-cpu, on this machine, in one run.

Usage:
  python scripts/bench_vs_faiss.py [--n 1000000] [--dim 512] [--threshold 0.95]
      [--exact-max-n 200000] [--sieve target/release/sieve] [--work /tmp/sieve-faiss]

Data: --n seeded synthetic unit vectors of --dim, the recipe of `sieve::index::synthetic`:
vectors around 64 random "topics" (cosine about 0.3 between items of a topic), where about
--dup-fraction of the items are noisy copies in planted groups of 2 to 5 (copy-copy cosine
about 0.92 to 0.998, so groups straddle the threshold). They are rounded to float16 (what a
sieve run stores) and every method searches the same values.

Methods, each in its own process (wall time of the whole process, peak RSS from GNU time):
  faiss-exact    IndexFlatIP.range_search(x, threshold)         (only when n <= --exact-max-n)
  faiss-hnsw     IndexHNSWFlat(M=32, inner product), efConstruction 40, efSearch 64, k=16,
                 hits >= threshold
  sieve-exact    sieve dedup --index exact                      (only when n <= --exact-max-n)
  sieve-hnsw     sieve dedup --index hnsw
  sieve-clusters sieve dedup --clusters n/1000                 (SemDeDup-style)
sieve runs with --kinds image --keep first --pairs and writes its pairs to RUN/dedup/.

Recall is against the exact pair set at the threshold. When faiss-exact runs, that is its
result. Beyond --exact-max-n exact search is out of reach on a small machine (N^2 d), so the
truth is every pair inside a planted group with cosine >= threshold, computed exactly; pairs
outside planted groups sit near cosine 0.3 and cannot reach 0.95 (checked against faiss-exact
whenever it runs: the script prints whether the two truths agree).

Needs numpy, pyarrow and faiss-cpu (e.g. /tmp/sieve-ref-venv/bin/pip install faiss-cpu pyarrow).
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def make_data(n, dim, dup_fraction, seed):
    """Vectors (float16-rounded float32) and the planted group of each row."""
    import numpy as np

    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((64, dim)).astype(np.float32)
    topics /= np.linalg.norm(topics, axis=1, keepdims=True)
    # Group sizes: mostly 1, about dup_fraction of the rows in groups of 2..5.
    sizes = []
    total = 0
    while total < n:
        s = int(rng.integers(2, 6)) if rng.random() < dup_fraction / 3.5 else 1
        s = min(s, n - total)
        sizes.append(s)
        total += s
    sizes = np.array(sizes)
    g = len(sizes)
    base = topics[rng.integers(0, 64, g)] + rng.standard_normal((g, dim)).astype(np.float32) * (1.5 / np.sqrt(dim))
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    group = np.repeat(np.arange(g), sizes)
    first = np.zeros(n, dtype=bool)
    first[np.concatenate([[0], np.cumsum(sizes)[:-1]])] = True
    sigma = (rng.uniform(0.05, 0.3, g) / np.sqrt(dim)).astype(np.float32)
    x = base[group].copy()
    noisy = ~first
    x[noisy] += rng.standard_normal((int(noisy.sum()), dim)).astype(np.float32) * sigma[group[noisy], None]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x16 = x.astype(np.float16)
    return x16, group


def write_run(run, x16, group):
    """A sieve run directory holding the vectors (what `sieve embed` writes)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    n, dim = x16.shape
    if run.exists():
        shutil.rmtree(run)
    for sub in ("metadata", "img_emb", "text_emb"):
        (run / sub).mkdir(parents=True)
    np.save(run / "img_emb" / "part-00000.npy", x16)
    np.save(run / "text_emb" / "part-00000.npy", np.zeros((0, dim), dtype=np.float16))
    ids = np.arange(n, dtype=np.uint64)
    table = pa.table(
        {
            "id": pa.array(ids, pa.uint64()),
            "uri": pa.array([f"synthetic/{i:08d}" for i in range(n)]),
            "caption": pa.nulls(n, pa.string()),
            "caption_lossy": pa.array(np.zeros(n, dtype=bool)),
            "caption_truncated": pa.array(np.zeros(n, dtype=bool)),
            "sha256": pa.array([f"{i:064x}" for i in range(n)]),
            "width": pa.array(np.full(n, 256, dtype=np.uint32)),
            "height": pa.array(np.full(n, 256, dtype=np.uint32)),
            "phash": pa.nulls(n, pa.uint64()),
            "status": pa.array(["embedded"] * n),
            "reason": pa.nulls(n, pa.string()),
            "error": pa.nulls(n, pa.string()),
        }
    )
    pq.write_table(table, run / "metadata" / "part-00000.parquet")
    manifest = {
        "sieve_version": "synthetic",
        "model": {"id": "synthetic", "revision": None, "source": "bench_vs_faiss.py", "weights_sha256": "synthetic", "embed_dim": dim},
        "device": "none",
        "compute_dtype": "f32",
        "storage_dtype": "float16",
        "embed_dim": dim,
        "preprocessing": {},
        "text_max_tokens": 77,
        "input": {"path": "synthetic", "format": "synthetic"},
        "limits": {"max_bytes": 0, "max_pixels": 0},
        "batch_size": 0,
        "part_size": n,
        "counts": {"records": n, "embedded": n, "skipped": 0, "with_caption": 0, "captions_truncated": 0, "captions_lossy": 0, "skipped_by_reason": {}},
        "parts": ["part-00000"],
    }
    (run / "run.json").write_text(json.dumps(manifest, indent=2))


def planted_truth(x16, group, threshold):
    """Exact pairs (a < b) at the threshold inside planted groups."""
    import numpy as np

    x = x16.astype(np.float32)
    pairs = set()
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    ends = np.r_[starts[1:], len(group)]
    for s, e in zip(starts, ends):
        if e - s < 2:
            continue
        sims = x[s:e] @ x[s:e].T
        a, b = np.nonzero(np.triu(sims >= threshold, 1))
        pairs.update(zip((a + s).tolist(), (b + s).tolist()))
    return pairs


def faiss_worker(method, npy, threshold, out):
    import faiss
    import numpy as np

    t0 = time.perf_counter()
    x = np.load(npy).astype(np.float32)
    n, d = x.shape
    t_load = time.perf_counter() - t0
    t1 = time.perf_counter()
    if method == "faiss-exact":
        index = faiss.IndexFlatIP(d)
        index.add(x)
        lims, dist, ids = index.range_search(x, threshold)
        q = np.repeat(np.arange(n), np.diff(lims).astype(np.int64))
        keep = q < ids
        a, b = q[keep], ids[keep]
    else:
        index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 40
        index.add(x)
        index.hnsw.efSearch = 64
        sims, ids = index.search(x, 16)
        q = np.repeat(np.arange(n), 16).reshape(n, 16)
        ok = (sims >= threshold) & (ids >= 0) & (ids != q)
        a = np.minimum(q[ok], ids[ok])
        b = np.maximum(q[ok], ids[ok])
    t_search = time.perf_counter() - t1
    pairs = np.unique(np.stack([a, b], axis=1), axis=0) if len(a) else np.zeros((0, 2), dtype=np.int64)
    np.save(out, pairs.astype(np.int64))
    json.dump({"load_s": t_load, "search_s": t_search}, open(str(out) + ".json", "w"))


def timed(cmd):
    """Runs cmd; returns (wall seconds, peak RSS in MiB, stderr). The peak comes from GNU time
    (a small process exec'd in between: Linux carries a forked child's high-water mark across
    exec, so wait4 straight from this big Python process would report its own size)."""
    t0 = time.perf_counter()
    rss_file = Path(f"/tmp/sieve-faiss-rss-{os.getpid()}")
    p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(rss_file), *map(str, cmd)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t0
    err = p.stderr.decode(errors="replace")
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{err}")
    return wall, int(rss_file.read_text().split()[-1]) / 1024.0, err


def sieve_pairs(run):
    import pyarrow.parquet as pq

    t = pq.read_table(run / "dedup" / "pairs.parquet", columns=["kind", "a_id", "b_id"]).to_pydict()
    return {(a, b) for k, a, b in zip(t["kind"], t["a_id"], t["b_id"]) if k == "image"}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--dup-fraction", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threshold", type=float, default=0.95)
    ap.add_argument("--exact-max-n", type=int, default=200_000)
    ap.add_argument("--sieve", default=str(ROOT / "target/release/sieve"))
    ap.add_argument("--work", default="/tmp/sieve-faiss")
    ap.add_argument("--only", default="", help="comma-separated subset of methods")
    ap.add_argument("--worker", nargs=4, metavar=("METHOD", "NPY", "THRESHOLD", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        method, npy, t, out = args.worker
        faiss_worker(method, npy, float(t), out)
        return

    import numpy as np

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    run = work / "run"
    t0 = time.perf_counter()
    x16, group = make_data(args.n, args.dim, args.dup_fraction, args.seed)
    write_run(run, x16, group)
    npy = run / "img_emb" / "part-00000.npy"
    truth = planted_truth(x16, group, args.threshold)
    del x16
    print(f"# {args.n} x {args.dim} vectors, {len(truth)} planted pairs >= {args.threshold} "
          f"(data made in {time.perf_counter() - t0:.0f}s); {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cpus", flush=True)

    exact_ok = args.n <= args.exact_max_n
    methods = ["faiss-exact", "sieve-exact"] if exact_ok else []
    methods += ["faiss-hnsw", "sieve-hnsw", "sieve-clusters"]
    if args.only:
        methods = [m for m in methods if m in args.only.split(",")]
    results = {}
    for m in methods:
        if m.startswith("faiss"):
            out = work / f"{m}.npy"
            wall, rss, _ = timed([sys.executable, __file__, "--worker", m, str(npy), str(args.threshold), str(out)])
            pairs = {tuple(p) for p in np.load(out).tolist()}
            inner = json.load(open(str(out) + ".json"))
        else:
            cmd = [args.sieve, "dedup", "-q", str(run), "--kinds", "image", "--keep", "first", "--pairs",
                   "--image-threshold", str(args.threshold), "--device", "cpu"]
            cmd += {"sieve-exact": ["--index", "exact"], "sieve-hnsw": ["--index", "hnsw"],
                    "sieve-clusters": ["--clusters", str(max(1, args.n // 1000))]}[m]
            wall, rss, err = timed(cmd)
            pairs = sieve_pairs(run)
            inner = {}
        if m == "faiss-exact":
            agree = pairs == truth
            print(f"# faiss-exact pairs {'equal' if agree else 'DIFFER from'} the planted truth "
                  f"({len(pairs)} vs {len(truth)}); recall below is against faiss-exact", flush=True)
            truth = pairs
        results[m] = {"wall_s": wall, "peak_rss_mib": rss, "pairs": len(pairs), "pairs_set": pairs, **inner}
        print(f"{m:15} wall {wall:8.1f}s  peak RSS {rss:8.0f} MiB  pairs {len(pairs):8d}", flush=True)

    print()
    print(f"{'method':15} {'wall s':>9} {'peak MiB':>9} {'recall':>8} {'precision':>9}")
    for m, r in results.items():
        found = r.pop("pairs_set")
        rec = len(found & truth) / max(1, len(truth))
        prec = len(found & truth) / max(1, len(found))
        r["recall"], r["precision"] = rec, prec
        print(f"{m:15} {r['wall_s']:9.1f} {r['peak_rss_mib']:9.0f} {rec:8.4f} {prec:9.4f}")
    print()
    for ours, theirs in [("sieve-exact", "faiss-exact"), ("sieve-hnsw", "faiss-hnsw"), ("sieve-clusters", "faiss-hnsw"),
                         ("sieve-clusters", "faiss-exact")]:
        if ours in results and theirs in results:
            print(f"ratio {theirs} / {ours} wall time: {results[theirs]['wall_s'] / results[ours]['wall_s']:.2f}x "
                  f"(>1 means sieve is faster); recall {results[ours]['recall']:.4f} vs {results[theirs]['recall']:.4f}")
    json.dump({"n": args.n, "dim": args.dim, "threshold": args.threshold, "truth_pairs": len(truth), "results": results},
              open(work / "results.json", "w"), indent=2)


if __name__ == "__main__":
    main()
