"""Collect extra natural photos for super-resolution training from two Debian packages.

    python scripts/fetch_sr_photos.py --out photos/debian     # then: wordcanvas train sr --data photos/debian ...

The photos bundled in the Python packages are few and half of them are not natural colour photos
(text, coins, a retina scan, the Hubble deep field). The desktop-background packages
`mate-backgrounds` and `plasma-workspace-wallpapers` hold two dozen natural photos of about
2560 x 1600 px (plants, water, wood, landscapes; GPL-2+). The packages are downloaded with
`apt-get download` and unpacked with `dpkg-deb -x`, so no root and no installation are needed;
only the photos named below are copied (the others are drawings or renders). Each is downscaled
(antialiased bicubic) so its longer side is at most `--max-side` (1280 by default): the wallpapers
are soft and JPEG-compressed at full size, and halved they are sharper and about as dense in
detail per pixel as the held-out test photos. Requires a Debian or Ubuntu system with apt.
"""
from __future__ import annotations

import argparse
import shutil
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


def pixels(path: Path) -> int:
    with Image.open(path) as img:
        return img.size[0] * img.size[1]


def largest(paths: list[Path]) -> Path:
    return max(paths, key=lambda p: (pixels(p), p.name))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder to write the photos into (flat, one file per photo)")
    ap.add_argument("--max-side", type=int, default=1280, help="downscale so the longer side is at most this (0: keep)")
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
        for name, src in chosen.items():
            img = Image.open(src).convert("RGB")
            if args.max_side and max(img.size) > args.max_side:
                factor = args.max_side / max(img.size)
                img = img.resize((round(img.size[0] * factor), round(img.size[1] * factor)), Image.BICUBIC)
            img.save(out / name.replace(".jpg", ".png"))
    print(f"{len(chosen)} photos in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
