#!/usr/bin/env python3
"""Labelled duplicate-detection benchmark on real pictures: `sieve dedup --kinds
exact,perceptual` against imagededup's PHash and DHash.

Corpus: distinct source pictures from Debian packages (clip-art stamps and wallpapers; see
scripts/bench_pictures.py), split into `calib` and `holdout` halves. For every source this writes
the original and one edited copy per edit below, one file each, into WORKDIR/SPLIT/images/
(named SOURCE__EDIT.ext; hard links into WORKDIR/SPLIT/pool, which keeps every copy made).
The label of a file is its source picture.

Edits (Pillow; "same format" = PNG for PNG sources, JPEG q95 for JPEG sources):
  half       half width and height (Lanczos), same format
  jpeg30     JPEG quality 30
  crop90     centre crop keeping 90 % of width and height, same format
  bright125  brightness x1.25 (ImageEnhance.Brightness), same format
  border8    black frame, 8 % of the width left and right and 8 % of the height top and bottom
  mirror     horizontal mirror (reported apart: neither tool claims mirror invariance)
  padsq      padded to a square with centred bars, white or black (by sha256 of the source name)
  webp75     WebP quality 75
  watermark  "(c) sieve-bench" in the bottom-right corner, PIL's default font at 4 % of the height
             (smaller when the text would pass 30 % of the width; 6 px at least), white, black outline
  crop10r    10 % cut off the right side, same format
  gamma07    gamma 0.7 (out = 255 (in/255)^0.7), same format
  gamma14    gamma 1.4, same format

Tools, all on the same files:
  sieve      `SIEVE embed IMAGES --out RUN --model MODEL` (once per corpus and binary, cached in
             WORKDIR/SPLIT/run), then per config `SIEVE dedup RUN --kinds exact,perceptual --pairs
             [--sieve-args ...]`; reads RUN/dedup/groups.parquet, keep.txt, remove.txt, pairs.parquet.
  imagededup PHash and DHash (64-bit), `find_duplicates(encoding_map=..., max_distance_threshold=T)`
             and `find_duplicates_to_remove(encoding_map=..., max_distance_threshold=T)` with the
             library default T = 10 (`--idd-threshold`). Encodings come from `encode_images(IMAGES)`
             and are cached; the encoding map is ordered by file name, so which file
             find_duplicates_to_remove keeps is deterministic. The CNN method is not run (its
             weights cannot be downloaded here).

Definitions (identical for both tools; "group" is what a tool reports as one set of duplicates):
  groups       sieve: each (kind, group_id) of groups.parquet whose kind is removed (--remove-kinds,
               default exact,perceptual,image; here exact and perceptual). imagededup: the
               connected components of the graph whose edges are the pairs find_duplicates reports
               (so a chain A~B~C is one group, as in sieve's `components` grouping).
  recall[edit] fraction of sources whose copy with that edit shares a group with the source's
               original (for imagededup: the pair (copy, original) or a chain of reported pairs
               links them). "recall" pools the 11 non-mirror edits; "mirror" is the mirror edit.
  direct recall  the same, but the pair (copy, original) itself must be reported (sieve:
               pairs.parquet, or one exact group; imagededup: find_duplicates' lists).
  precision (groups)  over every unordered pair of files that share at least one group (each pair
               counted once even when two kinds group it), the fraction with the same label.
  precision (pairs)   over the pairs the tool reports directly (sieve: pairs.parquet plus all pairs
               inside exact groups; imagededup: find_duplicates' lists), the fraction with the
               same label.
  removed      files the tool would delete (sieve: remove.txt; imagededup:
               find_duplicates_to_remove). "ideal" = files - sources.
  lost         sources none of whose files remain (sieve: none in keep.txt; imagededup: all in
               the to-remove list): a distinct picture deleted outright.
  wrong removals  removed files none of whose "keepers" shows the same picture. sieve: the
               kept_uri of every group in which the file is a non-kept member. imagededup: the
               file whose list made find_duplicates_to_remove drop it (its algorithm replayed:
               walk the map in order; a file not yet dropped drops everything it lists).

Runs are cached in --workdir (default /tmp/bench-dedup): the edited copies are remade only when
the corpus or this script's edit code changes (a stamp file), the sieve embed is redone only when
the binary, model or files change, and imagededup encodings only when the files change.
`--sweep 4,6,8` reruns only `sieve dedup` with each --perceptual-distance (embed once).

Needs Pillow, numpy, pyarrow and imagededup (installed with --no-deps, plus scipy, PyWavelets,
scikit-learn and tqdm: the hashing code's imports; not torch): when they are missing the script
creates a virtual environment (--venv, default /work/cache/venv-imagededup) and re-runs itself
inside it.

Examples:
  python3 scripts/bench_dedup.py --sieve target/release/sieve --split calib --limit 40
  python3 scripts/bench_dedup.py --sieve /work/cache/sieve-baseline --split both \\
      --sieve-args "--grouping components" --sieve-args "--grouping star" --json out.json
  python3 scripts/bench_dedup.py --split calib --sweep 4,6,8,10,12 --sieve-args "--grouping star"
(A --sieve-args value without a space must be written --sieve-args=--flag.)
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections import defaultdict

sys.dont_write_bytecode = True  # no scripts/__pycache__ in the work tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_pictures as bp  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_PACKAGES = ["numpy", "Pillow", "pyarrow", "scipy", "PyWavelets", "scikit-learn", "tqdm"]
VENV_NODEPS = ["imagededup==0.3.3.post2"]
VENV_MODULES = ("PIL", "numpy", "pyarrow", "scipy", "pywt", "sklearn", "tqdm", "brute_force_cython_ext")

# --------------------------------------------------------------------------------------------
# Edits


def _same(src):
    return ("JPEG", {"quality": 95}) if src.file.endswith(".jpg") else ("PNG", {"compress_level": 1})


def e_half(im, src):
    return im.resize((max(1, im.width // 2), max(1, im.height // 2)), _Image().LANCZOS), *_same(src)


def e_jpeg30(im, src):
    return im, "JPEG", {"quality": 30}


def e_crop90(im, src):
    w, h = im.size
    dx, dy = round(w * 0.05), round(h * 0.05)
    return im.crop((dx, dy, w - dx, h - dy)), *_same(src)


def e_bright125(im, src):
    from PIL import ImageEnhance

    return ImageEnhance.Brightness(im).enhance(1.25), *_same(src)


def e_border8(im, src):
    from PIL import ImageOps

    w, h = im.size
    bw, bh = max(1, round(0.08 * w)), max(1, round(0.08 * h))
    return ImageOps.expand(im, border=(bw, bh, bw, bh), fill=(0, 0, 0)), *_same(src)


def e_mirror(im, src):
    from PIL import ImageOps

    return ImageOps.mirror(im), *_same(src)


def e_padsq(im, src):
    Image = _Image()
    w, h = im.size
    n = max(w, h)
    colour = (0, 0, 0) if hashlib.sha256(src.name.encode()).digest()[1] % 2 else (255, 255, 255)
    out = Image.new("RGB", (n, n), colour)
    out.paste(im, ((n - w) // 2, (n - h) // 2))
    return out, *_same(src)


def e_webp75(im, src):
    return im, "WEBP", {"quality": 75}


def e_watermark(im, src):
    from PIL import ImageDraw, ImageFont

    out = im.copy()
    d = ImageDraw.Draw(out)
    text = "(c) sieve-bench"
    size = max(6, round(0.04 * im.height))
    while True:  # at most 30 % of the width
        font = ImageFont.load_default(size=size)
        stroke = max(1, size // 12)
        x0, y0, x1, y1 = d.textbbox((0, 0), text, font=font, stroke_width=stroke)
        if x1 - x0 <= 0.3 * im.width or size <= 6:
            break
        size -= 1
    m = max(2, round(0.02 * min(im.size)))
    d.text((im.width - (x1 - x0) - m - x0, im.height - (y1 - y0) - m - y0), text, font=font,
           fill=(255, 255, 255), stroke_width=stroke, stroke_fill=(0, 0, 0))
    return out, *_same(src)


def e_crop10r(im, src):
    w, h = im.size
    return im.crop((0, 0, w - round(0.10 * w), h)), *_same(src)


def _gamma(im, g):
    lut = [round(255 * (i / 255) ** g) for i in range(256)] * 3
    return im.point(lut)


def e_gamma07(im, src):
    return _gamma(im, 0.7), *_same(src)


def e_gamma14(im, src):
    return _gamma(im, 1.4), *_same(src)


EDITS = [
    ("half", e_half), ("jpeg30", e_jpeg30), ("crop90", e_crop90), ("bright125", e_bright125),
    ("border8", e_border8), ("padsq", e_padsq), ("webp75", e_webp75), ("watermark", e_watermark),
    ("crop10r", e_crop10r), ("gamma07", e_gamma07), ("gamma14", e_gamma14), ("mirror", e_mirror),
]
MIRROR = "mirror"
EXT = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}


def _Image():
    from PIL import Image

    return Image


def edit_stamp() -> str:
    """Changes when the edit code, the edit list or the corpus preparation changes."""
    code = "".join(inspect.getsource(f) for _, f in EDITS) + inspect.getsource(_same) + inspect.getsource(_gamma)
    code += repr([n for n, _ in EDITS]) + bp.CORPUS_VERSION
    return hashlib.sha256(code.encode()).hexdigest()[:16]


def _make_source_files(job):
    """Writes the original and every edit of one source (a worker process)."""
    src, out_dir = job
    Image = _Image()
    made = []
    ext = os.path.splitext(src.file)[1]
    orig = os.path.join(out_dir, f"{src.name}__orig{ext}")
    if not os.path.exists(orig):
        shutil.copyfile(src.file, orig + ".tmp")
        os.replace(orig + ".tmp", orig)
        made.append(orig)
    im = None
    for name, fn in EDITS:
        existing = [os.path.join(out_dir, f"{src.name}__{name}.{e}") for e in EXT.values()]
        if any(os.path.exists(p) for p in existing):
            continue
        if im is None:
            im = Image.open(src.file).convert("RGB")
        out, fmt, kw = fn(im, src)
        path = os.path.join(out_dir, f"{src.name}__{name}.{EXT[fmt]}")
        tmp = path + ".tmp"
        out.save(tmp, fmt, **kw)
        os.replace(tmp, path)
        made.append(path)
    return len(made)


def build_images(split_dir: str, sources, procs: int, log) -> str:
    """WORKDIR/SPLIT/images holding the files of exactly `sources`: hard links into
    WORKDIR/SPLIT/pool, where every copy ever made is kept (remade when the stamp changes), so
    switching --limit costs nothing."""
    from multiprocessing import Pool

    pool_dir = os.path.join(split_dir, "pool")
    img = os.path.join(split_dir, "images")
    stamp_file = os.path.join(split_dir, "pool.stamp")
    stamp = edit_stamp()
    if os.path.isdir(pool_dir) and (not os.path.exists(stamp_file) or open(stamp_file).read().strip() != stamp):
        log(f"[images] edit code changed: remaking {pool_dir}")
        shutil.rmtree(pool_dir)
    os.makedirs(pool_dir, exist_ok=True)
    with open(stamp_file, "w") as f:
        f.write(stamp + "\n")
    t = time.time()
    with Pool(procs) as pool:
        made = sum(pool.imap_unordered(_make_source_files, [(s, pool_dir) for s in sources], chunksize=1))
    if made:
        log(f"[images] wrote {made} files in {time.time() - t:.1f} s")
    wanted = {s.name for s in sources}
    want_files = {f for f in os.listdir(pool_dir) if f.split("__", 1)[0] in wanted and not f.endswith(".tmp")}
    os.makedirs(img, exist_ok=True)
    for f in os.listdir(img):
        p = os.path.join(img, f)
        if f not in want_files or not os.path.samefile(p, os.path.join(pool_dir, f)):
            os.remove(p)
    for f in want_files:
        if not os.path.exists(os.path.join(img, f)):
            os.link(os.path.join(pool_dir, f), os.path.join(img, f))
    return img


def listing_key(img: str) -> str:
    h = hashlib.sha256()
    for f in sorted(os.listdir(img)):
        st = os.stat(os.path.join(img, f))
        h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def file_sha(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# Metrics


def label_of(f: str) -> str:
    return f.split("__", 1)[0]


def edit_of(f: str) -> str:
    return f.split("__", 1)[1].rsplit(".", 1)[0]


def evaluate(files, groups, direct_pairs, keep, removed, keepers):
    """files: basenames; groups: list of lists of basenames; direct_pairs: iterable of (a, b);
    keep/removed: sets; keepers: removed file -> list of files it was removed in favour of."""
    import numpy as np

    idx = {f: i for i, f in enumerate(files)}
    lab_names = sorted({label_of(f) for f in files})
    lab_id = {n: i for i, n in enumerate(lab_names)}
    lab = np.array([lab_id[label_of(f)] for f in files])
    n = len(files)
    orig = {label_of(f): f for f in files if edit_of(f) == "orig"}
    member = defaultdict(set)
    for gi, g in enumerate(groups):
        for f in g:
            member[f].add(gi)
    dset = {(min(idx[a], idx[b]), max(idx[a], idx[b])) for a, b in direct_pairs if a in idx and b in idx}
    per_edit = {}
    for name, _ in EDITS:
        found = direct = total = 0
        for f in files:
            if edit_of(f) != name:
                continue
            o = orig[label_of(f)]
            total += 1
            found += bool(member[f] & member[o])
            direct += (min(idx[f], idx[o]), max(idx[f], idx[o])) in dset
        per_edit[name] = {"found": found, "direct": direct, "n": total}
    # Every pair inside a group, once.
    codes = []
    for g in groups:
        ids = np.array(sorted({idx[f] for f in g}), dtype=np.int64)
        if len(ids) > 1:
            a, b = np.triu_indices(len(ids), 1)
            codes.append(ids[a] * n + ids[b])
    codes = np.unique(np.concatenate(codes)) if codes else np.zeros(0, np.int64)
    g_same = int((lab[codes // n] == lab[codes % n]).sum())
    d = np.array(sorted(dset), dtype=np.int64).reshape(-1, 2)
    d_same = int((lab[d[:, 0]] == lab[d[:, 1]]).sum()) if len(d) else 0
    sources = {label_of(f) for f in files}
    kept_sources = {label_of(f) for f in files if f in keep}
    wrong = [f for f in removed if not any(label_of(k) == label_of(f) for k in keepers.get(f, []))]
    nm = [v for k, v in per_edit.items() if k != MIRROR]
    r = {
        "files": n,
        "sources": len(sources),
        "groups": len(groups),
        "largest_group": max((len(set(g)) for g in groups), default=0),
        "per_edit": per_edit,
        "recall": sum(v["found"] for v in nm) / max(1, sum(v["n"] for v in nm)),
        "direct_recall": sum(v["direct"] for v in nm) / max(1, sum(v["n"] for v in nm)),
        "mirror_recall": per_edit[MIRROR]["found"] / max(1, per_edit[MIRROR]["n"]),
        "group_pairs": len(codes),
        "group_pairs_same": g_same,
        "precision_groups": g_same / len(codes) if len(codes) else None,
        "reported_pairs": len(d),
        "reported_pairs_same": d_same,
        "precision_pairs": d_same / len(d) if len(d) else None,
        "removed": len(removed),
        "ideal_removed": n - len(sources),
        "lost": len(sources - kept_sources),
        "lost_sources": sorted(sources - kept_sources),
        "wrong_removals": len(wrong),
        "unscored_files": n - len(keep) - len(removed),
    }
    return r


# --------------------------------------------------------------------------------------------
# Tools


def run(cmd, log, **kw):
    log("$ " + " ".join(shlex.quote(c) for c in cmd))
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.stderr.write(r.stdout + r.stderr)
        raise SystemExit(f"command failed ({r.returncode}): {' '.join(cmd)}")
    return r


def sieve_embed(sieve, model, img, run_dir, log, force=False) -> float:
    key = json.dumps({"bin": file_sha(sieve), "model": os.path.abspath(model), "files": listing_key(img)})
    key_file = os.path.join(run_dir, ".bench_embed_key")
    if not force and os.path.exists(key_file) and open(key_file).read() == key:
        log(f"[sieve] embed cached in {run_dir}")
        return 0.0
    if os.path.exists(run_dir):
        shutil.rmtree(run_dir)
    t = time.time()
    run([sieve, "embed", img, "--out", run_dir, "--model", model, "--quiet"], log)
    dt = time.time() - t
    with open(key_file, "w") as f:
        f.write(key)
    return dt


def sieve_dedup(sieve, run_dir, extra, files, log):
    """Runs one dedup config; returns (metrics, seconds)."""
    import pyarrow.parquet as pq

    help_text = subprocess.run([sieve, "dedup", "--help"], capture_output=True, text=True).stdout
    cmd = [sieve, "dedup", run_dir, "--kinds", "exact,perceptual"]
    if "--pairs" in help_text and "--pairs" not in extra:
        cmd.append("--pairs")
    cmd += extra
    t = time.time()
    run(cmd, log)
    dt = time.time() - t
    dd = os.path.join(run_dir, "dedup")
    base = os.path.basename
    remove_kinds = {"exact", "perceptual", "image"}
    for i, a in enumerate(extra):
        if a == "--remove-kinds" and i + 1 < len(extra):
            remove_kinds = set(extra[i + 1].split(","))
        elif a.startswith("--remove-kinds="):
            remove_kinds = set(a.split("=", 1)[1].split(","))
    g = pq.read_table(os.path.join(dd, "groups.parquet")).to_pylist()
    groups = defaultdict(list)
    keepers = defaultdict(list)
    id_file = {}
    meta = os.path.join(run_dir, "metadata")
    for part in sorted(os.listdir(meta)) if os.path.isdir(meta) else []:
        if part.endswith(".parquet"):
            for row in pq.read_table(os.path.join(meta, part), columns=["id", "uri"]).to_pylist():
                id_file[row["id"]] = base(row["uri"])
    for row in g:
        f = base(row["uri"])
        id_file[row["id"]] = f
        if row["kind"] not in remove_kinds and "all" not in remove_kinds:
            continue
        groups[(row["kind"], row["group_id"])].append(f)
        if not row["kept"]:
            keepers[f].append(base(row["kept_uri"]))
    read = lambda p: {base(l.strip()) for l in open(p) if l.strip()}  # noqa: E731
    keep = read(os.path.join(dd, "keep.txt"))
    removed = read(os.path.join(dd, "remove.txt"))
    pairs = []
    pp = os.path.join(dd, "pairs.parquet")
    if os.path.exists(pp):
        for row in pq.read_table(pp).to_pylist():
            a, b = id_file.get(row["a_id"]), id_file.get(row["b_id"])
            if a is None or b is None:
                raise SystemExit(f"pairs.parquet names an id missing from RUN/metadata: {row}")
            pairs.append((a, b))
    for (kind, _), members in groups.items():
        if kind == "exact":  # exact duplicates are reported as groups, not pairs
            pairs += [(a, b) for i, a in enumerate(members) for b in members[i + 1:]]
    m = evaluate(files, list(groups.values()), pairs, keep, removed, keepers)
    m["seconds"] = dt
    m["has_pairs_parquet"] = os.path.exists(pp)
    return m


def _import_hashing():
    """imagededup.methods.hashing without imagededup/methods/__init__ and utils/__init__, which
    import the CNN's torch and matplotlib (not installed: the hashing code does not use them)."""
    import importlib.util
    import types

    try:
        from imagededup.methods.hashing import DHash, PHash  # noqa: F401

        return sys.modules["imagededup.methods.hashing"]
    except ImportError:
        pass
    for k in [k for k in sys.modules if k.startswith("imagededup.")]:
        del sys.modules[k]
    root = importlib.util.find_spec("imagededup").submodule_search_locations[0]
    for sub in ("methods", "utils"):
        m = types.ModuleType(f"imagededup.{sub}")
        m.__path__ = [os.path.join(root, sub)]
        sys.modules[m.__name__] = m
    import imagededup.methods.hashing as h

    return h


def imagededup_run(method, img, split_dir, threshold, files, log):
    import logging
    import warnings

    logging.disable(logging.INFO)  # imagededup logs every step at INFO

    h = _import_hashing()
    from imagededup.utils.general_utils import get_files_to_remove

    import imagededup

    cache = os.path.join(split_dir, f"idd-{method}.json")
    key = f"{imagededup.__version__}:{listing_key(img)}"
    enc_s = 0.0
    enc = None
    if os.path.exists(cache):
        with open(cache) as f:
            d = json.load(f)
        if d.get("key") == key:
            enc = d["encodings"]
    if enc is None:
        hasher = getattr(h, method)(verbose=False)
        t = time.time()
        enc = hasher.encode_images(img)
        enc_s = time.time() - t
        with open(cache, "w") as f:
            json.dump({"key": key, "encodings": enc}, f)
        log(f"[imagededup] {method}: encoded {len(enc)} files in {enc_s:.1f} s")
    enc = {k: enc[k] for k in sorted(enc)}
    hasher = getattr(h, method)(verbose=False)
    t = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dups = hasher.find_duplicates(encoding_map=enc, max_distance_threshold=threshold)
        to_remove = set(hasher.find_duplicates_to_remove(encoding_map=enc, max_distance_threshold=threshold))
    dt = time.time() - t
    # Replay get_files_to_remove to know whom each file was dropped for.
    dropped, keepers = set(), {}
    for k, v in dups.items():
        if k not in dropped:
            for x in v:
                if x not in dropped:
                    keepers[x] = [k]
            dropped.update(v)
    assert dropped == to_remove == set(get_files_to_remove(dups)), "replay of find_duplicates_to_remove differs"
    # Groups: connected components of the reported pairs.
    parent = {f: f for f in enc}

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    pairs = []
    for k, v in dups.items():
        for x in v:
            pairs.append((k, x))
            ra, rb = find(k), find(x)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    comps = defaultdict(list)
    for f in enc:
        comps[find(f)].append(f)
    groups = [g for g in comps.values() if len(g) > 1]
    keep = set(enc) - to_remove
    missing = set(files) - set(enc)
    if missing:
        log(f"[imagededup] {method}: {len(missing)} files not encoded, e.g. {sorted(missing)[:3]}")
    m = evaluate(files, groups, pairs, keep, to_remove, keepers)
    m["seconds"] = dt
    m["encode_seconds"] = enc_s
    return m


# --------------------------------------------------------------------------------------------
# Output


def pct(x):
    return "   -  " if x is None else f"{100 * x:5.1f}%"


def print_table(title, columns, out=print):
    """columns: list of (name, metrics)."""
    w0, w = 26, max(24, max(len(n) for n, _ in columns) + 2)
    out("")
    out(title)
    out("-" * (w0 + w * len(columns)))
    out(f"{'':{w0}}" + "".join(f"{n:>{w}}" for n, _ in columns))
    out(f"{'recall per edit (groups)':{w0}}")
    for name, _ in EDITS:
        cells = []
        for _, m in columns:
            v = m["per_edit"][name]
            cells.append(f"{v['found']:>4}/{v['n']:<4}{pct(v['found'] / max(1, v['n'])):>7}")
        out(f"  {name:{w0 - 2}}" + "".join(f"{c:>{w}}" for c in cells))
    rows = [
        ("recall, 11 non-mirror", lambda m: pct(m["recall"])),
        ("  direct pair only", lambda m: pct(m["direct_recall"])),
        ("mirror recall", lambda m: pct(m["mirror_recall"])),
        ("precision, pairs in groups", lambda m: f"{pct(m['precision_groups'])} of {m['group_pairs']}"),
        ("precision, reported pairs", lambda m: f"{pct(m['precision_pairs'])} of {m['reported_pairs']}"),
        ("groups (largest)", lambda m: f"{m['groups']} ({m['largest_group']})"),
        ("removed (ideal)", lambda m: f"{m['removed']} ({m['ideal_removed']})"),
        ("wrong removals", lambda m: f"{m['wrong_removals']}"),
        ("pictures lost", lambda m: f"{m['lost']} of {m['sources']}"),
        ("dedup seconds", lambda m: f"{m['seconds']:.1f}"),
    ]
    for label, fn in rows:
        out(f"{label:{w0}}" + "".join(f"{fn(m):>{w}}" for _, m in columns))


def print_sweep(title, rows, out=print):
    out("")
    out(title)
    hdr = f"{'dist':>4} {'groups':>6} {'largest':>7} {'prec grp':>9} {'prec pair':>9} {'recall':>7} {'direct':>7} {'mirror':>7} {'removed':>7} {'wrong':>6} {'lost':>5}"
    out(hdr)
    out("-" * len(hdr))
    for d, m in rows:
        out(f"{d:>4} {m['groups']:>6} {m['largest_group']:>7} {pct(m['precision_groups']):>9} {pct(m['precision_pairs']):>9} "
            f"{pct(m['recall']):>7} {pct(m['direct_recall']):>7} {pct(m['mirror_recall']):>7} {m['removed']:>7} "
            f"{m['wrong_removals']:>6} {m['lost']:>5}")


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sieve", default=os.path.join(REPO, "target/release/sieve"), help="sieve binary (default %(default)s)")
    ap.add_argument("--model", default=os.path.join(REPO, "models/tiny-clip"), help="model for `sieve embed` (default %(default)s)")
    ap.add_argument("--sieve-args", action="append", default=None,
                    help="extra `sieve dedup` arguments, one config per use (repeatable; default: one config with none)")
    ap.add_argument("--split", default="both", choices=["calib", "holdout", "both"])
    ap.add_argument("--per-split", type=int, default=150, help="source pictures per split (default %(default)s)")
    ap.add_argument("--limit", type=int, help="use only the first N sources of the split (quick runs)")
    ap.add_argument("--seed", type=int, default=0, help="sample seed (default %(default)s)")
    ap.add_argument("--cache", default=bp.DEFAULT_CACHE, help="picture cache (default %(default)s)")
    ap.add_argument("--workdir", default="/tmp/bench-dedup", help="edited copies and runs, reused (default %(default)s)")
    ap.add_argument("--venv", default=bp.DEFAULT_VENV, help="virtual environment (default %(default)s)")
    ap.add_argument("--idd-threshold", type=int, default=10, help="imagededup max_distance_threshold (default %(default)s, its own)")
    ap.add_argument("--no-imagededup", action="store_true", help="run sieve only")
    ap.add_argument("--sweep", help="comma-separated --perceptual-distance values to rerun `sieve dedup` with")
    ap.add_argument("--reembed", action="store_true", help="embed again even when cached")
    ap.add_argument("--procs", type=int, default=os.cpu_count() or 2, help="processes for making the copies")
    ap.add_argument("--json", help="write every metric here")
    ap.add_argument("--verbose", action="store_true", help="print the commands run")
    args = ap.parse_args()
    bp.ensure_venv(args.venv, VENV_PACKAGES, VENV_NODEPS, modules=VENV_MODULES)
    if not args.no_imagededup:
        try:
            _import_hashing()
        except ImportError:
            bp._pip(sys.executable, VENV_PACKAGES, VENV_NODEPS)

    def log(msg):
        if args.verbose or not msg.startswith("$ "):
            print(msg, file=sys.stderr, flush=True)

    sieve = os.path.abspath(args.sieve)
    if not os.path.exists(sieve):
        raise SystemExit(f"no sieve binary at {sieve} (--sieve)")
    configs = [shlex.split(a) for a in (args.sieve_args or [""])]
    sweep = [int(x) for x in args.sweep.split(",")] if args.sweep else []
    if sweep and any(a.startswith("--perceptual-distance") for c in configs for a in c):
        raise SystemExit("--sweep sets --perceptual-distance itself: leave it out of --sieve-args")
    version = subprocess.run([sieve, "--version"], capture_output=True, text=True).stdout.strip()
    sha = file_sha(sieve)[:12]
    print(f"CPU: {cpu_model()} ({os.cpu_count()} cores)")
    print(f"sieve: {version} ({sieve}, sha256 {sha})")
    report = {"cpu": cpu_model(), "sieve": {"path": sieve, "version": version, "sha256_12": sha},
              "args": vars(args), "edits": [n for n, _ in EDITS], "splits": {}}
    t_all = time.time()
    for split in (["calib", "holdout"] if args.split == "both" else [args.split]):
        t_split = time.time()
        sources = bp.corpus(args.cache, split, args.per_split, args.seed, log=log, limit=args.limit)
        nw = sum(s.kind == "wallpaper" for s in sources)
        split_dir = os.path.join(args.workdir, split)
        os.makedirs(split_dir, exist_ok=True)
        img = build_images(split_dir, sources, args.procs, log)
        files = sorted(os.listdir(img))
        print(f"\n=== {split}: {len(sources)} source pictures ({nw} wallpapers/photos, {len(sources) - nw} clip art), "
              f"{len(files)} files ({len(EDITS)} edits each), seed {args.seed}")
        run_dir = os.path.join(split_dir, "run")
        embed_s = sieve_embed(sieve, args.model, img, run_dir, log, force=args.reembed)
        columns = []
        res = {"sources": len(sources), "wallpapers": nw, "files": len(files), "embed_seconds": embed_s, "tools": {}, "sweep": {}}
        for extra in configs:
            name = "sieve " + (" ".join(extra) if extra else "(defaults)")
            m = sieve_dedup(sieve, run_dir, extra, files, log)
            columns.append((name, m))
            res["tools"][name] = m
        if not args.no_imagededup:
            for method in ("PHash", "DHash"):
                name = f"imagededup {method} t={args.idd_threshold}"
                m = imagededup_run(method, img, split_dir, args.idd_threshold, files, log)
                columns.append((name, m))
                res["tools"][name] = m
        print_table(f"{split}: sieve embed {embed_s:.1f} s" + (" (cached)" if embed_s == 0 else ""), columns)
        for name, m in columns:
            if m["unscored_files"]:
                print(f"  note: {name}: {m['unscored_files']} files in neither keep nor remove list")
        for extra in configs if sweep else []:
            rows = []
            for d in sweep:
                m = sieve_dedup(sieve, run_dir, extra + ["--perceptual-distance", str(d)], files, log)
                rows.append((d, m))
            name = "sieve " + (" ".join(extra) if extra else "(defaults)")
            print_sweep(f"{split}: --perceptual-distance sweep, {name}", rows)
            res["sweep"][name] = {str(d): m for d, m in rows}
        res["seconds"] = time.time() - t_split
        report["splits"][split] = res
        print(f"\n{split}: {res['seconds']:.0f} s")
    report["seconds"] = time.time() - t_all
    print(f"total wall time {report['seconds']:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
