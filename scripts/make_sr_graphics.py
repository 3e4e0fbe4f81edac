"""Draw synthetic graphics (lettering, badges, stripes, shapes) as extra super-resolution training images.

    python scripts/make_sr_graphics.py --out photos/graphics --count 60
    wordcanvas train sr --data photos/graphics ...   # usually next to a folder of photos

Natural photos often hold man-made graphics: a badge on a sleeve, a flag, a printed label, a sign.
The photo collections available offline have few of them, and an upscaler trained on those photos
draws their edges softer than SRMD, whose training set (DIV2K and others) has many. Each image here
is a photo from the installed packages (never a held-out one) or a colour gradient, overdrawn with
random filled and outlined shapes, stripes, stars and words in the DejaVu, STIX and Computer Modern
fonts that matplotlib ships. Shapes are drawn at twice the size and downscaled with a Lanczos filter,
then some images are blurred slightly, so edges are antialiased like a camera's rather than
pixel-aligned. Best used with `model.teacher` (the teacher decides how a sharp edge should come
out) and mixed with more photos than graphics.
"""
from __future__ import annotations

import argparse
import math
import string
import sys
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from wordcanvas.sr.data import load_photo, training_photo_names

FONT_DIR = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
FONTS = sorted(p for p in FONT_DIR.glob("*.ttf")
               if p.stem.startswith(("DejaVu", "STIXGeneral", "cmr", "cmss", "cmb", "cmti", "cmtt")))
SUPERSAMPLE = 2


def random_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    if rng.random() < 0.6:  # saturated, as on badges and flags
        hue = rng.random()
        rgb = [max(0.0, min(1.0, abs((hue * 6 + k) % 6 - 3) - 1)) for k in (0, 4, 2)]
        value, floor = rng.uniform(0.5, 1.0), rng.uniform(0.0, 0.3)
        return tuple(int(255 * (floor + (value - floor) * c)) for c in rgb)
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def background(rng: np.random.Generator, size: int, photos: list[str]) -> Image.Image:
    if rng.random() < 0.5:
        photo = load_photo(photos[rng.integers(len(photos))])
        h, w = photo.shape[:2]
        side = min(h, w, size)
        top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crop = Image.fromarray(photo[top:top + side, left:left + side]).convert("RGB")
        return crop.resize((size, size), Image.BICUBIC)
    a, b = (np.array(random_colour(rng), dtype=np.float32) for _ in range(2))
    angle = rng.uniform(0, 2 * math.pi)
    y, x = np.mgrid[0:size, 0:size] / size
    t = ((x - 0.5) * math.cos(angle) + (y - 0.5) * math.sin(angle) + 0.71) / 1.42
    return Image.fromarray((a + (b - a) * t[..., None]).clip(0, 255).astype(np.uint8))


def random_word(rng: np.random.Generator) -> str:
    letters = string.ascii_uppercase if rng.random() < 0.5 else string.ascii_letters + string.digits
    return "".join(rng.choice(list(letters), rng.integers(2, 10)))


def draw_item(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int) -> None:
    kind = rng.choice(["ellipse", "ring", "polygon", "rectangle", "line", "stripes", "star", "text", "text"])
    cx, cy = rng.uniform(0, size, 2)
    r = size * rng.uniform(0.02, 0.2)
    fill, edge = random_colour(rng), random_colour(rng)
    width = int(rng.integers(2, 24))
    box = [cx - r, cy - r * rng.uniform(0.5, 1.5), cx + r, cy + r * rng.uniform(0.5, 1.5)]
    if kind == "ellipse":
        draw.ellipse(box, fill=fill, outline=edge, width=width)
    elif kind == "ring":
        draw.ellipse(box, outline=edge, width=width)
    elif kind == "rectangle":
        draw.rounded_rectangle([min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]),
                                max(box[1], box[3])], radius=r * rng.uniform(0, 0.4), fill=fill,
                               outline=edge if rng.random() < 0.5 else None, width=width)
    elif kind == "polygon":
        n = int(rng.integers(3, 9))
        angles = np.sort(rng.uniform(0, 2 * math.pi, n))
        draw.polygon([(cx + r * math.cos(a), cy + r * math.sin(a)) for a in angles], fill=fill)
    elif kind == "star":
        n = int(rng.integers(5, 9))
        pts = [(cx + r * (1 if i % 2 == 0 else 0.45) * math.cos(math.pi * i / n),
                cy + r * (1 if i % 2 == 0 else 0.45) * math.sin(math.pi * i / n)) for i in range(2 * n)]
        draw.polygon(pts, fill=fill)
    elif kind == "line":
        angle = rng.uniform(0, math.pi)
        dx, dy = 2 * r * math.cos(angle), 2 * r * math.sin(angle)
        draw.line([cx - dx, cy - dy, cx + dx, cy + dy], fill=fill, width=width)
    elif kind == "stripes":  # flag-like bands
        band = size * rng.uniform(0.01, 0.05)
        colours = [fill, edge]
        for i in range(int(rng.integers(3, 14))):
            draw.rectangle([cx - 3 * r, cy + i * band, cx + 3 * r, cy + (i + 1) * band], fill=colours[i % 2])
    else:
        font = ImageFont.truetype(str(FONTS[rng.integers(len(FONTS))]), int(size * rng.uniform(0.012, 0.08)))
        draw.text((cx - r, cy), random_word(rng), font=font, fill=fill)


def make_image(rng: np.random.Generator, size: int, photos: list[str]) -> Image.Image:
    big = size * SUPERSAMPLE
    image = background(rng, big, photos)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(15, 45))):
        draw_item(draw, rng, big)
    image = image.resize((size, size), Image.LANCZOS)
    if rng.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8)))
    return image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder to write PNGs to")
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--size", type=int, default=768, help="side of each square image in pixels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not FONTS:
        raise SystemExit(f"no fonts found in {FONT_DIR}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    photos = training_photo_names()
    for i in range(args.count):
        make_image(rng, args.size, photos).save(out / f"graphics-{i:03d}.png")
    print(f"wrote {args.count} images of {args.size} px to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
