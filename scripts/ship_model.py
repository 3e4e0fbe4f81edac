"""Copy a trained text-to-image run into the package as a shipped model, with its model card.

    python scripts/ship_model.py runs/gan_quality/fashion-mnist/minilm fashion-mnist \
        --results docs/gan_fashion-mnist/results.json --model-key minilm

The card records the data, every training setting, the exact command and seed that retrain the
model, the training time and machine, and the measured metrics of the last evaluated mark.
"""
from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from wordcanvas.models.defaults import SHIPPED_MODELS, WEIGHTS_DIR  # noqa: E402


def fmt(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def model_card(name: str, config: dict, mark: dict | None, results: dict | None) -> str:
    flags = [f"--data {config['data']}", f"--encoder {config['encoder']}", f"--res {config['resolution']}", f"--steps {mark['step'] if mark else config['steps']}",
             f"--batch {config['batch']}", f"--seed {config['seed']}", f"--threads {config['threads']}"]
    flags += [f"--{k.replace('_', '-')} {config[k]}" for k in ("lr", "lr_d") if config.get(k) is not None]
    settings = [f"--set {shlex.quote(f'{group}.{k}={json.dumps(v)}')}" for group in ("model", "data_options")
                for k, v in (config.get(group) or {}).items()]
    if config.get("betas") is not None:  # the family's default otherwise
        settings.append(f"--set {shlex.quote('betas=' + json.dumps(config['betas']))}")
    lines = [f"# Shipped text-to-image model: {name}", "",
             f"A text-conditioned GAN ({config['family']}) trained by wordcanvas on `{config['data']}` at "
             f"{config['resolution']} px, prompts read by the `{config['encoder']}` encoder (frozen, cached).", "",
             "## Retrain it", "", "```bash",
             f"wordcanvas train {config['family']} {' '.join(flags + settings)} --out runs/{name}", "```", "",
             "Training is deterministic on CPU for a given seed and step count (the loop's exact resume); "
             "other thread counts or hardware may differ in the last bits.", "",
             "## All training settings", "", "```json", json.dumps(config, indent=2, sort_keys=True), "```", ""]
    if mark and results:
        machine = results.get("machine", {})
        main = mark["eval"]["main"]
        lines += ["## Training time and hardware", "",
                  f"{mark['step']} steps ({mark['images_seen'] / 1000:.1f} k images), "
                  f"{fmt(mark.get('train_time_s'), 0)} s inside optimisation steps on {machine.get('cpu', '?')} "
                  f"({machine.get('cpu_count', '?')} cores, {config['threads']} thread(s), shared with other jobs); "
                  f"torch {machine.get('torch', '?')}. The budget is {mark['minutes']:g} minutes on 2 idle cores "
                  f"({results['settings'].get('clock', 'wall')} clock, docs/gan_benchmark_protocol.md).", "",
                  "## Measured (benchmarks/gan_quality.py, fixed protocol)", "",
                  "| metric | value | beside it |", "|---|---|---|",
                  f"| FID (n = {main['n']}) | {fmt(main['fid'], 2)} | real-vs-real floor {fmt(main['floor']['fid'], 2)} |",
                  f"| KID | {fmt(main['kid'], 4)} | |",
                  f"| precision / recall | {fmt(main['precision'])} / {fmt(main['recall'])} | |",
                  f"| probe accuracy, all prompted attributes right | {fmt(main['probe']['all_correct'])} | "
                  f"real test images {fmt((main['probe'].get('real_ceiling') or {}).get('all_correct'))} |",
                  f"| R-precision (R = 1, 100 candidates) | {fmt(main['r_precision']['r_precision'])} | "
                  f"chance {fmt(main['r_precision']['chance'], 2)} |"]
        para = mark["eval"].get("heldout_phrasing")
        if para:
            lines.append(f"| probe accuracy, held-out paraphrases | {fmt(para['probe']['all_correct'])} | |")
        if "diversity" in main:
            lines.append(f"| same-prompt LPIPS diversity | {fmt(main['diversity']['lpips_diversity'])} | |")
        lines += ["", f"Command: `{results.get('command', '?')}`"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="training run folder (with final/)")
    p.add_argument("name", choices=sorted(SHIPPED_MODELS), help="shipped model name")
    p.add_argument("--results", type=Path, help="benchmarks/gan_quality.py results.json with this run's evaluation")
    p.add_argument("--model-key", help="the run's name in results.json (e.g. minilm)")
    args = p.parse_args(argv)

    final = args.run / "final"
    if not (final / "model.json").exists():
        raise SystemExit(f"{final} holds no exported model (model.json missing)")
    config = json.loads((args.run / "config.json").read_text())
    results = json.loads(args.results.read_text()) if args.results else None
    mark = results["models"][args.model_key]["marks"][-1] if results and args.model_key else None
    dest = WEIGHTS_DIR / SHIPPED_MODELS[args.name]
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(final, dest)
    meta = json.loads((final / "model.json").read_text())
    judge = args.run / "checkpoints" / f"step-{meta.get('step', 0):07d}" / "discriminator"
    if meta.get("family") == "gan" and not (dest / "discriminator").exists() and judge.is_dir():
        # runs exported before final/ kept the discriminator: take it from the checkpoint of the same step
        shutil.copytree(judge, dest / "discriminator")
        meta["discriminator"] = "discriminator"
        (dest / "model.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    (dest / "MODEL_CARD.md").write_text(model_card(args.name, config, mark, results))
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    print(f"{dest.relative_to(ROOT)}: {size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
