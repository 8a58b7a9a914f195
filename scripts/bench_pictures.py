#!/usr/bin/env python3
"""A corpus of distinct real pictures for benchmarks, from Debian packages.

Downloads six packages with `apt-get download` into a cache folder (default
/work/cache/debpics; `--cache`), unpacks each with `dpkg-deb -x` into CACHE/x/PACKAGE, picks
one file per distinct picture, and writes each chosen picture, prepared, to
CACHE/sources/NAME.{png,jpg}. A cache folder that already holds CACHE/x/PACKAGE (or the
.deb) is reused; `apt-get update` is run only when a download fails. SVGs are rasterised
with rsvg-convert (package librsvg2-bin, installed when missing).

Packages and what is taken from each (one file per picture, "the largest landscape" when a
picture ships in several sizes):
  tuxpaint-stamps-default       clip-art stamps (.png preferred over the .svg of the same stamp)
  plasma-workspace-wallpapers   WALLPAPER/contents/images/WxH.*: the largest landscape size
                                (images_dark/ variants, portrait sizes and screenshot.* skipped)
  ukui-wallpapers, lomiri-wallpapers-20.04, mate-backgrounds, gnome-backgrounds
                                every background, with size variants (Elephants_3840x2160) and
                                colour variants (gnome X-l/X-d, Ubuntu-Mate-{Cold,Dark,Warm,
                                Radioactive}-no-logo, MATE-Stripes-{Light,Dark}) reduced to one

"Distinct" is enforced by these rules, each printed with its count by `--list`:
  * stamps named NAME_mirror / NAME_flip / NAME_left / NAME_right and NAME are one family;
  * the font-glyph alphabets (symbols/alphabets/{english,german,spanish}) are left out: their
    letters are one font in filled and outlined styles, upper and lower case, and several are
    mirror images of each other (b/d, p/q, n/u), so a mirrored copy of one *is* another;
  * hand-checked families (FAMILIES below: recoloured or re-lettered copies of one drawing,
    e.g. the dreidels, the euro coins of one design, manga eyes left/right) keep one member;
  * stamps in one folder whose content (cropped to the drawing, 24 x 24 grey, z-scored) has a
    correlation of at least 0.975 with a sibling's, as drawn or mirrored or flipped, are one
    family (this caught recolours: elf hat / santa hat, eye colours, green / red flag, < / >);
  * pictures with identical pixels (the same stamp in two folders) are one;
  * a picture that is nearly flat after compositing (grey std < 6 on a 64 x 64 copy) is
    left out (a plain grey wallpaper; overlay textures that are white on transparent are
    composited onto black instead of white, see below).
Family members are ranked by name and the first is kept.

Preparation: transparent pictures (RGBA, LA, P with transparency) are composited onto white
(onto black when white leaves them nearly flat: the MATE overlay textures), the longest side is
capped at 1600 px (Lanczos), and the result is saved as JPEG q95 when the packaged file was a
JPEG (photographs) and as PNG otherwise.

Splits: each picture goes to `calib` or `holdout` by the parity of sha256(name), so the halves
never change as the corpus grows. Within a split, pictures are ranked by sha256(seed:name) and a
sample of N (`--per-split N`) takes every wallpaper of the split (at most N // 2) and fills the
rest with the first clip-art stamps in that rank order; so a smaller sample is a prefix of a
larger one for the same seed.

`limit` (bench_dedup's --limit) takes the first N of that sample, in the same ratio.

Use as a module (scripts/bench_dedup.py does):
    import bench_pictures as bp
    sources = bp.corpus(cache, split="calib", per_split=150, seed=0)   # list of Source
or from the shell:
    python3 scripts/bench_pictures.py --list              # all candidates and exclusions
    python3 scripts/bench_pictures.py --split both --per-split 150

Needs Pillow and numpy: when they are missing this script creates a virtual environment
(default /work/cache/venv-imagededup, `--venv`) and re-runs itself inside it.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass

DEFAULT_CACHE = "/work/cache/debpics"
DEFAULT_VENV = "/work/cache/venv-imagededup"
PACKAGES = [
    "tuxpaint-stamps-default",
    "plasma-workspace-wallpapers",
    "ukui-wallpapers",
    "gnome-backgrounds",
    "mate-backgrounds",
    "lomiri-wallpapers-20.04",
]
MAX_SIDE = 1600
FLAT_STD = 6.0  # grey std (0-255) on a 64 x 64 copy under which a picture counts as flat
SIBLING_CORR = 0.975  # stamps in one folder at least this alike are one family
# Bump when the selection or the preparation changes: prepared files and the candidate list
# are rebuilt.
CORPUS_VERSION = "1"

# Hand-checked families of stamps (regex on the stamp's path without extension -> family).
FAMILIES = [
    (r"seasonal/hanukkah/dreydl.*", "dreydl"),  # one drawing, the Hebrew letter differs
    (r"symbols/money/euro/coins/00[125]", "euro-copper"),  # one design, the numeral differs
    (r"symbols/money/euro/coins/0[125]0", "euro-gold"),
    (r"symbols/money/euro/coins/[12]00", "euro-bimetal"),
    (r"people/body_parts/manga_eye_(left|right)", "manga_eye"),  # mirror pair
    (r"people/body_parts/eye_(blue|brown|green)_left", "eye_colour"),  # recolours
]
EXCLUDED_DIRS = [r"symbols/alphabets/(english|german|spanish)/"]
# Wallpaper colour/size variants reduced to one (regex on the file stem -> family).
WALLPAPER_FAMILIES = [
    (r"(.+)-[ld]", r"\1"),  # gnome light/dark
    (r"(.+)_\d+x\d+", r"\1"),  # mate Elephants_3840x2160
    (r"Ubuntu-Mate-.*-no-logo", "Ubuntu-Mate-no-logo"),
    (r"MATE-Stripes-.*", "MATE-Stripes"),
]

VENV_PACKAGES = ["numpy", "Pillow"]


# --------------------------------------------------------------------------------------------
# Environment


def ensure_venv(venv: str, packages: list[str], nodeps: list[str] = (), modules=("PIL", "numpy")) -> None:
    """Re-runs the current script inside `venv` (made and filled when needed) unless every
    module in `modules` imports here."""
    try:
        for m in modules:
            __import__(m)
        return
    except ImportError:
        pass
    py = os.path.join(venv, "bin", "python")
    if os.path.realpath(sys.prefix) == os.path.realpath(venv):
        # Inside the venv and still missing something: install and go on.
        _pip(py, packages, nodeps)
        return
    if not os.path.exists(py):
        print(f"[setup] creating virtual environment {venv}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    probe = subprocess.run([py, "-c", "; ".join(f"import {m}" for m in modules)], capture_output=True)
    if probe.returncode != 0:
        _pip(py, packages, nodeps)
    os.execv(py, [py, os.path.abspath(sys.argv[0])] + sys.argv[1:])


def _pip(py: str, packages, nodeps) -> None:
    print(f"[setup] pip install {' '.join(packages)}", file=sys.stderr)
    subprocess.run([py, "-m", "pip", "install", "-q", *packages], check=True)
    if nodeps:
        print(f"[setup] pip install --no-deps {' '.join(nodeps)}", file=sys.stderr)
        subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", *nodeps], check=True)


# --------------------------------------------------------------------------------------------
# Packages


def fetch(cache: str, log=print) -> dict[str, str]:
    """Makes sure every package is unpacked under CACHE/x/PACKAGE; returns package -> folder."""
    os.makedirs(os.path.join(cache, "x"), exist_ok=True)
    out = {}
    updated = False
    for pkg in PACKAGES:
        dest = os.path.join(cache, "x", pkg)
        if os.path.isdir(os.path.join(dest, "usr")):
            out[pkg] = dest
            continue
        debs = sorted(glob.glob(os.path.join(cache, f"{pkg}_*.deb")))
        if not debs:
            for attempt in range(2):
                log(f"[corpus] apt-get download {pkg}")
                r = subprocess.run(["apt-get", "download", pkg], cwd=cache, capture_output=True, text=True)
                if r.returncode == 0:
                    break
                if updated or attempt:
                    raise SystemExit(f"apt-get download {pkg} failed:\n{r.stderr}")
                log("[corpus] apt-get update")
                subprocess.run(["apt-get", "update"], check=True, capture_output=True)
                updated = True
            debs = sorted(glob.glob(os.path.join(cache, f"{pkg}_*.deb")))
        tmp = tempfile.mkdtemp(dir=os.path.join(cache, "x"), prefix=f".{pkg}.")
        log(f"[corpus] dpkg-deb -x {os.path.basename(debs[-1])}")
        subprocess.run(["dpkg-deb", "-x", debs[-1], tmp], check=True)
        os.rename(tmp, dest)
        out[pkg] = dest
    return out


def ensure_rsvg(log=print) -> bool:
    if shutil.which("rsvg-convert"):
        return True
    log("[corpus] installing librsvg2-bin (rsvg-convert) for the SVG pictures")
    for cmd in (["apt-get", "install", "-y", "--no-install-recommends", "librsvg2-bin"], ["apt-get", "update"]):
        r = subprocess.run(cmd, capture_output=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        if cmd[1] == "install" and r.returncode == 0:
            return True
    r = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "librsvg2-bin"], capture_output=True)
    return r.returncode == 0 and bool(shutil.which("rsvg-convert"))


# --------------------------------------------------------------------------------------------
# Candidates


@dataclass
class Source:
    name: str  # unique, file-name safe: clip-..., wall-...
    kind: str  # "clipart" or "wallpaper"
    package: str
    path: str  # packaged file, relative to CACHE/x/PACKAGE
    split: str = ""
    file: str = ""  # prepared file (absolute), set by prepare()
    size: tuple = ()  # prepared size (w, h)


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", s).strip("-")


def _split(name: str) -> str:
    return "calib" if hashlib.sha256(name.encode()).digest()[0] % 2 == 0 else "holdout"


def _wall_size(path: str) -> tuple[int, int]:
    m = re.match(r"(\d+)x(\d+)\.", os.path.basename(path))
    if m:
        return int(m[1]), int(m[2])
    from PIL import Image

    if path.endswith(".svg"):
        return (1, 1)
    with Image.open(path) as im:
        return im.size


def _wallpapers(roots: dict[str, str]) -> tuple[list[Source], list[str]]:
    notes = []
    out = []
    # Plasma: one folder per wallpaper.
    pkg = "plasma-workspace-wallpapers"
    base = os.path.join(roots[pkg], "usr/share/wallpapers")
    for d in sorted(os.listdir(base)):
        files = glob.glob(os.path.join(base, d, "contents/images/*"))
        sized = [(w >= h, w * h, f) for f in files for (w, h) in [_wall_size(f)]]
        if not sized:
            continue
        sized.sort()
        f = sized[-1][2]
        out.append(Source(f"wall-plasma-{_safe(d)}", "wallpaper", pkg, os.path.relpath(f, roots[pkg])))
    # The others: flat folders of backgrounds; variants reduced to one per family.
    for pkg, pattern in [
        ("gnome-backgrounds", "usr/share/backgrounds/gnome/*"),
        ("mate-backgrounds", "usr/share/backgrounds/mate/*/*"),
        ("ukui-wallpapers", "usr/share/backgrounds/*"),
        ("lomiri-wallpapers-20.04", "usr/share/backgrounds/*"),
    ]:
        fams: dict[str, list] = {}
        for f in sorted(glob.glob(os.path.join(roots[pkg], pattern))):
            if not re.search(r"\.(png|jpe?g|webp|svg)$", f, re.I) or os.path.isdir(f):
                continue
            stem = os.path.splitext(os.path.basename(f))[0]
            fam = stem
            for rx, rep in WALLPAPER_FAMILIES:
                if re.fullmatch(rx, stem):
                    fam = re.sub(rx, rep, stem) if "\\" in rep else rep
                    break
            w, h = _wall_size(f)
            # Prefer light (-l) over dark, then the largest landscape, then the name.
            fams.setdefault(fam, []).append((not stem.endswith("-d"), w >= h, w * h, f))
        for fam, members in sorted(fams.items()):
            members.sort()
            f = members[-1][3]
            if len(members) > 1:
                notes.append(f"{pkg}: {fam}: kept {os.path.basename(f)} of " + ", ".join(os.path.basename(m[3]) for m in members))
            short = pkg.split("-")[0]
            out.append(Source(f"wall-{short}-{_safe(fam)}", "wallpaper", pkg, os.path.relpath(f, roots[pkg])))
    return out, notes


def _stamps(roots: dict[str, str]) -> tuple[list[Source], list[str]]:
    pkg = "tuxpaint-stamps-default"
    base = os.path.join(roots[pkg], "usr/share/tuxpaint/stamps")
    stems: dict[str, str] = {}
    for f in sorted(glob.glob(base + "/**/*.png", recursive=True) + glob.glob(base + "/**/*.svg", recursive=True)):
        s = os.path.relpath(f, base).rsplit(".", 1)[0]
        if s in stems and stems[s].endswith(".png"):
            continue  # the PNG of a stamp that also ships as SVG
        stems[s] = f
    notes = []
    out = []
    excluded = [s for s in stems if any(re.match(rx, s) for rx in EXCLUDED_DIRS)]
    notes.append(f"stamps: {len(excluded)} font-glyph letters left out ({', '.join(EXCLUDED_DIRS)})")
    for s in sorted(stems):
        if s in excluded:
            continue
        out.append(Source(f"clip-{_safe(s)}", "clipart", pkg, os.path.relpath(stems[s], roots[pkg])))
    return out, notes


def _rgb(path: str, box: int = MAX_SIDE):
    """The picture at `path` as an RGB PIL image (transparency composited onto white, or onto
    black when white leaves it flat), longest side at most `box`."""
    import numpy as np
    from PIL import Image

    if path.endswith(".svg"):
        png = subprocess.run(
            ["rsvg-convert", "--keep-aspect-ratio", "-w", str(box), "-h", str(box), path],
            check=True, capture_output=True,
        ).stdout
        im = Image.open(io.BytesIO(png))
    else:
        im = Image.open(path)
        if im.format == "JPEG":
            im.draft("RGB", (box, box))  # decode big JPEGs at a reduced scale, >= box
    im.load()
    has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
    if has_alpha:
        rgba = im.convert("RGBA")
        on = {}
        for bg in ((255, 255, 255), (0, 0, 0)):
            c = Image.new("RGBA", rgba.size, bg + (255,))
            c.alpha_composite(rgba)
            on[bg] = c.convert("RGB")
            g = np.asarray(on[bg].convert("L").resize((64, 64), Image.BOX), dtype=np.float32)
            if g.std() >= FLAT_STD:
                break
        im = on[bg]
    else:
        im = im.convert("RGB")
    if max(im.size) > box:
        im.thumbnail((box, box), Image.LANCZOS)
    return im


def _feature(im):
    """Content-cropped 24 x 24 grey, z-scored, for the sibling rule."""
    import numpy as np
    from PIL import Image

    g = np.asarray(im.convert("L"), dtype=np.uint8)
    ys, xs = np.nonzero(g < 245)
    if len(xs):
        im = im.crop((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
    v = np.asarray(im.convert("L").resize((24, 24), Image.BOX), dtype=np.float32).ravel()
    return (v - v.mean()) / (v.std() + 1e-6)


def candidates(cache: str, log=print) -> tuple[list[Source], list[str]]:
    """Every distinct picture (both splits), cached as CACHE/candidates-vN.json."""
    listing = os.path.join(cache, f"candidates-v{CORPUS_VERSION}.json")
    if os.path.exists(listing):
        with open(listing) as f:
            d = json.load(f)
        return [Source(**s) for s in d["sources"]], d["notes"]
    import numpy as np
    from PIL import Image

    roots = fetch(cache, log)
    if not ensure_rsvg(log):
        raise SystemExit("rsvg-convert is needed for the SVG pictures (apt-get install librsvg2-bin)")
    walls, wnotes = _wallpapers(roots)
    stamps, snotes = _stamps(roots)
    notes = wnotes + snotes
    log(f"[corpus] checking {len(walls)} wallpapers and {len(stamps)} stamps for flat pictures and siblings")
    feats = {}
    pixhash = {}
    keep = []
    for s in walls + stamps:
        im = _rgb(os.path.join(roots[s.package], s.path), box=256)
        g = np.asarray(im.convert("L").resize((64, 64), Image.BOX), dtype=np.float32)
        if g.std() < FLAT_STD:
            notes.append(f"flat, left out: {s.name} ({s.path})")
            continue
        h = hashlib.sha256(im.tobytes() + repr(im.size).encode()).hexdigest()
        if h in pixhash:
            notes.append(f"identical pixels: {s.name} = {pixhash[h]}, left out")
            continue
        pixhash[h] = s.name
        if s.kind == "clipart":
            feats[s.name] = _feature(im)
        keep.append(s)
    # Stamp families: suffix rule, hand-checked families, and the sibling rule; union-find.
    parent = {s.name: s.name for s in keep}

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(a, b, why):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
            notes.append(f"family ({why}): {a} ~ {b}")

    clips = [s for s in keep if s.kind == "clipart"]
    stem = {s.name: os.path.splitext(s.path.split("/stamps/", 1)[1])[0] for s in clips}
    by_key: dict[str, str] = {}
    for s in clips:
        st = stem[s.name]
        key = re.sub(r"_(mirror|flip|left|right)$", "", st)
        for rx, fam in FAMILIES:
            if re.fullmatch(rx, st):
                key = "family:" + fam
                break
        if key in by_key:
            union(by_key[key], s.name, "name" if not key.startswith("family:") else key)
        else:
            by_key[key] = s.name
    by_dir: dict[str, list[str]] = {}
    for s in clips:
        by_dir.setdefault(os.path.dirname(stem[s.name]), []).append(s.name)
    for names in by_dir.values():
        if len(names) < 2:
            continue
        f = np.stack([feats[n] for n in names])
        fm = f.reshape(-1, 24, 24)
        variants = [f, fm[:, :, ::-1].reshape(len(f), -1), fm[:, ::-1, :].reshape(len(f), -1)]
        sim = np.maximum.reduce([f @ v.T for v in variants]) / f.shape[1]
        for i in range(len(names)):
            for j in range(i + 1, len(names)):
                if max(sim[i, j], sim[j, i]) >= SIBLING_CORR:
                    union(names[i], names[j], f"corr {max(sim[i, j], sim[j, i]):.3f}")
    final = [s for s in keep if find(s.name) == s.name]
    for s in final:
        s.split = _split(s.name)
    notes.append(
        f"candidates: {sum(s.kind == 'wallpaper' for s in final)} wallpapers, "
        f"{sum(s.kind == 'clipart' for s in final)} stamps "
        f"(calib {sum(s.split == 'calib' for s in final)}, holdout {sum(s.split == 'holdout' for s in final)})"
    )
    tmp = listing + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"version": CORPUS_VERSION, "sources": [asdict(s) for s in final], "notes": notes}, f, indent=1)
    os.replace(tmp, listing)
    return final, notes


def _rank(name: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()


def select(sources: list[Source], split: str, per_split: int, seed: int = 0) -> list[Source]:
    """The sample of one split: every wallpaper of the split (at most per_split // 2), then
    clip art up to per_split, each in sha256(seed:name) order."""
    pool = [s for s in sources if s.split == split]
    walls = sorted((s for s in pool if s.kind == "wallpaper"), key=lambda s: _rank(s.name, seed))
    clips = sorted((s for s in pool if s.kind == "clipart"), key=lambda s: _rank(s.name, seed))
    walls = walls[: per_split // 2]
    chosen = walls + clips[: max(0, per_split - len(walls))]
    return sorted(chosen, key=lambda s: _rank(s.name, seed))


def prepare(cache: str, s: Source) -> Source:
    """Writes the prepared picture (once) to CACHE/sources/ and fills s.file and s.size."""
    from PIL import Image

    out_dir = os.path.join(cache, f"sources-v{CORPUS_VERSION}")
    os.makedirs(out_dir, exist_ok=True)
    src = os.path.join(cache, "x", s.package, s.path)
    jpeg = bool(re.search(r"\.jpe?g$", s.path, re.I))
    out = os.path.join(out_dir, s.name + (".jpg" if jpeg else ".png"))
    if not os.path.exists(out):
        im = _rgb(src)
        tmp = out + ".tmp"
        if jpeg:
            im.save(tmp, "JPEG", quality=95)
        else:
            im.save(tmp, "PNG")
        os.replace(tmp, out)
    with Image.open(out) as im:
        s.size = im.size
    s.file = out
    return s


def corpus(cache: str = DEFAULT_CACHE, split: str = "calib", per_split: int = 150, seed: int = 0, log=print,
           limit: int | None = None) -> list[Source]:
    """The prepared sample of one split (see the module docstring); `limit`: its first N only."""
    srcs, _ = candidates(cache, log)
    chosen = select(srcs, split, per_split, seed)
    if limit is not None and limit < len(chosen):
        # Keep the sample's wallpaper / clip-art ratio; both lists are in rank order.
        walls = [s for s in chosen if s.kind == "wallpaper"]
        clips = [s for s in chosen if s.kind != "wallpaper"]
        k = min(len(walls), round(limit * len(walls) / len(chosen)))
        chosen = sorted(walls[:k] + clips[: limit - k], key=lambda s: _rank(s.name, seed))
    return [prepare(cache, s) for s in chosen]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", default=DEFAULT_CACHE, help="download/extract/prepared-file cache (default %(default)s)")
    ap.add_argument("--venv", default=DEFAULT_VENV, help="virtual environment used when Pillow/numpy are missing")
    ap.add_argument("--split", default="both", choices=["calib", "holdout", "both"])
    ap.add_argument("--per-split", type=int, default=150, help="pictures per split (default %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--list", action="store_true", help="print every candidate and the selection notes, prepare nothing")
    ap.add_argument("--manifest", help="write the selected sources as JSON here")
    args = ap.parse_args()
    ensure_venv(args.venv, VENV_PACKAGES)
    srcs, notes = candidates(args.cache)
    if args.list:
        for n in notes:
            print(n)
        for s in srcs:
            print(f"{s.split:8s} {s.kind:9s} {s.name}  <- {s.package}/{s.path}")
        return
    out = []
    for split in (["calib", "holdout"] if args.split == "both" else [args.split]):
        sel = corpus(args.cache, split, args.per_split, args.seed)
        nw = sum(s.kind == "wallpaper" for s in sel)
        print(f"{split}: {len(sel)} pictures ({nw} wallpapers, {len(sel) - nw} clip art) in {args.cache}/sources-v{CORPUS_VERSION}")
        out += [asdict(s) for s in sel]
    if args.manifest:
        with open(args.manifest, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
