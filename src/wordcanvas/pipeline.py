"""The public inference API: prompt -> text encoder -> generator -> optional style -> optional upscale.

    pipe = TextToImagePipeline.from_pretrained("runs/faces")        # or a shipped name; None: the default
    images = pipe(["a woman wearing a hat"], n=8, seed=0, upscale=4, style="strokes")   # NCHW in [-1, 1]
    pils = pipe.to_pil(images)

Image j of each prompt uses noise seeded by `seed + j`, exactly as `TextToImage`, so the same
(prompt, seed) gives the same image whatever else shares the batch. `render(prompts, seeds)` is the
batched primitive (one image per (prompt, seed) pair, one generator pass): the server's micro-batcher
feeds it the images of several requests at once. Prompt embeddings are cached in memory (LRU).

backend="onnx" runs the generator (and a network upscaler) with ONNX Runtime from an export made by
`wordcanvas.export` (made on first use into the cache when `onnx_dir` holds none); text encoding,
noise, style transfer and bicubic stay in torch.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
from PIL import Image

from wordcanvas.generate import TextToImage
from wordcanvas.models.gan import sample_noise
from wordcanvas.text.base import TextEmbedding, validate_prompt
from wordcanvas.utils.io import tensor_to_pil

BACKENDS = ("torch", "onnx")
UPSCALES = (1, 2, 4)
# built-in style name -> wordcanvas.style.data.load_style_source name (procedural artworks, always available)
BUILTIN_STYLES: dict[str, str] = {
    "strokes": "strokes-101", "glass": "glass-101", "marble": "marble-101",
    "waves": "waves-101", "dots": "dots-101", "shards": "shards-101",
}
StyleInput = Union[str, os.PathLike, Image.Image, torch.Tensor, None]
Truncation = Union[float, None, Sequence[Union[float, None]]]


def builtin_style(name: str) -> Image.Image:
    if name not in BUILTIN_STYLES:
        raise ValueError(f"unknown built-in style '{name}': choose from {', '.join(BUILTIN_STYLES)}")
    from wordcanvas.style.data import load_style_source

    return Image.fromarray(load_style_source(BUILTIN_STYLES[name]))


def auto_upscaler(scale: int) -> str:
    """The shipped fast network for this scale when installed, else bicubic."""
    from wordcanvas.sr.upscale import WEIGHTS_DIR

    return "fast" if (WEIGHTS_DIR / f"sr-fast-x{scale}" / "config.json").exists() else "bicubic"


class TextToImagePipeline:
    """Text encoder + generator (GAN, VAE decoder or class-conditioned baseline) + style + upscale."""

    def __init__(self, t2i: TextToImage, *, backend: str = "torch", upscaler: str = "auto",
                 onnx_dir: str | os.PathLike | None = None, max_batch: int = 64, name: str | None = None):
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend '{backend}': choose from {', '.join(BACKENDS)}")
        self.t2i, self.backend, self.upscaler_name = t2i, backend, upscaler
        self.max_batch = max_batch
        self.name = name or Path(t2i.meta.get("path", "model")).name
        self._upscalers: dict[tuple[str, int], object] = {}
        self._stylizer = None
        self._onnx, self.onnx_dir = None, None
        if backend == "onnx":
            from wordcanvas.export import OnnxGenerator, ensure_export

            self.onnx_dir = ensure_export(t2i, onnx_dir)
            self._onnx = OnnxGenerator(self.onnx_dir / "generator.onnx")

    @classmethod
    def from_pretrained(cls, model: str | os.PathLike | None = None, *, device: str | torch.device = "cpu",
                        backend: str = "torch", upscaler: str = "auto", onnx_dir: str | os.PathLike | None = None,
                        encoder=None, max_batch: int = 64) -> "TextToImagePipeline":
        """`model`: a shipped model name ("toy-faces", "fashion-mnist"; None: the default) or a run,
        final/ or checkpoint folder."""
        from wordcanvas.models.defaults import DEFAULT_MODEL, SHIPPED_MODELS, resolve_model

        folder = resolve_model(model)
        t2i = TextToImage.from_pretrained(folder, device=device, encoder=encoder)
        name = DEFAULT_MODEL if model is None else (str(model) if str(model) in SHIPPED_MODELS else None)
        return cls(t2i, backend=backend, upscaler=upscaler, onnx_dir=onnx_dir, max_batch=max_batch,
                   name=name or (folder.name if folder.name != "final" else folder.parent.name))

    # ------------------------------------------------------------------ facts
    @property
    def resolution(self) -> int:
        return self.t2i.resolution

    @property
    def channels(self) -> int:
        return self.t2i.generator.config.channels

    @property
    def z_dim(self) -> int:
        return self.t2i.generator.config.z_dim

    @property
    def device(self) -> torch.device:
        return self.t2i.device

    def info(self) -> dict:
        encoder = self.t2i.encoder
        return {"name": self.name, "family": self.t2i.family, "resolution": self.resolution,
                "channels": self.channels, "z_dim": self.z_dim, "backend": self.backend,
                "encoder": getattr(encoder, "name", None) if encoder is not None else None,
                "upscales": list(UPSCALES), "upscaler": {s: self.resolve_upscaler(s) for s in UPSCALES if s > 1},
                "styles": list(BUILTIN_STYLES)}

    # ------------------------------------------------------------------ generation
    def embed(self, prompts: list[str]) -> TextEmbedding:
        """Cached embeddings (a repeated prompt skips the encoder)."""
        return self.t2i.embed(prompts)

    def noise(self, seeds: Sequence[int], truncation: Truncation = None) -> torch.Tensor:
        """(len(seeds), z_dim) noise; row k is what TextToImage draws for seed seeds[k] (truncation: one
        value, or one per seed; None: the model's own setting)."""
        per_seed = list(truncation) if isinstance(truncation, (list, tuple)) else [truncation] * len(seeds)
        default, mode = self.t2i.meta.get("truncation"), self.t2i.meta.get("truncation_mode", "resample")
        return torch.cat([sample_noise(1, self.z_dim, torch.Generator().manual_seed(int(s)),
                                       t if t is not None else default, mode)
                          for s, t in zip(seeds, per_seed, strict=True)]).to(self.device)

    @torch.no_grad()  # not inference_mode: cached embeddings / kernels must stay usable by autograd (editing)
    def render(self, prompts: Sequence[str], seeds: Sequence[int], truncation: Truncation = None) -> torch.Tensor:
        """One image per (prompt, seed) pair, in one generator pass (chunks of max_batch): NCHW in [-1, 1] on CPU."""
        if len(prompts) != len(seeds):
            raise ValueError(f"got {len(prompts)} prompts for {len(seeds)} seeds")
        if not isinstance(truncation, (list, tuple)):
            truncation = [truncation] * len(seeds)
        prompts = [validate_prompt(p) for p in prompts]
        outs = []
        for i in range(0, len(prompts), self.max_batch):
            z = self.noise(seeds[i:i + self.max_batch], truncation[i:i + self.max_batch])
            outs.append(self._generate(z, prompts[i:i + self.max_batch]).float().cpu())
        return torch.cat(outs)

    def _generate(self, z: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        if self.t2i.family == "dcgan":
            from wordcanvas.train.gan_step import class_from_text

            labels = torch.tensor([class_from_text(p, self.t2i.classes) for p in prompts], device=self.device)
            return self._onnx({"z": z, "labels": labels}) if self._onnx else self.t2i.generator(z, labels)
        unique = list(dict.fromkeys(prompts))
        index = torch.tensor([unique.index(p) for p in prompts])
        text = self.embed(unique)[index]
        if self._onnx:
            return self._onnx({"z": z, "pooled": text.pooled, "tokens": text.tokens, "mask": text.mask})
        return self.t2i.generator(z, text)

    def __call__(self, prompts: str | Sequence[str], n: int = 1, seed: int = 0, style: StyleInput = None,
                 upscale: int = 1, truncation: float | None = None, style_alpha: float = 1.0,
                 upscaler: str | None = None) -> torch.Tensor:
        """n images per prompt, prompt-major (image i * n + j: prompt i, seed seed + j), then the style
        (a built-in name, an image file, a PIL image or a tensor) and the upscale (1, 2 or 4)."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts or n < 1:
            raise ValueError("need at least one prompt and n >= 1")
        images = self.render([p for p in prompts for _ in range(n)], [seed + j for _ in prompts for j in range(n)],
                             truncation)
        return self.postprocess(images, style=style, upscale=upscale, style_alpha=style_alpha, upscaler=upscaler)

    # ------------------------------------------------------------------ post-processing
    def postprocess(self, images: torch.Tensor, style: StyleInput = None, upscale: int = 1,
                    style_alpha: float = 1.0, upscaler: str | None = None) -> torch.Tensor:
        if upscale not in UPSCALES:
            raise ValueError(f"upscale must be one of {UPSCALES}, got {upscale}")
        if style is not None:
            images = self.stylize(images, style, style_alpha)
        if upscale > 1:
            images = self.upscale(images, upscale, upscaler)
        return images

    @property
    def stylizer(self):
        if self._stylizer is None:
            from wordcanvas.style.transfer import Stylizer

            self._stylizer = Stylizer.from_pretrained(device=self.device)
        return self._stylizer

    def style_image(self, style: StyleInput) -> Image.Image | torch.Tensor:
        if isinstance(style, (Image.Image, torch.Tensor)):
            return style
        if isinstance(style, str) and style in BUILTIN_STYLES:
            return builtin_style(style)
        if isinstance(style, (str, os.PathLike)) and Path(style).is_file():
            from wordcanvas.sr.upscale import load_image

            return load_image(style).convert("RGB")
        raise ValueError(f"style must be a built-in style ({', '.join(BUILTIN_STYLES)}), an image file, "
                         f"a PIL image or a tensor; got {style!r}")

    @torch.no_grad()
    def stylize(self, images: torch.Tensor, style: StyleInput, alpha: float = 1.0) -> torch.Tensor:
        """AdaIN style transfer of NCHW images (grey becomes RGB); the style is resized to the images' side."""
        out = self.stylizer.stylize(images.to(self.device), [self.style_image(style)], alpha=alpha)
        return out.float().cpu()

    def resolve_upscaler(self, scale: int, name: str | None = None) -> str:
        name = name or self.upscaler_name
        return auto_upscaler(scale) if name == "auto" else name

    def get_upscaler(self, scale: int, name: str | None = None):
        """The Upscaler for (name, scale), built once; with the onnx backend a network runs in ONNX Runtime."""
        name = self.resolve_upscaler(scale, name)
        key = (name, scale)
        if key not in self._upscalers:
            from wordcanvas.sr.upscale import Upscaler

            up = Upscaler.from_name(name, scale, device=self.device)
            if self.backend == "onnx" and up.model is not None:
                from wordcanvas.export import OnnxUpscalerNet, ensure_upscaler_export

                up.model = OnnxUpscalerNet(ensure_upscaler_export(up, self.onnx_dir), up.model)
            self._upscalers[key] = up
        return self._upscalers[key]

    def upscale(self, images: torch.Tensor, scale: int, upscaler: str | None = None) -> torch.Tensor:
        return self.get_upscaler(scale, upscaler).upscale(images)

    @staticmethod
    def to_pil(images: torch.Tensor) -> list[Image.Image]:
        return [tensor_to_pil(im) for im in images.cpu()]

    @staticmethod
    def to_uint8(images: torch.Tensor) -> np.ndarray:
        from wordcanvas.utils.io import to_uint8

        return to_uint8(images.cpu())
