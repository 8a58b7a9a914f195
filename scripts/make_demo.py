#!/usr/bin/env python3
"""Writes demo/: a small corpus of procedurally drawn pictures with sidecar captions, made so
that every stage of `sieve run` and every section of its report has something to show.

    python3 -m venv /tmp/venv-demo && /tmp/venv-demo/bin/pip install pillow numpy
    /tmp/venv-demo/bin/python scripts/make_demo.py          # rewrites demo/ (README.md kept)

Everything is drawn from a fixed seed, so a rerun with the same Pillow and NumPy writes the
same pictures. The folders:

- landscapes/, patterns/, objects/: distinct pictures, each with `NAME.txt` as its caption
  (sieve pairs `NAME.jpg` with `NAME.txt` next to it);
- variants/: copies of some of them: a byte-identical copy, and resized, re-encoded, cropped,
  mirrored and framed copies (exact and perceptual duplicates), plus a different picture that
  shares another's caption (a caption duplicate);
- problems/: a blurred picture, an under-exposed one, a grey one, a tiny one, one whose
  caption describes something else, one with a camera-default caption, one with a one-word
  caption, one without a caption, and a file that is not a picture at all.
"""

import io
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

ROOT = Path(__file__).resolve().parent.parent / "demo"
W, H = 320, 240
RNG = np.random.default_rng(20261202)


def grid():
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    return x / W, y / H


def noise(scale=1.0, smooth=2):
    """Smooth random texture in [-scale, scale], the same size as the picture."""
    n = RNG.standard_normal((H // 4 + 1, W // 4 + 1)).astype(np.float32)
    img = Image.fromarray(((n * 40) + 128).clip(0, 255).astype(np.uint8)).resize((W, H), Image.BICUBIC)
    if smooth:
        img = img.filter(ImageFilter.GaussianBlur(smooth))
    return (np.asarray(img, np.float32) - 128) / 40 * scale


def to_image(rgb):
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")


def lerp(a, b, t):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return a + (b - a) * t[..., None]


def grain(img, amount=6):
    """Fine sensor-like grain, so the pictures have detail at every scale, as photos do."""
    a = np.asarray(img, np.float32) + RNG.normal(0, amount, (img.height, img.width, 1))
    return to_image(a)


# --- landscapes -------------------------------------------------------------------------------

def sunset():
    x, y = grid()
    sky = lerp([255, 170, 60], [90, 40, 120], 1 - y / 0.6)
    sea = lerp([40, 50, 110], [15, 20, 60], (y - 0.6) / 0.4)
    sea += (np.sin(y * 260 + noise(2)) * 12)[..., None]
    img = np.where((y < 0.6)[..., None], sky, sea)
    sun = ((x - 0.5) ** 2 * (W / H) ** 2 + (y - 0.5) ** 2) < 0.012
    img[sun & (y < 0.6)] = [255, 230, 150]
    return grain(to_image(img))


def hills():
    x, y = grid()
    img = lerp([120, 180, 255], [200, 230, 255], y / 0.5)
    for i, (col, base) in enumerate([([70, 150, 60], 0.45), ([40, 120, 40], 0.6), ([30, 90, 30], 0.78)]):
        ridge = base + 0.06 * np.sin(x * (5 + 3 * i) + i) + 0.03 * np.sin(x * 17 + 2 * i)
        mask = y > ridge
        img[mask] = (np.asarray(col, np.float32) + noise(18)[..., None])[mask]
    return grain(to_image(img))


def mountains():
    x, y = grid()
    img = lerp([150, 190, 235], [235, 240, 250], y / 0.6)
    for peak, width, height, shade in [(0.3, 0.35, 0.25, 90), (0.68, 0.4, 0.18, 70), (0.5, 0.5, 0.42, 110)]:
        top = height + np.abs(x - peak) / width * 0.55 + noise(0.015)
        mask = y > top
        rock = np.stack([shade + noise(15), shade + 5 + noise(15), shade + 20 + noise(15)], -1)
        snow = y < top + 0.08
        rock[snow] = [245, 248, 255]
        img[mask] = rock[mask]
    img[y > 0.85] = lerp([60, 110, 60], [40, 80, 40], (y - 0.85) / 0.15)[y > 0.85]
    return grain(to_image(img))


def dunes():
    x, y = grid()
    img = lerp([120, 170, 230], [250, 220, 180], y / 0.35)
    crest = 0.35 + 0.05 * np.sin(x * 9) + 0.02 * np.sin(x * 23 + 1)
    sand = lerp([235, 190, 120], [190, 130, 70], np.clip((y - crest) * 3 + 0.3 * np.sin(x * 30 + y * 50), 0, 1))
    img = np.where((y > crest)[..., None], sand + noise(8)[..., None], img)
    return grain(to_image(img))


def lake():
    x, y = grid()
    img = lerp([110, 160, 230], [190, 215, 240], y / 0.45)
    trees = y > 0.3 + 0.12 * np.abs(np.sin(x * 40)) * (0.5 + 0.5 * np.sin(x * 7))
    img[trees & (y < 0.5)] = [30, 80, 40]
    top = img[: H // 2][::-1]
    water = top[: H - H // 2] * 0.7 + np.array([10, 30, 50])
    water += (np.sin(np.arange(H - H // 2) * 1.3)[:, None, None] * 6)
    img[H // 2:] = water
    return grain(to_image(img))


def flowers():
    x, y = grid()
    img = np.stack([60 + noise(20), 140 + noise(25), 50 + noise(15)], -1)
    d = ImageDraw.Draw(im := to_image(img))
    for _ in range(120):
        cx, cy, r = RNG.integers(0, W), RNG.integers(0, H), RNG.integers(3, 8)
        col = [(230, 40, 60), (250, 220, 40), (240, 240, 250), (180, 60, 200)][RNG.integers(0, 4)]
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=col)
        d.ellipse([cx - 1, cy - 1, cx + 1, cy + 1], fill=(250, 200, 30))
    return grain(im)


def forest():
    x, y = grid()
    img = np.stack([200 + noise(30), 110 + noise(30), 40 + noise(20)], -1)
    im = to_image(img)
    d = ImageDraw.Draw(im)
    for i in range(14):
        tx = int(RNG.integers(0, W))
        w = int(RNG.integers(6, 16))
        d.rectangle([tx, int(H * 0.25), tx + w, H], fill=(70 + i * 3, 45, 30))
    d.rectangle([0, int(H * 0.88), W, H], fill=(150, 80, 30))
    return grain(im)


def beach():
    x, y = grid()
    img = lerp([100, 170, 240], [180, 220, 250], y / 0.4)
    sea = lerp([20, 120, 170], [60, 170, 190], (y - 0.4) / 0.2)
    sand = lerp([240, 220, 170], [220, 190, 140], (y - 0.6) / 0.4) + noise(10)[..., None]
    shore = 0.6 + 0.02 * np.sin(x * 25)
    img = np.where((y > 0.4)[..., None], sea, img)
    img = np.where((y > shore)[..., None], sand, img)
    return grain(to_image(img))


# --- patterns ---------------------------------------------------------------------------------

def checkerboard():
    x, y = grid()
    c = ((x * 8).astype(int) + (y * 6).astype(int)) % 2
    return grain(to_image(lerp([200, 30, 40], [250, 250, 245], c.astype(np.float32))), 3)


def stripes():
    x, y = grid()
    c = (np.sin((x + y * 0.5) * 40) > 0).astype(np.float32)
    return grain(to_image(lerp([30, 60, 170], [250, 210, 40], c)), 3)


def rings():
    x, y = grid()
    r = np.hypot((x - 0.5) * W / H, y - 0.5)
    c = (np.sin(r * 70) > 0).astype(np.float32)
    return grain(to_image(lerp([20, 130, 120], [240, 240, 200], c)), 3)


def dots():
    im = Image.new("RGB", (W, H), (250, 235, 215))
    d = ImageDraw.Draw(im)
    for j in range(7):
        for i in range(9):
            cx, cy = 20 + i * 36 + (j % 2) * 18, 18 + j * 34
            d.ellipse([cx - 10, cy - 10, cx + 10, cy + 10], fill=(220, 60, 120))
    return grain(im, 3)


def mosaic():
    cells = RNG.integers(0, 255, (6, 8, 3)).astype(np.uint8)
    im = Image.fromarray(cells, "RGB").resize((W, H), Image.NEAREST)
    d = ImageDraw.Draw(im)
    for i in range(1, 8):
        d.line([(i * W // 8, 0), (i * W // 8, H)], fill=(40, 40, 40), width=3)
    for j in range(1, 6):
        d.line([(0, j * H // 6), (W, j * H // 6)], fill=(40, 40, 40), width=3)
    return grain(im, 3)


def plaid():
    x, y = grid()
    a = (np.sin(x * 50) > 0.3).astype(np.float32)
    b = (np.sin(y * 40) > 0.3).astype(np.float32)
    img = np.stack([150 + 80 * a, 30 + 40 * b, 40 + 60 * a * b], -1)
    return grain(to_image(img), 3)


def spiral():
    x, y = grid()
    dx, dy = (x - 0.5) * W / H, y - 0.5
    c = (np.sin(np.arctan2(dy, dx) * 5 + np.hypot(dx, dy) * 40) > 0).astype(np.float32)
    return grain(to_image(lerp([90, 20, 140], [255, 150, 40], c)), 3)


def waves():
    x, y = grid()
    c = (np.sin(y * 60 + np.sin(x * 12) * 3) > 0).astype(np.float32)
    return grain(to_image(lerp([10, 60, 120], [120, 210, 230], c)), 3)


# --- objects ----------------------------------------------------------------------------------

def canvas(top, bottom, horizon=0.7):
    x, y = grid()
    img = np.where((y < horizon)[..., None], lerp(top, np.asarray(top) * 0.85, y), lerp(bottom, np.asarray(bottom) * 0.8, y))
    return to_image(img + noise(6)[..., None])


def red_ball():
    im = canvas([210, 210, 215], [150, 150, 155])
    a = np.asarray(im, np.float32)
    x, y = grid()
    dx, dy = (x - 0.5) * W / H, y - 0.5
    r = np.hypot(dx, dy)
    ball = r < 0.25
    light = np.clip(1.2 - np.hypot(dx + 0.08, dy + 0.1) * 3, 0.25, 1)
    a[ball] = (np.stack([230 * light, 30 * light, 30 * light], -1))[ball]
    return grain(to_image(a))


def house():
    im = canvas([140, 190, 240], [80, 160, 70])
    d = ImageDraw.Draw(im)
    d.rectangle([100, 110, 220, 200], fill=(230, 200, 150))
    d.polygon([(90, 112), (160, 55), (230, 112)], fill=(160, 50, 40))
    d.rectangle([145, 150, 175, 200], fill=(100, 60, 30))
    d.rectangle([112, 128, 135, 150], fill=(200, 230, 250))
    d.rectangle([185, 128, 208, 150], fill=(200, 230, 250))
    return grain(im)


def tree():
    im = canvas([170, 210, 245], [90, 170, 80])
    d = ImageDraw.Draw(im)
    d.rectangle([150, 120, 172, 195], fill=(110, 70, 40))
    for cx, cy, r in [(161, 90, 55), (125, 110, 35), (197, 110, 35), (161, 60, 35)]:
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(40, 130, 50))
    return grain(im)


def star():
    im = Image.new("RGB", (W, H), (20, 40, 120))
    d = ImageDraw.Draw(im)
    pts = []
    for k in range(10):
        r = 90 if k % 2 == 0 else 38
        t = -math.pi / 2 + k * math.pi / 5
        pts.append((160 + r * math.cos(t), 125 + r * math.sin(t)))
    d.polygon(pts, fill=(250, 210, 30))
    return grain(im)


def snowman():
    im = canvas([120, 140, 170], [235, 240, 245])
    d = ImageDraw.Draw(im)
    for cx, cy, r in [(160, 180, 50), (160, 110, 35), (160, 60, 25)]:
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(250, 250, 252), outline=(190, 200, 210))
    d.polygon([(160, 60), (190, 65), (160, 68)], fill=(240, 120, 20))
    d.rectangle([140, 20, 180, 38], fill=(20, 20, 20))
    return grain(im)


def sailboat():
    im = canvas([150, 200, 245], [30, 90, 160], horizon=0.65)
    d = ImageDraw.Draw(im)
    d.polygon([(110, 170), (220, 170), (200, 195), (130, 195)], fill=(120, 60, 30))
    d.polygon([(165, 40), (165, 165), (225, 165)], fill=(250, 250, 245))
    d.polygon([(160, 60), (160, 165), (115, 165)], fill=(230, 80, 60))
    return grain(im)


def traffic_light():
    im = canvas([180, 180, 190], [90, 90, 95])
    d = ImageDraw.Draw(im)
    d.rectangle([155, 150, 165, 240], fill=(50, 50, 50))
    d.rounded_rectangle([130, 20, 190, 160], 10, fill=(30, 30, 35))
    for i, col in enumerate([(230, 30, 30), (90, 80, 20), (30, 80, 30)]):
        d.ellipse([145, 30 + i * 43, 175, 60 + i * 43], fill=col)
    return grain(im)


def rainbow():
    im = canvas([120, 170, 235], [90, 160, 80], horizon=0.8)
    d = ImageDraw.Draw(im)
    for i, col in enumerate([(230, 40, 40), (245, 140, 30), (245, 220, 40), (60, 170, 60), (50, 90, 220), (120, 50, 170)]):
        r = 140 - i * 12
        d.arc([160 - r, 200 - r, 160 + r, 200 + r], 180, 360, fill=col, width=12)
    return grain(im)


def cup():
    im = canvas([235, 225, 205], [150, 100, 60], horizon=0.75)
    d = ImageDraw.Draw(im)
    d.rounded_rectangle([115, 80, 195, 185], 12, fill=(40, 110, 170))
    d.ellipse([185, 105, 225, 155], outline=(40, 110, 170), width=9)
    d.ellipse([115, 72, 195, 90], fill=(70, 40, 20))
    return grain(im)


# --- the problem pictures (distinct scenes, so they are no one's duplicates) --------------------

def city():
    im = canvas([250, 160, 90], [60, 60, 70], horizon=0.9)
    d = ImageDraw.Draw(im)
    x0 = 0
    while x0 < W:
        w, h = int(RNG.integers(25, 50)), int(RNG.integers(70, 190))
        d.rectangle([x0, H - h, x0 + w - 3, H], fill=(40, 40, 60))
        for wy in range(H - h + 8, H - 10, 14):
            for wx in range(x0 + 5, x0 + w - 8, 10):
                if RNG.random() < 0.6:
                    d.rectangle([wx, wy, wx + 4, wy + 6], fill=(250, 230, 140))
        x0 += w
    return grain(im)


def living_room():
    im = canvas([200, 170, 130], [120, 80, 50], horizon=0.65)
    d = ImageDraw.Draw(im)
    d.rectangle([40, 110, 200, 180], fill=(150, 40, 40))
    d.rectangle([30, 95, 60, 180], fill=(130, 30, 30))
    d.rectangle([240, 40, 300, 110], fill=(240, 240, 210))
    d.rectangle([260, 110, 268, 190], fill=(60, 50, 40))
    return grain(im)


def pencil_sketch():
    x, y = grid()
    c = 160 + noise(25) - 90 * (np.abs(np.sin(x * 20 + np.sin(y * 9) * 2)) < 0.08)
    return Image.fromarray(np.clip(c, 0, 255).astype(np.uint8), "L")


def save_jpeg(img, path, quality=88):
    img.save(path, "JPEG", quality=quality, optimize=True)


def write(folder, name, img, caption, ext="jpg", **kw):
    d = ROOT / folder
    d.mkdir(parents=True, exist_ok=True)
    p = d / f"{name}.{ext}"
    if ext == "jpg":
        save_jpeg(img, p, **kw)
    else:
        img.save(p, optimize=True)
    if caption is not None:
        (d / f"{name}.txt").write_text(caption + "\n", encoding="utf-8")
    return p


def main():
    if ROOT.exists():
        for child in ROOT.iterdir():
            if child.is_dir():
                shutil.rmtree(child)
    ROOT.mkdir(exist_ok=True)

    pics = {}
    originals = [
        ("landscapes", "sunset", sunset, "the sun setting over a calm purple sea"),
        ("landscapes", "hills", hills, "rolling green hills under a pale blue sky"),
        ("landscapes", "mountains", mountains, "snow-capped mountains above a green valley"),
        ("landscapes", "dunes", dunes, "orange sand dunes in the desert under a blue sky"),
        ("landscapes", "lake", lake, "a forest of pine trees reflected in a still lake"),
        ("landscapes", "flowers", flowers, "a meadow full of red, yellow and white flowers"),
        ("landscapes", "forest", forest, "dark tree trunks in an orange autumn forest"),
        ("landscapes", "beach", beach, "a sandy beach with turquoise water and a clear sky"),
        ("patterns", "checkerboard", checkerboard, "a red and white checkerboard pattern"),
        ("patterns", "stripes", stripes, "diagonal blue and yellow stripes"),
        ("patterns", "rings", rings, "concentric teal and cream rings"),
        ("patterns", "dots", dots, "pink polka dots on a beige background"),
        ("patterns", "mosaic", mosaic, "a mosaic of coloured square tiles with dark grout"),
        ("patterns", "plaid", plaid, "a red and orange plaid fabric"),
        ("patterns", "spiral", spiral, "a purple and orange spiral swirl"),
        ("patterns", "waves", waves, "wavy blue lines like water ripples"),
        ("objects", "red-ball", red_ball, "a shiny red ball on a grey floor"),
        ("objects", "house", house, "a small house with a red roof on a green lawn"),
        ("objects", "tree", tree, "a single round green tree in a meadow"),
        ("objects", "star", star, "a yellow five-pointed star on a dark blue background"),
        ("objects", "snowman", snowman, "a snowman with a black hat and a carrot nose"),
        ("objects", "sailboat", sailboat, "a sailboat with a white and a red sail on the sea"),
        ("objects", "traffic-light", traffic_light, "a traffic light showing red"),
        ("objects", "rainbow", rainbow, "a rainbow arching over a green field"),
        ("objects", "cup", cup, "a blue coffee cup on a wooden table"),
    ]
    for folder, name, fn, caption in originals:
        img = fn()
        pics[name] = img
        # The patterns are flat colours: PNG keeps them small and gives the re-encode edit a
        # format change; everything else is a JPEG, as most scraped pictures are.
        ext = "png" if name in ("checkerboard", "dots") else "jpg"
        write(folder, name, img, caption, ext=ext)

    # variants/: copies the dedup stage should find (the folder sorts after the originals', so
    # with `--keep largest` a same-size copy loses the tie to its original). Captions vary as
    # they do on the web.
    v = ROOT / "variants"
    v.mkdir()
    shutil.copyfile(ROOT / "landscapes/sunset.jpg", v / "sunset-copy.jpg")  # same bytes
    (v / "sunset-copy.txt").write_text("sunset at the sea, wallpaper\n")
    w, h = pics["hills"].size
    write("variants", "hills-small", pics["hills"].resize((w // 2, h // 2), Image.LANCZOS),
          "rolling green hills, a smaller copy")
    write("variants", "cup-reencoded", pics["cup"], "a blue mug on a table", quality=30)
    write("variants", "house-cropped", pics["house"].crop((12, 9, w - 12, h - 9)), "a house with a red roof")
    write("variants", "sailboat-mirrored", ImageOps.mirror(pics["sailboat"]), "a sailboat at sea")
    write("variants", "red-ball-framed", ImageOps.expand(pics["red-ball"], border=28, fill=(255, 255, 255)),
          "a red ball on the floor, with a white frame")
    write("variants", "tree-mirrored-small",
          ImageOps.mirror(pics["tree"]).resize((w * 3 // 4, h * 3 // 4), Image.LANCZOS), "a green tree in a field")
    # A different picture with the caption of another: a caption duplicate, reported, not removed.
    write("variants", "rings-other", spiral_variant(), "concentric teal and cream rings")

    # problems/: what the quality and score stages flag.
    write("problems", "city-blurry", city().filter(ImageFilter.GaussianBlur(4)), "a city skyline at dusk with lit windows")
    dark = np.asarray(living_room(), np.float32) * 0.22
    write("problems", "room-dark", to_image(dark), "a living room with a red sofa and a lamp")
    write("problems", "sketch-grey", pencil_sketch(), "a pencil sketch of wavy lines on paper")
    write("problems", "icon-tiny", tiny_icon(), "a small green heart icon on white", ext="png")
    write("problems", "mugs-wrong-caption", mugs(), "a dog running on a beach with a frisbee")
    write("problems", "IMG_4031", beach_variant(), "IMG_4031.JPG")
    write("problems", "boat-short", sailboat_variant(), "Boat.")
    write("problems", "no-caption", hills_variant(), None)
    (ROOT / "problems/not-a-picture.jpg").write_bytes(b"This file is named .jpg but holds text, not a picture.\n")

    total = sum(p.stat().st_size for p in ROOT.rglob("*") if p.is_file())
    n = sum(1 for p in ROOT.rglob("*") if p.suffix in (".jpg", ".png"))
    print(f"wrote {n} image files, {total / 1024:.0f} KiB, under {ROOT}", file=sys.stderr)


# Variants: new pictures drawn by the same functions with fresh random texture and changes, so
# they are related in subject but no copies.

def spiral_variant():
    x, y = grid()
    dx, dy = (x - 0.3) * W / H, y - 0.6
    c = (np.sin(np.hypot(dx, dy) * 45) > 0).astype(np.float32)
    return grain(to_image(lerp([200, 60, 60], [250, 240, 230], c)), 3)


def mugs():
    im = canvas([210, 230, 210], [110, 70, 40], horizon=0.75)
    d = ImageDraw.Draw(im)
    d.rounded_rectangle([60, 70, 150, 190], 12, fill=(220, 200, 40))
    d.ellipse([140, 100, 185, 160], outline=(220, 200, 40), width=10)
    d.rounded_rectangle([190, 110, 270, 190], 10, fill=(200, 60, 50))
    return grain(im)


def beach_variant():
    x, y = grid()
    img = lerp([250, 190, 120], [255, 230, 200], y / 0.5)
    sea = lerp([40, 90, 140], [80, 140, 170], (y - 0.5) / 0.25)
    img = np.where((y > 0.5)[..., None], sea, img)
    img = np.where((y > 0.75 + 0.03 * np.sin(x * 18))[..., None], lerp([200, 170, 120], [180, 150, 100], y) + noise(10)[..., None], img)
    im = to_image(img)
    d = ImageDraw.Draw(im)
    d.rectangle([230, 100, 236, 190], fill=(90, 60, 40))
    d.ellipse([200, 80, 265, 115], fill=(40, 110, 50))
    return grain(im)


def sailboat_variant():
    im = canvas([220, 180, 150], [50, 60, 110], horizon=0.6)
    d = ImageDraw.Draw(im)
    d.polygon([(40, 180), (130, 180), (115, 200), (55, 200)], fill=(60, 40, 30))
    d.polygon([(85, 70), (85, 175), (135, 175)], fill=(240, 230, 200))
    return grain(im)


def tiny_icon():
    im = Image.new("RGB", (40, 30), (255, 255, 255))
    d = ImageDraw.Draw(im)
    d.ellipse([8, 5, 21, 17], fill=(30, 160, 60))
    d.ellipse([19, 5, 32, 17], fill=(30, 160, 60))
    d.polygon([(9, 13), (31, 13), (20, 26)], fill=(30, 160, 60))
    return grain(im.resize((160, 120), Image.LANCZOS), 8).resize((40, 30), Image.LANCZOS)


def hills_variant():
    x, y = grid()
    img = lerp([250, 200, 150], [250, 230, 210], y / 0.5)
    ridge = 0.5 + 0.1 * np.sin(x * 4 + 2)
    img = np.where((y > ridge)[..., None], np.stack([160 + noise(15), 130 + noise(15), 60 + noise(10)], -1), img)
    return grain(to_image(img))


if __name__ == "__main__":
    main()
