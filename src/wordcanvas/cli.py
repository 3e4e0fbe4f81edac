"""`wordcanvas <verb>`: parses arguments, then calls the library."""
from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wordcanvas", description="Text to image with a language model and a GAN or VAE.")
    sub = p.add_subparsers(dest="verb", required=True)
    from wordcanvas import commands

    for name, (add_args, run, help_text) in commands.VERBS.items():
        sp = sub.add_parser(name, help=help_text)
        add_args(sp)
        sp.set_defaults(_run=run)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
