#!/usr/bin/env python3
"""Image quality flags on labelled real pictures: `sieve quality` vs cleanvision, in one run.

Usage:
  python3 scripts/bench_quality.py [--sieve target/debug/sieve] [--work /work/cache/bench_quality]
      [--debpics /work/cache/debpics] [--venv /work/cache/venv-cleanvision] [--stamps 400]
      [--no-cleanvision] [--json OUT.json]

Data (built once into WORK/corpus, deterministic; nothing is committed): pictures no one here
drew, from Debian packages (`apt-get download` + `dpkg-deb -x` into --debpics when missing;
/work/debpics/x is reused when present):

- wallpapers and photographs (plasma-workspace-wallpapers, ukui-wallpapers, gnome-backgrounds,
  mate-backgrounds, lomiri-wallpapers-20.04): each source picture is resized (Lanczos) to a long
  side of 640, 1024, 1600 or 2400 px (chosen by its name's hash) and written untouched
  (`orig`, JPEG q92), then as edited copies, each labelled with the flag a person would give it:
    blur      Gaussian blur of radius 0.7% of the long side (7 px at 1024). Only kept when the
              copy visibly differs from its original (mean absolute difference >= 1.5 grey
              levels on a 256-px copy): blurring a smooth gradient changes nothing one can see.
    dark      under-exposed: every channel times 0.2 or 0.3.
    bright    over-exposed: channels times the least of 1.5, 2, 2.5, 3, 4, 5, 6, 8 that takes at
              least half the pixels to luma >= 230 (blown out), or washed out (75% blend with
              white), alternately.
    grayscale a grey copy: stored grey (mode L PNG) or grey content in an RGB JPEG, alternately.
- clip art (tuxpaint-stamps-default): colourful stamps composited onto white (`clipart`, no
  flag expected; the "bird on a white background" case) and every stamp whose pixels are grey,
  stored grey (mode L/LA) or grey in an RGB(A) file (`grey-stamp`, grayscale expected).
  Transparent stamps are composited onto white first: cleanvision crashes on LA/RGBA PNGs.

Split: each source picture (all its copies) goes to `calib` or `holdout` by the parity of the
SHA-1 of its package and name, so no picture is on both sides. Thresholds are picked on calib
only (per flag, the one with the best recall − false-alarm rate among those with at most 5%
false alarms on calib; of equally good ones, the median), then both splits are reported at sieve's defaults, at the
calib-picked thresholds, and for cleanvision (its defaults).

Recall: share of the copies labelled with the flag that get it. False alarms: share of the
untouched pictures (originals and colourful clip art) that get it.
"""

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS_VERSION = "5"
PACKAGES = [
    "plasma-workspace-wallpapers",
    "ukui-wallpapers",
    "gnome-backgrounds",
    "mate-backgrounds",
    "lomiri-wallpapers-20.04",
    "tuxpaint-stamps-default",
]
FLAGS = ["blur", "dark", "bright", "grayscale"]
# cleanvision's issue type for each sieve flag.
CLEANVISION = {"blur": "blurry", "dark": "dark", "bright": "light", "grayscale": "grayscale"}
SIZES = [640, 1024, 1600, 2400]
IMAGE_EXT = (".jpg", ".jpeg", ".png", ".webp")


def ensure_venv(venv: Path):
    """Re-runs this script inside a venv with cleanvision (created on first use)."""
    if os.environ.get("BENCH_QUALITY_IN_VENV") == "1":
        return
    py = venv / "bin" / "python"
    if not py.exists():
        print(f"creating {venv} (cleanvision, pyarrow)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "cleanvision", "pyarrow"], check=True)
    env = dict(os.environ, BENCH_QUALITY_IN_VENV="1")
    os.execve(str(py), [str(py), *sys.argv], env)


def package_dir(pkg: str, debpics: Path) -> Path:
    """Where PKG's files are extracted: /work/debpics/x/PKG if present, else DEBPICS/x/PKG."""
    for base in (Path("/work/debpics/x"), debpics / "x"):
        if (base / pkg / "usr").is_dir():
            return base / pkg
    dest = debpics / "x" / pkg
    debs = debpics / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    if not list(debs.glob(f"{pkg}_*.deb")):
        print(f"apt-get download {pkg}", file=sys.stderr)
        subprocess.run(["apt-get", "download", pkg], cwd=debs, check=True)
    deb = sorted(debs.glob(f"{pkg}_*.deb"))[-1]
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True)
    return dest


def split_of(key: str) -> str:
    return "calib" if hashlib.sha1(key.encode()).digest()[0] % 2 == 0 else "holdout"


def h(key: str) -> int:
    return int.from_bytes(hashlib.sha1(key.encode()).digest()[1:5], "big")


def wallpaper_sources(debpics: Path):
    """(group key, path) of every wallpaper/photo: the largest file of each picture variant."""
    out = []
    for pkg in PACKAGES[:-1]:
        root = package_dir(pkg, debpics)
        files = [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXT and p.is_file()]
        files = [p for p in files if "screenshot" not in p.name and "/doc/" not in str(p)]
        if pkg == "plasma-workspace-wallpapers":
            # WALLPAPER/contents/images{,_dark}/WxH.ext: the largest of each folder; both
            # variants of a wallpaper share its group.
            best = {}
            for p in files:
                folder = p.parent
                try:
                    w, hh = (int(v) for v in p.stem.split("x"))
                except ValueError:
                    continue
                if folder not in best or w * hh > best[folder][0]:
                    best[folder] = (w * hh, p)
            for folder, (_, p) in sorted(best.items()):
                out.append((f"{pkg}/{folder.parent.parent.name}", f"{folder.parent.parent.name}-{folder.name}", p))
        else:
            for p in sorted(files):
                stem = p.stem
                group = stem[:-2] if stem.endswith(("-l", "-d")) else stem
                out.append((f"{pkg}/{group}", stem, p))
    return out


def luma(img):
    import numpy as np

    a = np.asarray(img.convert("RGB"), dtype=np.float32)
    return a[..., 0] * 0.299 + a[..., 1] * 0.587 + a[..., 2] * 0.114


def build_corpus(corpus: Path, debpics: Path, n_stamps: int):
    import numpy as np
    from PIL import Image, ImageEnhance, ImageFilter

    stamp = corpus / "VERSION"
    if stamp.is_file() and stamp.read_text() == f"{CORPUS_VERSION} {n_stamps}":
        return json.loads((corpus / "labels.json").read_text())
    if corpus.exists():
        shutil.rmtree(corpus)
    (corpus / "img").mkdir(parents=True)
    labels = {}

    def add(name, img, split, kind, flags, source, fmt="JPEG"):
        ext = ".png" if fmt == "PNG" else ".jpg"
        path = corpus / "img" / (name + ext)
        if fmt == "PNG":
            img.save(path, "PNG")
        else:
            img.save(path, "JPEG", quality=92)
        labels[path.name] = {"split": split, "kind": kind, "flags": flags, "source": source}

    for group, name, path in wallpaper_sources(debpics):
        split = split_of(group)
        key = h(name)
        img = Image.open(path)
        img.draft("RGB", (2400, 2400))
        if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
            alpha = np.asarray(img.convert("RGBA"))[..., 3]
            if alpha.min() < 250:
                continue  # an overlay meant for a background colour, not a picture
        img = img.convert("RGB")
        side = SIZES[key % len(SIZES)]
        w, hh = img.size
        s = side / max(w, hh)
        if s < 1:
            img = img.resize((max(1, round(w * s)), max(1, round(hh * s))), Image.LANCZOS)
        base = f"{name}-{img.size[0]}"
        add(f"{base}-orig", img, split, "orig", [], group)
        long = max(img.size)
        blurred = img.filter(ImageFilter.GaussianBlur(radius=0.007 * long))
        small = (256, max(1, round(256 * min(img.size) / long)))
        small = small if img.size[0] >= img.size[1] else small[::-1]
        diff = np.abs(luma(img.resize(small, Image.BOX)) - luma(blurred.resize(small, Image.BOX))).mean()
        if diff >= 1.5:
            add(f"{base}-blur", blurred, split, "blur", ["blur"], group)
        factor = 0.2 if key % 2 == 0 else 0.3
        add(f"{base}-dark", ImageEnhance.Brightness(img).enhance(factor), split, "dark", ["dark"], group)
        if (key >> 1) % 2 == 0:
            # The least exposure (x1.5, x2, ... x8) that blows out at least half the picture.
            bright = None
            for k in (1.5, 2, 2.5, 3, 4, 5, 6, 8):
                copy = ImageEnhance.Brightness(img).enhance(k)
                if (luma(copy) >= 230).mean() >= 0.5:
                    bright = copy
                    break
        else:
            bright = Image.blend(img, Image.new("RGB", img.size, (255, 255, 255)), 0.75)
        if bright is not None:  # a picture too dark to blow out by exposure alone is left out
            add(f"{base}-bright", bright, split, "bright", ["bright"], group)
        grey = img.convert("L")
        if (key >> 2) % 2 == 0:
            add(f"{base}-grey", grey, split, "grey-stored", ["grayscale"], group, fmt="PNG")
        else:
            add(f"{base}-grey", grey.convert("RGB"), split, "grey-content", ["grayscale"], group)

    root = package_dir("tuxpaint-stamps-default", debpics)
    stamps = sorted(p for p in root.rglob("*.png") if "/stamps/" in str(p))
    colourful = []
    for p in stamps:
        rel = str(p.relative_to(root))
        im = Image.open(p)
        im.load()
        stored_grey = im.mode in ("L", "LA", "I;16", "1")
        if im.mode == "P":
            im = im.convert("RGBA")
        if im.mode in ("LA", "RGBA") or "transparency" in im.info:
            rgba = im.convert("RGBA")
            bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            flat = Image.alpha_composite(bg, rgba).convert("RGB")
        else:
            flat = im.convert("RGB")
        a = np.asarray(flat, dtype=np.int16)
        spread = int((a.max(axis=2) - a.min(axis=2)).max())
        name = "stamp-" + rel.replace("/", "_").removesuffix(".png")
        name = name.replace("usr_share_tuxpaint_stamps_", "")
        if stored_grey:
            add(name, flat.convert("L"), split_of(rel), "grey-stamp-stored", ["grayscale"], rel, fmt="PNG")
        elif spread == 0:
            add(name, flat, split_of(rel), "grey-stamp-content", ["grayscale"], rel, fmt="PNG")
        elif spread > 40:
            colourful.append((h(rel), rel, name, flat))
    colourful.sort()
    for _, rel, name, flat in colourful[:n_stamps]:
        add(name, flat, split_of(rel), "clipart", [], rel, fmt="PNG")
    (corpus / "labels.json").write_text(json.dumps(labels, indent=1, sort_keys=True))
    stamp.write_text(f"{CORPUS_VERSION} {n_stamps}")
    return labels


def run_sieve(sieve: str, corpus: Path, run: Path, thresholds=None):
    if run.exists():
        shutil.rmtree(run)
    model = str(ROOT / "models" / "tiny-clip")
    subprocess.run(
        [sieve, "embed", str(corpus / "img"), "--out", str(run), "--model", model, "--device", "cpu"],
        check=True,
        stderr=subprocess.DEVNULL,
    )
    return read_quality(sieve, run)


def read_quality(sieve: str, run: Path, extra=()):
    import pyarrow.parquet as pq

    subprocess.run([sieve, "quality", str(run), *extra], check=True, stderr=subprocess.DEVNULL)
    t = pq.read_table(run / "quality.parquet").to_pylist()
    return {Path(r["uri"]).name: r for r in t}


def run_cleanvision(corpus: Path, files):
    os.environ.setdefault("TQDM_DISABLE", "1")  # no progress bars in the report
    from cleanvision import Imagelab

    lab = Imagelab(filepaths=[str(corpus / "img" / f) for f in files])
    lab.find_issues({v: {} for v in CLEANVISION.values()}, verbose=False)
    df = lab.issues
    out = {}
    for path, row in df.iterrows():
        out[Path(path).name] = {f: bool(row[f"is_{cv}_issue"]) for f, cv in CLEANVISION.items()}
    return out


def rates(labels, flagged, flag, split):
    """(recall, positives, false-alarm rate, negatives) of `flagged[name][flag]` on `split`."""
    pos = [n for n, l in labels.items() if l["split"] == split and flag in l["flags"]]
    neg = [n for n, l in labels.items() if l["split"] == split and l["kind"] in ("orig", "clipart")]
    tp = sum(flagged[n][flag] for n in pos)
    fp = sum(flagged[n][flag] for n in neg)
    return tp / max(len(pos), 1), len(pos), fp / max(len(neg), 1), len(neg)


def pick_threshold(labels, values, side, flag, max_fa=0.05):
    """On calib: the cut with the best recall − false-alarm rate among those with at most
    max_fa false alarms; of equally good cuts, the median one (away from both edges)."""
    pos = [values[n] for n, l in labels.items() if l["split"] == "calib" and flag in l["flags"]]
    neg = [values[n] for n, l in labels.items() if l["split"] == "calib" and l["kind"] in ("orig", "clipart")]
    pos = [v for v in pos if v is not None]
    neg = [v for v in neg if v is not None]
    cands = sorted(set(pos + neg))
    scored = []
    for a, b in zip(cands, cands[1:]):
        t = (a + b) / 2
        flagged = (lambda v: v < t) if side == "<" else (lambda v: v > t)
        rec = sum(map(flagged, pos)) / max(len(pos), 1)
        fa = sum(map(flagged, neg)) / max(len(neg), 1)
        if fa <= max_fa:
            scored.append((round(rec - fa, 9), a, b, rec, fa))
    if not scored:
        return None
    top = max(s[0] for s in scored)
    best = [s for s in scored if s[0] == top]
    mid = best[len(best) // 2]
    return (mid[1] + mid[2]) / 2, mid[3], mid[4]


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sieve", default=str(ROOT / "target" / "debug" / "sieve"))
    ap.add_argument("--work", default="/work/cache/bench_quality")
    ap.add_argument("--debpics", default="/work/cache/debpics")
    ap.add_argument("--venv", default="/work/cache/venv-cleanvision")
    ap.add_argument("--stamps", type=int, default=400, help="colourful stamps to include")
    ap.add_argument("--no-cleanvision", action="store_true")
    ap.add_argument("--json", help="write every figure here too")
    args = ap.parse_args()
    ensure_venv(Path(args.venv))  # Pillow, numpy and pyarrow come with cleanvision
    work = Path(args.work)
    corpus = work / "corpus"
    labels = build_corpus(corpus, Path(args.debpics), args.stamps)
    files = sorted(labels)
    kinds = {}
    for l in labels.values():
        kinds[(l["split"], l["kind"])] = kinds.get((l["split"], l["kind"]), 0) + 1
    print(f"CPU: {cpu_model()} ({os.cpu_count()} threads)")
    print(f"corpus: {len(files)} files in {corpus / 'img'}")
    for split in ("calib", "holdout"):
        print(f"  {split}: " + ", ".join(f"{k} {n}" for (s, k), n in sorted(kinds.items()) if s == split))

    run = work / "run"
    q = run_sieve(args.sieve, corpus, run)
    summary = json.loads((run / "quality_summary.json").read_text())
    defs = {f["name"]: f for f in summary["flags"]}
    results = {"cpu": cpu_model(), "files": len(files), "tools": {}}

    def flags_of(rows):
        return {n: {f: bool(rows[n][f"flag_{f}"]) for f in FLAGS} for n in files}

    tools = {"sieve (defaults)": flags_of(q)}
    # Thresholds picked on calib from the signals sieve stored.
    picked = {}
    for f in FLAGS:
        d = defs[f]
        if d["signal"] is None:
            continue
        side = "<" if "<" in d["rule"] else ">"
        values = {n: q[n].get(d["signal"]) for n in files}
        best = pick_threshold(labels, values, side, f)
        if best:
            picked[f] = best[0]
    if picked:
        extra = [a for f, t in picked.items() for a in ("--threshold", f"{f}={t:.6g}")]
        tools["sieve (calib-picked)"] = flags_of(read_quality(args.sieve, run, extra))
        read_quality(args.sieve, run)  # leave the defaults' quality.parquet behind
    if not args.no_cleanvision:
        tools["cleanvision 0.3 (defaults)"] = run_cleanvision(corpus, files)

    print()
    for f in FLAGS:
        d = defs[f]
        print(f"{f}: sieve default {d['rule']}" + (f"; calib-picked {picked[f]:.4g}" if f in picked else ""))
    print()
    print("| flag | tool | calib recall | calib false alarms | holdout recall | holdout false alarms |")
    print("|---|---|---|---|---|---|")
    for f in FLAGS:
        for tool, flagged in tools.items():
            cells = []
            for split in ("calib", "holdout"):
                rec, npos, fa, nneg = rates(labels, flagged, f, split)
                cells += [f"{rec:.3f} (of {npos})", f"{fa:.3f} (of {nneg})"]
                results["tools"].setdefault(tool, {}).setdefault(f, {})[split] = {
                    "recall": rec,
                    "positives": npos,
                    "false_alarms": fa,
                    "negatives": nneg,
                }
            print(f"| {f} | {tool} | " + " | ".join(cells) + " |")
    # Where sieve (defaults) goes wrong, for a look.
    misses = [
        (n, f)
        for n in files
        for f in FLAGS
        if (f in labels[n]["flags"]) != tools["sieve (defaults)"][n][f]
        and (f in labels[n]["flags"] or labels[n]["kind"] in ("orig", "clipart"))
    ]
    print(f"\nsieve (defaults) errors: {len(misses)}")
    for n, f in misses[:40]:
        sig = defs[f]["signal"]
        print(f"  {'missed' if f in labels[n]['flags'] else 'false alarm':<11} {f:<9} {n}  {sig}={q[n].get(sig)}")
    results["picked"] = picked
    results["defaults"] = {f: defs[f]["rule"] for f in FLAGS}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
