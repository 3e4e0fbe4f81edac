"""What each GAN setting buys: one table from several `benchmarks/gan_quality.py` results.

    python benchmarks/gan_ablations.py --base default=docs/gan_fashion-mnist/ablations/base-standing \
        --variant ema40=docs/gan_fashion-mnist/ema40 --variant mode-seeking-1=docs/gan_fashion-mnist/ablations/ms1 \
        --notes docs/gan_fashion-mnist/ablations/notes.md --out docs/gan_fashion-mnist/ablations/README.md

(the committed table names all its rows in its last line).

Every folder holds a results.json written by gan_quality.py for the same data, model name, clock and
evaluation size; each run trained with the base settings plus its own `--set` changes (the table
names the settings that differ from the base run's). With `--clock steps` a setting that changes
the cost of a step was given its own measured rate (benchmarks/gan_speed.py), so every row had the
same reference-machine minutes. Nothing is trained or evaluated here: this only reads and compares.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _common import command_line, fmt, markdown_table
from gan_quality import row_of

COLUMNS = [("FID", "fid", ">.2f"), ("precision", "precision", ">.3f"), ("recall", "recall", ">.3f"),
           ("probe all-correct", "probe", ">.3f"), ("LPIPS diversity", "lpips", ">.3f")]


def parse_named(text: str) -> tuple[str, Path]:
    name, sep, folder = text.partition("=")
    if not sep or not name or not folder:
        raise argparse.ArgumentTypeError(f"want NAME=FOLDER, got {text!r}")
    return name, Path(folder)


def read_run(name: str, folder: Path, model: str) -> dict:
    path = folder / "results.json"
    if not path.is_file():
        raise SystemExit(f"{name}: no results.json in {folder}")
    results = json.loads(path.read_text())
    models = sorted(results.get("models", {}))
    if model not in models:
        if len(models) != 1:
            raise SystemExit(f"{name}: {path} has no model {model!r}; it has {models}")
        model = models[0]  # a run of one model: whatever it was called there
    mark = results["models"][model]["marks"][-1]
    main = mark["eval"]["main"]
    s = results["settings"]
    settings = results["models"][model].get("train_settings", s.get("settings", []))  # merged files: per model
    return {**row_of(name, mark, None), "name": name, "folder": str(folder), "settings": list(settings),
            "data": s["data"], "clock": s["clock"], "rate": (s.get("rates") or {}).get(model), "n": main["n"],
            "protocol": main["protocol"]}


def compare(base: dict, variants: list[dict]) -> str:
    for v in variants:
        for key in ("data", "clock", "minutes", "n", "protocol"):
            if v[key] != base[key]:
                raise SystemExit(f"{v['name']} differs from the base in {key}: {v[key]!r} vs {base[key]!r}")
    rows = []
    for run in [base] + variants:
        changed = [x for x in run["settings"] if x not in base["settings"]]
        dropped = [x for x in base["settings"] if x not in run["settings"]]
        what = "base" if run is base else ", ".join([f"`{x}`" for x in changed] + [f"without `{x}`" for x in dropped])
        row = {"run": run["name"], "changes": what or "(same settings)", "rate": run["rate"], "steps": run["step"],
               "kimg": run["kimg"], **{key: run[key] for _, key, _ in COLUMNS}}
        if run is not base:
            row["dfid"] = run["fid"] - base["fid"]
        rows.append(row)
    columns = [("run", "run", ""), ("changes from the base", "changes", ""), ("img/s (reference)", "rate", ">.1f"),
               ("steps", "steps", ">"), ("kimg", "kimg", ">.1f")] + COLUMNS + [("FID - base", "dfid", ">+.2f")]
    return markdown_table(rows, columns)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", type=parse_named, required=True, help="NAME=FOLDER of the reference run")
    p.add_argument("--variant", type=parse_named, action="append", default=[], help="NAME=FOLDER, repeatable")
    p.add_argument("--model", default="minilm",
                   help="model name inside the results (default: minilm; a file with one model is read as that model)")
    p.add_argument("--notes", type=Path,
                   help="markdown file whose text goes under the table (how the rates were found, the reading)")
    p.add_argument("--out", type=Path, required=True, help="markdown file to write")
    args = p.parse_args(argv)
    base = read_run(*args.base, args.model)
    variants = [read_run(name, folder, args.model) for name, folder in args.variant]
    table = compare(base, variants)
    base_cmd = " ".join(f"--set {x}" for x in base["settings"])
    text = "\n".join([
        f"# What each setting buys: {base['data']}, {args.model}, "
        f"{fmt(base['minutes'], 'g')} minutes ({base['clock']} clock)",
        "",
        f"All rows: the same data, seed, batch and evaluation (n = {base['n']}, protocol `{base['protocol']}`); "
        "each run changes the base settings as listed. With the steps clock, a change that makes a step slower "
        "has a lower reference rate and so fewer steps: every row had the same reference-machine minutes.",
        "",
        table,
        "",
        *([args.notes.read_text().strip(), ""] if args.notes else []),
        f"Base settings: `{base_cmd}`.",
        "",
        "Sources: " + ", ".join(f"{r['name']}: {r['folder']}/results.json" for r in [base] + variants) + ".",
        "",
        f"Command: `{command_line()}`",
        ""])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
