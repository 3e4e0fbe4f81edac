"""Mirrored edges (`Upscaler(..., edge_pad=8)`) against the convolutions' zero padding, per network and scale.

    python benchmarks/sr_edges.py [--out docs] [--photos photos/debian] [--every 5] [--methods ...] [--threads 1]

Writes <out>/sr_edges.json and <out>/sr_edges.md. This decides which networks ship with "edge_pad" in their
config.json, so it runs on images that are not the held-out test photos: the bundled training photos
(sr.data.training_photo_names()) plus every `--every`-th image of `--photos` (the Debian wallpapers of
scripts/fetch_sr_photos.py), shrunk to at most 480 px (PIL bicubic) to keep it short. The networks saw these
images in training, but mirroring acts at the image's edges, where training crops held no image edge.
Protocol as benchmarks/sr.py: HR cropped to a multiple of the scale, LR = antialiased bicubic downscale,
Y-PSNR with a border crop of the scale; per image, PSNR with edge_pad 8 minus PSNR with edge_pad 0.
"""
from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path

from _common import command_line, machine_info, markdown_table, write_json  # noqa: I001  (sets sys.path)

import numpy as np
import torch
from PIL import Image

from wordcanvas.metrics.image_quality import psnr_y
from wordcanvas.sr.data import downscale, folder_photos, load_photo, modcrop, training_photo_names
from wordcanvas.sr.upscale import EDGE_PAD, Upscaler

MAX_SIDE = 480
RUNS = [("fast", 2), ("fast", 4), ("quality", 2), ("quality", 4), ("quality-gan", 4), ("srmd", 2), ("srmd", 4),
        ("realesrgan", 4)]


def images(photos: str | None, every: int) -> dict[str, np.ndarray]:
    out = {name: load_photo(name) for name in training_photo_names()}
    for path in (folder_photos(photos)[::every] if photos else []):
        img = Image.open(path).convert("RGB")
        img.thumbnail((MAX_SIDE, MAX_SIDE), Image.BICUBIC)
        out[path.stem] = np.asarray(img)
    return {k: v for k, v in out.items() if min(v.shape[:2]) >= 64}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs")
    ap.add_argument("--photos", help="a folder of extra photos (scripts/fetch_sr_photos.py --out photos/debian)")
    ap.add_argument("--every", type=int, default=5)
    ap.add_argument("--methods", default=",".join(sorted({m for m, _ in RUNS})))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    chosen = args.methods.split(",")
    imgs = images(args.photos, args.every)
    rows = []
    for method, scale in [(m, s) for m, s in RUNS if m in chosen]:
        pairs = []
        for img in imgs.values():
            hr = torch.from_numpy(modcrop(img, scale).copy()).permute(2, 0, 1).float() / 127.5 - 1
            pairs.append((downscale(hr, scale), hr))
        psnr = {}
        for pad in (0, EDGE_PAD):
            up = Upscaler.from_name(method, scale, edge_pad=pad)
            psnr[pad] = np.array([float(psnr_y(up.upscale(lr[None]), hr[None], crop_border=scale)) for lr, hr in pairs])
        diff = psnr[EDGE_PAD] - psnr[0]
        shipped = Upscaler.from_name(method, scale).edge_pad
        rows.append({"method": method, "scale": scale, "images": len(diff), "gain_db": round(float(diff.mean()), 4),
                     "better_on": int((diff > 0).sum()), "worst_db": round(float(diff.min()), 4),
                     "best_db": round(float(diff.max()), 4), "default_edge_pad": shipped})
        print(rows[-1], flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "sr_edges.json", {"date": str(date.today()), "command": command_line(),
                                       "machine": machine_info(), "images": list(imgs), "edge_pad": EDGE_PAD,
                                       "rows": rows})
    columns = [("method", "method", ""), ("scale", lambda r: f"x{r['scale']}", ">"),
               ("mean gain dB", "gain_db", ">+.4f"), ("better on", lambda r: f"{r['better_on']}/{r['images']}", ">"),
               ("worst dB", "worst_db", ">+.3f"), ("best dB", "best_db", ">+.3f"),
               ("shipped edge_pad", "default_edge_pad", ">")]
    lines = [f"# Mirrored edges in super-resolution ({date.today()})", "",
             f"Y-PSNR with {EDGE_PAD} pixels mirrored beyond the edges minus Y-PSNR with the convolutions' zero padding, "
             f"on {len(imgs)} images that are not the held-out photos (see benchmarks/sr_edges.py for why and how). "
             "A network ships with mirrored edges (`\"edge_pad\"` in its config.json; for `srmd`, in "
             "`Upscaler.from_name`) where the mean gain is positive and it is better on most images.", "",
             f"Command: `{command_line()}`", "", markdown_table(rows, columns)]
    (out / "sr_edges.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
