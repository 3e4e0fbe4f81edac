"""The fixed evaluation protocol: distribution metrics against real data (with the real-vs-real
floor beside them), prompt faithfulness (probe scores, R-precision) and per-prompt diversity.

    evaluate_real_vs_real("fashion-mnist", n=10_000)     # FID/KID/PR of train vs test real images
    evaluate_generator(generate_fn, "toy-faces", n=10_000, heldout=True)

generate_fn(prompts: list[str], seed: int) -> float NCHW images in [-1, 1], one per prompt; the
same (prompts, seed) must give the same images. Everything else is fixed here so numbers from
different models and runs are comparable (see docs/metrics.md).
"""
from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from .distribution import fid_from_features, kid, precision_recall
from .inception import PROTOCOL, InceptionFeatures

GenerateFn = Callable[[list[str], int], torch.Tensor]

REAL_SPLITS = {"reference": "test", "other": "train"}
POOL_SIZE = 1000          # R-precision candidate pool (eval prompts under POOL_SEED)
POOL_SEED = 12345
DIVERSITY_PROMPTS = 50    # prompts x seeds for LPIPS diversity
DIVERSITY_SEEDS = 5
BATCH_SEED_STRIDE = 1_000_003  # batch b of a run with seed s is generated with seed s * stride + b
PROCEDURAL = ("captioned-mnist", "toy-faces")  # splits of any length can be drawn


def distribution_metrics(real: np.ndarray, fake: np.ndarray, kid_subsets: int = 100, kid_subset_size: int = 1000,
                         pr_k: int = 3, seed: int = 0) -> dict[str, float]:
    """FID, KID (mean, std), precision and recall of fake features against real features."""
    kid_mean, kid_std = kid(real, fake, num_subsets=kid_subsets, subset_size=kid_subset_size, seed=seed)
    precision, recall = precision_recall(real, fake, k=pr_k)
    return {"fid": fid_from_features(real, fake), "kid": kid_mean, "kid_std": kid_std,
            "precision": precision, "recall": recall, "n_real": len(real), "n_fake": len(fake)}


def real_vs_real(dataset_a_images: torch.Tensor | Iterable[torch.Tensor],
                 dataset_b_images: torch.Tensor | Iterable[torch.Tensor],
                 extractor: InceptionFeatures | None = None, **metric_options) -> dict[str, float]:
    """Metrics between two disjoint real image sets (uncached; see evaluate_real_vs_real for datasets)."""
    extractor = extractor or InceptionFeatures()
    a = extractor.extract(dataset_a_images, desc="real A")
    b = extractor.extract(dataset_b_images, desc="real B")
    return distribution_metrics(a, b, **metric_options)


# ---------------------------------------------------------------------------------------------
# Real data through the reference-feature cache
# ---------------------------------------------------------------------------------------------

def _real_dataset(name: str, split: str, n: int, seed: int = 0):
    """A built-in dataset split holding at least n images (procedural splits are simply made longer)."""
    from wordcanvas.data import load_dataset

    dataset = load_dataset(name, split, seed=seed)
    if len(dataset) < n and name in PROCEDURAL:
        dataset = load_dataset(name, split, seed=seed, size=n)
    if len(dataset) < n:
        raise ValueError(f"{name} {split} has {len(dataset)} images; asked for {n}")
    return dataset


def _image_batches(dataset, n: int, batch_size: int = 64) -> Iterator[torch.Tensor]:
    for start in range(0, n, batch_size):
        yield torch.stack([dataset.image(i) for i in range(start, min(n, start + batch_size))])


def real_features(name: str, split: str, n: int, extractor: InceptionFeatures, seed: int = 0,
                  progress: bool = True) -> np.ndarray:
    """Inception features of the first n real images of a split, from the cache when present."""
    from .features import get_reference_features

    dataset = _real_dataset(name, split, n, seed)
    key = {"dataset": name, "split": split, "count": int(n), "protocol": PROTOCOL, "extractor": extractor.identity,
           "resolution": dataset.resolution, "seed": seed}
    compute = lambda: extractor.extract(_image_batches(dataset, n), total=n, progress=progress,
                                        desc=f"inception {name} {split}")
    return get_reference_features(key, compute).features


def evaluate_real_vs_real(dataset_name: str, n: int = 10_000, seed: int = 0,
                          extractor: InceptionFeatures | None = None, progress: bool = True,
                          kid_subset_size: int = 1000) -> dict:
    """The floor: FID / KID / precision-recall of n real train images against n real test images."""
    start = time.time()
    extractor = extractor or InceptionFeatures()
    test = real_features(dataset_name, REAL_SPLITS["reference"], n, extractor, seed, progress)
    train = real_features(dataset_name, REAL_SPLITS["other"], n, extractor, seed, progress)
    metrics = distribution_metrics(test, train, kid_subset_size=kid_subset_size, seed=seed)
    return {"kind": "real_vs_real", "dataset": dataset_name, "n": int(n), "reference_split": "test",
            "compared_split": "train", "resolution": _real_dataset(dataset_name, "test", 1, seed).resolution,
            "protocol": PROTOCOL, "extractor": extractor.identity, "backend": extractor.backend, **metrics,
            "seconds": round(time.time() - start, 1)}


# ---------------------------------------------------------------------------------------------
# A generator under the full protocol
# ---------------------------------------------------------------------------------------------

def _check_images(images: torch.Tensor, count: int) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or len(images) != count:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"generate_fn must return {count} NCHW images, got {shape}")
    return images.detach().float().cpu().clamp(-1, 1)


def evaluate_generator(generate_fn: GenerateFn, dataset_name: str, n: int = 10_000, heldout: bool = False,
                       split: str = "test", seed: int = 0, batch_size: int = 100,
                       extractor: InceptionFeatures | None = None,
                       diversity_prompts: int = DIVERSITY_PROMPTS, diversity_seeds: int = DIVERSITY_SEEDS,
                       r_repeats: int = 3, floor: bool = True, progress: bool = True,
                       keep_samples: int = 64, distribution: bool = True) -> dict:
    """Generate images for the dataset's n evaluation prompts and score them (see module doc).

    heldout: phrase the prompts with held-out paraphrases. split="heldout" (toy faces) draws the
    prompts from held-out attribute combinations, and FID is then taken against that split.
    """
    from .diversity import generator_diversity
    from .probes import load_probe, score_predictions
    from .rprecision import candidate_pool, load_dual_encoder, r_precision, scheme_of

    start = time.time()
    extractor = (extractor or InceptionFeatures()) if distribution else None
    prompt_set = _real_dataset(dataset_name, split, 1, seed)
    prompts = prompt_set.eval_prompts(n, seed=seed, heldout=heldout)
    probe, dual = load_probe(dataset_name), load_dual_encoder(dataset_name)

    features, predictions, embeddings, samples = [], [], [], []
    batches = range(0, n, batch_size)
    for b, lo in enumerate(tqdm(batches, desc=f"generate {dataset_name}", unit="batch", disable=not progress)):
        chunk = prompts[lo:lo + batch_size]
        images = _check_images(generate_fn([p.text for p in chunk], seed * BATCH_SEED_STRIDE + b), len(chunk))
        if sum(len(s) for s in samples) < keep_samples:
            samples.append(images[:keep_samples])
        if distribution:
            features.append(extractor.features_of_batch(images))
        predictions.append(probe.predict(images))
        embeddings.append(dual.embed_images(images))
    preds = {k: torch.cat([p[k] for p in predictions]) for k in predictions[0]}

    result = {"kind": "generator", "dataset": dataset_name, "split": split, "heldout_phrasing": heldout, "n": n,
              "seed": seed, "protocol": PROTOCOL}
    if distribution:
        capacity = n if dataset_name in PROCEDURAL else len(_real_dataset(dataset_name, split, 1, seed))
        reference = real_features(dataset_name, split, min(n, capacity), extractor, seed, progress)
        result.update(extractor=extractor.identity, backend=extractor.backend,
                      **distribution_metrics(reference, np.concatenate(features), seed=seed))
    if distribution and floor and split == "test":
        result["floor"] = {k: v for k, v in evaluate_real_vs_real(dataset_name, n, seed, extractor, progress).items()
                           if k in ("fid", "kid", "kid_std", "precision", "recall", "n")}

    scores = score_predictions(preds, prompts, probe.config.scheme)
    scores["probe"] = {"version": probe.config.version, "sha256": probe.weights_sha256}
    scores["real_ceiling"] = probe.meta.get("real_test")
    result["probe"] = scores

    pool = candidate_pool(prompt_set, POOL_SIZE, POOL_SEED, heldout)
    rp = r_precision(dual, None, prompts, pool, seed=seed, repeats=r_repeats, scheme=scheme_of(dataset_name),
                     label_names=list(prompt_set.label_spec.classes), image_embeddings=torch.cat(embeddings))
    rp["dual_encoder"] = {"version": dual.config.version, "sha256": dual.weights_sha256,
                          "text_encoder": dual.config.text_encoder}
    rp["real"] = dual.meta.get("real_test_heldout_phrasing" if heldout else "real_test")
    result["r_precision"] = rp

    if diversity_prompts and diversity_seeds >= 2:
        texts = [p.text for p in prompts[:diversity_prompts]]
        seeds = [seed * BATCH_SEED_STRIDE + 500_000 + k for k in range(diversity_seeds)]
        result["diversity"] = generator_diversity(lambda t, s: _check_images(generate_fn(t, s), len(t)), texts, seeds,
                                                  progress=progress)
    result["seconds"] = round(time.time() - start, 1)
    result["_samples"] = torch.cat(samples)[:keep_samples] if samples else None
    return result


# ---------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------

def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return str(v)


def to_markdown(result: dict) -> str:
    """A compact markdown table of an evaluate_* result."""
    lines = [f"### {result['dataset']} ({result['kind'].replace('_', '-')}, n = {result['n']})", "",
             "| metric | value | beside it |", "|---|---|---|"]
    floor = result.get("floor", {})
    kind = result["kind"]
    for k in ("fid", "kid", "precision", "recall"):
        if k in result:
            value = _fmt(result[k]) + (f" +- {_fmt(result['kid_std'])}" if k == "kid" else "")
            lines.append(f"| {k.upper() if k in ('fid', 'kid') else k} | {value} | "
                         f"{'real-vs-real ' + _fmt(floor[k]) if k in floor else ''} |")
    if "probe" in result:
        ceiling = result["probe"].get("real_ceiling") or {}
        real_attr = ceiling.get("per_attribute", {})
        lines.append(f"| probe: all attributes right | {_fmt(result['probe']['all_correct'])} | "
                     f"real {_fmt(ceiling.get('all_correct'))} |")
        for name, v in result["probe"]["per_attribute"].items():
            lines.append(f"| probe: {name} (n={v['count']}) | {_fmt(v['accuracy'])} | "
                         f"real {_fmt(real_attr.get(name))} |")
    if "r_precision" in result:
        rp = result["r_precision"]
        real = (rp.get("real") or {}).get("r_precision")
        lines.append(f"| R-precision (R=1, {rp['n_candidates']} candidates) | {_fmt(rp['r_precision'])} +- "
                     f"{_fmt(rp['r_precision_std'])} | real {_fmt(real)}, chance {_fmt(rp['chance'])} |")
    if "diversity" in result:
        d = result["diversity"]
        lines.append(f"| LPIPS diversity ({d['prompts']} prompts x {d['seeds_per_prompt']} seeds) | "
                     f"{_fmt(d['lpips_diversity'])} +- {_fmt(d['lpips_diversity_std'])} | |")
    lines += ["", f"Protocol `{result['protocol']}`; {kind} took {result.get('seconds', '?')} s."]
    return "\n".join(lines) + "\n"


def write_result(result: dict, json_path: str | os.PathLike | None = None,
                 md_path: str | os.PathLike | None = None) -> None:
    """JSON (and optionally markdown, and a sample grid PNG next to the JSON for generator runs)."""
    from wordcanvas.utils.io import atomic_write_json, make_grid, tensor_to_pil

    samples = result.get("_samples")
    clean = {k: v for k, v in result.items() if not k.startswith("_")}
    if json_path:
        atomic_write_json(json_path, clean)
        if samples is not None and len(samples):
            tensor_to_pil(make_grid(samples, nrow=8)).save(Path(json_path).with_suffix(".png"))
    if md_path:
        Path(md_path).parent.mkdir(parents=True, exist_ok=True)
        Path(md_path).write_text(to_markdown(clean))
