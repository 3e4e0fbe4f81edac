"""`wordcanvas upscale`: super-resolve image files, folders and globs into an output folder."""
from __future__ import annotations

import argparse
import glob
import io
import sys
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="IN", help="image files, folders (their images) or glob patterns")
    p.add_argument("--scale", type=int, default=4, choices=(2, 4), help="upscaling factor (default 4)")
    p.add_argument("--model", default="fast",
                   help="fast | quality | quality-gan | realesrgan | srmd | bicubic | a model folder (default fast)")
    p.add_argument("--tile", type=int, default=256, help="tile size in input pixels; 0 disables tiling")
    p.add_argument("--overlap", type=int, default=16, help="context pixels around each tile")
    p.add_argument("--ensemble", action="store_true",
                   help="self-ensemble: average the network over 8 flips/rotations (8x slower, a little sharper)")
    p.add_argument("--edge-pad", type=int, default=None, metavar="PX",
                   help="pixels mirrored beyond the image's edges before the network runs (default: the network's "
                        "own setting; 0 turns it off)")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--max-pixels", type=int, default=None, help="refuse inputs with more pixels than this")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")


def expand_inputs(inputs: list[str]) -> tuple[list[Path], list[str]]:
    """Files, folders and globs -> (files in order without duplicates, inputs that matched nothing)."""
    files, missing = [], []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            found = [path]
        else:
            found = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
        if not found:
            missing.append(item)
        files += found
    return list(dict.fromkeys(files)), missing


def output_names(files: list[Path], scale: int) -> list[str]:
    """`<stem>_x<scale>.png`, numbered when two inputs share a stem."""
    seen: dict[str, int] = {}
    names = []
    for f in files:
        base = f"{f.stem}_x{scale}"
        k = seen.get(base, 0)
        seen[base] = k + 1
        names.append(f"{base}.png" if k == 0 else f"{base}-{k}.png")
    return names


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm.auto import tqdm

    from wordcanvas.sr.upscale import DEFAULT_MAX_PIXELS, ImageLoadError, Upscaler

    if args.threads:
        torch.set_num_threads(args.threads)
    from wordcanvas.utils.io import atomic_write_bytes

    files, missing = expand_inputs(args.inputs)
    for item in missing:
        print(f"error: {item}: no such file, folder with images, or matching pattern", file=sys.stderr)
    if not files:
        print("error: nothing to upscale", file=sys.stderr)
        return 2
    upscaler = Upscaler.from_name(args.model, args.scale, tile=args.tile, overlap=args.overlap, device=args.device,
                                  max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS, ensemble=args.ensemble,
                                  **({} if args.edge_pad is None else {"edge_pad": args.edge_pad}))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    failed = len(missing)
    bar = tqdm(list(zip(files, output_names(files, args.scale))), desc=f"upscale x{args.scale} ({upscaler.name})",
               unit="img")
    for path, name in bar:
        try:
            image = upscaler.upscale_file(path)
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            atomic_write_bytes(out_dir / name, buf.getvalue())
        except (ImageLoadError, ValueError, OSError, RuntimeError, MemoryError) as e:
            failed += 1
            msg = str(e) if isinstance(e, ImageLoadError) else f"{path}: {type(e).__name__}: {e}"
            tqdm.write(f"error: {msg}", file=sys.stderr)
    done = len(files) - (failed - len(missing))
    print(f"upscaled {done} of {len(files)} images into {out_dir}" + (f"; {failed} failed" if failed else ""))
    return 1 if failed else 0


VERBS = {"upscale": (add_arguments, run, "upscale images with a super-resolution network (x2 / x4)")}
