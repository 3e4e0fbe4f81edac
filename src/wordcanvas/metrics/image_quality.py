"""PSNR and SSIM, on RGB or on the luma (Y) channel as the super-resolution literature reports them.

Conventions:
- inputs are library images, float NCHW in [-1, 1]; results are per image, shape (N,), float64;
- psnr works on the [-1, 1] scale with data_range = 2 (the same number as 8-bit images with
  data_range = 255); ssim maps [-1, 1] to [0, 1] intensities first (SSIM's luminance term is not
  shift-invariant) and so also equals SSIM of the 8-bit images with data_range = 255;
- psnr_y / ssim_y follow MATLAB rgb2ycbcr and BasicSR: Y = 16 + 65.481 R + 128.553 G + 24.966 B
  (R, G, B in [0, 1]; Y in [16, 235]) with data_range = 255, after cropping crop_border pixels
  from each side. quantize=True (default) first rounds the images to 8 bits, as the literature
  measures saved PNGs;
- SSIM is Wang et al. 2004: 11 x 11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03,
  population (co)variances, averaged over the window positions that fit inside the image
  ("valid"), then over channels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

BT601_Y = (65.481, 128.553, 24.966)  # RGB in [0, 1] -> Y offset by 16, on the 8-bit scale


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"need two NCHW tensors of equal shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return a.double(), b.double()


def quantize(images: torch.Tensor) -> torch.Tensor:
    """Round [-1, 1] images to the 256 levels an 8-bit file holds."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Per-image PSNR in dB; data_range 2 for [-1, 1] images. Identical images give inf."""
    a, b = _check_pair(a, b)
    mse = (a - b).pow(2).mean(dim=(1, 2, 3))
    return 10 * torch.log10(data_range**2 / mse)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def structural_similarity(a: torch.Tensor, b: torch.Tensor, data_range: float, window_size: int = 11,
                          sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Per-image mean SSIM (Wang et al. 2004) of non-negative intensities in [0, data_range]."""
    a, b = _check_pair(a, b)
    if min(a.shape[-2:]) < window_size:
        raise ValueError(f"images must be at least {window_size} pixels on each side for SSIM")
    c = a.shape[1]
    g = gaussian_window(window_size, sigma).to(a.device)

    def blur(x: torch.Tensor) -> torch.Tensor:  # separable Gaussian, valid region only
        x = F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
        return F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)

    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return ssim_map.mean(dim=(1, 2, 3))


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM of [-1, 1] images, computed on intensities (x + 1) / 2 in [0, 1].

    SSIM is not shift-invariant (its luminance term uses the means), so it must see
    non-negative intensities; the value equals SSIM of the 8-bit images with data_range 255.
    """
    return structural_similarity((a.double() + 1) / 2, (b.double() + 1) / 2, data_range=1.0)


def rgb_to_y(images: torch.Tensor) -> torch.Tensor:
    """NCHW RGB in [-1, 1] -> N1HW luma in [16, 235] (ITU-R BT.601, as MATLAB rgb2ycbcr); grey passes through."""
    x = (images.double() + 1) / 2
    if x.shape[1] == 1:
        return 16 + 219 * x
    weights = torch.tensor(BT601_Y, dtype=torch.float64, device=x.device).view(1, 3, 1, 1)
    return 16 + (x * weights).sum(dim=1, keepdim=True)


def _y_pair(a: torch.Tensor, b: torch.Tensor, crop_border: int, quantize_first: bool) -> tuple[torch.Tensor, torch.Tensor]:
    _check_pair(a, b)
    if quantize_first:
        a, b = quantize(a), quantize(b)
    ya, yb = rgb_to_y(a), rgb_to_y(b)
    if crop_border:
        ya, yb = ya[..., crop_border:-crop_border, crop_border:-crop_border], yb[..., crop_border:-crop_border, crop_border:-crop_border]
    return ya, yb


def psnr_y(a: torch.Tensor, b: torch.Tensor, crop_border: int = 0, quantize: bool = True) -> torch.Tensor:
    """PSNR on the BT.601 Y channel (8-bit scale, data_range 255) after a border crop."""
    return psnr(*_y_pair(a, b, crop_border, quantize), data_range=255.0)


def ssim_y(a: torch.Tensor, b: torch.Tensor, crop_border: int = 0, quantize: bool = True) -> torch.Tensor:
    """SSIM on the BT.601 Y channel (8-bit scale, data_range 255) after a border crop."""
    return structural_similarity(*_y_pair(a, b, crop_border, quantize), data_range=255.0)
