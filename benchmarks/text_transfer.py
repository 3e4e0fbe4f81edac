"""How far a frozen text encoder carries face attributes from training phrasing to held-out paraphrases.

    python benchmarks/text_transfer.py --encoders minilm,smollm2 --out docs

A generator conditioned on a frozen encoder's pooled caption embedding can only follow a held-out
paraphrase ("a bespectacled gentleman with ginger locks") as far as the embedding places it near
the training phrasing of the same attributes ("a man with red hair wearing glasses"). This script
measures that ceiling without any image model: per attribute, a logistic-regression readout
(scikit-learn) is fitted on the pooled embeddings of --n-train toy-face captions in the TRAINING
vocabulary (target: the value each caption states), then scored on --n-test fresh captions in the
training vocabulary and on --n-test captions of the same attribute distribution phrased with the
HELD-OUT vocabulary (`wordcanvas.data.grammar`, template set "heldout": no held-out word or
sentence form appears in training captions). The readout is a linear function of the embedding,
as a generator's first conditioning layer is; a generator trained on the same captions has no
more to go on, so the held-out column bounds what it can follow of the paraphrases, and the gap
between the columns is the part of the paraphrase gap that the encoder, not the generator, owns.

Writes <out>/text_transfer.json and <out>/text_transfer.md.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from _common import ROOT, command_line, machine_info, markdown_table, write_json


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--encoders", default="minilm,smollm2", help="comma list of text encoders")
    p.add_argument("--n-train", dest="n_train", type=int, default=8000, help="training-phrased captions to fit on")
    p.add_argument("--n-test", dest="n_test", type=int, default=2000, help="captions per test set")
    p.add_argument("--C", dest="c_values", default="0.1,1,10", help="inverse regularisation strengths to report")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--out", type=Path, default=ROOT / "docs")
    return p.parse_args(argv)


def captions(n: int, seed: int, template_set: str) -> tuple[list[str], list[dict[str, int]]]:
    """n toy-face training-split attribute draws, each captioned in `template_set` phrasing."""
    import numpy as np

    from wordcanvas.data.grammar import caption
    from wordcanvas.data.toy_faces import sample_for_split

    rng = np.random.default_rng(seed)
    texts, mentioned = [], []
    for i in range(n):
        text, said = caption(sample_for_split(rng, "train", i), rng, template_set)
        texts.append(text)
        mentioned.append(said)
    return texts, mentioned


def embed(encoder, texts: list[str], batch: int = 128):
    import torch

    return torch.cat([encoder.encode(texts[i:i + batch]).pooled.float() for i in range(0, len(texts), batch)]).numpy()


def readout(train, tests: dict, c: float) -> dict[str, dict[str, float]]:
    """Per attribute: accuracy of a logistic regression fitted on `train` (embeddings, mentioned)
    on each test set, over the captions that state the attribute."""
    from sklearn.linear_model import LogisticRegression

    from wordcanvas.data.grammar import ATTRIBUTES

    out = {}
    x, said = train
    for name in ATTRIBUTES:
        rows = [i for i, m in enumerate(said) if name in m]
        clf = LogisticRegression(C=c, max_iter=3000).fit(x[rows], [said[i][name] for i in rows])
        out[name] = {}
        for test_name, (tx, tsaid) in tests.items():
            t_rows = [i for i, m in enumerate(tsaid) if name in m]
            out[name][test_name] = float(clf.score(tx[t_rows], [tsaid[i][name] for i in t_rows]))
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from wordcanvas.data.grammar import ATTRIBUTES
    from wordcanvas.text import load_encoder

    sets = {"train": captions(args.n_train, args.seed, "train"),
            "training phrasing": captions(args.n_test, args.seed + 1, "train"),
            "held-out paraphrases": captions(args.n_test, args.seed + 2, "heldout")}
    results = {"command": command_line(), "machine": machine_info(threads=args.threads),
               "settings": {"n_train": args.n_train, "n_test": args.n_test, "seed": args.seed,
                            "C": [float(c) for c in args.c_values.split(",")]},
               "examples": {k: v[0][:3] for k, v in sets.items()}, "encoders": {}}
    for name in [e for e in args.encoders.split(",") if e]:
        encoder = load_encoder(name)
        start = time.time()
        emb = {k: (embed(encoder, texts), said) for k, (texts, said) in sets.items()}
        entry = {"encode_s": round(time.time() - start, 1), "by_C": {}}
        train = emb.pop("train")
        for c in results["settings"]["C"]:
            per = readout(train, emb, c)
            mean = {t: sum(per[a][t] for a in ATTRIBUTES) / len(ATTRIBUTES) for t in emb}
            entry["by_C"][str(c)] = {"per_attribute": per, "mean": mean}
        results["encoders"][name] = entry
        del encoder
    write_json(args.out / "text_transfer.json", results)
    write_report(results, args.out / "text_transfer.md")
    print((args.out / "text_transfer.md").read_text())
    return 0


def write_report(results: dict, path: Path) -> None:
    from wordcanvas.data.grammar import ATTRIBUTES

    s, m = results["settings"], results["machine"]
    rows = []
    for name, entry in results["encoders"].items():
        for c, r in entry["by_C"].items():
            train, held = r["mean"]["training phrasing"], r["mean"]["held-out paraphrases"]
            rows.append({"encoder": name, "C": c, "train": train, "held": held, "gap": 100 * (train - held)})
    cols = [("encoder", "encoder", ""), ("C", "C", ""), ("training phrasing", "train", ">.3f"),
            ("held-out paraphrases", "held", ">.3f"), ("gap (points)", "gap", ">.1f")]
    per_rows = []
    for name, entry in results["encoders"].items():
        r = entry["by_C"]["1.0"] if "1.0" in entry["by_C"] else next(iter(entry["by_C"].values()))
        for a in ATTRIBUTES:
            per_rows.append({"encoder": name, "attribute": a, "train": r["per_attribute"][a]["training phrasing"],
                             "held": r["per_attribute"][a]["held-out paraphrases"]})
    pcols = [("encoder", "encoder", ""), ("attribute", "attribute", ""), ("training phrasing", "train", ">.3f"),
             ("held-out paraphrases", "held", ">.3f")]
    lines = ["# Attribute transfer from training phrasing to held-out paraphrases, per text encoder", "",
             "A linear readout (logistic regression, per attribute) of the pooled caption embedding, fitted on "
             f"{s['n_train']} toy-face captions in the training vocabulary and scored on {s['n_test']} fresh ones "
             f"in the same vocabulary and {s['n_test']} in the held-out paraphrase vocabulary (seed {s['seed']}); "
             "accuracy over the captions that state each attribute, mean over the 12 attributes. "
             "No image model is involved: this is how much of each attribute the frozen embedding of a paraphrase "
             "still shows to a linear layer that learned it from the training phrasing, the first thing a "
             "generator's conditioning does.", "",
             f"{m['cpu']} ({m['cpu_count']} cores), {m['threads']} threads, torch {m['torch']}.", "",
             markdown_table(rows, cols), "", "Per attribute (C = 1):", "", markdown_table(per_rows, pcols), "",
             "Example captions: " + "; ".join(f"{k}: \"{v[0]}\"" for k, v in results["examples"].items()), "",
             f"Command: `{results['command']}`", ""]
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
