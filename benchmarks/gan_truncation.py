"""What sampling-time truncation buys a trained text-to-image model: caption agreement against
coverage, at each truncation, under the evaluation protocol.

    python benchmarks/gan_truncation.py --model src/wordcanvas/weights/t2i-toy-faces --data toy-faces \
        --truncations none,1.5,1,0.7,0.5 --n 2000 --out docs/gan_toy-faces/truncation

Truncation (BigGAN's trick) draws each noise coordinate from N(0, 1) cut at +-t (resampled beyond
it; for a VAE, the prior temperature): smaller t keeps the samples near the generator's typical
output. The same model, prompts and seeds are evaluated at every --truncations value ("none" = the
model's own setting, no truncation for the shipped models) with `wordcanvas.metrics.evaluate.evaluate_generator`: FID / precision / recall
against the test split at n = --n, probe accuracy (per attribute; mean attribute accuracy = the mean
of the per-attribute accuracies), R-precision and same-prompt LPIPS diversity; and the probe on the
held-out paraphrases (probe and R-precision only). Nothing is trained.
Writes <out>/results.json (after every truncation; a rerun with the same model, data, n and seed
keeps the truncations already there), <out>/README.md and <out>/samples-<t>.png (first 64 images).
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from _common import command_line, machine_info, markdown_table, write_json


def mean_attribute(probe: dict) -> float:
    accs = [v["accuracy"] for v in probe["per_attribute"].values()]
    return sum(accs) / len(accs)


def summary(name: str, main_ev: dict, para: dict) -> dict:
    return {"truncation": name, "fid": main_ev["fid"], "precision": main_ev["precision"],
            "recall": main_ev["recall"], "all_correct": main_ev["probe"]["all_correct"],
            "mean_attr": mean_attribute(main_ev["probe"]), "mean_attr_para": mean_attribute(para["probe"]),
            "rprec": main_ev["r_precision"]["r_precision"],
            "diversity": (main_ev.get("diversity") or {}).get("lpips_diversity")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a text-to-image run or model folder")
    p.add_argument("--data", required=True, help="the built-in dataset it was trained on")
    p.add_argument("--truncations", default="none,1.5,1,0.7,0.5", help="comma list; 'none' = the model's own setting")
    p.add_argument("--n", type=int, default=2000, help="images per evaluation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--out", required=True)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    args = p.parse_args(argv)
    truncations = [None if t.strip() == "none" else float(t) for t in args.truncations.split(",") if t.strip()]
    if any(t is not None and t <= 0 for t in truncations):
        raise SystemExit("truncations must be positive (or 'none')")

    import torch

    torch.set_num_threads(args.threads)
    from wordcanvas.commands.metrics_cmd import generator_fn
    from wordcanvas.metrics.evaluate import evaluate_generator
    from wordcanvas.metrics.inception import InceptionFeatures
    from wordcanvas.utils.io import make_grid, tensor_to_pil

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    extractor = InceptionFeatures()
    results = {"command": command_line(), "machine": machine_info(threads=args.threads),
               "model": args.model, "data": args.data, "n": args.n, "seed": args.seed, "truncations": {}}
    kept = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {}
    if all(kept.get(k) == results[k] for k in ("model", "data", "n", "seed")):  # a stopped run: keep its rows
        results["truncations"] = kept["truncations"]
    rows = []
    for t in truncations:
        name = "none" if t is None else f"{t:g}"
        if name in results["truncations"]:
            ev = results["truncations"][name]
            rows.append(summary(name, ev["main"], ev["heldout_phrasing"]))
            continue
        generate = generator_fn(args.model, "cpu", t)
        main_ev = evaluate_generator(generate, args.data, n=args.n, seed=args.seed, extractor=extractor,
                                     progress=args.progress)
        para = evaluate_generator(generate, args.data, n=args.n, seed=args.seed, heldout=True, distribution=False,
                                  diversity_prompts=0, progress=args.progress)
        samples = main_ev.pop("_samples")
        para.pop("_samples")
        if samples is not None:
            tensor_to_pil(make_grid(samples, nrow=8)).save(out / f"samples-{name}.png")
        results["truncations"][name] = {"main": main_ev, "heldout_phrasing": para}
        rows.append(summary(name, main_ev, para))
        write_json(out / "results.json", results)  # after every truncation: a stopped run keeps what it has
        print(rows[-1], flush=True)
    cols = [("truncation", "truncation", ""), ("FID", "fid", ">.2f"), ("precision", "precision", ">.3f"),
            ("recall", "recall", ">.3f"), ("probe all-correct", "all_correct", ">.3f"),
            ("mean attribute accuracy", "mean_attr", ">.3f"), ("the same, held-out phrasing", "mean_attr_para", ">.3f"),
            ("R-precision", "rprec", ">.3f"), ("LPIPS diversity", "diversity", ">.3f")]
    attrs = sorted(next(iter(results["truncations"].values()))["main"]["probe"]["per_attribute"])
    per = [{"truncation": r["truncation"], **{a: results["truncations"][r["truncation"]]["main"]["probe"]
                                              ["per_attribute"][a]["accuracy"] for a in attrs}} for r in rows]
    (out / "README.md").write_text(
        f"# Truncation at sampling: {Path(args.model).name} on {args.data}\n\n"
        f"Command: `{command_line()}`. n = {args.n} images per row (the protocol's evaluation prompts, seed "
        f"{args.seed}); held-out phrasing: the same prompts in held-out paraphrases (probe only).\n\n"
        + markdown_table(rows, cols) + "\n\nProbe accuracy per attribute (main prompts):\n\n"
        + markdown_table(per, [("truncation", "truncation", "")] + [(a, a, ">.3f") for a in attrs]) + "\n")
    print((out / "README.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
