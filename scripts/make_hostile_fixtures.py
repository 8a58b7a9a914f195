#!/usr/bin/env python3
"""Odd-but-valid image fixtures for sieve's hostile-input tests, with transformers' reference.

Writes tests/fixtures/hostile/ (relative to --root):
  <file>                 small images (24-64 px) in formats and modes a crawl turns up: CMYK,
                         progressive and grey JPEG, JPEGs with EXIF orientation 2..8, 16-bit PNG
                         (grey, grey+alpha, RGB, RGBA), palette PNG with tRNS, LA, 1-bit and Adam7-interlaced
                         PNG, a PNG with an eXIf orientation, animated GIF, lossy/lossless WebP
                         with alpha, TIFF (RGB LZW, CMYK, 16-bit grey), BMP (24-bit, palette)
  ref/<file>.npy         uint8 [H, W, 3]: the RGB image CLIPImageProcessor resizes, i.e.
                         convert_to_rgb(exif_transpose(Image.open(file))) (first frame). The
                         script asserts that the processor gives bit-identical pixel_values for
                         this array and for the original image, so comparing against it is
                         comparing pixel_values; full [3,224,224] f32 arrays would be 600 KB each.
  ref/pixel_grid.npy     float32 [N, 192]: CLIPImageProcessor(models/tiny-clip) pixel_values of
                         each fixture (manifest order) sampled at [:, 14::28, 14::28], a direct
                         check against the processor itself.
  manifest.json          versions, and per fixture: file, what it exercises, displayed size, the
                         Pillow mode it opens as.

Run it with the throwaway venv of make_reference.sh (torch, transformers, Pillow, numpy):
  scripts/make_reference.sh          # once, creates /tmp/sieve-ref-venv
  /tmp/sieve-ref-venv/bin/python scripts/make_hostile_fixtures.py
or with any venv holding `transformers pillow numpy torch`. Seeded; running it twice with the
same Pillow gives the same files.
"""

import argparse
import io
import json
import shutil
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import PIL
import transformers
from PIL import Image, ImageOps, features
from transformers import CLIPImageProcessor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_reference import scene  # noqa: E402  (the same photo-like generator as the goldens)

GRID = (slice(None), slice(14, None, 28), slice(14, None, 28))


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_by_hand(arr, bit_depth, color_type, interlace):
    """A PNG written directly (Pillow writes neither 16-bit RGB nor interlaced PNG): filter 0 rows."""
    h, w = arr.shape[:2]
    raw = arr.astype(">u2").tobytes() if bit_depth == 16 else arr.astype(np.uint8).tobytes()
    row_bytes = len(raw) // h

    def rows(sub):
        if sub.size == 0:
            return b""
        data = sub.astype(">u2") if bit_depth == 16 else sub.astype(np.uint8)
        return b"".join(b"\x00" + data[y].tobytes() for y in range(sub.shape[0]))

    if interlace:
        passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
        body = b"".join(rows(arr[y0::dy, x0::dx]) for x0, y0, dx, dy in passes)
    else:
        body = b"".join(b"\x00" + raw[y * row_bytes : (y + 1) * row_bytes] for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 1 if interlace else 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(body, 9)) + png_chunk(b"IEND", b"")


def exif_with_orientation(o):
    exif = Image.Exif()
    exif[0x0112] = o
    return exif.tobytes()


def make_fixtures(out):
    rng = np.random.default_rng(20260512)
    fixtures = []  # (file, what)

    def save(name, what, im=None, data=None, **kw):
        if data is None:
            buf = io.BytesIO()
            im.save(buf, **kw)
            data = buf.getvalue()
        (out / name).write_bytes(data)
        fixtures.append((name, what))

    rgb = lambda h, w, noise=3.0: Image.fromarray(scene(h, w, rng, noise=noise), "RGB")  # noqa: E731

    # JPEG
    save("cmyk.jpg", "CMYK JPEG (Pillow writes Adobe-inverted CMYK)", rgb(40, 56).convert("CMYK"), format="JPEG", quality=90)
    save("progressive.jpg", "progressive JPEG", rgb(36, 48), format="JPEG", quality=85, progressive=True)
    save("gray.jpg", "greyscale JPEG", rgb(48, 40).convert("L"), format="JPEG", quality=90)
    save("subsampling-444.jpg", "JPEG without chroma subsampling, restart markers", rgb(33, 45), format="JPEG", quality=95, subsampling=0, restart_marker_rows=1)
    for o in range(2, 9):
        # 48 wide, 32 high: rotations swap the displayed size
        save(f"exif-{o}.jpg", f"JPEG with EXIF orientation {o}", rgb(32, 48), format="JPEG", quality=90, exif=exif_with_orientation(o))
    # PNG
    g16 = (np.linspace(0, 600, 40)[None, :] * np.linspace(0.2, 1.0, 28)[:, None]).astype(np.uint16)
    save("gray16.png", "16-bit greyscale PNG (Pillow I;16, clamped to 0..255 by convert)", Image.frombytes("I;16", (40, 28), g16.astype("<u2").tobytes()), format="PNG")
    rgb16 = scene(30, 44, rng).astype(np.uint16) * 257 + rng.integers(0, 257, size=(30, 44, 3)).astype(np.uint16)
    save("rgb16.png", "16-bit RGB PNG (written by hand)", data=png_by_hand(rgb16, 16, 2, False))
    a16 = (np.linspace(0, 65535, 30)[:, None] * np.ones((1, 44))).astype(np.uint16)
    save("rgba16.png", "16-bit RGBA PNG (written by hand)", data=png_by_hand(np.dstack([rgb16, a16]), 16, 6, False))
    save("la16.png", "16-bit grey + alpha PNG (written by hand; Pillow opens it as RGBA)", data=png_by_hand(np.dstack([rgb16[..., 1], a16[:, ::-1]]), 16, 4, False))
    save("interlaced.png", "Adam7-interlaced RGB PNG (written by hand)", data=png_by_hand(scene(37, 29, rng), 8, 2, True))
    pal = rgb(30, 42, noise=1.0).quantize(colors=16, dither=Image.Dither.NONE)
    pal.info["transparency"] = bytes([0, 128, 255] + [255] * 13)
    save("palette-trns.png", "palette PNG with a tRNS alpha table", pal, format="PNG", transparency=bytes([0, 128, 255] + [255] * 13))
    la = np.dstack([np.asarray(rgb(26, 38).convert("L")), np.linspace(0, 255, 38, dtype=np.uint8)[None, :].repeat(26, 0)])
    save("la.png", "grey + alpha PNG", Image.fromarray(la, "LA"), format="PNG")
    save("bilevel.png", "1-bit PNG", rgb(28, 36).convert("1"), format="PNG")
    save("exif-6.png", "PNG with an eXIf chunk, orientation 6", rgb(24, 40), format="PNG", exif=exif_with_orientation(6))
    # GIF: the first frame (with a transparent index) must be the one used
    frames = [rgb(32, 40, noise=1.0).quantize(colors=32, dither=Image.Dither.NONE) for _ in range(3)]
    save("animated.gif", "animated GIF, 3 frames, transparent index; first frame used", frames[0], format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0, transparency=0, disposal=2)
    # WebP
    save("lossy.webp", "lossy WebP", rgb(34, 46), format="WEBP", quality=80, method=4)
    alpha = np.linspace(0, 255, 40, dtype=np.uint8)[:, None].repeat(30, 1)
    rgba = Image.fromarray(np.dstack([scene(40, 30, rng), alpha]), "RGBA")
    save("lossless-alpha.webp", "lossless WebP with alpha", rgba, format="WEBP", lossless=True)
    save("lossy-alpha.webp", "lossy WebP with an alpha plane", rgba, format="WEBP", quality=80, method=4)
    save("exif-8.webp", "lossy WebP with EXIF orientation 8", rgb(24, 40), format="WEBP", quality=90, exif=exif_with_orientation(8))
    # TIFF
    save("rgb-lzw.tiff", "RGB TIFF, LZW", rgb(30, 38), format="TIFF", compression="tiff_lzw")
    save("orientation-6.tiff", "RGB TIFF with Orientation tag 6", rgb(24, 40), format="TIFF", exif=exif_with_orientation(6))
    save("cmyk.tif", "CMYK TIFF", rgb(28, 34).convert("CMYK"), format="TIFF")
    save("gray16.tiff", "16-bit greyscale TIFF (Pillow I;16)", Image.frombytes("I;16", (40, 28), g16.astype("<u2").tobytes()), format="TIFF")
    # BMP
    save("rgb.bmp", "24-bit BMP", rgb(27, 35), format="BMP")
    save("palette.bmp", "8-bit palette BMP", rgb(30, 30).quantize(colors=64, dither=Image.Dither.NONE), format="BMP")
    return fixtures


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default=str(Path(__file__).resolve().parent.parent))
    args = ap.parse_args()
    root = Path(args.root)
    out = root / "tests/fixtures/hostile"
    if out.exists():
        shutil.rmtree(out)
    (out / "ref").mkdir(parents=True)
    fixtures = make_fixtures(out)

    processor = CLIPImageProcessor.from_pretrained(str(root / "models/tiny-clip"))
    grid, entries = [], []
    for name, what in fixtures:
        with Image.open(out / name) as opened:
            mode = opened.mode
            # transformers' load_image applies EXIF orientation; Image.open gives the first frame.
            im = ImageOps.exif_transpose(opened)
            im.load()
        pv = processor(images=im, return_tensors="np")["pixel_values"][0]
        rgb = np.array(transformers.image_transforms.convert_to_rgb(im, return_numpy=True))
        assert rgb.dtype == np.uint8 and rgb.shape[2] == 3, (name, rgb.dtype, rgb.shape)
        again = processor(images=Image.fromarray(rgb, "RGB"), return_tensors="np")["pixel_values"][0]
        assert np.array_equal(pv, again), f"{name}: pixel_values of the RGB reference differ from the image's"
        np.save(out / "ref" / f"{name}.npy", rgb)
        grid.append(pv[GRID].reshape(-1).astype(np.float32))
        entries.append({"file": name, "what": what, "pillow_mode": mode, "size": [im.width, im.height]})
        print(f"{name:22} {mode:5} {im.width}x{im.height}  {what}")
    np.save(out / "ref" / "pixel_grid.npy", np.stack(grid))
    manifest = {
        "generator": "scripts/make_hostile_fixtures.py",
        "pillow": PIL.__version__,
        "libjpeg_turbo": features.version("jpg"),
        "libwebp": features.version("webp"),
        "transformers": transformers.__version__,
        "image_processor": type(processor).__name__,
        "reference": "ref/<file>.npy = uint8 HxWx3 convert_to_rgb(exif_transpose(Image.open(file))); "
        "ref/pixel_grid.npy row i = pixel_values[:, 14::28, 14::28] (CHW, flattened) of fixture i",
        "fixtures": entries,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"{len(entries)} fixtures, {total / 1024:.0f} KiB in {out}")


if __name__ == "__main__":
    main()
