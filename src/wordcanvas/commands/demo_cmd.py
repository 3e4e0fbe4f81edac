"""`wordcanvas demo`: the README's first command, run on the bundled defaults."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="demo", help="folder for the images and index.html (default: demo)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default: 0)")


def run(args: argparse.Namespace) -> int:
    from wordcanvas.demo import run_demo

    page = run_demo(args.out, seed=args.seed)
    print(f"open {page} in a browser")
    return 0


VERBS: dict = {"demo": (add_arguments, run, "generate a small gallery with the bundled default models")}
