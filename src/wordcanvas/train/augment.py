"""DiffAugment (Zhao et al. 2020): differentiable augmentations applied to every image the
discriminator sees, real and fake, so it cannot memorise a small dataset.

Randomness comes from an explicit torch.Generator (the training loop seeds one per step), so
augmentation needs no state of its own and a resumed run draws exactly the same augmentations.
Every draw is per image; with a BatchRandom the draws are made for the global batch of a
multi-process run and each process keeps its slice, so w processes x batch b augment each image
exactly as one process with batch w*b does.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

POLICIES = ("color", "translation", "cutout")


@dataclass
class BatchRandom:
    """Per-sample random draws for this process's slice of the global batch.

    Every process holds an identically seeded generator and draws for the whole global batch
    (world x its local batch b), then keeps rows [rank*b, (rank+1)*b): what sample i of the global
    batch receives does not depend on how the batch is split over processes. With world 1 this draws
    exactly what the bare generator would."""

    generator: torch.Generator | None
    rank: int = 0
    world: int = 1

    def _mine(self, full: torch.Tensor, b: int) -> torch.Tensor:
        return full if self.world == 1 else full[self.rank * b:(self.rank + 1) * b]

    def rand(self, b: int, *shape: int, device=None, dtype=None) -> torch.Tensor:
        return self._mine(torch.rand(b * self.world, *shape, generator=self.generator, device=device, dtype=dtype), b)

    def randn(self, b: int, *shape: int, device=None, dtype=None) -> torch.Tensor:
        return self._mine(torch.randn(b * self.world, *shape, generator=self.generator, device=device, dtype=dtype), b)

    def randint(self, low: int, high: int, b: int, *shape: int, device=None) -> torch.Tensor:
        full = torch.randint(low, high, (b * self.world, *shape), generator=self.generator, device=device)
        return self._mine(full, b)

    def noise(self, model, b: int, **options) -> torch.Tensor:
        """A generator's latent noise (model.sample_noise) for the local batch of b samples."""
        return self._mine(model.sample_noise(b * self.world, self.generator, **options), b)


Random = torch.Generator | BatchRandom | None


def _batch_random(g: Random) -> BatchRandom:
    """A bare generator (or None) is a one-process BatchRandom: the same draws."""
    return g if isinstance(g, BatchRandom) else BatchRandom(g)


def _rand(x: torch.Tensor, g: Random) -> torch.Tensor:
    return _batch_random(g).rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype)


def _randint(low: int, high: int, b: int, g: Random, device) -> torch.Tensor:
    return _batch_random(g).randint(low, high, b, 1, 1, device=device)


def rand_brightness(x: torch.Tensor, g: Random = None) -> torch.Tensor:
    return x + (_rand(x, g) - 0.5)


def rand_saturation(x: torch.Tensor, g: Random = None) -> torch.Tensor:
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (_rand(x, g) * 2) + mean


def rand_contrast(x: torch.Tensor, g: Random = None) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(x, g) + 0.5) + mean


def rand_translation(x: torch.Tensor, g: Random = None, ratio: float = 0.125) -> torch.Tensor:
    """Shift by up to ratio x size pixels, filling with zeros (mid-grey in [-1, 1])."""
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = _randint(-sh, sh + 1, b, g, x.device)
    tx = _randint(-sw, sw + 1, b, g, x.device)
    gb, gy, gx = torch.meshgrid(torch.arange(b, device=x.device), torch.arange(h, device=x.device),
                                torch.arange(w, device=x.device), indexing="ij")
    gy = (gy + ty + 1).clamp(0, h + 1)
    gx = (gx + tx + 1).clamp(0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])
    return padded.permute(0, 2, 3, 1)[gb, gy, gx].permute(0, 3, 1, 2)


def rand_cutout(x: torch.Tensor, g: Random = None, ratio: float = 0.5) -> torch.Tensor:
    """Zero one random square of ratio x size per image."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = _randint(0, h + (1 - ch % 2), b, g, x.device)
    ox = _randint(0, w + (1 - cw % 2), b, g, x.device)
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


def diff_augment(x: torch.Tensor, policy: str | tuple[str, ...], generator: Random = None) -> torch.Tensor:
    """Apply the comma-separated policy ("color,translation,cutout"; "" = identity)."""
    names = parse_policy(policy) if isinstance(policy, str) else policy
    for name in names:
        for fn in FUNCTIONS[name]:
            x = fn(x, generator)
    return x
