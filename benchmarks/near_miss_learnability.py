"""Can the captioned-MNIST discriminator learn to tell a caption from its near misses at all?

    python benchmarks/near_miss_learnability.py --out docs/gan_captioned-mnist

benchmarks/near_miss_probe.py finds every trained GAN discriminator scoring a caption and its digit
swap alike. This script separates the architecture from the adversarial game: a freshly initialised
discriminator of the GAN's configuration is trained on real images only, by its matching head alone
(hinge loss: real image with its caption vs the same image with a near miss, the near miss drawn
from the item's own contrast_captions, half of them swaps), for --steps steps, and then scored as
near_miss_probe.py scores a trained one (P(logit(true) > logit(near miss)) per kind on held-out
test images). If it learns swaps here, the GAN's training is what keeps it from learning them.

Writes <out>/near_miss_learnability.json and .md.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from _common import ROOT, command_line, machine_info, markdown_table, write_json
from near_miss_probe import test_items

VARIANTS = {  # name -> discriminator settings on top of the GAN-CLS captioned-MNIST run's
    "pooled caption (ndf 16)": {"ndf": 16},
    "token-reading regions (ndf 16)": {"ndf": 16, "cond_tokens": True},
    "token-reading regions (ndf 32)": {"ndf": 32, "cond_tokens": True},
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--train-items", type=int, default=4000, help="training items with two different digits")
    p.add_argument("--n", type=int, default=500, help="test images per kind of caption")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--near-misses", choices=("fixed", "fresh"), default="fixed",
                   help="fixed: one near miss per item for the whole run; fresh: drawn again at every step from "
                        "all of the item's near misses (half swaps), so no caption string is always the wrong one")
    p.add_argument("--rolled", type=float, default=0.0,
                   help="share of the wrong captions that are another item's (the batch's captions rolled by one, "
                        "as the GAN's mismatch term): easy negatives beside the near misses")
    p.add_argument("--shift", type=int, default=0, help="random translation of each training image by up to this "
                                                       "many pixels (augmentation)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "gan_captioned-mnist")
    return p.parse_args(argv)


def training_set(n: int, seed: int, encoder, fresh: bool = False):
    """Images of n training items with two different digits, their captions and near misses, embedded
    once. Fixed: one near miss per item (a swap for every other item). Fresh: all four near misses
    per item, column 0 the swap (wrong has shape n x 4; the trainer draws among them at each step)."""
    import numpy as np
    import torch

    from wordcanvas.data.captioned_mnist import CaptionedMNIST
    from wordcanvas.text.base import TextEmbedding
    from near_miss_probe import near_misses

    data = CaptionedMNIST("train", size=3 * n)  # layouts do not depend on the size: item i is the same in any
    rng = np.random.default_rng(seed)
    images, true, wrong = [], [], []
    for i in range(len(data)):
        lab = data.labels(i)
        if lab["digit2"] < 0 or lab["digit1"] == lab["digit2"]:
            continue
        caption, misses = near_misses(lab, i, rng)
        others = [v for k, v in misses.items() if k != "swapped" and v != caption]
        images.append(data.image(i))
        true.append(caption)
        if fresh:
            others = [v for k, v in misses.items() if k != "swapped"]  # a moved digit reading the same is
            wrong.extend([misses["swapped"], *others])                 # rare; kept so every row has four
        else:
            wrong.append(misses["swapped"] if len(true) % 2 else others[int(rng.integers(len(others)))])
        if len(true) == n:
            break

    def encode(texts: list[str]) -> TextEmbedding:  # in chunks, token states trimmed to the longest caption
        parts = [encoder.encode(texts[k:k + 1024]) for k in range(0, len(texts), 1024)]
        width = max(int(p.mask.sum(1).max()) for p in parts)
        out = TextEmbedding.cat([TextEmbedding(p.tokens[:, :width], p.mask[:, :width], p.pooled) for p in parts])
        return out

    wrong = encode(wrong)
    if fresh:
        wrong = TextEmbedding(wrong.tokens.view(n, 4, *wrong.tokens.shape[1:]), wrong.mask.view(n, 4, -1),
                              wrong.pooled.view(n, 4, -1))
    return torch.stack(images), encode(true), wrong


def shifted(images, limit: int, g):
    """Each image translated by its own random offset of up to limit pixels (zero padding)."""
    import torch

    if limit <= 0:
        return images
    n, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (limit,) * 4, value=float(images.min()))
    offsets = torch.randint(0, 2 * limit + 1, (n, 2), generator=g)
    return torch.stack([padded[i, :, y:y + h, x:x + w] for i, (y, x) in enumerate(offsets.tolist())])


def train_and_score(settings: dict, train, tests, encoder, args) -> dict:
    import torch

    from wordcanvas.models.gan import Discriminator, DiscriminatorConfig
    from wordcanvas.models.layers import standardize
    from wordcanvas.text.base import TextEmbedding
    from near_miss_probe import probe

    torch.manual_seed(args.seed)
    config = DiscriminatorConfig(resolution=64, channels=1, text_dim=encoder.dim, trunk="dcgan", cond_head="concat",
                                 mbstd_group=4, **settings)
    D = Discriminator(config)
    opt = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    images, true, wrong = train
    g = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        idx = torch.randint(len(images), (args.batch,), generator=g)
        features = D.features(shifted(images[idx], args.shift, g))
        if args.near_misses == "fresh":  # column 0 is the swap: half swaps, half one of the other three
            pick = torch.where(torch.rand(args.batch, generator=g) < 0.5, 0,
                               torch.randint(1, 4, (args.batch,), generator=g))
            missed = wrong[idx, pick]
        else:
            missed = wrong[idx]
        if args.rolled > 0:  # some items get another item's caption instead of a near miss
            other = true[idx.roll(1)]
            use = torch.rand(args.batch, generator=g) < args.rolled
            both = TextEmbedding.cat([other, missed])
            other, missed = both[:args.batch], both[args.batch:]
            missed = TextEmbedding(torch.where(use[:, None, None], other.tokens, missed.tokens),
                                   torch.where(use[:, None], other.mask, missed.mask),
                                   torch.where(use[:, None], other.pooled, missed.pooled))
        _, m_true = D.heads(features, standardize(true.pooled[idx]), standardized=True, text=true[idx])
        _, m_wrong = D.heads(features, standardize(missed.pooled), standardized=True, text=missed)
        loss = torch.relu(1 - m_true).mean() + torch.relu(1 + m_wrong).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - t0

    rows = {}
    for kind, group in tests.items():
        scores = probe(None, D.eval(), encoder, group, args.seed)
        for near, s in scores.items():
            rows[(kind, near)] = {"n": s["n"], "real": s["real"]}
    return {"rows": rows, "train_seconds": round(seconds, 1), "final_loss": round(float(loss.detach()), 4)}


def main(argv=None):
    args = parse_args(argv)
    import torch

    from wordcanvas.text.registry import load_encoder

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    encoder = load_encoder("minilm")
    train = training_set(args.train_items, args.seed, encoder, fresh=args.near_misses == "fresh")
    tests = test_items(args.n, args.seed)
    rows = []
    for name in args.variants.split(","):
        result = train_and_score(VARIANTS[name], train, tests, encoder, args)
        for (kind, near), s in result["rows"].items():
            rows.append({"discriminator": name, "caption": kind, "near miss": near, **s,
                         "train s": result["train_seconds"], "final loss": result["final_loss"]})
        print(f"{name}: done", flush=True)
    results = {"command": command_line(), "machine": machine_info(threads=args.threads), "steps": args.steps,
               "batch": args.batch, "train_items": args.train_items, "near_misses": args.near_misses, "rolled": args.rolled,
               "shift": args.shift, "n": args.n, "seed": args.seed,
               "seconds": round(time.perf_counter() - t0, 1), "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "near_miss_learnability.json", results)
    columns = [("discriminator", "discriminator", ""), ("caption", "caption", ""), ("near miss", "near miss", ""),
               ("n", "n", ">"), ("true beats near miss (real test images)", "real", ">.3f"),
               ("training s", "train s", ">.0f"), ("final loss", "final loss", ">.3f")]
    m = results["machine"]
    lines = ["# Can the discriminator learn near misses at all?", "",
             f"A fresh discriminator of the captioned-MNIST GAN's configuration (GAN-CLS trunk, concat head, "
             f"minibatch stddev 4) trained on real images only by its matching head (hinge: caption vs near miss, "
             f"half swaps, {args.near_misses} per item, {args.rolled:.0%} of them replaced by another item's caption, images shifted by up to {args.shift} px) for {args.steps} steps of batch {args.batch} over {args.train_items} training items with "
             f"two different digits (seed {args.seed}), then scored on {args.n} held-out test images per kind as in "
             f"near_miss_probe.md. {m.get('cpu', '')}, torch threads {m.get('threads')}; "
             f"{results['seconds']:.0f} s in all.", "", markdown_table(rows, columns), "",
             f"Command: `{results['command']}`", ""]
    (args.out / "near_miss_learnability.md").write_text("\n".join(lines))
    print(markdown_table(rows, columns))


if __name__ == "__main__":
    main()
