"""Super-resolution x4 on synthetic graphics (lettering, badges, stripes, shapes) that no network trained on.

    python benchmarks/sr_graphics.py [--out docs] [--methods bicubic,fast,quality,srmd] [--count 20] [--seed 99]

Writes <out>/sr_graphics.json and <out>/sr_graphics.md.

The held-out photos (benchmarks/sr.py) hold little man-made graphics; this set measures how an
upscaler draws hard edges and letters. Protocol: `--count` images of 768 x 768 px drawn by
scripts/make_sr_graphics.py with `--seed` (99; the shipped networks were trained on seed 0's images,
and 99 is kept out of training), HR = the image, LR = its antialiased bicubic downscale
(sr.data.downscale); each method upscales LR through `Upscaler.from_name(method, 4)` (a name or a
model folder); Y-PSNR on the BT.601 luma of 8-bit images with a border crop of 4, mean per-image
gain over bicubic.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from datetime import date
from pathlib import Path

from _common import ROOT, command_line, machine_info, write_json  # noqa: I001  (sets sys.path)

import numpy as np
import torch

from wordcanvas.metrics.image_quality import psnr_y
from wordcanvas.sr.data import downscale, training_photo_names
from wordcanvas.sr.upscale import Upscaler

SCALE = 4
SIZE = 768  # side of each square image, px


def graphics_maker():
    spec = importlib.util.spec_from_file_location("make_sr_graphics", ROOT / "scripts" / "make_sr_graphics.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pairs(count: int, seed: int, size: int = SIZE) -> list[tuple[torch.Tensor, torch.Tensor]]:
    maker = graphics_maker()
    rng = np.random.default_rng(seed)
    photos = training_photo_names()
    out = []
    for _ in range(count):
        hr = torch.from_numpy(np.asarray(maker.make_image(rng, size, photos)).copy()).permute(2, 0, 1).float() / 127.5 - 1
        out.append((downscale(hr, SCALE), hr))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="docs")
    parser.add_argument("--methods", default="bicubic,fast,quality,srmd", help="names or model folders, comma-separated")
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--seed", type=int, default=99)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = pairs(args.count, args.seed)
    psnr = {}
    for method in ["bicubic", *[m for m in args.methods.split(",") if m != "bicubic"]]:
        up = Upscaler.from_name(method, SCALE)
        with torch.no_grad():
            psnr[method] = [float(psnr_y(up.upscale(lr[None]), hr[None], crop_border=SCALE)) for lr, hr in data]
        print(f"{method}: {np.mean(psnr[method]):.2f} dB", file=sys.stderr, flush=True)
    rows = [{"method": m, "y_psnr_db": round(float(np.mean(v)), 3),
             "gain_db": round(float(np.mean(np.subtract(v, psnr["bicubic"]))), 3)} for m, v in psnr.items()]
    result = {"command": command_line(), "machine": machine_info(threads=args.threads), "scale": SCALE,
              "count": args.count, "seed": args.seed, "size": SIZE, "rows": rows}
    out = Path(args.out)
    write_json(out / "sr_graphics.json", result)
    table = "\n".join(f"| {r['method']} | {r['y_psnr_db']:.2f} | {r['gain_db']:+.2f} |" for r in rows)
    (out / "sr_graphics.md").write_text(
        f"# Super-resolution x4 on unseen synthetic graphics\n\n`{result['command']}` ({date.today()})\n\n"
        f"{args.count} images of {SIZE} x {SIZE} px from `scripts/make_sr_graphics.py --seed {args.seed}` (lettering, "
        "badges, stripes and shapes over a training photo or a gradient; the networks were trained on other "
        "seeds' images, if on any), LR = antialiased bicubic downscale, Y-PSNR with a border crop of 4, "
        "mean over the images; gain = mean per-image gain over bicubic. Protocol in the script's docstring.\n\n"
        "| method | Y-PSNR (dB) | gain over bicubic (dB) |\n|---|---:|---:|\n" + table + "\n\n"
        f"Machine: {result['machine'].get('cpu', '?')}, torch threads {args.threads}.\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
