"""CLI verb `stylize` (see commands/__init__.py). Training the decoder is `wordcanvas train style`."""
from __future__ import annotations

import argparse


def add_stylize_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("content", help="content image file")
    p.add_argument("--style", action="append", required=True, metavar="STYLE",
                   help="style image file; repeat to mix several styles")
    p.add_argument("--weights", type=float, nargs="+", help="one weight per --style (normalised to sum 1)")
    p.add_argument("--alpha", type=float, default=1.0, help="style strength in [0, 1] (0 = content only)")
    p.add_argument("--preserve-color", dest="preserve_color", action="store_true",
                   help="keep the content's colours (luminance-only transfer)")
    p.add_argument("--method", choices=("adain", "optimize"), default="adain",
                   help="adain: one pass of the trained decoder; optimize: Gatys-style pixel optimisation")
    p.add_argument("--steps", type=int, default=200, help="loss evaluations for --method optimize")
    p.add_argument("--size", type=int, help="resize the content so its longer side is SIZE (aspect kept)")
    p.add_argument("--style-size", dest="style_size", type=int,
                   help="longer side of the styles (default: the content's working size)")
    p.add_argument("--model", help="AdaIN decoder folder or training run (default: the shipped decoder)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--out", required=True, help="output image file (format from the extension, e.g. .png)")


def run_stylize(args: argparse.Namespace) -> int:
    from pathlib import Path

    if not 0.0 <= args.alpha <= 1.0:
        raise ValueError(f"--alpha must be in [0, 1], got {args.alpha}")
    if args.weights is not None and len(args.weights) != len(args.style):
        raise ValueError(f"--weights gave {len(args.weights)} values for {len(args.style)} --style images")
    out = Path(args.out)
    if not out.suffix:
        raise ValueError(f"--out {out} needs an image extension such as .png or .jpg")

    import torch

    from wordcanvas.sr.upscale import load_image
    from wordcanvas.style.transfer import Stylizer

    if args.threads:
        torch.set_num_threads(args.threads)
    content = load_image(args.content).convert("RGB")
    styles = [load_image(path).convert("RGB") for path in args.style]
    stylizer = Stylizer.from_pretrained(args.model, device=args.device) if args.method == "adain" or args.model \
        else Stylizer(None, device=args.device)
    image = stylizer.stylize(content, styles, weights=args.weights, alpha=args.alpha,
                             preserve_color=args.preserve_color, method=args.method, size=args.size,
                             style_size=args.style_size, steps=args.steps, progress=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        image.save(out)
    except (KeyError, ValueError) as e:  # PIL: unknown extension
        raise ValueError(f"cannot write {out}: {e}") from None
    print(out)
    return 0


VERBS: dict = {
    "stylize": (add_stylize_arguments, run_stylize, "transfer the style of one or more images onto a content image"),
}
