"""Does a frozen text encoder's caption embedding say which digit goes where?

    python benchmarks/text_binding.py --encoders minilm,smollm2 --out docs

Captioned-MNIST generators draw one digit in the named place almost always, and two digits in
their named places rarely (docs/gan_captioned-mnist). A generator conditioned on the pooled
caption embedding can only bind each digit to its place as far as that embedding tells
"a 3 on the left and a 7 on the right" from "a 7 on the left and a 3 on the right". This script
measures that ceiling without any image model. Readouts of the pooled embedding, fitted on up to
--n-train distinct training-template captions and scored on up to --n-test others (at most a fifth
of a kind's captions), for the three kinds of caption the benchmark's prompts use:

- one digit ("the digit 3 is on the left"): the digit, and its cell;
- two digits in named cells ("a 3 on the left and a 7 at the bottom"): for each of the 9 cells,
  the digit drawn there or none (11 classes); a caption is right when all 9 cells are;
- two digits in a relation ("digit 3 is left of digit 7"): the digit that comes first in reading
  order (upper, or left on the same row), the other digit, and the direction between them
  (4 classes); right when all three are.

The same captions are also scored "unbound": only which digits are named (the unordered pair),
and for named cells only which cells are used, so binding is the difference between the columns.
Two readouts: logistic regression (a linear layer, as a generator's first conditioning layer is)
and a one-hidden-layer MLP (what a deeper conditioning path could still decode); both scikit-learn.

Writes <out>/text_binding.json and <out>/text_binding.md.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from _common import ROOT, command_line, machine_info, markdown_table, write_json

KINDS = ("one digit", "two digits in named cells", "two digits in a relation")
# Relation directions up to order: the first digit in reading order is above, left or both.
AXES = ["vertical", "horizontal", "diagonal down-right", "diagonal down-left"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--encoders", default="minilm,smollm2", help="comma list of text encoders")
    p.add_argument("--n-train", dest="n_train", type=int, default=6000, help="captions per kind to fit on")
    p.add_argument("--n-test", dest="n_test", type=int, default=1000, help="captions per kind to score")
    p.add_argument("--kinds", type=lambda s: [k.strip() for k in s.split(",") if k.strip()], default=list(KINDS),
                   help="comma list of kinds of caption: " + ", ".join(KINDS))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--refine", type=lambda s: [int(x) for x in s.split(",") if x], default=[],
                   help="comma list of trainable self-attention layer counts (the generator's TokenRefiner) "
                        "before the token readout, each a further readout row, e.g. 1,2")
    p.add_argument("--out", type=Path, default=ROOT / "docs")
    return p.parse_args(argv)


def reading_order(a: int, cell_a: int, b: int, cell_b: int) -> tuple[int, int, int]:
    """(first digit, second digit, axis) with the first digit upper, or left on the same row."""
    if cell_b < cell_a:
        a, cell_a, b, cell_b = b, cell_b, a, cell_a
    (ra, ka), (rb, kb) = divmod(cell_a, 3), divmod(cell_b, 3)
    axis = 0 if ka == kb else 1 if ra == rb else 2 if kb > ka else 3
    return a, b, axis


def all_captions(kind: str) -> dict[str, dict]:
    """Every distinct training-template caption of one kind, with its readout targets."""
    from wordcanvas.data import captioned_mnist as cm

    absolute = [t for t in cm.PAIR_TEMPLATES if "{wb}" in t]
    relational = [t for t in cm.PAIR_TEMPLATES if "{wb}" not in t]
    out = {}
    for a in range(10):
        for cell_a in range(9):
            if kind == KINDS[0]:
                for t in cm.SINGLE_TEMPLATES:
                    out[cm.single_caption(t, a, cell_a)] = {"bound": {"digit": a, "cell": cell_a},
                                                            "unbound": {"digit": a}}
                continue
            for b in range(10):
                for cell_b in set(range(9)) - {cell_a}:
                    digits = 10 * min(a, b) + max(a, b)
                    if kind == KINDS[1]:
                        bound = {f"cell {c}": 10 for c in range(9)} | {f"cell {cell_a}": a, f"cell {cell_b}": b}
                        cells = 9 * min(cell_a, cell_b) + max(cell_a, cell_b)
                        for t in absolute:
                            out[cm.pair_caption(t, a, cell_a, b, cell_b)] = {
                                "bound": bound, "unbound": {"digits": digits, "cells": cells}}
                    else:
                        first, second, axis = reading_order(a, cell_a, b, cell_b)
                        for t in relational:
                            out[cm.pair_caption(t, a, cell_a, b, cell_b)] = {
                                "bound": {"first digit": first, "second digit": second, "axis": axis},
                                "unbound": {"digits": digits}}
    return out


def split(kind: str, n_train: int, n_test: int, seed: int) -> tuple[tuple[list, list], tuple[list, list]]:
    """Disjoint (texts, targets) for fitting and scoring: at most a fifth of a kind's distinct
    captions (one digit: 360 in all) are scored."""
    import random

    pool = sorted(all_captions(kind).items())
    random.Random(seed).shuffle(pool)
    n_test = min(n_test, len(pool) // 5)
    test, train = pool[:n_test], pool[n_test:n_test + n_train]
    return tuple(map(list, zip(*train))), tuple(map(list, zip(*test)))


def embed(encoder, texts: list[str], batch: int = 128) -> dict:
    """pooled (N, D) numpy; tokens (N, T, D) and mask (N, T) torch, for the token readout."""
    import torch

    parts = [encoder.encode(texts[i:i + batch]) for i in range(0, len(texts), batch)]
    return {"pooled": torch.cat([p.pooled.float() for p in parts]).numpy(),
            "tokens": torch.cat([p.tokens.float() for p in parts]), "mask": torch.cat([p.mask for p in parts])}


def token_attention_right(train: dict, train_targets, test: dict, test_targets, group: str,
                          epochs: int = 60, seed: int = 0, refine: int = 0) -> float:
    """Fraction of test captions whose every target the token readout gets right: per target, one
    learned query attends over the caption's token states (one head, as a generator's
    cross-attention query does) and a linear layer classifies what it gathered. Trained jointly
    with Adam on cross-entropy in minibatches of 128. With `refine` > 0 the token states first pass
    a projection and that many trainable self-attention layers (the generator's `TokenRefiner`)."""
    import torch
    import torch.nn.functional as F

    from wordcanvas.models.layers import TextProjection, TokenRefiner

    names = list(train_targets[0][group])
    y_train = torch.tensor([[t[group][n] for n in names] for t in train_targets])
    y_test = torch.tensor([[t[group][n] for n in names] for t in test_targets])
    classes = int(max(y_train.max(), y_test.max())) + 1
    gen = torch.Generator().manual_seed(seed)
    d, width = train["tokens"].shape[-1], 128
    torch.manual_seed(seed)  # the refiner's initial weights
    project, refiner = (TextProjection(d, width), TokenRefiner(width, refine)) if refine else (None, None)
    d = width if refine else d
    keys = torch.nn.Linear(d, width)
    values = torch.nn.Linear(d, width)
    queries = torch.nn.Parameter(torch.randn(len(names), width, generator=gen) / width ** 0.5)
    heads = torch.nn.Parameter(torch.randn(len(names), width, classes, generator=gen) / width ** 0.5)
    params = [*keys.parameters(), *values.parameters(), queries, heads]
    params += [*project.parameters(), *refiner.parameters()] if refine else []
    opt = torch.optim.Adam(params, lr=1e-3)

    def logits(tokens, mask):
        if refiner is not None:
            tokens = refiner(project(tokens), mask)
        k, v = keys(tokens), values(tokens)                                   # (B, T, w)
        scores = torch.einsum("qw,btw->bqt", queries, k) / width ** 0.5
        attn = scores.masked_fill(~mask[:, None, :], float("-inf")).softmax(-1)
        gathered = torch.einsum("bqt,btw->bqw", attn, v)                      # (B, Q, w)
        return torch.einsum("bqw,qwc->bqc", gathered, heads)                  # (B, Q, classes)

    n = len(y_train)
    for _ in range(epochs):
        for idx in torch.randperm(n, generator=gen).split(128):
            out = logits(train["tokens"][idx], train["mask"][idx])
            loss = F.cross_entropy(out.reshape(-1, classes), y_train[idx].reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        pred = logits(test["tokens"], test["mask"]).argmax(-1)
    return float((pred == y_test).all(dim=1).float().mean())


def all_right(x_train, train_targets, x_test, test_targets, group: str, make) -> float:
    """Fraction of test captions whose every target in `group` the readouts get right."""
    import numpy as np

    right = np.ones(len(test_targets), dtype=bool)
    for name in train_targets[0][group]:
        y = [t[group][name] for t in train_targets]
        if len(set(y)) == 1:  # constant in training: predict that constant
            pred = np.full(len(test_targets), y[0])
        else:
            pred = make().fit(x_train, y).predict(x_test)
        right &= pred == np.array([t[group][name] for t in test_targets])
    return float(right.mean())


def readouts() -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    return {"linear": lambda: LogisticRegression(C=1.0, max_iter=3000),
            "MLP": lambda: MLPClassifier(hidden_layer_sizes=(256,), max_iter=400, early_stopping=True, random_state=0)}


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from wordcanvas.text import load_encoder

    unknown = sorted(set(args.kinds) - set(KINDS))
    if unknown:
        raise SystemExit(f"unknown kinds of caption {unknown}; choose from {list(KINDS)}")
    sets = {kind: split(kind, args.n_train, args.n_test, args.seed + k) for k, kind in enumerate(KINDS)
            if kind in args.kinds}
    results = {"command": command_line(), "machine": machine_info(threads=args.threads),
               "settings": {"n_train": args.n_train, "n_test": args.n_test, "seed": args.seed,
                            "sizes": {kind: [len(tr[0]), len(te[0])] for kind, (tr, te) in sets.items()}},
               "examples": {kind: train[0][:2] for kind, (train, _) in sets.items()}, "encoders": {}}
    for name in [e for e in args.encoders.split(",") if e]:
        encoder = load_encoder(name)
        start = time.time()
        emb = {kind: (embed(encoder, tr[0]), embed(encoder, te[0])) for kind, (tr, te) in sets.items()}
        entry = {"encode_s": round(time.time() - start, 1), "kinds": {}}
        for kind, ((tr_texts, tr_targets), (te_texts, te_targets)) in sets.items():
            e_train, e_test = emb[kind]
            entry["kinds"][kind] = {
                readout: {group: all_right(e_train["pooled"], tr_targets, e_test["pooled"], te_targets, group, make)
                          for group in ("bound", "unbound")}
                for readout, make in readouts().items()}
            entry["kinds"][kind]["token attention"] = {
                group: token_attention_right(e_train, tr_targets, e_test, te_targets, group)
                for group in ("bound", "unbound")}
            for layers in args.refine:
                entry["kinds"][kind][f"token attention after {layers} self-attention layer{'s' * (layers > 1)}"] = {
                    group: token_attention_right(e_train, tr_targets, e_test, te_targets, group, refine=layers)
                    for group in ("bound", "unbound")}
            print(name, kind, entry["kinds"][kind], flush=True)
        results["encoders"][name] = entry
        del encoder
    write_json(args.out / "text_binding.json", results)
    write_report(results, args.out / "text_binding.md")
    print((args.out / "text_binding.md").read_text())
    return 0


def write_report(results: dict, path: Path) -> None:
    s, m = results["settings"], results["machine"]
    rows = []
    for name, entry in results["encoders"].items():
        for kind, by_readout in entry["kinds"].items():
            for readout, r in by_readout.items():
                rows.append({"encoder": name, "kind": kind, "readout": readout, "unbound": r["unbound"],
                             "bound": r["bound"]})
    cols = [("encoder", "encoder", ""), ("kind of caption", "kind", ""), ("readout", "readout", ""),
            ("which digits (and cells) only", "unbound", ">.3f"), ("which digit where", "bound", ">.3f")]
    lines = ["# Which digit goes where: what a frozen caption embedding tells a readout", "",
             "Readouts of the pooled caption embedding fitted on distinct training-template captioned-MNIST "
             "captions and scored on others of the same kind (fitted / scored: "
             + ", ".join(f"{k} {a} / {b}" for k, (a, b) in s["sizes"].items()) + f"; seed {s['seed']}). \"Which digit where\": one digit: its digit and cell; named cells: the digit (or none) "
             "in each of the 9 cells; relation: the first digit in reading order, the other one, and the direction. "
             "\"Which digits only\": the unordered digit pair (and, for named cells, the unordered pair of cells). "
             "A caption counts when every target is right. No image model is involved: a generator conditioned "
             "on the pooled embedding has no more to go on (linear: its first conditioning layer; MLP: one "
             "hidden layer of 256).", "",
             f"{m['cpu']} ({m['cpu_count']} cores), {m['threads']} threads, torch {m['torch']}.", "",
             markdown_table(rows, cols), "",
             "Example captions: " + "; ".join(f"{k}: \"{v[0]}\"" for k, v in results["examples"].items()), "",
             f"Command: `{results['command']}`", ""]
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
