#!/usr/bin/env python3
"""Pillow's own bicubic resizes of fixture pictures, for the bit-exact resampler test.

Writes tests/fixtures/golden/resample/<stem>_<w>x<h>.npy (uint8 [h, w, 3]) and manifest.json.
The sizes cover both of Pillow 13's pass orders: a tall picture shrunk much more in height than
in width goes vertical-first, the others horizontal-first (Resample.c, ImagingResampleInner).
Run with the venv scripts/make_reference.sh creates:
  /tmp/sieve-ref-venv/bin/python scripts/make_resample_golden.py
"""

import json
import sys
from pathlib import Path

import numpy as np
import PIL
from PIL import Image

CASES = [
    ("tall.jpg", 64, 256),  # 200x800: height shrinks by 544 > 2 x 136 -> vertical first
    ("tall.jpg", 56, 224),  # vertical first
    ("tall.jpg", 30, 120),  # vertical first
    ("tall.jpg", 20, 500),  # 300 > 2 x 180 is false -> horizontal first
    ("tall.jpg", 10, 420),  # 380 == 2 x 190, not more -> horizontal first (the boundary)
    ("photo.jpg", 85, 64),  # horizontal first
    ("wide.png", 300, 50),  # horizontal first
]


def main():
    root = Path(__file__).resolve().parent.parent
    src = root / "tests" / "fixtures" / "images"
    out = root / "tests" / "fixtures" / "golden" / "resample"
    out.mkdir(parents=True, exist_ok=True)
    cases = []
    for name, w, h in CASES:
        with Image.open(src / name) as im:
            r = np.array(im.convert("RGB").resize((w, h), Image.BICUBIC))
        f = f"{Path(name).stem}_{w}x{h}.npy"
        np.save(out / f, r)
        cases.append({"image": name, "width": w, "height": h, "file": f})
    manifest = {"pillow": PIL.__version__, "filter": "bicubic", "cases": cases}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"{len(cases)} resizes with Pillow {PIL.__version__}")


if __name__ == "__main__":
    sys.exit(main())
