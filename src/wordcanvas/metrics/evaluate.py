"""The fixed evaluation protocol: distribution metrics against real data (with the real-vs-real
floor beside them), prompt faithfulness (probe scores, R-precision) and per-prompt diversity.

    evaluate_real_vs_real("fashion-mnist", n=10_000)     # FID/KID/PR of train vs test real images
    evaluate_generator(generate_fn, "toy-faces", n=10_000, heldout=True)

generate_fn(prompts: list[str], seed: int) -> float NCHW images in [-1, 1], one per prompt; the
same (prompts, seed) must give the same images. Everything else is fixed here so numbers from
different models and runs are comparable (see docs/metrics.md).

Distributed (torch.distributed initialised, e.g. under torchrun): every rank calls the same function;
the generation batches and the real-image chunks are dealt out round-robin, each rank generates
and extracts features for its share, and the results are gathered in the original order before any
statistic, so every rank returns what one process would (same seeds per batch, same batches).
The reference-feature cache is used only when every rank finds it. The statistics (FID, KID,
precision-recall, probe scores, R-precision, diversity) are computed once, on rank 0, and the
result is sent to every rank.
"""
from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np
import torch
from tqdm.auto import tqdm

from .distribution import fid_from_features, kid, precision_recall
from .inception import FEATURE_DIM, PROTOCOL, InceptionFeatures

GenerateFn = Callable[[list[str], int], torch.Tensor]
T = TypeVar("T")

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
# Sharding over processes
# ---------------------------------------------------------------------------------------------

def process_group() -> tuple[int, int]:
    """(rank, world size) of the default torch.distributed group, (0, 1) when there is none."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def map_sharded(fn: Callable[[int], T], count: int, progress: bool = False, desc: str = "") -> list[T]:
    """[fn(i) for i in range(count)], item i computed on rank i % world; with a process group the
    results (moved to CPU) are gathered so that every rank returns the whole list in item order."""
    rank, world = process_group()
    mine = range(rank, count, world)
    local = [fn(i) for i in tqdm(mine, desc=desc, unit="batch", disable=not (progress and rank == 0))]
    if world == 1:
        return local
    gathered: list = [None] * world
    torch.distributed.all_gather_object(gathered, _to_cpu(local))
    return [gathered[i % world][i // world] for i in range(count)]


def on_rank0(fn: Callable[[], T]) -> T:
    """fn() on rank 0 only, its result sent to every rank (plain fn() without a process group); an
    error on rank 0 is raised on every rank rather than leaving the others waiting."""
    rank, world = process_group()
    if world == 1:
        return fn()
    box: list = [None]
    if rank == 0:
        try:
            box = [("ok", fn())]
        except BaseException as error:
            torch.distributed.broadcast_object_list([("error", repr(error))], src=0)
            raise
    torch.distributed.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "error":
        raise RuntimeError(f"rank 0 failed: {value}")
    return value


def all_ranks(flag: bool) -> bool:
    """True on every rank when the flag is true on every rank (plain `flag` without a process group)."""
    _, world = process_group()
    if world == 1:
        return bool(flag)
    flags: list = [None] * world
    torch.distributed.all_gather_object(flags, bool(flag))
    return all(flags)


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


def extract_dataset(dataset, n: int, extractor: InceptionFeatures, progress: bool = True,
                    desc: str = "inception") -> np.ndarray:
    """Features of the first n images of a dataset, in chunks of 4 extractor batches (the same
    network batches with one process or many; with a process group the chunks are sharded)."""
    chunk = 4 * extractor.batch_size

    def features_of_chunk(c: int) -> np.ndarray:
        images = torch.stack([dataset.image(i) for i in range(c * chunk, min(n, (c + 1) * chunk))])
        return extractor.extract(images, progress=False)

    parts = map_sharded(features_of_chunk, -(-n // chunk), progress=progress, desc=desc)
    return np.concatenate(parts) if parts else np.zeros((0, FEATURE_DIM))


def real_features(name: str, split: str, n: int, extractor: InceptionFeatures, seed: int = 0,
                  progress: bool = True) -> np.ndarray:
    """Inception features of the first n real images of a split, from the cache when present."""
    from .features import load_reference_features, save_reference_features

    dataset = _real_dataset(name, split, n, seed)
    key = {"dataset": name, "split": split, "count": int(n), "protocol": PROTOCOL, "extractor": extractor.identity,
           "resolution": dataset.resolution, "seed": seed}
    cached = load_reference_features(key)
    if all_ranks(cached is not None and cached.features is not None):  # ranks must agree, or some would wait forever
        return cached.features
    features = np.asarray(extract_dataset(dataset, n, extractor, progress, desc=f"inception {name} {split}"), np.float64)
    if process_group()[0] == 0:
        save_reference_features(key, features)
    return features


def evaluate_real_vs_real(dataset_name: str, n: int = 10_000, seed: int = 0,
                          extractor: InceptionFeatures | None = None, progress: bool = True,
                          kid_subset_size: int = 1000) -> dict:
    """The floor: FID / KID / precision-recall of n real train images against n real test images."""
    start = time.time()
    extractor = extractor or InceptionFeatures()
    test = real_features(dataset_name, REAL_SPLITS["reference"], n, extractor, seed, progress)
    train = real_features(dataset_name, REAL_SPLITS["other"], n, extractor, seed, progress)
    metrics = on_rank0(lambda: distribution_metrics(test, train, kid_subset_size=kid_subset_size, seed=seed))
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

    def score_batch(b: int) -> dict:
        lo = b * batch_size
        chunk = prompts[lo:lo + batch_size]
        images = _check_images(generate_fn([p.text for p in chunk], seed * BATCH_SEED_STRIDE + b), len(chunk))
        return {"samples": images[:max(keep_samples - lo, 0)],
                "features": extractor.features_of_batch(images) if distribution else None,
                "predictions": probe.predict(images), "embeddings": dual.embed_images(images)}

    # batch b always gets seed s * stride + b, so sharding the batches over ranks changes nothing
    scored = map_sharded(score_batch, -(-n // batch_size), progress=progress, desc=f"generate {dataset_name}")
    features = [r["features"] for r in scored]
    samples = [r["samples"] for r in scored if len(r["samples"])]
    embeddings = [r["embeddings"] for r in scored]
    preds = {k: torch.cat([r["predictions"][k] for r in scored]) for k in scored[0]["predictions"]}

    # the reference sets first: every rank takes part in extracting them
    reference = floor_metrics = None
    if distribution:
        capacity = n if dataset_name in PROCEDURAL else len(_real_dataset(dataset_name, split, 1, seed))
        reference = real_features(dataset_name, split, min(n, capacity), extractor, seed, progress)
    if distribution and floor and split == "test":
        floor_metrics = {k: v for k, v in evaluate_real_vs_real(dataset_name, n, seed, extractor, progress).items()
                         if k in ("fid", "kid", "kid_std", "precision", "recall", "n")}

    def statistics() -> dict:
        result = {"kind": "generator", "dataset": dataset_name, "split": split, "heldout_phrasing": heldout, "n": n,
                  "seed": seed, "protocol": PROTOCOL}
        if distribution:
            result.update(extractor=extractor.identity, backend=extractor.backend,
                          **distribution_metrics(reference, np.concatenate(features), seed=seed))
        if floor_metrics is not None:
            result["floor"] = floor_metrics

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
            result["diversity"] = generator_diversity(lambda t, s: _check_images(generate_fn(t, s), len(t)), texts,
                                                      seeds, progress=progress)
        return result

    result = on_rank0(statistics)  # computed once; every rank returns the same numbers
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
        for name, v in result["probe"].get("all_correct_by_kind", {}).items():
            lines.append(f"| probe: all right, {name} (n={v['count']}) | {_fmt(v['all_correct'])} | |")
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
