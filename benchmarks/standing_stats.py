"""What BigGAN's standing statistics buy a BatchNorm generator with an EMA copy, on the same weights.

    python benchmarks/standing_stats.py --run fashion-15min=runs/gan_quality/fashion-cls2/minilm:fashion-mnist:10000 \
        --run fashion-shipped=runs/gan_quality/fashion-cls/minilm:fashion-mnist:10000 \
        --run toy-faces-60min=runs/gan_quality/toy-faces-cls/minilm:toy-faces:2000 --out docs/standing_stats

Each RUN is a training run folder whose last checkpoint is at its configured step count. The
checkpoint is exported twice, by resuming it for zero steps: once with `model.standing_stats=0`
(the EMA generator keeps the BatchNorm statistics copied from the live generator) and once with
the default (statistics re-estimated for the EMA weights). Only the BatchNorm buffers differ.
Both exports go through `wordcanvas evaluate` (the fixed protocol) with n images; an evaluation
whose JSON already sits in the output folder for the same weights is kept.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

from _common import ROOT, command_line, machine_info, write_json

VARIANTS = {"live": 0, "standing": None}  # standing_stats setting (None: the default)
METRICS = (("FID", "fid", ".2f"), ("KID", "kid", ".4f"), ("precision", "precision", ".3f"), ("recall", "recall", ".3f"),
           ("probe all-correct", "probe", ".3f"), ("R-precision", "rprec", ".3f"), ("LPIPS diversity", "div", ".3f"))


def export(run: Path, dest: Path, standing: int | None) -> Path:
    """dest/final: the run's last checkpoint exported by the loop with the given standing_stats."""
    from wordcanvas.train.config import TrainConfig
    from wordcanvas.train.loop import train

    config = json.loads((run / "config.json").read_text())
    step = config["steps"]
    folder = run / "checkpoints" / f"step-{step:07d}"
    if not folder.is_dir():
        raise SystemExit(f"{run} has no checkpoint at its last step {step}")
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "checkpoints").mkdir(parents=True)
    shutil.copytree(folder, dest / "checkpoints" / folder.name)
    model = dict(config.get("model") or {})
    model.pop("standing_stats", None)
    if standing is not None:
        model["standing_stats"] = standing
    config.update(out=str(dest), progress=False, model=model)
    (dest / "config.json").write_text(json.dumps(config))
    train(TrainConfig.from_dict(config))
    return dest / "final"


def weights_digest(final: Path) -> str:
    return hashlib.sha256((final / "generator" / "model.safetensors").read_bytes()).hexdigest()[:16]


def evaluate(final: Path, data: str, n: int, threads: int, out: Path) -> dict:
    from wordcanvas.cli import main as cli

    if cli(["evaluate", "--model", str(final), "--data", data, "--n", str(n), "--threads", str(threads),
            "--no-progress", "--out", str(out)]) != 0:
        raise SystemExit(f"evaluation of {final} failed")
    return json.loads(out.read_text())


def summary(result: dict) -> dict:
    return {"fid": result["fid"], "kid": result["kid"], "precision": result["precision"], "recall": result["recall"],
            "probe": result["probe"]["all_correct"], "rprec": result["r_precision"]["r_precision"],
            "div": result["diversity"]["lpips_diversity"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="append", required=True, metavar="NAME=RUN:DATA:N")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "standing_stats")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "standing_stats", help="re-exported run folders")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    previous = json.loads((args.out / "results.json").read_text()) if (args.out / "results.json").exists() else {}
    results = {"command": command_line(), "machine": machine_info(threads=args.threads), "runs": {}}
    for spec in args.run:
        name, rest = spec.split("=", 1)
        run, data, n = rest.rsplit(":", 2)
        entry = {"run": run, "data": data, "n": int(n)}
        for variant, standing in VARIANTS.items():
            final = export(Path(run), args.work / name / variant, standing)
            digest = weights_digest(final)
            kept = previous.get("runs", {}).get(name, {}).get(variant, {})
            path = args.out / f"{name}-{variant}.json"
            if kept.get("weights") == digest and kept.get("n") == int(n) and path.exists():
                result = json.loads(path.read_text())  # the same weights were evaluated before
            else:
                result = evaluate(final, data, int(n), args.threads, path)
            entry[variant] = {"weights": digest, "n": int(n), **summary(result)}
        results["runs"][name] = entry
        write_json(args.out / "results.json", results)

    lines = ["# Standing statistics for the EMA generator", "",
             f"Command: `{results['command']}`.", "",
             "Same weights exported twice: BatchNorm statistics copied from the live generator (\"live\", what the "
             "loop did before) or re-estimated for the EMA weights from 16 batches of noise and training captions "
             "(\"standing\", BigGAN; the default now). Evaluation: `wordcanvas evaluate` (fixed protocol, seed 0); "
             "\"weights\" is the SHA-256 prefix of the evaluated generator file (an evaluation is reused only for "
             "identical weights).", "",
             "| run | data | n | statistics | weights | " + " | ".join(m[0] for m in METRICS) + " |",
             "|---|---|---:|---|---|" + "---:|" * len(METRICS)]
    for name, entry in results["runs"].items():
        for variant in VARIANTS:
            r = entry[variant]
            lines.append(f"| {name} | {entry['data']} | {entry['n']} | {variant} | `{r['weights']}` | "
                         + " | ".join(format(r[k], f) for _, k, f in METRICS) + " |")
    (args.out / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
