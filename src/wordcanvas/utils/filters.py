"""Small image filters on float tensors (CHW or NCHW)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """A separable Gaussian blur of standard deviation `sigma` pixels, reflect-padded (same size out)."""
    radius = max(1, int(3 * sigma + 0.5))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    y = x[None] if x.ndim == 3 else x
    c = y.shape[1]
    y = F.pad(y, (radius,) * 4, mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return y[0] if x.ndim == 3 else y
