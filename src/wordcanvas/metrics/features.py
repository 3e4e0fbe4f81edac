"""On-disk cache of reference-set features, so an evaluation never recomputes a real set.

Entries live in assets.cache_dir()/"features" as npz files (written atomically, read without
pickle). The key is a dict that must name the dataset, split, sample count, resize protocol and
extractor identity; any extra entries (seed, image size, ...) are part of the key too.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import assets
from ..utils.io import atomic_write_bytes
from .distribution import feature_stats

REQUIRED_KEYS = ("dataset", "split", "count", "protocol", "extractor")


@dataclass
class ReferenceFeatures:
    mu: np.ndarray                    # (D,) mean feature
    sigma: np.ndarray                 # (D, D) covariance (N - 1 normalised)
    features: np.ndarray | None       # (N, D) raw features when stored (KID, precision / recall)
    key: dict[str, Any]


def canonical_key(key_parts: dict[str, Any]) -> str:
    missing = [k for k in REQUIRED_KEYS if k not in key_parts]
    if missing:
        raise ValueError(f"feature cache key lacks {missing}; required: {REQUIRED_KEYS}")
    return json.dumps(key_parts, sort_keys=True, separators=(",", ":"), default=str)


def cache_path(key_parts: dict[str, Any], root: str | os.PathLike | None = None) -> Path:
    text = canonical_key(key_parts)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{key_parts['dataset']}-{key_parts['split']}-{key_parts['count']}")
    return Path(root or assets.cache_dir() / "features") / f"{readable}-{digest}.npz"


def load_reference_features(key_parts: dict[str, Any], root: str | os.PathLike | None = None) -> ReferenceFeatures | None:
    path = cache_path(key_parts, root)
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as z:
        if str(z["key"]) != canonical_key(key_parts):  # hash collision or hand-edited file
            return None
        features = z["features"].astype(np.float64) if "features" in z.files else None
        return ReferenceFeatures(z["mu"], z["sigma"], features, json.loads(str(z["key"])))


def save_reference_features(key_parts: dict[str, Any], features: np.ndarray, keep_features: bool = True,
                            root: str | os.PathLike | None = None) -> ReferenceFeatures:
    features = np.asarray(features, np.float64)
    mu, sigma = feature_stats(features)
    arrays = {"mu": mu, "sigma": sigma, "key": np.array(canonical_key(key_parts))}
    if keep_features:  # network outputs are fp32: store them as such when that loses nothing
        as32 = features.astype(np.float32)
        arrays["features"] = as32 if np.array_equal(as32, features) else features
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(cache_path(key_parts, root), buffer.getvalue())
    return ReferenceFeatures(mu, sigma, features if keep_features else None, dict(key_parts))


def get_reference_features(key_parts: dict[str, Any], compute_fn: Callable[[], np.ndarray],
                           need_features: bool = True, keep_features: bool = True,
                           root: str | os.PathLike | None = None) -> ReferenceFeatures:
    """Cached features of a reference set; compute_fn() -> (N, D) runs only on a miss.

    need_features=False accepts a cached entry that holds only mu / sigma (enough for FID);
    keep_features=False stores only mu / sigma on a miss (unless need_features).
    """
    cached = load_reference_features(key_parts, root)
    if cached is not None and (cached.features is not None or not need_features):
        return cached
    return save_reference_features(key_parts, compute_fn(), keep_features=keep_features or need_features, root=root)
