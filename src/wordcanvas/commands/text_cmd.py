"""CLI verbs (see commands/__init__.py): `wordcanvas encoders`."""
from __future__ import annotations

import argparse
import json


def add_encoders_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--names", default="smollm2,minilm,trainable", help="comma-separated encoder names")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--cold", action="store_true",
                   help="also time smollm2's one-time GGUF conversion (into a temporary folder)")


def run_encoders(args: argparse.Namespace) -> int:
    from wordcanvas.text.registry import ENCODER_NAMES, format_table, machine_info, measure_encoder

    names = [n.strip() for n in args.names.split(",") if n.strip()]
    unknown = [n for n in names if n not in ENCODER_NAMES]
    if unknown:
        raise ValueError(f"unknown encoder(s) {unknown}; choose from {', '.join(ENCODER_NAMES)}")
    rows = [measure_encoder(n, cold=args.cold) for n in names]
    if args.json:
        print(json.dumps({"machine": machine_info(), "encoders": rows}, indent=2))
    else:
        m = machine_info()
        print(f"{m['cpu']}, {m['threads']} torch threads, torch {m['torch']}")
        print(format_table(rows))
    return 0


VERBS: dict = {
    "encoders": (add_encoders_arguments, run_encoders,
                 "list the text encoders with parameters, load time, speed and paraphrase quality on this machine"),
}
