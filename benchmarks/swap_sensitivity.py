"""How much does a captioned-MNIST generator's picture change when its caption changes in one fact?

    python benchmarks/swap_sensitivity.py --runs RUN[@STEP] [RUN[@STEP] ...] --out docs/gan_captioned-mnist/swap_sensitivity

A generator that binds digits to places must draw a different picture for "the digit 1 is above
the digit 7" than for its swap, about as different as for another caption. One that reads the
caption as a bag of words draws nearly the same picture for both. For --n two-digit test captions
and each near miss of near_miss_probe.py (digits swapped, one digit changed, one moved, one drawn
twice), this script reports, with the same noise for both images:

- image: mean |G(caption) - G(near miss)| over pixels, divided by the same for another test
  caption (1 = the near miss moves the picture as much as an unrelated caption, 0 = not at all);
- text: the distance between the two captions' pooled embeddings (standardised per caption, as
  the generator reads them), divided by the same for another caption: what its pooled input offers.

Writes <out>/swap_sensitivity.json and .md.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from _common import ROOT, command_line, machine_info, markdown_table, write_json

KINDS = ("swapped", "one digit twice", "other digit", "moved")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", required=True, help="run folders, each optionally @STEP (default: newest)")
    p.add_argument("--n", type=int, default=500, help="two-digit test captions")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "gan_captioned-mnist" / "swap_sensitivity")
    return p.parse_args(argv)


def sensitivity(generator, encoder, items: list, seed: int) -> dict:
    """Per near-miss kind: (image ratio, text ratio), over the items that have that near miss."""
    import torch

    from near_miss_probe import draw
    from wordcanvas.models.layers import standardize

    true = [caption for _, caption, _ in items]
    other = true[1:] + true[:1]  # another test caption for each (all captions here name two digits)
    with torch.no_grad():
        images, pooled = draw(generator, encoder, true, seed), encoder.encode(true).pooled
        base_image = (images - draw(generator, encoder, other, seed)).abs().mean(dim=(1, 2, 3))
        base_text = (standardize(pooled) - standardize(pooled).roll(-1, 0)).norm(dim=1)
        result = {}
        for kind in KINDS:
            keep = [i for i, (_, _, wrong) in enumerate(items) if kind in wrong]
            wrong = [items[i][2][kind] for i in keep]
            # the near miss drawn with each true caption's own noise: draw() numbers noise by position
            noise = generator.sample_noise(len(true), torch.Generator().manual_seed(seed))[keep]
            chunks = [(j, encoder.encode(wrong[j:j + 100])) for j in range(0, len(wrong), 100)]
            miss_images = torch.cat([generator(noise[j:j + 100], text) for j, text in chunks])
            both = standardize(torch.cat([pooled, *(text.pooled for _, text in chunks)]))
            text_gap = (both[:len(true)][keep] - both[len(true):]).norm(dim=1)
            result[kind] = {"n": len(keep),
                            "image": float((images[keep] - miss_images).abs().mean(dim=(1, 2, 3)).mean()
                                           / base_image[keep].mean()),
                            "text": float(text_gap.mean() / base_text[keep].mean())}
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from near_miss_probe import load_run, test_items
    from wordcanvas.text.registry import load_encoder

    t0 = time.perf_counter()
    items = test_items(args.n, args.seed)["two digits"]
    rows, encoders = [], {}
    for spec in args.runs:
        generator, _, encoder_name, step = load_run(spec)
        encoder = encoders.setdefault(encoder_name, load_encoder(encoder_name))
        found = sensitivity(generator, encoder, items, args.seed)
        rows.append({"run": spec.partition("@")[0], "step": step,
                     **{f"image: {k}": round(v["image"], 3) for k, v in found.items()},
                     **{f"text: {k}": round(v["text"], 3) for k, v in found.items()},
                     "n": {k: v["n"] for k, v in found.items()}})
        print(rows[-1], flush=True)
    results = {"command": command_line(), "machine": machine_info(threads=args.threads), "n": args.n,
               "seed": args.seed, "seconds": round(time.perf_counter() - t0, 1), "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "swap_sensitivity.json", results)
    columns = [("run", "run", ""), ("step", "step", ""),
               *((f"image: {k}", f"image: {k}", ">.3f") for k in KINDS),
               *((f"text: {k}", f"text: {k}", ">.3f") for k in KINDS)]
    lines = ["# How much the picture changes with one fact of the caption", "",
             f"Two-digit test captions (n = {args.n}, seed {args.seed}); each near miss drawn with the true caption's "
             "noise. image: mean absolute pixel change from the true caption's picture, over the same for another "
             "test caption; text: distance between the standardised pooled embeddings, over the same for another "
             f"caption (1 = as different as an unrelated caption). {results['machine'].get('cpu', '')}, torch threads "
             f"{results['machine'].get('threads')}.", "",
             markdown_table(rows, columns), "", f"Command: `{results['command']}`", ""]
    (args.out / "swap_sensitivity.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
