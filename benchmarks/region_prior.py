"""Can a caption's tokens predict where things are, taught by real images alone?

    python benchmarks/region_prior.py --captioner CAPTIONER_FOLDER --out docs/gan_captioned-mnist/region_prior

Every generator measured on captioned MNIST draws the two digits of a pair in either order: the
caption and its digit swap give nearly the same picture (swap_sensitivity.py), and the judges' signal
for the order, which reaches the generator only through its own images, cancels between a caption
and its swap. This script asks whether the order can be learned directly from real data instead:
a small Transformer decoder (one learned query per region of an 8x8 grid, cross-attention to the
frozen encoder's token states) is trained to predict, from the caption alone, the region states a
trained captioner computes from the real image of that caption (mean squared error). No labels of
digits or cells are used, only (image, caption) pairs, as any captioned collection has.

Scored on held-out test captions: the captioner reads its caption back from the *predicted* regions,
and the true caption should be more likely than each near miss (digits swapped, one digit changed,
one moved, one drawn twice), as captioner_learnability.py scores real images. A prior that binds
scores swaps far above 0.5; its regions could then be what a generator draws from.

Writes <out>/region_prior.json and .md.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from _common import ROOT, command_line, machine_info, markdown_table, write_json
from near_miss_probe import test_items


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--captioner", type=Path, required=True, help="a saved captioner that binds on real images")
    p.add_argument("--encoder", default="minilm")
    p.add_argument("--layouts", type=int, default=8000, help="training layouts (one caption each)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hypotheses", type=int, default=1,
                   help="layouts predicted per caption (relaxed winner-takes-all); scored with one drawn at random")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--n", type=int, default=500, help="test items per kind of caption")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "gan_captioned-mnist" / "region_prior")
    return p.parse_args(argv)


def encode(encoder, texts: list[str], batch: int = 256):
    from wordcanvas.text.base import TextEmbedding

    text = TextEmbedding.cat([encoder.encode(texts[i:i + batch]) for i in range(0, len(texts), batch)])
    return text.tokens.float(), text.mask.bool()


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from wordcanvas.data.captioned_mnist import CaptionedMNIST
    from wordcanvas.models.captioner import Captioner
    from wordcanvas.models.layers import RegionPrior
    from wordcanvas.text.registry import load_encoder

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    captioner = Captioner.from_pretrained(args.captioner).eval().requires_grad_(False)
    encoder = load_encoder(args.encoder)
    data = CaptionedMNIST("train", size=args.layouts)
    g = torch.Generator().manual_seed(args.seed)
    picks = torch.randint(1 << 30, (len(data),), generator=g).tolist()
    texts = [data.captions(i)[p % len(data.captions(i))] for i, p in zip(range(len(data)), picks)]
    tokens, mask = encode(encoder, texts)
    with torch.no_grad():
        images = torch.stack([data.image(i) for i in range(len(data))])
        targets = torch.cat([captioner.encode_images(images[i:i + 256]) for i in range(0, len(images), 256)])
    prior = RegionPrior(tokens.shape[-1], captioner.config.dim, regions=64, layers=args.layers,
                        hypotheses=args.hypotheses)
    opt = torch.optim.Adam(prior.parameters(), lr=args.lr)
    tests = by_kind(test_items(args.n, args.seed))

    def swap_scores() -> dict:
        rows = {}
        prior.eval()
        with torch.no_grad():
            for kind, group in tests.items():
                true_texts = [t for _, t, _ in group]
                # one hypothesis per caption drawn at random, as a generator's noise draws it
                choice = torch.randint(args.hypotheses, (len(group),), generator=torch.Generator().manual_seed(args.seed))
                regions = prior(*encode(encoder, true_texts), choice if args.hypotheses > 1 else None)
                real_regions = captioner.encode_images(torch.stack([image for image, _, _ in group]))
                true_pred = captioner.nll(None, true_texts, regions)
                true_real = captioner.nll(None, true_texts, real_regions)
                for near in sorted({k for _, _, wrong in group for k in wrong}):
                    keep = [i for i, (_, _, wrong) in enumerate(group) if near in wrong]
                    wrong = [group[i][2][near] for i in keep]
                    rows[(kind, near)] = {
                        "n": len(keep),
                        "predicted": float((true_pred[keep] < captioner.nll(None, wrong, regions[keep])).float().mean()),
                        "real": float((true_real[keep] < captioner.nll(None, wrong, real_regions[keep])).float().mean())}
        prior.train()
        return rows

    curve, t_train = [], time.perf_counter()
    for step in range(1, args.steps + 1):
        idx = torch.randint(len(texts), (args.batch,), generator=g)
        loss = prior.loss(tokens[idx], mask[idx], targets[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % max(1, args.steps // 5) == 0:
            rows = swap_scores()
            curve.append({"step": step, "loss": round(loss.item(), 4),
                          **{f"{kind}: {near}": round(r["predicted"], 3) for (kind, near), r in rows.items()}})
            print(curve[-1], flush=True)
    seconds = time.perf_counter() - t_train
    rows = [{"caption": kind, "near miss": near, **r} for (kind, near), r in swap_scores().items()]
    results = {"command": command_line(), "machine": machine_info(threads=args.threads), "captioner": str(args.captioner),
               "encoder": args.encoder, "layouts": args.layouts, "steps": args.steps, "batch": args.batch,
               "layers": args.layers, "hypotheses": args.hypotheses, "lr": args.lr, "n": args.n, "seed": args.seed,
               "parameters": sum(p.numel() for p in prior.parameters()), "train_seconds": round(seconds, 1),
               "seconds": round(time.perf_counter() - t0, 1), "curve": curve, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "region_prior.json", results)
    columns = [("caption", "caption", ""), ("near miss", "near miss", ""), ("n", "n", ">"),
               ("true caption more likely: predicted regions", "predicted", ">.3f"),
               ("real image's regions", "real", ">.3f")]
    m = results["machine"]
    lines = ["# Regions predicted from the caption: does the captioner read them back?", "",
             f"A region prior ({results['parameters']:,} parameters, {args.layers} decoder layers, 64 region queries"
             f"{f', {args.hypotheses} hypotheses (relaxed winner-takes-all; scored with one drawn at random per caption)' if args.hypotheses > 1 else ''}) "
             f"trained {args.steps} steps of batch {args.batch} (Adam lr {args.lr}, seed {args.seed}, {seconds:.0f} s) "
             f"to predict, from {args.encoder} token states of one caption per image of {args.layouts} real training "
             f"layouts, the region states the captioner `{args.captioner}` computes from the image. Scored on "
             f"{args.n} held-out test captions per kind: how often the captioner finds the true caption more likely "
             f"than a near miss, reading the predicted regions, beside reading the real test image's regions. "
             f"{m.get('cpu', '')}, torch threads {m.get('threads')}.", "",
             markdown_table(rows, columns), "", "During training (predicted regions, test captions):", "",
             markdown_table(curve, [(k, k, "") for k in curve[-1]]), "", f"Command: `{results['command']}`", ""]
    (args.out / "region_prior.md").write_text("\n".join(lines))
    print(markdown_table(rows, columns))
    return 0


def by_kind(tests: dict) -> dict:
    """near_miss_probe's test items with the pairs split into named cells and relations: a relation
    leaves the places open, so regions predicted from it can only be an average over layouts."""
    pairs = tests["two digits"]
    relation = [item for item in pairs if item[1].startswith(("digit", "the digit"))]
    named = [item for item in pairs if not item[1].startswith(("digit", "the digit"))]
    return {"two digits in named cells": named, "two digits in a relation": relation, "one digit": tests["one digit"]}


if __name__ == "__main__":
    raise SystemExit(main())
