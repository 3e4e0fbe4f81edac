"""Which near misses can a trained captioned-MNIST discriminator tell from the true caption?

    python benchmarks/near_miss_probe.py --runs RUN[@STEP] [RUN[@STEP] ...] --out docs/gan_captioned-mnist

A text-conditioned generator learns what its discriminator's matching head rewards. If that head
scores "the digit 1 is above the digit 7" as high as "the digit 7 is above the digit 1" on a real
image of a 1 above a 7, drawing the swapped layout costs the generator nothing, and it cannot learn
to bind digits to places. This script reads that signal directly: for each run, on --n real test
images of each kind, the matching logit of the true caption against captions wrong in one fact,
written with the same template and order of mention as the true one:

- two digits: the digits swapped, one digit changed, one digit moved to a free cell, one digit
  drawn twice (the other replaced by it);
- one digit: another digit, another cell.

Reported per kind: P(logit(true) > logit(near miss)) on the real images (0.5 = the head cannot tell
them apart), and the same on the generator's (EMA) images drawn for the true caption, which is what
the generator's adversarial term is scored by.

Writes <out>/near_miss_probe.json and <out>/near_miss_probe.md.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from _common import ROOT, command_line, machine_info, markdown_table, write_json

PAIR_KINDS = ("swapped", "other digit", "moved", "one digit twice")
SINGLE_KINDS = ("other digit", "other cell")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", required=True,
                   help="run folders (the model's, holding config.json and checkpoints/), each optionally @STEP "
                        "(default: the newest checkpoint)")
    p.add_argument("--n", type=int, default=500, help="test images per kind of caption")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "gan_captioned-mnist")
    return p.parse_args(argv)


def near_misses(lab: dict, template_index: int, rng) -> tuple[str, dict[str, str]]:
    """The true caption of a test item (one template, one order of mention) and one near miss per
    kind, each wrong in one fact and written the same way."""
    from wordcanvas.data.captioned_mnist import PAIR_TEMPLATES, SINGLE_TEMPLATES, pair_caption, single_caption

    a, ca, b, cb = lab["digit1"], lab["pos1"], lab["digit2"], lab["pos2"]
    other = lambda d: int(rng.choice([x for x in range(10) if x != d]))  # noqa: E731
    if b < 0:
        t = SINGLE_TEMPLATES[template_index % len(SINGLE_TEMPLATES)]
        free = int(rng.choice([c for c in range(9) if c != ca]))
        return single_caption(t, a, ca), {"other digit": single_caption(t, other(a), ca),
                                          "other cell": single_caption(t, a, free)}
    t = PAIR_TEMPLATES[template_index % len(PAIR_TEMPLATES)]
    free = int(rng.choice([c for c in range(9) if c not in (ca, cb)]))
    wrong = {"swapped": (b, ca, a, cb), "other digit": (a, ca, other(b), cb), "moved": (a, ca, b, free),
             "one digit twice": (a, ca, a, cb)}
    true = pair_caption(t, a, ca, b, cb)
    return true, {kind: pair_caption(t, *w) for kind, w in wrong.items()}


def test_items(n: int, seed: int):
    """n test items with two different digits (a swap is then a different layout) and n with one,
    each with its true caption and near misses; a relational near miss that reads the same as the
    true caption (a moved digit can keep the relation) is dropped."""
    import numpy as np

    from wordcanvas.data.captioned_mnist import CaptionedMNIST

    data = CaptionedMNIST("test", size=20 * n)
    rng = np.random.default_rng(seed)
    pairs, singles = [], []
    for i in range(len(data)):
        lab = data.labels(i)
        group = singles if lab["digit2"] < 0 else pairs
        if len(group) >= n or (lab["digit2"] >= 0 and lab["digit1"] == lab["digit2"]):
            continue
        true, wrong = near_misses(lab, i, rng)
        group.append((data.image(i), true, {k: v for k, v in wrong.items() if v != true}))
        if len(pairs) >= n and len(singles) >= n:
            break
    return {"two digits": pairs, "one digit": singles}


def run_checkpoint(spec: str) -> tuple[dict, Path]:
    """(config, checkpoint folder) of RUN[@STEP]: that step's checkpoint, else the newest."""
    from wordcanvas.train.checkpoint import step_folders

    folder, _, step = spec.partition("@")
    run = Path(folder)
    config = json.loads((run / "config.json").read_text())
    found = step_folders(run / "checkpoints")
    if step:
        found = [f for f in found if int(f.name.split("-")[1]) == int(step)]
    if not found:
        raise SystemExit(f"{spec}: no checkpoint{' at step ' + step if step else ''} in {run / 'checkpoints'}")
    return config, found[0]  # newest first


def load_run(spec: str):
    """(generator, discriminator, encoder name, step) of a run folder's checkpoint."""
    from wordcanvas.models.gan import Discriminator
    from wordcanvas.train.gan_step import ARCHS

    config, ckpt = run_checkpoint(spec)
    generator = ARCHS[config["model"].get("arch", "dfgan")][0].from_pretrained(ckpt / "generator_ema").eval()
    return generator, Discriminator.from_pretrained(ckpt / "discriminator").eval(), config["encoder"], \
        int(ckpt.name.split("-")[1])


def draw(generator, encoder, captions: list[str], seed: int):
    """The generator's images for the captions, one seeded noise vector each, 100 at a time."""
    import torch

    with torch.no_grad():
        noise = generator.sample_noise(len(captions), torch.Generator().manual_seed(seed))
        return torch.cat([generator(noise[i:i + 100], encoder.encode(captions[i:i + 100]))
                          for i in range(0, len(captions), 100)])


def probe(generator, discriminator, encoder, items: list, seed: int) -> dict:
    """Per near-miss kind: how often the true caption's matching logit beats the near miss's, on the
    real images and (unless generator is None) on the generator's images for the true caption."""
    import torch

    from wordcanvas.models.layers import standardize

    def logits(images, captions):
        text = encoder.encode(captions)
        with torch.no_grad():
            return discriminator.heads(discriminator.features(images), standardize(text.pooled.float()),
                                       standardized=True,
                                       text=text if discriminator.reads_tokens else None)[1]

    real = torch.stack([image for image, _, _ in items])
    true = [caption for _, caption, _ in items]
    sets = [("real", real)]
    if generator is not None:
        sets.append(("generated", draw(generator, encoder, true, seed)))
    out = {}
    for name, images in sets:
        base = logits(images, true)
        for kind in items[0][2]:
            keep = [i for i, (_, _, wrong) in enumerate(items) if kind in wrong]
            other = logits(images[keep], [items[i][2][kind] for i in keep])
            out.setdefault(kind, {"n": len(keep)})[name] = round(float((base[keep] > other).float().mean()), 4)
    return out


def main(argv=None):
    args = parse_args(argv)
    import torch

    from wordcanvas.text.registry import load_encoder

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    items = test_items(args.n, args.seed)
    encoders: dict = {}
    rows = []
    for spec in args.runs:
        generator, discriminator, encoder_name, step = load_run(spec)
        encoder = encoders.setdefault(encoder_name, load_encoder(encoder_name))
        name = Path(spec.partition("@")[0]).resolve()
        try:
            name = name.relative_to(ROOT)
        except ValueError:
            pass
        for kind, group in items.items():
            for near, scores in probe(generator, discriminator, encoder, group, args.seed).items():
                rows.append({"run": str(name), "step": step, "kind": kind, "near miss": near, **scores})
        print(f"{name} @ {step}: done", flush=True)
    results = {"command": command_line(), "machine": machine_info(threads=args.threads), "n": args.n,
               "seed": args.seed, "seconds": round(time.perf_counter() - t0, 1), "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "near_miss_probe.json", results)
    write_report(args.out / "near_miss_probe.md", results)
    print(markdown_table(rows, COLUMNS))


COLUMNS = [("run", "run", ""), ("step", "step", ">"), ("caption", "kind", ""), ("near miss", "near miss", ""),
           ("n", "n", ">"), ("real: true beats near miss", "real", ">.3f"),
           ("generated: true beats near miss", "generated", ">.3f")]


def write_report(path: Path, results: dict) -> None:
    m = results["machine"]
    lines = ["# Which near misses the discriminator tells apart", "",
             "For each run, the discriminator's matching logit of a test image's true caption against captions "
             "wrong in one fact (same template and order of mention): the share of images where the true caption "
             "scores higher. 0.5 = the matching head cannot tell the two captions apart, so the generator is not "
             "rewarded for getting that fact right. 'generated': the run's EMA generator's images for the true "
             f"caption (seed {results['seed']}). n = {results['n']} test images per kind (two different digits; "
             f"one digit). {m.get('cpu', '')}, torch threads {m.get('threads')}; {results['seconds']:.0f} s.", "",
             markdown_table(results["rows"], COLUMNS), "", f"Command: `{results['command']}`", ""]
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
