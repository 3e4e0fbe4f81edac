"""Stylizer: arbitrary style transfer by AdaIN (a trained decoder, one pass) or by optimisation
(Gatys et al. 2016: the image's pixels are optimised against VGG16 losses).

    stylizer = Stylizer.from_pretrained()              # the shipped AdaIN decoder
    out = stylizer.stylize(photo, [painting], alpha=0.8)
    out = stylizer.stylize(photo, [a, b], weights=[0.7, 0.3], preserve_color=True, size=512)
    out = stylizer.stylize(photo, [a], method="optimize", steps=200)

Content and styles may be PIL images or tensors in [-1, 1] (CHW or NCHW, grey or RGB); the
result has the content's type (PIL -> PIL, NCHW -> NCHW, CHW -> CHW).

Controls
- alpha in [0, 1]: AdaIN decodes alpha * AdaIN(content, style) + (1 - alpha) * content features,
  so alpha=0 is the decoder's reconstruction of the content; optimisation scales the style loss
  by alpha (alpha=0: only the content loss, and the result is the content it starts from).
- several styles with weights: AdaIN targets are mixed with the weights (Huang & Belongie's
  style interpolation); optimisation matches the weighted mean of the styles' Gram matrices
  (the minimiser of the weighted sum of the per-style Gram losses).
- preserve_color: luminance-only transfer (Gatys et al. 2017, "Controlling perceptual factors"):
  content and styles are reduced to their YIQ luminance, the style's luminance is first matched
  to the content's mean and std, the transfer runs on luminance, and the result's luminance is
  recombined with the content's I and Q (chroma) channels.
- size: the content is resized so its longer side is `size` (aspect kept); styles are resized so
  their longer side equals the content's working longer side (or `style_size`).
"""
from __future__ import annotations

import hashlib
import math
import os
from collections import OrderedDict
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from wordcanvas.models.base import CheckpointError
from wordcanvas.models.style import (STYLE_LAYERS, StyleEncoder, StyleTransferModel, adain, channel_stats,
                                     content_loss, gram)
from wordcanvas.utils.io import from_uint8, tensor_to_pil

METHODS = ("adain", "optimize")
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "weights" / "style-adain"
OPTIMIZE_CONTENT_LAYER = "relu3_3"  # relu3_3 keeps more of the content's layout than relu4_3
OPTIMIZE_STYLE_WEIGHT = 1e3        # weight of the (relative) Gram losses against the relu3_3 content MSE
MIN_SIDE = 16
STYLE_CACHE_SIZE = 8

ImageInput = Union[Image.Image, torch.Tensor]

# YIQ (NTSC) from RGB; linear with Y weights summing to 1 and I, Q weights to 0, so it applies
# unchanged to images in [-1, 1].
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def rgb_to_yiq(x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,njhw->nihw", _RGB_TO_YIQ.to(x), x)


def yiq_to_rgb(x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,njhw->nihw", _YIQ_TO_RGB.to(x), x)


def luminance(x: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) YIQ luminance of RGB images."""
    return rgb_to_yiq(x)[:, :1]


def _as_batch(image: ImageInput, what: str) -> tuple[torch.Tensor, str]:
    """PIL or tensor -> (NCHW float RGB in [-1, 1], kind of the input)."""
    if isinstance(image, Image.Image):
        rgb = image.convert("RGB") if image.mode != "RGB" else image
        return from_uint8(np.array(rgb))[None], "pil"
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{what} must be a PIL image or a tensor, got {type(image).__name__}")
    kind = "chw" if image.ndim == 3 else "nchw"
    x = image[None] if image.ndim == 3 else image
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"{what} must be CHW or NCHW with 1 or 3 channels, got shape {tuple(image.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{what} is an empty batch")
    if not torch.isfinite(x).all():
        raise ValueError(f"{what} holds NaN or infinite values")
    return x.float().expand(-1, 3, -1, -1) if x.shape[1] == 1 else x.float(), kind


def resize_longer(x: torch.Tensor, side: int) -> torch.Tensor:
    """Resize NCHW so the longer side is `side`, keeping the aspect (antialiased bicubic)."""
    h, w = x.shape[-2:]
    scale = side / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    if size == (h, w):
        return x
    return F.interpolate(x, size=size, mode="bicubic", antialias=scale < 1, align_corners=False).clamp(-1, 1)


def _check_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    if weights is None:
        return [1.0 / n] * n
    weights = [float(w) for w in weights]
    if len(weights) != n:
        raise ValueError(f"got {len(weights)} style weights for {n} styles; give one weight per style")
    if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"style weights must be finite, non-negative and not all zero, got {weights}")
    total = sum(weights)
    return [w / total for w in weights]


def resolve_model_folder(path: str | os.PathLike) -> Path:
    """A model folder (config.json), a training run's final/ folder or the run folder itself."""
    import json

    path = Path(path)
    if (path / "config.json").exists() and (path / "model.safetensors").exists():
        return path
    for final in (path, path / "final"):
        meta = final / "model.json"
        if meta.exists():
            name = json.loads(meta.read_text()).get("generator", "generator")
            return final / name
    if not path.exists():
        raise CheckpointError(f"style model folder {path} does not exist")
    raise CheckpointError(f"{path} holds no style model (expected config.json + model.safetensors, "
                          "or a training run with final/model.json)")


class Stylizer:
    """Style transfer with a frozen VGG16 encoder and (for AdaIN) a trained decoder."""

    def __init__(self, model: StyleTransferModel | None = None, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device, memory_format=torch.channels_last).eval() if model is not None else None
        self.layers = model.config.feature_layers if model is not None else ("relu4_1",)
        self.encoder = StyleEncoder(tuple(dict.fromkeys((*self.layers, *STYLE_LAYERS)))).to(
            self.device, memory_format=torch.channels_last)
        self._style_stats: OrderedDict[str, dict] = OrderedDict()  # recent styles' AdaIN statistics

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> "Stylizer":
        """The decoder in `path` (a model folder or a training run), or the shipped one when None."""
        folder = resolve_model_folder(DEFAULT_MODEL if path is None else path)
        return cls(StyleTransferModel.from_pretrained(folder), device)

    # ---------------------------------------------------------------- public API

    def stylize(self, content: ImageInput, styles: Sequence[ImageInput] | ImageInput,
                weights: Sequence[float] | None = None, alpha: float = 1.0, preserve_color: bool = False,
                method: str = "adain", size: int | None = None, style_size: int | None = None,
                steps: int = 200, progress: bool = False) -> ImageInput:
        """Stylise `content` with `styles` (see the module docstring for the controls)."""
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
        if method == "adain" and self.model is None:
            raise ValueError("method 'adain' needs a trained decoder: use Stylizer.from_pretrained()")
        try:
            alpha = float(alpha)
        except (TypeError, ValueError):
            raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}") from None
        if not 0.0 <= alpha <= 1.0:  # also refuses NaN
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if isinstance(styles, (Image.Image, torch.Tensor)):
            styles = [styles]
        styles = list(styles)
        if not styles:
            raise ValueError("give at least one style image")
        weights = _check_weights(weights, len(styles))
        for name, value in (("size", size), ("style_size", style_size)):
            if value is not None and (int(value) != value or value < MIN_SIDE):
                raise ValueError(f"{name} must be an integer >= {MIN_SIDE}, got {value}")
        if int(steps) < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")

        x, kind = _as_batch(content, "content")
        style_batches = [_as_batch(s, f"style {i + 1}")[0] for i, s in enumerate(styles)]
        for i, s in enumerate(style_batches):
            if s.shape[0] != 1:
                raise ValueError(f"style {i + 1} must be one image, got a batch of {s.shape[0]}")
        if min(x.shape[-2:]) < MIN_SIDE or any(min(s.shape[-2:]) < MIN_SIDE for s in style_batches):
            raise ValueError(f"images must be at least {MIN_SIDE} pixels on each side")

        outs = []
        for i in range(x.shape[0]):
            c = x[i:i + 1].to(self.device)
            if size is not None:
                c = resize_longer(c, int(size))
            side = int(style_size) if style_size is not None else max(c.shape[-2:])
            s = [resize_longer(t.to(self.device), side) for t in style_batches]
            outs.append(self._one(c, s, weights, alpha, preserve_color, method, int(steps), progress))
        out = torch.cat(outs)  # one batch shares one size, so the outputs do too
        if kind == "pil":
            return tensor_to_pil(out[0])
        return out[0] if kind == "chw" else out

    # ---------------------------------------------------------------- internals

    def _one(self, content: torch.Tensor, styles: list[torch.Tensor], weights: list[float], alpha: float,
             preserve_color: bool, method: str, steps: int, progress: bool) -> torch.Tensor:
        if preserve_color:
            y_c = luminance(content)
            mean_c, std_c = y_c.mean(), y_c.std()
            lum_styles = []
            for s in styles:
                y = luminance(s)
                lum_styles.append(((y - y.mean()) / (y.std() + 1e-6) * std_c + mean_c).expand(-1, 3, -1, -1))
            out = self._run(y_c.expand(-1, 3, -1, -1), lum_styles, weights, alpha, method, steps, progress)
            yiq = rgb_to_yiq(content)
            out = yiq_to_rgb(torch.cat([luminance(out), yiq[:, 1:]], 1))
        else:
            out = self._run(content, styles, weights, alpha, method, steps, progress)
        return out.clamp(-1, 1).contiguous()

    def _run(self, content, styles, weights, alpha, method, steps, progress) -> torch.Tensor:
        if method == "adain":
            with torch.inference_mode():
                return self.adain(content, styles, weights, alpha)
        return self.optimize(content, styles, weights, alpha, steps, progress)

    def adain(self, content: torch.Tensor, styles: list[torch.Tensor], weights: list[float],
              alpha: float = 1.0) -> torch.Tensor:
        """One decoder pass on alpha * sum_k w_k AdaIN(content, style_k) + (1 - alpha) * content features
        (at every layer the decoder reads)."""
        h, w = content.shape[-2:]
        padded = _pad_to_multiple(content, self.model.downsample)
        fc = self.encoder(padded.contiguous(memory_format=torch.channels_last), self.layers)
        target = {n: 0 for n in self.layers}
        for s, wk in zip(styles, weights):
            stats = self.style_statistics(s)
            for n in self.layers:
                target[n] = target[n] + wk * adain(fc[n], *stats[n])
        t = {n: alpha * target[n] + (1 - alpha) * fc[n] for n in self.layers}
        return self.model(t)[..., :h, :w]

    @torch.inference_mode()
    def style_statistics(self, style: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Channel (mean, std) of a style image at the decoder's layers. The last few styles' statistics
        are kept (keyed by a hash of the resized pixels), so a style applied to many images is encoded once."""
        key = hashlib.sha1(style.detach().float().cpu().numpy().tobytes()).hexdigest() + str(tuple(style.shape))
        if key in self._style_stats:
            self._style_stats.move_to_end(key)
            return self._style_stats[key]
        feats = self.encoder(style.contiguous(memory_format=torch.channels_last), self.layers)
        stats = {n: channel_stats(f) for n, f in feats.items()}
        self._style_stats[key] = stats
        while len(self._style_stats) > STYLE_CACHE_SIZE:
            self._style_stats.popitem(last=False)
        return stats

    def clear_cache(self) -> None:
        self._style_stats.clear()

    def optimize(self, content: torch.Tensor, styles: list[torch.Tensor], weights: list[float],
                 alpha: float = 1.0, steps: int = 200, progress: bool = False,
                 style_weight: float = OPTIMIZE_STYLE_WEIGHT) -> torch.Tensor:
        """Gatys et al.: L-BFGS on the pixels, from the content image, minimising
        MSE(relu3_3 features, content's) + alpha * style_weight * sum_l MSE(Gram_l, weighted style Gram_l)
        over relu1_2, relu2_2, relu3_3, relu4_3. `steps` counts loss-and-gradient evaluations."""
        from tqdm import tqdm

        layers = tuple(dict.fromkeys((OPTIMIZE_CONTENT_LAYER, *STYLE_LAYERS)))
        with torch.no_grad():
            target_c = self.encoder(content, (OPTIMIZE_CONTENT_LAYER,))[OPTIMIZE_CONTENT_LAYER]
            target_g = {n: 0 for n in STYLE_LAYERS}
            for s, wk in zip(styles, weights):
                feats = self.encoder(s, STYLE_LAYERS)
                for n in STYLE_LAYERS:
                    target_g[n] = target_g[n] + wk * gram(feats[n])
        # each layer's Gram error relative to its target's size, so colour (relu1_2) counts as much as texture
        scale = {n: target_g[n].square().mean() + 1e-8 for n in STYLE_LAYERS}
        image = content.detach().clone(memory_format=torch.contiguous_format).requires_grad_(True)  # L-BFGS views grads flat
        opt = torch.optim.LBFGS([image], lr=1.0, max_iter=steps, max_eval=steps, history_size=50,
                                tolerance_grad=0.0, tolerance_change=0.0, line_search_fn="strong_wolfe")
        bar = tqdm(total=steps, desc="optimise", unit="step", disable=not progress, leave=False)

        def closure():
            opt.zero_grad(set_to_none=True)
            feats = self.encoder(image.contiguous(memory_format=torch.channels_last), layers)  # grads stay contiguous
            loss = content_loss(feats[OPTIMIZE_CONTENT_LAYER], target_c)
            if alpha > 0:
                loss = loss + alpha * style_weight * sum(F.mse_loss(gram(feats[n]), target_g[n]) / scale[n]
                                                         for n in STYLE_LAYERS)
            loss.backward()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4g}")
            return loss

        with torch.enable_grad():
            opt.step(closure)
        bar.close()
        return image.detach()


def _pad_to_multiple(x: torch.Tensor, m: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    ph, pw = (-h) % m, (-w) % m
    if not ph and not pw:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)
