"""Diversity: mean pairwise LPIPS (AlexNet) between images generated from the SAME prompt with different seeds.

0 means the seed is ignored (mode collapse per prompt); higher means more varied images. Images
smaller than MIN_SIZE are upsampled bilinearly first: AlexNet's stride-4 stem leaves almost
nothing of a 28-32 px image.
"""
from __future__ import annotations

import itertools
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

MIN_SIZE = 64


def _lpips(net: str = "alex"):
    from wordcanvas.metrics.lpips import LPIPS

    return LPIPS(net)


def lpips_ready(images: torch.Tensor) -> torch.Tensor:
    """Clamp to [-1, 1] and upsample (bilinear) so the shorter side is at least MIN_SIZE."""
    x = images.float().clamp(-1, 1)
    h, w = x.shape[-2:]
    if min(h, w) < MIN_SIZE:
        s = MIN_SIZE / min(h, w)
        x = F.interpolate(x, size=(round(h * s), round(w * s)), mode="bilinear", align_corners=False)
    return x


@torch.inference_mode()
def mean_pairwise_lpips(images: torch.Tensor, lpips=None) -> float:
    """Mean LPIPS over all K(K-1)/2 unordered pairs of K images (same prompt, different seeds)."""
    if len(images) < 2:
        raise ValueError("need at least 2 images of a prompt to measure diversity")
    lpips = lpips or _lpips()
    x = lpips_ready(images)
    i, j = zip(*itertools.combinations(range(len(x)), 2))
    return float(lpips(x[list(i)], x[list(j)]).mean())


def prompt_diversity(groups: list[torch.Tensor], lpips=None) -> dict:
    """groups[p]: the K images of prompt p. Mean and std over prompts of their mean pairwise LPIPS."""
    lpips = lpips or _lpips()
    per_prompt = [mean_pairwise_lpips(g, lpips) for g in groups]
    return {"lpips_diversity": float(np.mean(per_prompt)), "lpips_diversity_std": float(np.std(per_prompt)),
            "prompts": len(groups), "seeds_per_prompt": int(len(groups[0])) if groups else 0, "net": lpips.net_name,
            "min_size": MIN_SIZE}


def generator_diversity(generate_fn: Callable[[list[str], int], torch.Tensor], prompts: list[str],
                        seeds: list[int], lpips=None, progress: bool = True) -> dict:
    """Generate every prompt once per seed (one call per seed), then score each prompt's images."""
    if len(seeds) < 2:
        raise ValueError("diversity needs at least 2 seeds")
    per_seed = [generate_fn(list(prompts), seed).detach().float().cpu()
                for seed in tqdm(seeds, desc="diversity", unit="seed", disable=not progress, leave=False)]
    groups = [torch.stack([batch[p] for batch in per_seed]) for p in range(len(prompts))]
    return prompt_diversity(groups, lpips)
