"""Super-resolution networks: a fast sub-pixel net, an RRDB net (lite preset and Real-ESRGAN's x4plus) and SRMD.

Every network takes and returns float NCHW images in [-1, 1] and exposes `.scale`.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from wordcanvas.models.base import CONFIG_NAME, WEIGHTS_NAME, CheckpointError, PretrainedModel


def bicubic_upsample(x: torch.Tensor, scale: int) -> torch.Tensor:
    """F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False) for an integer scale, computed as
    a grouped convolution + PixelShuffle (equal to float rounding, and several times faster on CPU)."""
    c = x.shape[1]
    filters = _phase_filters(int(scale), c).to(x.device, x.dtype)
    return F.pixel_shuffle(F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), filters, groups=c), int(scale))


def _cubic(t: float, a: float = -0.75) -> float:
    """Keys' cubic convolution kernel with a = -0.75, the one torch's (and OpenCV's) bicubic uses."""
    t = abs(t)
    if t <= 1:
        return ((a + 2) * t - (a + 3)) * t * t + 1
    return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a if t < 2 else 0.0


def bicubic_phase_filters(scale: int, channels: int = 3) -> torch.Tensor:
    """Grouped-conv weights (channels * scale^2, 1, 5, 5) whose output, after PixelShuffle(scale), is bicubic
    upsampling (align_corners=False) of a replicate-padded input: each output phase is a fixed 5x5 filter of the
    input. As a convolution it costs a fraction of F.interpolate's bicubic on CPU."""
    taps = torch.zeros(scale, 5, dtype=torch.float64)
    for phase in range(scale):
        centre = (phase + 0.5) / scale - 0.5  # where this output phase falls between input pixels
        for k in range(-2, 3):
            taps[phase, k + 2] = _cubic(centre - k)
    return torch.einsum("ya,xb->yxab", taps, taps).reshape(scale * scale, 1, 5, 5).repeat(channels, 1, 1, 1).float()


@lru_cache(maxsize=None)
def _phase_filters(scale: int, channels: int) -> torch.Tensor:
    return bicubic_phase_filters(scale, channels)


def _check_scale(scale: int, allowed: tuple[int, ...] = (2, 4)) -> None:
    if scale not in allowed:
        raise ValueError(f"scale must be one of {allowed}, got {scale}")


# --------------------------------------------------------------------------- fast (ESPCN / FSRCNN class)

@dataclass
class FastSRConfig:
    scale: int = 4          # 2 or 4
    channels: int = 3       # image channels in and out
    feat: int = 56          # width of the feature-extraction and expansion layers (FSRCNN's "d")
    mid: int = 16           # shrunk width of the mapping layers (FSRCNN's "s")
    num_maps: int = 4       # 3x3 mapping layers at the shrunk width (FSRCNN's "m")


class FastSR(PretrainedModel):
    """FSRCNN-style body at low resolution, one PixelShuffle at the end, residual over bicubic.

    All convolutions run on the low-resolution grid (the cost scales with the input size, not the
    output); the net only predicts the detail that bicubic upsampling misses, which trains fast and
    keeps colour and flat regions right from step one.
    """

    config_class = FastSRConfig
    model_type = "sr-fast"

    def __init__(self, config: FastSRConfig = FastSRConfig()):
        super().__init__(config)
        c = config
        _check_scale(c.scale)
        act = lambda n: nn.PReLU(n, init=0.1)  # noqa: E731  (cheap, and better than ReLU at this width)
        self.extract = nn.Sequential(nn.Conv2d(c.channels, c.feat, 5, padding=2), act(c.feat))
        self.shrink = nn.Sequential(nn.Conv2d(c.feat, c.mid, 1), act(c.mid))
        self.maps = nn.Sequential(*[m for _ in range(c.num_maps) for m in (nn.Conv2d(c.mid, c.mid, 3, padding=1), act(c.mid))])
        self.expand = nn.Sequential(nn.Conv2d(c.mid, c.feat, 1), act(c.feat))
        self.to_subpixels = nn.Conv2d(c.feat, c.channels * c.scale**2, 3, padding=1)
        self.shuffle = nn.PixelShuffle(c.scale)
        self.register_buffer("bicubic_filters", bicubic_phase_filters(c.scale, c.channels), persistent=False)
        with torch.no_grad():  # start close to plain bicubic
            self.to_subpixels.weight.mul_(0.1)
            self.to_subpixels.bias.zero_()

    @property
    def scale(self) -> int:
        return self.config.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.shrink(self.extract(x))
        feat = self.expand(feat + self.maps(feat))
        # bicubic skip as sub-pixel phases (equal to bicubic_upsample(x) after the shuffle), added before the
        # one shuffle: a 5x5 grouped conv is several times cheaper on CPU than F.interpolate(mode="bicubic")
        skip = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), self.bicubic_filters, groups=x.shape[1])
        return self.shuffle(self.to_subpixels(feat) + skip)


# --------------------------------------------------------------------------- RRDB (ESRGAN / Real-ESRGAN)

class ResidualDenseBlock(nn.Module):
    def __init__(self, num_feat: int, num_grow: int):
        super().__init__()
        for i in range(4):
            setattr(self, f"conv{i + 1}", nn.Conv2d(num_feat + i * num_grow, num_grow, 3, padding=1))
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow, num_feat, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            feats.append(F.leaky_relu(conv(torch.cat(feats, 1)), 0.2))
        return x + 0.2 * self.conv5(torch.cat(feats, 1))


class RRDB(nn.Module):
    def __init__(self, num_feat: int, num_grow: int):
        super().__init__()
        self.rdb1, self.rdb2, self.rdb3 = (ResidualDenseBlock(num_feat, num_grow) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * self.rdb3(self.rdb2(self.rdb1(x)))


@dataclass
class RRDBNetConfig:
    scale: int = 4                  # 2 or 4: one nearest-upsample + conv stage per factor 2
    channels: int = 3               # image channels in and out
    num_feat: int = 64              # trunk width
    num_grow: int = 32              # growth channels inside each dense block
    num_blocks: int = 23            # RRDB blocks in the trunk
    unit_range: bool = False        # weights expect [0, 1] images (Real-ESRGAN); the API stays [-1, 1]
    residual_bicubic: bool = False  # predict detail over bicubic upsampling (our own lite nets)


class RRDBNet(PretrainedModel):
    """ESRGAN's generator; parameter names match Real-ESRGAN's so its weights map one to one."""

    config_class = RRDBNetConfig
    model_type = "sr-rrdb"

    def __init__(self, config: RRDBNetConfig = RRDBNetConfig()):
        super().__init__(config)
        c = config
        _check_scale(c.scale)
        self.conv_first = nn.Conv2d(c.channels, c.num_feat, 3, padding=1)
        self.body = nn.Sequential(*[RRDB(c.num_feat, c.num_grow) for _ in range(c.num_blocks)])
        self.conv_body = nn.Conv2d(c.num_feat, c.num_feat, 3, padding=1)
        self.num_upsample = int(math.log2(c.scale))
        for i in range(self.num_upsample):
            setattr(self, f"conv_up{i + 1}", nn.Conv2d(c.num_feat, c.num_feat, 3, padding=1))
        self.conv_hr = nn.Conv2d(c.num_feat, c.num_feat, 3, padding=1)
        self.conv_last = nn.Conv2d(c.num_feat, c.channels, 3, padding=1)
        with torch.no_grad():  # ESRGAN's trick: small residual branches at init keep the deep trunk stable
            for m in self.body.modules():
                if isinstance(m, nn.Conv2d):
                    m.weight.mul_(0.1)
            if c.residual_bicubic:
                self.conv_last.weight.mul_(0.1)
                self.conv_last.bias.zero_()

    @property
    def scale(self) -> int:
        return self.config.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inp = (x + 1) / 2 if self.config.unit_range else x
        feat = self.conv_first(inp)
        feat = feat + self.conv_body(self.body(feat))
        for i in range(self.num_upsample):
            conv = getattr(self, f"conv_up{i + 1}")
            feat = F.leaky_relu(conv(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        out = self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))
        if self.config.residual_bicubic:
            out = out + bicubic_upsample(inp, self.scale)
        return out * 2 - 1 if self.config.unit_range else out


# --------------------------------------------------------------------------- SRMD (Zhang, Zuo & Zhang, CVPR 2018)

# SRMD's degradation code for bicubic downscaling (no blur, no noise): the 15 PCA coefficients of the bicubic
# kernel, as srmd-ncnn-vulkan feeds them to its noise-free (SRMDNF) networks
SRMD_BICUBIC_CODE = (-1.12360956e-08, -1.36899159e-08, 1.85637958e-02, 2.86066886e-08, 3.35292965e-02,
                     8.37272935e-08, -2.54424009e-07, -3.16234976e-02, -1.35169253e-02, -1.10466090e-08,
                     3.84753793e-02, 3.79465739e-08, -2.44916752e-01, -8.02213490e-01, -5.40549755e-01)


@dataclass
class SRMDConfig:
    scale: int = 4                  # 2 or 4 (sub-pixel output)
    channels: int = 3               # image channels in and out
    num_feat: int = 128             # width of every hidden convolution
    num_convs: int = 12             # 3x3 convolutions (ReLU between them)
    degradation: list = field(default_factory=lambda: list(SRMD_BICUBIC_CODE))  # per-pixel code beside the image


class SRMDNet(PretrainedModel):
    """SRMD: a plain stack of 3x3 convolutions on the low-resolution grid, fed the image plus a constant
    degradation code per pixel, ending in a PixelShuffle. Weights expect [0, 1] images; the API stays [-1, 1].
    Convolutions zero-pad, so the input is first edge-padded by the receptive radius and the result cropped
    (what srmd-ncnn-vulkan does around every tile), so borders match its output."""

    config_class = SRMDConfig
    model_type = "sr-srmd"

    def __init__(self, config: SRMDConfig = SRMDConfig()):
        super().__init__(config)
        c = config
        _check_scale(c.scale)
        widths = [c.channels + len(c.degradation)] + [c.num_feat] * (c.num_convs - 1) + [c.channels * c.scale**2]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in zip(widths, widths[1:]))
        self.register_buffer("code", torch.tensor(c.degradation, dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)

    @property
    def scale(self) -> int:
        return self.config.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        r = len(self.convs)
        feat = F.pad((x + 1) / 2, (r, r, r, r), mode="replicate")
        feat = torch.cat([feat, self.code.to(feat.dtype).expand(n, -1, h + 2 * r, w + 2 * r)], 1)
        for i, conv in enumerate(self.convs):
            feat = conv(feat)
            if i < r - 1:
                feat = F.relu(feat)
        s = self.scale
        out = F.pixel_shuffle(feat, s)[:, :, r * s:(r + h) * s, r * s:(r + w) * s]
        return out * 2 - 1


# --------------------------------------------------------------------------- presets and lookup

SR_MODEL_CLASSES: dict[str, type[PretrainedModel]] = {FastSR.model_type: FastSR, RRDBNet.model_type: RRDBNet,
                                                       SRMDNet.model_type: SRMDNet}


def sr_preset(name: str, scale: int = 4) -> PretrainedModel:
    """A freshly initialised network for a named preset (used by training and tests)."""
    _check_scale(scale)
    if name == "fast":
        return FastSR(FastSRConfig(scale=scale))
    if name in ("quality", "quality-gan"):  # same net; the -gan weights are trained with an adversarial loss
        return RRDBNet(RRDBNetConfig(scale=scale, num_feat=32, num_grow=16, num_blocks=6, residual_bicubic=True))
    if name == "realesrgan":
        if scale != 4:
            raise ValueError("Real-ESRGAN x4plus is a x4 network")
        return RRDBNet(RRDBNetConfig(scale=4, unit_range=True))
    if name == "srmd":
        return SRMDNet(SRMDConfig(scale=scale))
    raise ValueError(f"unknown super-resolution preset '{name}'; choose from fast, quality, quality-gan, realesrgan, "
                     f"srmd")


def resolve_sr_folder(folder: str | os.PathLike) -> Path:
    """A network folder from itself, a training run (run/final/generator) or a checkpoint (ckpt/generator_ema,
    else ckpt/generator)."""
    folder = Path(folder)
    if (folder / WEIGHTS_NAME).exists():
        return folder
    for sub in ("final/generator", "generator_ema", "generator"):
        if (folder / sub / CONFIG_NAME).exists():
            return folder / sub
    return folder


def load_sr_model(folder: str | os.PathLike) -> PretrainedModel:
    """Load any saved super-resolution network from its folder, a training run or a checkpoint (the class is
    chosen by config.json's model_type)."""
    folder = resolve_sr_folder(folder)
    path = folder / CONFIG_NAME
    if not path.exists():
        raise CheckpointError(f"{folder} is not a wordcanvas model folder: {CONFIG_NAME} is missing")
    try:
        model_type = json.loads(path.read_text()).get("model_type")
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e})") from None
    if model_type not in SR_MODEL_CLASSES:
        raise CheckpointError(f"{folder} holds a '{model_type}' model, not a super-resolution network "
                              f"({', '.join(SR_MODEL_CLASSES)})")
    return SR_MODEL_CLASSES[model_type].from_pretrained(folder)
