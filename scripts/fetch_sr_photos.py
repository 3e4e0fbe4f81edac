"""Collect extra natural photos for super-resolution training from Debian packages.

    python scripts/fetch_sr_photos.py --out photos/debian          # then: wordcanvas train sr --data photos/debian ...
    python scripts/fetch_sr_photos.py --out photos/debian --more   # 26 more photos from six more packages
    python scripts/fetch_sr_photos.py --out photos/debian --more --gcompris  # and about 90 from GCompris

The photos bundled in the Python packages are few and half of them are not natural colour photos
(text, coins, a retina scan, the Hubble deep field). The desktop-background packages
`mate-backgrounds` and `plasma-workspace-wallpapers` hold two dozen natural photos of about
2560 x 1600 px (plants, water, wood, landscapes; GPL-2+). With --more, 26 more photos of at least
1600 px come from `lomiri-wallpapers-16.04` and `-20.04` (CC-BY-4.0, CC-BY-SA-3.0/4.0, CC0, named
per image in their copyright files), `enlightenment-data` (BSD-2-clause; each background is an Eet
archive whose image entry is a plain JPEG), `lxqt-themes` (CC-BY-SA-3.0), `sddm-theme-maldives`
(CC-BY-3.0) and `palapeli-data` (public domain): landscapes, leaves, flowers, animals, interiors;
the soft ones (fog, sky, silhouettes, bokeh) and the drawings are left out. With --gcompris, the
photos of five activities of the educational suite GCompris (`gcompris-qt-data`, GPL-3+ per its Debian
copyright file; Wikimedia Commons photos whose sources the activities name): monuments, wild and farm
animals, musicians and their instruments, everyday objects, about 1024 px and JPEG-compressed. They bring
what the wallpapers lack (buildings, people, man-made edges); their JPEG noise washes out in the x4
downscale, so they suit distillation (`model.teacher`) and `model.photo_scale` best. The packages are
downloaded with `apt-get download` and unpacked with `dpkg-deb -x`, so no root and no installation
are needed; only the photos named below are copied. Each is downscaled (antialiased bicubic) so
its longer side is at most `--max-side` (1280 by default): the wallpapers are soft and
JPEG-compressed at full size, and halved they are sharper and about as dense in detail per pixel
as the held-out test photos. Requires a Debian or Ubuntu system with apt.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

MATE_NATURE = ("Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird", "RainDrops",
               "Storm", "TwoWings", "Wood", "YellowFlower")
PLASMA_PHOTOS = ("BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf", "Grey",
                 "Kite", "OneStandsOut", "Path", "Volna", "summer_1am")
PACKAGES = ("mate-backgrounds", "plasma-workspace-wallpapers")
# --more: package -> (folder inside it, photo file names); .edj files are Eet archives
MORE = {
    "lomiri-wallpapers-16.04": ("usr/share/backgrounds", (
        "Bridge_by_Sander_Klootwijk.jpg", "Dragonfly_by_Bolly.jpg", "Picture_0B_by_freespace.jpg",
        "Wine_by_Jakkub_Mede.jpg", "aitzgorri_by_Aitzol_Berasategi.jpg", "analogpattern_by_Peter_Nerlich.jpg",
        "friends_by_Aitzol_Berasategi.jpg", "life_by_Aitzol_Berasategi.jpg",
        "picosdeeuropa_by_Aitzol_Berasategi.jpg", "seeding_by_Clements_Engelhardt.jpg",
        "sunset_by_Aitzol_Berasategi.jpg")),
    "lomiri-wallpapers-20.04": ("usr/share/backgrounds", ("Kleiber_by_Lukas_Baubkus.jpg",)),
    "enlightenment-data": ("usr/share/enlightenment/data/backgrounds", (
        "Bamboo.edj", "Green-Maple.edj", "Lichen-Branches.edj", "Red-Maple.edj", "Sea-of-Lanterns.edj",
        "Snow-Trees.edj", "Spruce-Needles.edj", "White-Flower.edj", "Yellow-Flower.edj")),
    "lxqt-themes": ("usr/share/lxqt/wallpapers", ("after-the-rain.jpg", "fog.jpg", "this-is-not-windows.jpg")),
    "sddm-theme-maldives": ("usr/share/sddm/themes/maldives", ("background.jpg",)),
    "palapeli-data": ("usr/share/palapeli/collection", ("european-honey-bee.jpg",)),
}
# --gcompris: the activities (Qt resource files) whose images are photos (not drawings)
GCOMPRIS = ("gcompris-qt-data", "usr/share/gcompris-qt/rcc",
            ("explore_monuments", "explore_world_animals", "explore_farm_animals", "explore_world_music",
             "categorization"))
EET_MAGIC = 0x1EE70F42
IMAGE_SIGNATURES = re.compile(rb"\xff\xd8\xff|\x89PNG\r\n\x1a\n|RIFF.{4}WEBP", re.DOTALL)


def unpack(package: str, work: Path) -> Path:
    done = subprocess.run(["apt-get", "download", package], cwd=work, capture_output=True, text=True)
    debs = list(work.glob(f"{package}_*.deb"))
    if done.returncode != 0 or not debs:
        raise SystemExit(f"error: apt-get download {package} failed: {done.stderr.strip() or 'no .deb written'} "
                         f"(is a Debian package mirror reachable?)")
    deb = debs[0]
    root = work / package
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    return root


def eet_images(data: bytes) -> list[bytes]:
    """The uncompressed, unciphered `edje/images/*` entries of an Eet archive (Enlightenment's file
    format: a big-endian header of magic, entry count and dictionary size, then per entry the data
    offset, stored size, data size, name offset, name size and flags (bit 0 compressed, bit 1 ciphered))."""
    if len(data) < 12:
        raise ValueError("not an Eet archive: too short")
    magic, entries, _ = struct.unpack(">III", data[:12])
    if magic != EET_MAGIC:
        raise ValueError(f"not an Eet archive: magic {magic:#010x}")
    if 12 + 24 * entries > len(data):
        raise ValueError(f"truncated Eet archive: {entries} entries announced, {len(data)} bytes")
    images = []
    for i in range(entries):
        offset, size, _, name_offset, name_size, flags = struct.unpack(">6I", data[12 + 24 * i: 36 + 24 * i])
        name = data[name_offset: name_offset + name_size].rstrip(b"\0").decode("latin-1")
        if name.startswith("edje/images/") and not flags & 0b11:
            images.append(data[offset: offset + size])
    return images


def embedded_images(data: bytes, min_side: int = 256) -> list[Image.Image]:
    """The JPEG, PNG and WebP images stored whole inside a container file, at least `min_side` px on each
    side. A Qt resource file (.rcc) keeps already-compressed files as they are, so every image signature
    that decodes is one of its images; identical images are kept once."""
    images, seen = [], set()
    starts = sorted(m.start() for m in re.finditer(IMAGE_SIGNATURES, data))
    for start in starts:
        try:
            img = Image.open(io.BytesIO(data[start:]))
            img.load()  # decoding stops at the image's own end marker
        except (OSError, SyntaxError, ValueError):
            continue  # a signature inside other data
        img = img.convert("RGB")
        digest = hashlib.sha1(img.tobytes()).digest()
        if min(img.size) >= min_side and digest not in seen:
            seen.add(digest)
            images.append(img)
    return images


def open_photo(path: Path) -> Image.Image:
    """A photo file, or the largest JPEG image inside an Eet (.edj) archive."""
    if path.suffix != ".edj":
        return Image.open(path)
    jpegs = [Image.open(io.BytesIO(b)) for b in eet_images(path.read_bytes()) if b[:2] == b"\xff\xd8"]
    if not jpegs:
        raise ValueError(f"{path.name}: no JPEG image inside")
    return max(jpegs, key=lambda img: img.size[0] * img.size[1])


def photo_prefix(package: str, name: str) -> str:
    """A package's photos are named after its first word, or its last where the file's name says
    nothing ("sddm-theme-maldives"'s background.jpg becomes maldives-background)."""
    words = package.split("-")
    return words[-1] if Path(name).stem == "background" else words[0]


def pixels(path: Path) -> int:
    with Image.open(path) as img:
        return img.size[0] * img.size[1]


def largest(paths: list[Path]) -> Path:
    return max(paths, key=lambda p: (pixels(p), p.name))


def save_photo(img: Image.Image, path: Path, max_side: int) -> None:
    """RGB PNG, downscaled (antialiased bicubic) so the longer side is at most max_side (0: kept)."""
    img = img.convert("RGB")
    if max_side and max(img.size) > max_side:
        factor = max_side / max(img.size)
        img = img.resize((round(img.size[0] * factor), round(img.size[1] * factor)), Image.BICUBIC)
    img.save(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder to write the photos into (flat, one file per photo)")
    ap.add_argument("--max-side", type=int, default=1280, help="downscale so the longer side is at most this (0: keep)")
    ap.add_argument("--more", action="store_true",
                    help=f"also the {sum(len(n) for _, n in MORE.values())} photos of {', '.join(MORE)}")
    ap.add_argument("--gcompris", action="store_true",
                    help=f"also the photos of GCompris's activities {', '.join(GCOMPRIS[2])} ({GCOMPRIS[0]})")
    args = ap.parse_args(argv)
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        print("error: apt-get and dpkg-deb are needed (a Debian or Ubuntu system)", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        mate, plasma = (unpack(p, work) for p in PACKAGES)
        chosen = {f"mate-{n}.jpg": mate / "usr/share/backgrounds/mate/nature" / f"{n}.jpg" for n in MATE_NATURE}
        for n in PLASMA_PHOTOS:
            images = sorted((plasma / "usr/share/wallpapers" / n / "contents/images").glob("*.jpg"))
            chosen[f"plasma-{n}.jpg"] = largest(images)
        if args.more:
            for package, (folder, names) in MORE.items():
                root = unpack(package, work) / folder
                for n in names:
                    chosen[f"{photo_prefix(package, n)}-{Path(n).stem}.jpg"] = root / n
        for name, src in chosen.items():
            save_photo(open_photo(src), out / name.replace(".jpg", ".png"), args.max_side)
        count = len(chosen)
        if args.gcompris:
            package, folder, activities = GCOMPRIS
            root = unpack(package, work) / folder
            for activity in activities:
                for i, img in enumerate(embedded_images((root / f"{activity}.rcc").read_bytes())):
                    save_photo(img, out / f"gcompris-{activity}-{i:03d}.png", args.max_side)
                    count += 1
    print(f"{count} photos in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
