"""DiffAugment (Zhao et al. 2020): differentiable augmentations applied to every image the
discriminator sees, real and fake, so it cannot memorise a small dataset.

Randomness comes from an explicit torch.Generator (the training loop seeds one per step), so
augmentation needs no state of its own and a resumed run draws exactly the same augmentations.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

POLICIES = ("color", "translation", "cutout")


def _rand(x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    return torch.rand(x.shape[0], 1, 1, 1, generator=g, device=x.device, dtype=x.dtype)


def rand_brightness(x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
    return x + (_rand(x, g) - 0.5)


def rand_saturation(x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (_rand(x, g) * 2) + mean


def rand_contrast(x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(x, g) + 0.5) + mean


def rand_translation(x: torch.Tensor, g: torch.Generator | None = None, ratio: float = 0.125) -> torch.Tensor:
    """Shift by up to ratio x size pixels, filling with zeros (mid-grey in [-1, 1])."""
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sh, sh + 1, (b, 1, 1), generator=g, device=x.device)
    tx = torch.randint(-sw, sw + 1, (b, 1, 1), generator=g, device=x.device)
    gb, gy, gx = torch.meshgrid(torch.arange(b, device=x.device), torch.arange(h, device=x.device),
                                torch.arange(w, device=x.device), indexing="ij")
    gy = (gy + ty + 1).clamp(0, h + 1)
    gx = (gx + tx + 1).clamp(0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])
    return padded.permute(0, 2, 3, 1)[gb, gy, gx].permute(0, 3, 1, 2)


def rand_cutout(x: torch.Tensor, g: torch.Generator | None = None, ratio: float = 0.5) -> torch.Tensor:
    """Zero one random square of ratio x size per image."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), generator=g, device=x.device)
    ox = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), generator=g, device=x.device)
    gb, gy, gx = torch.meshgrid(torch.arange(b, device=x.device), torch.arange(ch, device=x.device),
                                torch.arange(cw, device=x.device), indexing="ij")
    gy = (gy + oy - ch // 2).clamp(0, h - 1)
    gx = (gx + ox - cw // 2).clamp(0, w - 1)
    mask = torch.ones(b, h, w, dtype=x.dtype, device=x.device)
    mask[gb, gy, gx] = 0
    return x * mask.unsqueeze(1)


FUNCTIONS = {
    "color": (rand_brightness, rand_saturation, rand_contrast),
    "translation": (rand_translation,),
    "cutout": (rand_cutout,),
}


def parse_policy(policy: str) -> tuple[str, ...]:
    names = tuple(p.strip() for p in policy.split(",") if p.strip())
    unknown = [p for p in names if p not in FUNCTIONS]
    if unknown:
        raise ValueError(f"unknown DiffAugment policy {unknown}; choose from {list(FUNCTIONS)}")
    return names


def diff_augment(x: torch.Tensor, policy: str | tuple[str, ...], generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply the comma-separated policy ("color,translation,cutout"; "" = identity)."""
    names = parse_policy(policy) if isinstance(policy, str) else policy
    for name in names:
        for fn in FUNCTIONS[name]:
            x = fn(x, generator)
    return x
