"""Metrics: feature extractors (inception, lpips trunks) kept apart from the maths over features.

Light submodules are imported here; networks load only when their classes are instantiated.
"""
from .distribution import feature_stats, fid_from_features, fid_from_stats, kid, precision_recall
from .evaluate import distribution_metrics, real_vs_real
from .features import ReferenceFeatures, get_reference_features
from .image_quality import psnr, psnr_y, rgb_to_y, ssim, ssim_y, structural_similarity
from .inception import PROTOCOL as INCEPTION_PROTOCOL
from .inception import InceptionFeatures
from .lpips import LPIPS

__all__ = [
    "INCEPTION_PROTOCOL", "InceptionFeatures", "LPIPS", "ReferenceFeatures", "distribution_metrics",
    "feature_stats", "fid_from_features", "fid_from_stats", "get_reference_features", "kid",
    "precision_recall", "psnr", "psnr_y", "real_vs_real", "rgb_to_y", "ssim", "ssim_y", "structural_similarity",
]
