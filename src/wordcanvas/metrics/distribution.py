"""Distribution metrics as plain functions over feature arrays (N, D), computed in float64.

FID (Heusel et al. 2017), KID (Binkowski et al. 2018, unbiased MMD^2 with the cubic polynomial
kernel) and improved precision / recall (Kynkaanniemi et al. 2019). Features come from any
extractor (see inception.py); nothing here knows how the images were made.
"""
from __future__ import annotations

import numpy as np
import scipy.linalg


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased, N-1) covariance of (N, D) features."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need (N >= 2, D) features, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def fid_from_stats(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                   eps: float = 1e-6) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), as pytorch-fid computes it.

    ||mu1 - mu2||^2 + tr(sigma1 + sigma2 - 2 sqrtm(sigma1 sigma2)); a singular product gets eps on
    the diagonals; imaginary parts from rounding are dropped, large ones raise.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError("the two distributions have different dimensions")
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(sigma1)) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"sqrtm has a large imaginary component {np.max(np.abs(covmean.imag)):.3g}")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid_from_features(a: np.ndarray, b: np.ndarray) -> float:
    return fid_from_stats(*feature_stats(a), *feature_stats(b))


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None,
                      coef0: float = 1.0) -> np.ndarray:
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    return (gamma * (x @ y.T) + coef0) ** degree


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, **kernel) -> float:
    """Unbiased MMD^2 between equal-size samples x, y (diagonals of k(x,x), k(y,y) left out)."""
    m = len(x)
    kxx, kyy, kxy = polynomial_kernel(x, x, **kernel), polynomial_kernel(y, y, **kernel), polynomial_kernel(x, y, **kernel)
    within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(within - 2 * kxy.sum() / (m * m))


def kid(a: np.ndarray, b: np.ndarray, num_subsets: int = 100, subset_size: int = 1000, degree: int = 3,
        gamma: float | None = None, coef0: float = 1.0, seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance: mean and std of unbiased MMD^2 over random subsets.

    Each subset draws min(subset_size, len(a), len(b)) rows from each set without replacement
    (as torch-fidelity and clean-fid do); the kernel is (gamma <x, y> + coef0)^degree, gamma = 1/D.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    rng = np.random.default_rng(seed)
    values = [mmd2_unbiased(a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)],
                            degree=degree, gamma=gamma, coef0=coef0) for _ in range(num_subsets)]
    return float(np.mean(values)), float(np.std(values))


def _pairwise_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    d2 = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2 * (x @ y.T)
    return np.sqrt(np.maximum(d2, 0))


def knn_radii(features: np.ndarray, k: int = 3, batch_size: int = 1024) -> np.ndarray:
    """Distance from each row to its k-th nearest other row (the row itself sits at distance 0)."""
    f = np.asarray(features, np.float64)
    if len(f) <= k:
        raise ValueError(f"need more than k={k} samples, got {len(f)}")
    radii = np.empty(len(f))
    for i in range(0, len(f), batch_size):
        d = _pairwise_distances(f[i:i + batch_size], f)
        radii[i:i + batch_size] = np.partition(d, k, axis=1)[:, k]
    return radii


def _coverage(points: np.ndarray, centres: np.ndarray, radii: np.ndarray, batch_size: int) -> float:
    """Fraction of points that fall inside at least one ball (centre, radius)."""
    inside = np.zeros(len(points), dtype=bool)
    for i in range(0, len(points), batch_size):
        d = _pairwise_distances(points[i:i + batch_size], centres)
        inside[i:i + batch_size] = (d <= radii[None, :]).any(axis=1)
    return float(inside.mean())


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3, batch_size: int = 1024) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) with k-NN balls.

    precision: share of fake samples inside the real manifold (union of real k-NN balls);
    recall: share of real samples inside the fake manifold. Distances are computed in row
    batches, so memory stays at batch_size x N.
    """
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    precision = _coverage(fake, real, knn_radii(real, k, batch_size), batch_size)
    recall = _coverage(real, fake, knn_radii(fake, k, batch_size), batch_size)
    return precision, recall
