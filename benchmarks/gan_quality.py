"""Text-to-image GAN quality under a wall-clock budget: each text encoder against the DCGAN baseline.

    python benchmarks/gan_quality.py --data fashion-mnist --encoders minilm,smollm2,trainable \\
        --baseline dcgan --minutes 60 --checkpoints-at 15,30 --n-eval 10000 --out docs/gan_fashion-mnist
    python benchmarks/gan_quality.py --smoke                 # a few minutes: the whole path, tiny numbers

For every model (one text-conditioned GAN per encoder, plus the class-conditioned DCGAN with the
same budget) the script trains through `wordcanvas.train.loop.train` in segments that end at the
minute marks (--checkpoints-at, then --minutes): each segment resumes the previous one exactly
(the loop's checkpoint/resume), so one run gives the whole curve. At every mark the model (the
EMA generator for the GAN) is evaluated with the fixed protocol of `wordcanvas.metrics.evaluate`:

- FID / KID / precision / recall of n-eval images for the dataset's balanced evaluation prompts
  (test split) against the first n-eval real test images, beside the real-vs-real floor at the same n;
- probe accuracy per attribute and all-correct on those prompts; R-precision (R = 1, 100 candidates);
  same-prompt diversity (mean pairwise LPIPS over seeds);
- probe accuracy and R-precision again on the same prompts phrased with HELD-OUT paraphrases
  (eval_prompts(heldout=True)); for toy faces also on the held-out attribute COMBINATIONS
  (split "heldout"). These add no FID unless --secondary-fid;
- ratios against the DCGAN baseline at the same mark.

The DCGAN reads no text: it is given each prompt's class label (an oracle), so its held-out
paraphrase scores equal its normal ones; prompts that do not name its label get a random class.

Writes <out>/results.json (updated after every mark; a rerun with the same settings skips what is
done), <out>/README.md (tables), <out>/<model>.png (the loop's sample grid at the last mark) and
<out>/curve.png. Training runs go to --runs (default runs/gan_quality/<data>).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from _common import ROOT, command_line, load_average, machine_info, markdown_table, write_json

DATASETS = ("fashion-mnist", "toy-faces", "captioned-mnist")
ENCODERS = ("minilm", "smollm2", "trainable")
# The targets (Fashion-MNIST, 32 x 32, 15 minutes) and its DCGAN reference numbers.
TARGETS = {"fashion-mnist": {"minutes": 15, "fid_max": 30.0, "probe_all_correct_min": 0.95,
                             "dcgan_reference": {"fid": 110.0, "probe_all_correct": 0.94}}}
CLOCK_WORDS = {"wall": "wall-clock", "cpu": "dedicated-core (process CPU time / threads)",
               "steps": "reference-machine (a fixed step count: minutes x the model's measured idle images/s)"}
SMOKE = {"minutes": 0.4, "checkpoints_at": "0.2", "n_eval": 200, "diversity_prompts": 10, "diversity_seeds": 3,
         "r_repeats": 1}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", choices=DATASETS, default="fashion-mnist")
    p.add_argument("--encoders", default=",".join(ENCODERS), help="comma list of text encoders ('' = none)")
    p.add_argument("--baseline", choices=("dcgan", "none"), default="dcgan", help="class-conditioned baseline, same budget")
    p.add_argument("--minutes", type=float,
                   help="training budget per model, wall clock (default: the last --checkpoints-at mark, else 15; smoke 0.4)")
    p.add_argument("--clock", choices=("wall", "cpu", "steps"), default="wall",
                   help="what a budget minute is: 'wall' clock (default; needs an idle machine), 'cpu' = process "
                        "CPU time / threads, or 'steps' = the optimisation steps the model makes in that time on an "
                        "idle reference machine, from its measured training rate (--rate); deterministic, so the "
                        "result does not depend on the machine's load")
    p.add_argument("--rate", action="append", default=[], metavar="MODEL=IMAGES_PER_S",
                   help="with --clock steps: training images/s of each model on the reference machine "
                        "(benchmarks/gan_speed.py), e.g. --rate minilm=137.1 --rate dcgan=595.3")
    p.add_argument("--checkpoints-at", dest="checkpoints_at", default=None,
                   help="comma list of earlier minute marks to evaluate at (the budget is always the last mark)")
    p.add_argument("--ckpt-every", dest="ckpt_every", type=int, default=0,
                   help="also checkpoint every N steps (default 0: at the marks and on SIGTERM only); a run killed "
                        "without warning then loses at most N steps. Does not change results")
    p.add_argument("--n-eval", dest="n_eval", type=int, help="images per FID / probe evaluation (default 10000; smoke 200)")
    p.add_argument("--n-secondary", dest="n_secondary", type=int,
                   help="prompts for the held-out paraphrase / combination evaluations (default: n-eval)")
    p.add_argument("--secondary-fid", dest="secondary_fid", action="store_true",
                   help="also FID/KID/PR (and diversity) for the held-out phrasing / combinations")
    p.add_argument("--diversity-prompts", dest="diversity_prompts", type=int, help="LPIPS diversity prompts (default 50)")
    p.add_argument("--diversity-seeds", dest="diversity_seeds", type=int, help="seeds per diversity prompt (default 5)")
    p.add_argument("--r-repeats", dest="r_repeats", type=int, help="R-precision candidate draws (default 3)")
    p.add_argument("--eval-batch", dest="eval_batch", type=int, default=100, help="images per generate call (protocol: 100)")
    p.add_argument("--batch", type=int, default=32, help="training batch")
    p.add_argument("--seed", type=int, default=0, help="training seed (evaluation uses the protocol's seed 0)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads (training and evaluation)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                   help="a TrainConfig setting for the text GANs, dotted, JSON value: --set model.generator.ngf=48")
    p.add_argument("--runs", help="root of the training run folders (default runs/gan_quality/<data>)")
    p.add_argument("--out", help="result folder (default docs/gan_<data>; smoke: runs/gan_quality_smoke/<data>/report)")
    p.add_argument("--adopt", action="store_true",
                   help="continue run folders that <out>/results.json knows nothing of (by default they are started "
                        "afresh, except under --clock steps, where a first segment cut short continues from its newest "
                        "checkpoint): e.g. re-evaluate a finished run with the current code, into a new --out")
    p.add_argument("--fresh", action="store_true", help="delete <runs>/<model> of the models named and <out>/results.json first")
    p.add_argument("--smoke", action="store_true", help="tiny budget and sample counts: checks the script end to end")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    args = p.parse_args(argv)

    defaults = dict(minutes=15.0, checkpoints_at="", n_eval=10_000, diversity_prompts=50, diversity_seeds=5, r_repeats=3)
    if args.smoke:
        defaults.update(SMOKE)
    if args.minutes is None and args.checkpoints_at:  # --checkpoints-at 15,30,60 alone: a 60-minute budget
        try:
            args.minutes = max(float(m) for m in args.checkpoints_at.split(",") if m.strip())
        except ValueError:
            p.error(f"--checkpoints-at wants comma-separated minutes, got {args.checkpoints_at!r}")
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.n_secondary = args.n_secondary or args.n_eval
    if args.ckpt_every and args.clock != "steps":
        p.error("--ckpt-every needs --clock steps: under a wall or CPU clock a segment cut short restarts "
                "from its last mark, not from a checkpoint in between")
    marks = sorted({float(m) for m in args.checkpoints_at.split(",") if m.strip()} | {float(args.minutes)})
    if marks[0] <= 0 or marks[-1] != float(args.minutes):
        p.error(f"minute marks must be positive and at most --minutes ({args.minutes}); got {args.checkpoints_at}")
    args.marks = marks
    args.encoders = [e.strip() for e in args.encoders.split(",") if e.strip()]
    args.models = args.encoders + (["dcgan"] if args.baseline == "dcgan" else [])
    try:
        args.rates = {k.strip(): float(v) for k, v in (r.split("=", 1) for r in args.rate)}
    except ValueError:
        p.error(f"--rate wants MODEL=IMAGES_PER_S, got {args.rate}")
    if args.clock == "steps" and set(args.models) - set(args.rates):
        p.error(f"--clock steps needs --rate for every model; missing {sorted(set(args.models) - set(args.rates))}")
    if not args.models:
        p.error("nothing to train: give --encoders and/or --baseline dcgan")
    smoke_root = ROOT / "runs" / "gan_quality_smoke" / args.data
    args.runs = Path(args.runs or (smoke_root / "runs" if args.smoke else ROOT / "runs" / "gan_quality" / args.data))
    args.out = Path(args.out or (smoke_root / "report" if args.smoke else ROOT / "docs" / f"gan_{args.data}"))
    return args


# ---------------------------------------------------------------------------------------------
# Training in segments
# ---------------------------------------------------------------------------------------------

def model_settings(args) -> dict:
    """TrainConfig overrides from --set (the text GANs only: the baseline keeps its own recipe)."""
    from wordcanvas.train.config import apply_settings

    try:
        data = apply_settings({}, args.settings)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    return data


def budget_steps(args, name: str, minutes: float) -> int:
    """Total steps that `minutes` of training make at the model's reference rate (--clock steps)."""
    return max(1, round(minutes * 60 * args.rates[name] / args.batch))


def train_config(args, name: str, run_dir: Path, minutes: float, mark: float):
    from wordcanvas.train.config import TrainConfig

    family = "dcgan" if name == "dcgan" else "gan"
    base = dict(family=family, data=args.data, encoder=name if family == "gan" else "minilm", out=str(run_dir),
                minutes=minutes, budget_clock="cpu" if args.clock == "cpu" else "wall", batch=args.batch, seed=args.seed, threads=args.threads, device=args.device,
                log_every=50, sample_every=0, ckpt_every=args.ckpt_every, keep_last=len(args.marks) + 1, progress=args.progress)
    data = TrainConfig(**base).to_dict()
    if family == "gan":
        for key, value in model_settings(args).items():
            data[key] = {**data[key], **value} if isinstance(value, dict) and isinstance(data.get(key), dict) else value
        data.update(out=str(run_dir), minutes=minutes, steps=None)
    if args.clock == "steps":  # steps count across resumes: the mark's total; the marks' checkpoints are kept
        data.update(minutes=None, steps=budget_steps(args, name, mark), budget_clock="wall",
                    keep_steps=[budget_steps(args, name, m) for m in args.marks])
    return TrainConfig.from_dict(data)


def rewind(run_dir: Path, step: int) -> None:
    """Drop checkpoints past `step` (the last evaluated mark, or under the steps clock the next
    mark's step count), so the next segment starts exactly where its mark expects."""
    from wordcanvas.train.checkpoint import step_folders

    if step == 0:
        if run_dir.exists():
            print(f"{run_dir}: no mark evaluated yet; starting this model afresh", file=sys.stderr)
            shutil.rmtree(run_dir)
        return
    for folder in step_folders(run_dir / "checkpoints"):
        if int(folder.name.split("-")[1]) > step:
            print(f"{run_dir}: removing {folder.name}, past step {step}", file=sys.stderr)
            shutil.rmtree(folder)


def relative(path: Path) -> str:
    """The path relative to the checkout when inside it (result files name no machine paths)."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def train_time_s(run_dir: Path) -> float | None:
    """Seconds spent in optimisation steps so far (the newest checkpoint's count, across resumes)."""
    from wordcanvas.train.checkpoint import latest_good_checkpoint, load_training_state

    found = latest_good_checkpoint(run_dir / "checkpoints")
    return round(float(load_training_state(found[0]).get("train_time_s", 0.0)), 1) if found else None


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------

def generate_fn(fam, name: str, prompt_sets: list):
    """(texts, seed) -> images for evaluate_generator. The DCGAN gets each prompt's class label
    (looked up from the evaluation prompts); a prompt that does not name it gets a seeded random class."""
    if name != "dcgan":
        return lambda texts, seed: fam.generate(texts, seed)
    import torch

    from wordcanvas.data.base import Prompt

    lookup = {p.text: p.labels for prompts in prompt_sets for p in prompts}

    def generate(texts: list[str], seed: int):
        labels = torch.tensor([lookup.get(t, {}).get(fam.label, -1) for t in texts])
        missing = labels < 0
        if missing.any():
            g = torch.Generator().manual_seed(seed)
            labels[missing] = torch.randint(len(fam.classes), (int(missing.sum()),), generator=g)
        return fam.generate([Prompt(t, {fam.label: int(k)}) for t, k in zip(texts, labels.tolist())], seed)

    return generate


def faithfulness(generate, data: str, n: int, heldout: bool, split: str, batch_size: int, r_repeats: int,
                 progress: bool, seed: int = 0) -> dict:
    """Probe scores and R-precision only (no Inception, no diversity), for the secondary evaluations."""
    from wordcanvas.metrics.evaluate import evaluate_generator

    result = evaluate_generator(generate, data, n=n, heldout=heldout, split=split, seed=seed, batch_size=batch_size,
                                r_repeats=r_repeats, progress=progress, distribution=False, diversity_prompts=0)
    result.pop("_samples", None)
    return result


def secondary_evaluations(data: str) -> list[tuple[str, bool, str]]:
    """(name, heldout phrasing, split) of the evaluations beside the main one."""
    out = [("heldout_phrasing", True, "test")]
    if data == "toy-faces":
        out.append(("heldout_combinations", False, "heldout"))
    return out


def evaluate_mark(fam, name: str, args, extractor, floor: dict) -> dict:
    from wordcanvas.data import load_dataset
    from wordcanvas.metrics.evaluate import evaluate_generator

    test = load_dataset(args.data, "test", seed=0)
    prompt_sets = [test.eval_prompts(args.n_eval, seed=0)]
    for _, heldout, split in secondary_evaluations(args.data):
        source = test if split == "test" else load_dataset(args.data, split, seed=0)
        prompt_sets.append(source.eval_prompts(args.n_secondary, seed=0, heldout=heldout))
    generate = generate_fn(fam, name, prompt_sets)
    common = dict(batch_size=args.eval_batch, extractor=extractor, r_repeats=args.r_repeats, progress=args.progress)

    main = evaluate_generator(generate, args.data, n=args.n_eval, floor=False, diversity_prompts=args.diversity_prompts,
                              diversity_seeds=args.diversity_seeds, **common)
    main["floor"] = floor
    samples = main.pop("_samples", None)
    out = {"main": main}
    for key, heldout, split in secondary_evaluations(args.data):
        if args.secondary_fid:
            r = evaluate_generator(generate, args.data, n=args.n_secondary, heldout=heldout, split=split, floor=False,
                                   diversity_prompts=args.diversity_prompts, diversity_seeds=args.diversity_seeds, **common)
            r.pop("_samples", None)
        else:
            r = faithfulness(generate, args.data, args.n_secondary, heldout, split, args.eval_batch, args.r_repeats,
                             args.progress)
        out[key] = r
    return out, samples


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

def row_of(name: str, mark: dict, baseline: dict | None) -> dict:
    ev = mark["eval"]
    main, para = ev["main"], ev.get("heldout_phrasing", {})
    combos = ev.get("heldout_combinations")
    row = {"model": name, "minutes": mark["minutes"], "step": mark["step"], "kimg": mark["images_seen"] / 1000,
           "fid": main["fid"], "floor": main["floor"]["fid"], "kid": main["kid"], "precision": main["precision"],
           "recall": main["recall"], "probe": main["probe"]["all_correct"],
           "probe_para": para.get("probe", {}).get("all_correct"),
           "probe_combo": combos["probe"]["all_correct"] if combos else None,
           "rprec": main["r_precision"]["r_precision"], "rprec_para": para.get("r_precision", {}).get("r_precision"),
           "lpips": main.get("diversity", {}).get("lpips_diversity")}
    if baseline is not None:
        b = baseline["eval"]["main"]
        row["fid_vs_dcgan"] = row["fid"] / b["fid"]
        row["probe_vs_dcgan"] = row["probe"] / b["probe"]["all_correct"] if b["probe"]["all_correct"] else None
    return row


def ordered(results: dict) -> list[tuple[str, dict]]:
    """Models in the order they were asked for (the JSON file stores them sorted), the baseline last."""
    names = sorted(results["models"], key=lambda n: (n == "dcgan", results["settings"]["models"].index(n)
                                                     if n in results["settings"]["models"] else 99))
    return [(n, results["models"][n]) for n in names]


def table_rows(results: dict) -> list[dict]:
    rows = []
    base = {m["minutes"]: m for m in results["models"].get("dcgan", {}).get("marks", [])}
    for name, model in ordered(results):
        for mark in model["marks"]:
            rows.append(row_of(name, mark, base.get(mark["minutes"]) if name != "dcgan" else None))
    return rows


def attribute_rows(results: dict) -> list[dict]:
    """Per-attribute probe accuracy at each model's last mark (main prompts and held-out phrasing)."""
    rows = []
    for name, model in ordered(results):
        if not model["marks"]:
            continue
        ev = model["marks"][-1]["eval"]
        for key in ("main", "heldout_phrasing", "heldout_combinations"):
            if key not in ev:
                continue
            for attr, v in ev[key]["probe"]["per_attribute"].items():
                ceiling = ((ev[key]["probe"].get("real_ceiling") or {}).get("per_attribute") or {}).get(attr)
                rows.append({"model": name, "prompts": key.replace("_", " "), "attribute": attr, "n": v["count"],
                             "accuracy": v["accuracy"], "real": ceiling})
    return rows


def weighted_accuracy(per_attribute: dict, keys) -> float:
    """The accuracy over several probe attributes, each weighted by how many prompts name it."""
    hits = sum(per_attribute[k]["accuracy"] * per_attribute[k]["count"] for k in keys if k in per_attribute)
    count = sum(per_attribute[k]["count"] for k in keys if k in per_attribute)
    return hits / count if count else float("nan")


def captioned_mnist_lines(results: dict) -> list[str]:
    """The issue's captioned-MNIST target: digit identity and position accuracy >= 80%, read as the
    probe finding the named digits (digit1/2) and each named digit in its named cell (placed1/2)."""
    lines = ["Target (captioned MNIST): digit identity and position accuracy >= 80%, read at the last mark as the "
             "mean of digit1/digit2 (the named digits are drawn) and of placed1/placed2 (each named digit sits in "
             "its named cell; `pos` alone only asks for ink there)."]
    for name, model in ordered(results):
        per = model["marks"][-1]["eval"]["main"]["probe"]["per_attribute"]
        digit, placed = weighted_accuracy(per, ("digit1", "digit2")), weighted_accuracy(per, ("placed1", "placed2"))
        met = digit >= 0.8 and placed >= 0.8
        lines.append(f"- {name} ({model['marks'][-1]['minutes']:g} min): digits {digit:.1%}, placed {placed:.1%}"
                     + (f", relation {per['relation']['accuracy']:.1%}" if "relation" in per else "")
                     + f" -> {'met' if met else 'not met'}")
        kinds = model["marks"][-1]["eval"]["main"]["probe"].get("all_correct_by_kind")
        if kinds:
            lines.append("  all-correct by kind of caption: " + ", ".join(
                f"{kind} {v['all_correct']:.1%} (n = {v['count']})" for kind, v in kinds.items()))
    return lines


def target_lines(results: dict) -> list[str]:
    if results["settings"]["data"] == "captioned-mnist":
        return captioned_mnist_lines(results)
    target = TARGETS.get(results["settings"]["data"])
    if not target:
        return []
    lines = [f"Targets ({results['settings']['data']}, {target['minutes']} min): FID <= {target['fid_max']:g} and "
             f"probe accuracy >= {target['probe_all_correct_min']:.0%}; DCGAN reference about FID "
             f"{target['dcgan_reference']['fid']:g} / {target['dcgan_reference']['probe_all_correct']:.0%}."]
    n = results["settings"]["n_eval"]
    for name, model in ordered(results):
        mark = next((m for m in model["marks"] if m["minutes"] == target["minutes"]), None)
        if mark is None:
            continue
        fid, acc = mark["eval"]["main"]["fid"], mark["eval"]["main"]["probe"]["all_correct"]
        met = fid <= target["fid_max"] and acc >= target["probe_all_correct_min"]
        lines.append(f"- {name}: FID {fid:.1f}, probe {acc:.1%} -> {'met' if met else 'not met'}"
                     + ("" if n >= 10_000 else f" (n = {n}: FID is biased upwards below 10,000; not a target check)"))
    return lines


def write_report(results: dict, out: Path) -> None:
    s, m = results["settings"], results["machine"]
    rows = table_rows(results)
    main_cols = [("model", "model", ""), ("min", "minutes", ">g"), ("steps", "step", ">d"), ("kimg", "kimg", ">.1f"),
                 ("FID", "fid", ">.2f"), ("floor", "floor", ">.2f"), ("KID", "kid", ">.4f"), ("prec", "precision", ">.3f"),
                 ("recall", "recall", ">.3f"), ("probe all-correct", "probe", ">.3f"),
                 ("probe, held-out phrasing", "probe_para", ">.3f")]
    if any(r["probe_combo"] is not None for r in rows):
        main_cols.append(("probe, held-out combos", "probe_combo", ">.3f"))
    main_cols += [("R-prec", "rprec", ">.3f"), ("R-prec, held-out phrasing", "rprec_para", ">.3f"),
                  ("LPIPS div", "lpips", ">.3f"), ("FID / DCGAN", "fid_vs_dcgan", ">.2f"),
                  ("probe / DCGAN", "probe_vs_dcgan", ">.2f")]
    first = next((mk["eval"]["main"] for mod in results["models"].values() for mk in mod["marks"]), None)
    # marks trained with another thread count (a step budget allows it) are named with theirs
    other = sorted({mk["minutes"] for mod in results["models"].values() for mk in mod["marks"]
                    if mk.get("threads", s["threads"]) != s["threads"]})
    mark_threads = {mk["minutes"]: mk["threads"] for mod in results["models"].values() for mk in mod["marks"]
                    if mk["minutes"] in other}
    threads = str(s["threads"]) + "".join(f"; {mark_threads[x]} for the segment ending at {x:g} min" for x in other)
    lines = [f"# GAN quality on {s['data']}{' (SMOKE RUN: tiny budget and sample counts, not results)' if s['smoke'] else ''}", "",
             f"Each model trained for {s['minutes']:g} {CLOCK_WORDS[s.get('clock', 'wall')]} minutes (evaluated at {', '.join(f'{x:g}' for x in s['marks'])} min) "
             f"with batch {s['batch']}, seed {s['seed']}, threads: {threads}, device: {results.get('device', s['device'])}; "
             f"{m['cpu']} ({m['cpu_count']} cores){', ' + m['cuda'] if m.get('cuda') else ''}; "
             f"torch {m['torch']}. Load average {results['load_average']['start']} at start, "
             f"{results['load_average'].get('end', '?')} at the end.", "",
             f"Evaluation: protocol `{first['protocol'] if first else '?'}`, n = {s['n_eval']} generated images for the "
             f"test split's evaluation prompts (seed 0) against the first {s['n_eval']} real test images; floor = "
             f"real train vs real test at the same n. Held-out evaluations: n = {s['n_secondary']}"
             f"{', probes and R-precision only' if not s['secondary_fid'] else ''}. Diversity: {s['diversity_prompts']} prompts x "
             f"{s['diversity_seeds']} seeds. The DCGAN reads no text: it is given each prompt's class (an oracle).", "",
             markdown_table(rows, main_cols), ""]
    lines += target_lines(results)
    trained_with = [f"- {name}: `{' '.join('--set ' + x for x in model['train_settings']) or 'family defaults'}`"
                    for name, model in ordered(results) if "train_settings" in model]
    if trained_with:  # results merged from runs with different settings
        lines += ["", "Settings per model (rates in img/s for --clock steps: "
                  f"{', '.join(f'{k} {v:g}' for k, v in results['settings'].get('rates', {}).items())}):", "", *trained_with]
    attrs = attribute_rows(results)
    if attrs:
        lines += ["", "## Probe accuracy per attribute (last mark)", "",
                  markdown_table(attrs, [("model", "model", ""), ("prompts", "prompts", ""), ("attribute", "attribute", ""),
                                         ("n", "n", ">d"), ("accuracy", "accuracy", ">.3f"), ("real images", "real", ">.3f")])]
    grids = [f"![{name}]({name}.png)" for name, _ in ordered(results) if (out / f"{name}.png").exists()]
    if grids:
        lines += ["", "## Samples (fixed prompts and noise, last mark)", "", *grids]
    if (out / "curve.png").exists():
        lines += ["", "## Curves", "", "![curves](curve.png)"]
    lines += ["", f"Command: `{results['command']}`", ""]
    (out / "README.md").write_text("\n".join(lines))


def plot_curves(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, model in ordered(results):
        marks = model["marks"]
        if not marks:
            continue
        x = [mk["minutes"] for mk in marks]
        axes[0].plot(x, [mk["eval"]["main"]["fid"] for mk in marks], "o-", label=name)
        axes[1].plot(x, [mk["eval"]["main"]["probe"]["all_correct"] for mk in marks], "o-", label=name)
    floor = next((mk["eval"]["main"]["floor"]["fid"] for m in results["models"].values() for mk in m["marks"]), None)
    if floor is not None:
        axes[0].axhline(floor, color="grey", ls="--", label="real vs real")
    axes[0].set(xlabel="training minutes", ylabel=f"FID (n = {results['settings']['n_eval']})", yscale="log")
    axes[1].set(xlabel="training minutes", ylabel="probe all-correct", ylim=(0, 1))
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------

def settings_record(args) -> dict:
    return {"data": args.data, "models": args.models, "minutes": args.minutes, "marks": args.marks,
            "n_eval": args.n_eval, "n_secondary": args.n_secondary, "secondary_fid": args.secondary_fid,
            "diversity_prompts": args.diversity_prompts, "diversity_seeds": args.diversity_seeds,
            "r_repeats": args.r_repeats, "eval_batch": args.eval_batch, "batch": args.batch, "seed": args.seed,
            "eval_seed": 0, "threads": args.threads, "device": args.device, "settings": args.settings,
            "smoke": args.smoke, "clock": args.clock, "rates": args.rates}


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch

    from wordcanvas.metrics.evaluate import evaluate_real_vs_real
    from wordcanvas.metrics.inception import InceptionFeatures
    from wordcanvas.train.loop import resolve_device, train

    torch.set_num_threads(args.threads)
    results_path = args.out / "results.json"
    if args.fresh:  # only this benchmark's own folders: <runs>/<model> and the results file
        for name in args.models:
            shutil.rmtree(args.runs / name, ignore_errors=True)
        results_path.unlink(missing_ok=True)
    settings = settings_record(args)
    results = json.loads(results_path.read_text()) if results_path.exists() else None
    if results is not None:
        free = ("models", "minutes", "marks")  # more models, or a longer curve, may be added later
        if args.clock == "steps":  # a step budget makes the thread count a matter of speed only (kept per mark)
            free += ("threads",)
        old = {k: v for k, v in results["settings"].items() if k not in free}
        if old != {k: v for k, v in settings.items() if k not in free}:
            raise SystemExit(f"{results_path} holds results of other settings; use --fresh or another --out")
        old_marks = results["settings"]["marks"]
        if not set(old_marks) <= set(args.marks) or min(set(args.marks) - set(old_marks), default=1e9) < max(old_marks):
            raise SystemExit(f"{results_path} was evaluated at {old_marks} minutes; a rerun may only add later marks "
                             f"(got {args.marks}); use --fresh or another --out")
        results["settings"].update(models=list(dict.fromkeys(results["settings"]["models"] + args.models)),
                                   minutes=args.minutes, marks=args.marks)
    else:
        results = {"settings": settings, "models": {}}
    results["command"] = command_line()
    results["machine"] = machine_info(threads=args.threads)
    results["load_average"] = {"start": load_average()}
    args.out.mkdir(parents=True, exist_ok=True)

    device = resolve_device(args.device)
    results["device"] = str(device)
    extractor = InceptionFeatures(device=device, threads=args.threads)
    floor_cache: dict = {}

    def floor() -> dict:
        """The real-vs-real floor, computed when the first evaluation needs it (after training,
        so a benchmark restarted while training never recomputes it; the features are cached)."""
        if not floor_cache:
            floor_cache.update({k: v for k, v in evaluate_real_vs_real(args.data, args.n_eval, 0, extractor,
                                                                       args.progress).items()
                                if k in ("fid", "kid", "kid_std", "precision", "recall", "n", "seconds")})
            results["floor"] = dict(floor_cache)
        return floor_cache

    for name in args.models:
        model = results["models"].setdefault(name, {"marks": []})
        run_dir = args.runs / name
        done = {mk["minutes"] for mk in model["marks"]}
        if model["marks"] or not args.adopt:
            keep_until = model["marks"][-1]["step"] if model["marks"] else 0
            pending = [m for m in args.marks if m not in done]
            if args.clock == "steps" and pending:
                # a step budget does not depend on how the steps were timed: a segment cut short
                # (SIGTERM, a machine going away) continues exactly from its newest checkpoint
                keep_until = budget_steps(args, name, pending[0])
            rewind(run_dir, keep_until)
        previous = max(done, default=0.0)
        for minutes in args.marks:
            if minutes in done:
                continue
            cfg = train_config(args, name, run_dir, minutes - previous, minutes)
            print(f"== {name}: training to {minutes:g} min (segment of {minutes - previous:g} min)", file=sys.stderr)
            wall = time.time()
            result = train(cfg)
            wall = time.time() - wall
            if result.stopped_early:  # a signal: the mark was not reached, so nothing is evaluated or recorded
                raise SystemExit(f"{name}: training stopped by a signal at step {result.step}, before the "
                                 f"{minutes:g}-minute mark; rerun the same command to continue")
            print(f"== {name}: evaluating at {minutes:g} min (step {result.step})", file=sys.stderr)
            evaluation, samples = evaluate_mark(result.family, name, args, extractor, floor())
            if samples is not None:  # the first evaluation images, for a look at what was scored
                from wordcanvas.utils.io import make_grid, tensor_to_pil

                tensor_to_pil(make_grid(samples, nrow=8)).save(run_dir / f"eval-{minutes:g}min.png")
            model["marks"].append({"minutes": minutes, "step": result.step, "images_seen": result.images_seen,
                                   "train_time_s": train_time_s(run_dir), "segment_wall_s": round(wall, 1),
                                   "threads": args.threads,
                                   "run_dir": relative(run_dir), "eval": evaluation})
            model["params"] = {k: sum(p.numel() for p in m.parameters()) for k, m in result.family.modules.items()}
            previous = minutes
            del result
            grids = sorted((run_dir / "samples").glob("step-*.png"))
            if grids:
                shutil.copyfile(grids[-1], args.out / f"{name}.png")
            results["load_average"]["end"] = load_average()
            write_json(results_path, results)
            plot_curves(results, args.out / "curve.png")
            write_report(results, args.out)
    results["load_average"]["end"] = load_average()
    write_json(results_path, results)
    plot_curves(results, args.out / "curve.png")
    write_report(results, args.out)
    print((args.out / "README.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
