"""Train the judges of prompt faithfulness on REAL data and ship them with the package.

For each built-in dataset: a probe classifier (metrics/probes.py) and an image-text dual encoder
(metrics/rprecision.py), seeded, trained with plain torch on the training split, scored on the
real test split, saved (versioned + sha256) under src/wordcanvas/weights/{probes,dual}/<dataset>/,
and their real-test numbers written to docs/probes.json.

    python benchmarks/train_probes.py                         # everything
    python benchmarks/train_probes.py --what probes --only toy-faces
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "probes.json"
DATASETS = ("fashion-mnist", "toy-faces", "captioned-mnist")

# Real images used for training and for the reported real-test numbers.
TRAIN_SIZE = {"fashion-mnist": 60_000, "toy-faces": 24_000, "captioned-mnist": 24_000}
TEST_SIZE = {"fashion-mnist": 10_000, "toy-faces": 4_000, "captioned-mnist": 2_000}
PROBE_TRAIN = {  # steps, batch, lr, max shift (px), horizontal flips (, AdamW weight decay)
    # Clothes are left-right symmetric classes: flips and 2 px shifts are free data.
    "fashion-mnist": dict(steps=6000, batch_size=128, lr=4e-3, max_shift=2, flip=True, weight_decay=0.05),
    "toy-faces": dict(steps=900, batch_size=96, lr=4e-3, max_shift=0, flip=True),
    "captioned-mnist": dict(steps=1200, batch_size=96, lr=4e-3, max_shift=1, flip=False),
}


def cached_arrays(name: str, split: str, n: int, seed: int = 0):
    """Real uint8 images + labels of a split, rendered once and kept in the wordcanvas cache
    (<cache>/probe_data; delete it after changing a dataset's renderer)."""
    from wordcanvas.assets import cache_dir
    from wordcanvas.data import load_dataset
    from wordcanvas.metrics.probes import real_arrays

    dataset = load_dataset(name, split, seed=seed, size=n)
    path = cache_dir() / "probe_data" / f"{name}-{split}-{len(dataset)}-{dataset.resolution}-s{seed}.pt"
    if path.exists():
        blob = torch.load(path, weights_only=True)
        return dataset, blob["images"], blob["labels"]
    images, labels = real_arrays(dataset)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"images": images, "labels": labels}, path)
    return dataset, images, labels


def update_docs(section: str, name: str, entry: dict) -> None:
    data = json.loads(DOCS.read_text()) if DOCS.exists() else {}
    data.setdefault(section, {})[name] = entry
    data["environment"] = {"torch": torch.__version__, "python": platform.python_version(),
                           "threads": torch.get_num_threads()}
    from wordcanvas.utils.io import atomic_write_json

    atomic_write_json(DOCS, data)


def train_probe(name: str, seed: int) -> dict:
    from wordcanvas.metrics.probes import (Probe, count_parameters, label_prompts, probe_config_for,
                                           probe_scores, probe_targets, save_versioned, shipped_dir, to_float,
                                           train_classifier)

    dataset, images, labels = cached_arrays(name, "train", TRAIN_SIZE[name])
    _, test_images, test_labels = cached_arrays(name, "test", TEST_SIZE[name])
    torch.manual_seed(seed)
    config = probe_config_for(name, dataset)
    probe = Probe(config)
    settings = PROBE_TRAIN[name]
    start = time.time()
    losses = train_classifier(probe, images, probe_targets(config, labels), seed=seed, desc=f"probe {name}", **settings)
    seconds = time.time() - start
    scores = probe_scores(probe, to_float(test_images), label_prompts(test_labels))
    training = {"seed": seed, "train_images": len(images), "seconds": round(seconds, 1),
                "final_loss": float(np.mean(losses[-50:])), **settings}
    sha = save_versioned(probe, shipped_dir("probes", name), extra={"training": training,
                                                                    "real_test": _brief(scores)})
    entry = {"version": config.version, "sha256": sha, "parameters": count_parameters(probe),
             "architecture": {"scheme": config.scheme, "resolution": config.resolution, "channels": config.channels,
                              "widths": list(config.widths), "grid": config.grid, "hidden": config.hidden},
             "training": training, "real_test": {**_brief(scores), "test_images": len(test_images)}}
    update_docs("probes", name, entry)
    print(f"{name}: all-correct {scores['all_correct']:.4f} | " +
          ", ".join(f"{k} {v['accuracy']:.4f}" for k, v in scores["per_attribute"].items()) + f" | {seconds:.0f} s")
    return entry


def _brief(scores: dict) -> dict:
    return {"all_correct": round(scores["all_correct"], 4),
            "per_attribute": {k: round(v["accuracy"], 4) for k, v in scores["per_attribute"].items()}}


def train_dual(name: str, seed: int, encoder_name: str) -> dict:
    from wordcanvas.metrics import rprecision as rp
    from wordcanvas.metrics.probes import count_parameters, save_versioned, shipped_dir

    dataset, images, labels = cached_arrays(name, "train", TRAIN_SIZE[name])
    test_set, test_images, test_labels = cached_arrays(name, "test", TEST_SIZE[name])
    encoder = rp.text_encoder(encoder_name)
    start = time.time()
    dual, info = rp.train_dual_encoder(name, dataset, images, labels, encoder, seed=seed, **rp.DUAL_TRAIN[name])
    seconds = time.time() - start
    real = rp.real_r_precision(dual, test_set, test_images, test_labels, encoder=encoder, seed=seed)
    real_heldout = rp.real_r_precision(dual, test_set, test_images, test_labels, encoder=encoder, seed=seed,
                                       heldout=True)
    training = {**info, "seconds": round(seconds, 1)}
    sha = save_versioned(dual, shipped_dir("dual", name), extra={"training": training, "real_test": real,
                                                                 "real_test_heldout_phrasing": real_heldout})
    dual = rp.load_dual_encoder(name, encoder=encoder)  # the shipped files load and bind to the encoder
    entry = {"version": dual.config.version, "sha256": sha, "parameters": count_parameters(dual),
             "text_encoder": dual.config.text_encoder, "text_identity": dual.config.text_identity,
             "embed_dim": dual.config.embed_dim, "training": training,
             "real_test": real, "real_test_heldout_phrasing": real_heldout}
    update_docs("dual_encoders", name, entry)
    print(f"{name}: real R-precision {real['r_precision']:.4f} +- {real['r_precision_std']:.4f}, held-out phrasing "
          f"{real_heldout['r_precision']:.4f} +- {real_heldout['r_precision_std']:.4f} | {seconds:.0f} s")
    return entry


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--what", choices=["probes", "dual", "all"], default="all")
    p.add_argument("--only", choices=DATASETS, action="append", help="datasets to train (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--encoder", default="minilm", help="frozen text encoder of the dual encoders")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 1)))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    for name in args.only or DATASETS:
        if args.what in ("probes", "all"):
            train_probe(name, args.seed)
        if args.what in ("dual", "all"):
            train_dual(name, args.seed, args.encoder)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    raise SystemExit(main())
