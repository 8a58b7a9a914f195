#!/usr/bin/env python3
"""Run sieve over a Ray cluster: sharded embedding, merge, cluster-partitioned dedup.

Depends only on `ray` (PyPI) and the `sieve` binary on every node's PATH (or --sieve). Every
path must be on a filesystem all nodes share. The stages, each a set of Ray tasks:

  1. embed      N tasks: sieve embed INPUT... --shard i/N --out OUT/shards/i
                (num_gpus=1 each when the cluster has GPUs, else an equal share of the CPUs);
                a failed task is retried, and sieve's resume makes the retry exact and cheap
  2. merge      sieve merge OUT/shards/* --out OUT/run (byte-identical to an unsharded run)
  3. centroids  sieve dedup-centroids OUT/run --clusters K (k-means on a seeded sample)
  4. partitions P tasks: sieve dedup-partition OUT/run --partition j/P
  5. combine    sieve dedup-combine OUT/run -> OUT/run/dedup/{groups.parquet,keep.txt,
                remove.txt,summary.json}, the same files `sieve dedup OUT/run --clusters K
                --sample S --seed SEED` writes in one process

Example (a Ray cluster already running; `ray start --head` on one node, `ray start
--address HEAD:6379` on the others):

    python scripts/ray/sieve_ray.py 'shards/{00000..00999}.tar' --out /shared/runs/laion \
        --workers 64 --model openai/clip-vit-base-patch32 --clusters 50000

Prints the wall time of each stage. Exit status: 0 done, 1 a stage failed (its command and the
end of its stderr are printed), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

try:
    import ray
except ImportError:  # pragma: no cover - the message is the point
    sys.exit("sieve_ray.py needs Ray: pip install 'ray==2.60.0' (or a cluster image that has it)")


class SieveFailed(Exception):
    """A sieve command failed in a way a retry may fix (killed, out of memory, I/O error)."""


class SieveUsage(Exception):
    """sieve refused its arguments or inputs (exit status 2): retrying cannot help."""


def run_sieve(sieve: str, args: list[str], threads: int | None) -> dict:
    """Runs one sieve command on this node; returns its timing, raises with its stderr tail."""
    env = dict(os.environ)
    if threads:
        # One process per share of the cores: its rayon pool (decode, search) and candle's
        # CPU matmuls use this many threads instead of every core of the node.
        env["RAYON_NUM_THREADS"] = str(threads)
    exe = shutil.which(sieve) or sieve
    if not os.path.exists(exe):
        raise SieveUsage(f"no sieve binary `{sieve}` on {socket.gethostname()} (put it on PATH or pass --sieve)")
    t0 = time.perf_counter()
    p = subprocess.run([exe, *args], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if p.returncode != 0:
        tail = "\n".join(p.stderr.strip().splitlines()[-15:])
        what = f"`sieve {' '.join(args)}` exited with {p.returncode} on {socket.gethostname()}:\n{tail}"
        raise (SieveUsage if p.returncode == 2 else SieveFailed)(what)
    return {"seconds": seconds, "host": socket.gethostname(), "stderr": p.stderr.strip().splitlines()[-1:]}


@ray.remote(max_retries=3, retry_exceptions=[SieveFailed])
def sieve_task(sieve: str, args: list[str], threads: int | None) -> dict:
    return run_sieve(sieve, args, threads)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", help="what `sieve embed` takes: WebDataset tars (brace patterns too), manifests, or one folder")
    p.add_argument("--out", required=True, type=Path, help="output folder on a shared filesystem (shards/, run/ are made in it)")
    p.add_argument("--workers", type=int, required=True, help="embed shards and concurrent tasks (one per GPU on a GPU cluster)")
    p.add_argument("--model", default=None, help="sieve embed --model (a Hub id or a folder every node can read)")
    p.add_argument("--sieve", default="sieve", help="the sieve binary on every node [default: sieve on PATH]")
    p.add_argument("--address", default=None, help="Ray cluster address [default: RAY_ADDRESS, else a local Ray]")
    p.add_argument("--clusters", type=int, default=None, help="k-means clusters for dedup [default: one per 1,000 embedded items]")
    p.add_argument("--partitions", type=int, default=None, help="dedup partitions (tasks) [default: --workers]")
    p.add_argument("--sample", type=int, default=None, help="k-means training sample [default: sieve's, 256 per cluster]")
    p.add_argument("--seed", type=int, default=0, help="k-means seed")
    p.add_argument("--embed-arg", action="append", default=[], metavar="ARG", help="extra argument for sieve embed (repeat), e.g. --embed-arg=--batch-size=64")
    p.add_argument("--dedup-arg", action="append", default=[], metavar="ARG", help="extra argument for dedup-partition and dedup-combine (repeat), e.g. --dedup-arg=--image-threshold=0.9")
    p.add_argument("--retries", type=int, default=3, help="retries of a failed task")
    p.add_argument("--no-dedup", action="store_true", help="stop after the merge")
    a = p.parse_args(argv)
    if a.workers < 1:
        p.error("--workers must be at least 1")
    if a.partitions is not None and a.partitions < 1:
        p.error("--partitions must be at least 1")
    if a.clusters is not None and a.clusters < 1:
        p.error("--clusters must be at least 1")
    return a


def main(argv: list[str]) -> int:
    a = parse_args(argv)
    out = a.out.resolve()
    sieve = a.sieve if os.sep not in a.sieve else str(Path(a.sieve).resolve())
    # Tasks run in other working directories (and on other nodes): absolute paths only.
    inputs = [os.path.abspath(i) for i in a.inputs]
    if a.model and os.path.isdir(a.model):
        a.model = os.path.abspath(a.model)
    ray.init(address=a.address, log_to_driver=False, include_dashboard=False)
    res = ray.cluster_resources()
    gpus, cpus = int(res.get("GPU", 0)), res.get("CPU", 1)
    if gpus:
        # One task per GPU; Ray sets CUDA_VISIBLE_DEVICES, so sieve's `auto` device is that GPU.
        per_task = {"num_gpus": 1, "num_cpus": max(1, int(cpus // gpus))}
        threads = None
    else:
        share = cpus / a.workers
        per_task = {"num_cpus": share}
        threads = max(1, int(share))
    print(f"sieve_ray: {a.workers} workers on {int(cpus)} CPUs, {gpus} GPUs; each task {per_task}", flush=True)
    task = sieve_task.options(max_retries=a.retries, **per_task)
    times: dict[str, float] = {}

    def stage(name: str, commands: list[list[str]], opts=None) -> None:
        t0 = time.perf_counter()
        t = task if opts is None else sieve_task.options(max_retries=a.retries, **opts)
        refs = [t.remote(sieve, c, threads if opts is None else None) for c in commands]
        try:
            results = ray.get(refs)
        except ray.exceptions.RayTaskError as e:
            cause = e.cause if getattr(e, "cause", None) is not None else e
            for r in refs:
                ray.cancel(r, force=True)
            raise SystemExit(f"sieve_ray: stage {name} failed: {cause}") from None
        times[name] = time.perf_counter() - t0
        hosts = sorted({r["host"] for r in results})
        print(f"sieve_ray: {name:<10} {times[name]:8.2f}s  ({len(commands)} tasks on {', '.join(hosts)})", flush=True)

    shards = [out / "shards" / f"{i:05d}" for i in range(a.workers)]
    run = out / "run"
    model = ["--model", a.model] if a.model else []
    stage(
        "embed",
        [["embed", "-q", *inputs, "--out", str(s), "--shard", f"{i}/{a.workers}", *model, *a.embed_arg] for i, s in enumerate(shards)],
    )
    # The merge reads every shard and writes one run: an I/O job, one task with one CPU.
    stage("merge", [["merge", "-q", *map(str, shards), "--out", str(run), "--overwrite"]], {"num_cpus": 1})
    if a.no_dedup:
        return 0
    centroids = run / "dedup" / "centroids"
    parts = run / "dedup" / "partitions"
    if parts.exists():
        shutil.rmtree(parts)  # results of an earlier split would be refused by the combine
    clusters = a.clusters
    if clusters is None:
        import json

        embedded = json.loads((run / "run.json").read_text())["counts"]["embedded"]
        clusters = max(1, embedded // 1000)
    n_parts = a.partitions or a.workers
    kmeans = ["--clusters", str(clusters), "--seed", str(a.seed)] + (["--sample", str(a.sample)] if a.sample else [])
    stage("centroids", [["dedup-centroids", "-q", str(run), *kmeans, "--out", str(centroids)]], per_task)
    stage(
        "partitions",
        [
            ["dedup-partition", "-q", str(run), "--centroids", str(centroids), "--partition", f"{j}/{n_parts}", "--out", str(parts), *a.dedup_arg]
            for j in range(n_parts)
        ],
    )
    stage("combine", [["dedup-combine", "-q", str(run), "--partitions", str(parts), *a.dedup_arg]], {"num_cpus": 1})
    total = sum(times.values())
    print(f"sieve_ray: total      {total:8.2f}s  -> {run} and {run / 'dedup'}", flush=True)
    print(
        "sieve_ray: one process gives the same dedup/ files with: sieve dedup "
        + " ".join([str(run), "--centroids", str(centroids), *a.dedup_arg])
        + (" (or with " + " ".join(kmeans) + " in place of --centroids, when k-means ran on the same kind of device)")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
