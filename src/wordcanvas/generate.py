"""Inference for a trained run: prompts + seed -> images (float NCHW in [-1, 1]).

    t2i = TextToImage.from_pretrained("runs/fashion")      # run folder, final/, checkpoints/best, ...
    images = t2i(["a sneaker", "a dress"], n=4, seed=0)    # (8, C, H, W), prompt-major

Image j of each prompt uses noise seeded by seed + j, so (prompt, seed s, n=1) reproduces image
j = s - seed of a larger call. PNGs written by `save_images` carry prompt and seed as text metadata.
"""
from __future__ import annotations

import json
import os
import re
from collections import OrderedDict
from pathlib import Path

import torch

from wordcanvas.models.base import CheckpointError, PretrainedModel
from wordcanvas.models.gan import DCGANGenerator, GANCLSGenerator, Generator, sample_noise
from wordcanvas.models.vae import TextVAE
from wordcanvas.text.base import TextEmbedding, validate_prompt
from wordcanvas.utils.io import make_grid, tensor_to_pil

# Generator classes by the model_type recorded in their config.json.
GENERATORS: dict[str, type[PretrainedModel]] = {
    Generator.model_type: Generator,
    DCGANGenerator.model_type: DCGANGenerator,
    GANCLSGenerator.model_type: GANCLSGenerator,
    TextVAE.model_type: TextVAE,  # a VAE generates from its decoder: forward(z, text), sample_noise
}


def resolve_model_folder(path: str | os.PathLike) -> tuple[Path, dict]:
    """(folder, model description) for an exported folder (model.json), a run folder (its final/,
    else its best or newest good checkpoint), a checkpoints folder, or one checkpoint folder."""
    from wordcanvas.train.checkpoint import BEST, latest_good_checkpoint, verify_checkpoint

    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"model folder {p} does not exist")
    if (p / "model.json").exists():
        return p, json.loads((p / "model.json").read_text())
    if (p / "final" / "model.json").exists():
        return resolve_model_folder(p / "final")
    if (p / "manifest.json").exists():
        return p, verify_checkpoint(p)["model"]
    root = p / "checkpoints" if (p / "checkpoints").is_dir() else p
    if (root / BEST / "manifest.json").exists():
        return root / BEST, verify_checkpoint(root / BEST)["model"]
    found = latest_good_checkpoint(root)
    if found is not None:
        return found[0], found[1]["model"]
    raise CheckpointError(f"{p} holds no wordcanvas model: expected model.json, final/, or checkpoints/")


def load_generator(folder: Path, device: str | torch.device = "cpu") -> PretrainedModel:
    config = folder / "config.json"
    if not config.exists():
        raise CheckpointError(f"{folder} is not a generator folder: config.json is missing")
    model_type = json.loads(config.read_text()).get("model_type")
    if model_type not in GENERATORS:
        raise CheckpointError(f"{folder} holds a '{model_type}' model; generators are {sorted(GENERATORS)}")
    return GENERATORS[model_type].from_pretrained(folder, map_location=str(device))


class TextToImage:
    """A generator with its text encoder (or class names, for the class-conditioned baseline)."""

    def __init__(self, generator: PretrainedModel, encoder=None, meta: dict | None = None,
                 device: str | torch.device = "cpu", cache_size: int = 256):
        self.generator = generator.eval().requires_grad_(False)
        self.encoder, self.meta, self.device = encoder, dict(meta or {}), torch.device(device)
        self.family = self.meta.get("family", "gan")
        self.classes = self.meta.get("classes")
        if self.family != "dcgan" and encoder is None:
            raise ValueError("a text-conditioned generator needs a text encoder")
        self._cache: OrderedDict[str, TextEmbedding] = OrderedDict()
        self.cache_size = cache_size

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device = "cpu", encoder=None) -> "TextToImage":
        """Rebuild generator and encoder from a run or model folder; pass `encoder` to override
        the one the run names (e.g. an encoder object that is not loadable by name)."""
        folder, meta = resolve_model_folder(path)
        generator = load_generator(folder / meta.get("generator", "generator"), device)
        enc = meta.get("encoder")
        if encoder is None and enc:
            from wordcanvas.text.registry import load_encoder

            saved = folder / enc["folder"] if enc.get("folder") else None
            if saved is not None and saved.is_dir():
                encoder = load_encoder(str(saved), str(device))
            else:
                encoder = load_encoder(enc["name"], str(device))
            if isinstance(encoder, torch.nn.Module):
                encoder.eval()
        return cls(generator, encoder, {**meta, "path": str(folder)}, device)

    @property
    def resolution(self) -> int:
        return self.generator.config.resolution

    def embed(self, prompts: list[str]) -> TextEmbedding:
        """Embeddings of the prompts, remembered per prompt (a repeated prompt skips the encoder)."""
        found, missing = {}, []
        for p in dict.fromkeys(prompts):
            if p in self._cache:
                self._cache.move_to_end(p)
                found[p] = self._cache[p]
            else:
                missing.append(p)
        if missing:  # a batch of more new prompts than the cache holds evicts its own: read them from `found`
            emb = self.encoder.encode(missing)
            for i, p in enumerate(missing):
                found[p] = self._cache[p] = emb[i:i + 1].to(self.device)
                if len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return TextEmbedding.cat([found[p] for p in prompts])

    @torch.inference_mode()
    def __call__(self, prompts: str | list[str], n: int = 1, seed: int = 0, truncation: float | None = None) -> torch.Tensor:
        """n images per prompt, prompt-major: image i * n + j is prompt i with noise seed `seed + j`."""
        prompts = [validate_prompt(p) for p in ([prompts] if isinstance(prompts, str) else prompts)]
        if not prompts or n < 1:
            raise ValueError("need at least one prompt and n >= 1")
        truncation = truncation if truncation is not None else self.meta.get("truncation")
        mode = self.meta.get("truncation_mode", "resample")
        z = torch.cat([sample_noise(1, self.generator.config.z_dim, torch.Generator().manual_seed(seed + j),
                                    truncation, mode) for j in range(n)]).to(self.device)
        z = z.repeat(len(prompts), 1)
        if self.family == "dcgan":
            from wordcanvas.train.gan_step import class_from_text

            labels = torch.tensor([class_from_text(p, self.meta.get("class_phrases") or self.classes) for p in prompts], device=self.device)
            return self.generator(z, labels.repeat_interleave(n)).float()
        text = self.embed(prompts)
        index = torch.arange(len(prompts)).repeat_interleave(n)
        return self.generator(z, text[index]).float()


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit] or "prompt"


def save_images(images: torch.Tensor, prompts: list[str], n: int, seed: int, out: str | os.PathLike,
                meta: dict | None = None) -> list[Path]:
    """A grid (out ends with .png: one row per prompt) or one PNG per image in the folder `out`;
    prompt(s) and seed(s) go into the PNG text metadata."""
    from wordcanvas.train.logging import png_info

    out = Path(out)
    meta = {k: v for k, v in (meta or {}).items() if v is not None}
    if out.suffix.lower() == ".png":
        out.parent.mkdir(parents=True, exist_ok=True)
        grid = tensor_to_pil(make_grid(images.cpu(), nrow=n))
        grid.save(out, pnginfo=png_info({"prompts": prompts, "seed": seed, "n": n, **meta}))
        return [out]
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, prompt in enumerate(prompts):
        for j in range(n):
            path = out / f"{i:03d}-{_slug(prompt)}-seed{seed + j}.png"
            tensor_to_pil(images[i * n + j].cpu()).save(path, pnginfo=png_info({"prompt": prompt, "seed": seed + j, **meta}))
            paths.append(path)
    return paths
