"""Real photos available offline, a fixed held-out test set, and (LR, HR) training patches for SR.

Every photo here ships inside an installed package (scikit-image, scikit-learn, matplotlib,
PyWavelets), so nothing downloads. The held-out photos are whole images kept out of training.
"""
from __future__ import annotations

import io
import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from wordcanvas.data.base import CaptionedDataset, Prompt
from wordcanvas.utils.filters import gaussian_blur

HELDOUT_PHOTOS = ("astronaut", "coffee", "chelsea", "china")  # whole photos never cut into training patches
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
DEGRADATIONS = ("bicubic", "blur", "noise", "jpeg")


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from skimage import data

        img = getattr(data, name)()
        return img[0] if isinstance(img, tuple) else img  # stereo_motorcycle: (left, right, disparity)
    return load


def _sklearn(index: int) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_images

        return load_sample_images().images[index]
    return load


def _grace_hopper() -> np.ndarray:
    import matplotlib.cbook

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        return np.asarray(Image.open(f).convert("RGB"))


def _pywt(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import pywt.data

        return getattr(pywt.data, name)().astype(np.uint8)
    return load


# name -> loader returning HxW (grey) or HxWx3 uint8. Each one was checked to load with the network off;
# PyWavelets' "camera" is skipped: it is the same picture as scikit-image's.
PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    **{n: _skimage(n) for n in ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field",
                                 "immunohistochemistry", "retina", "stereo_motorcycle", "camera", "brick",
                                 "grass", "gravel", "moon", "coins", "text", "page")},
    "china": _sklearn(0), "flower": _sklearn(1),
    "grace_hopper": _grace_hopper,
    "aero": _pywt("aero"), "ascent": _pywt("ascent"),
}


@lru_cache(maxsize=None)
def load_photo(name: str) -> np.ndarray:
    """A bundled photo as HxWx3 uint8 (grey photos are repeated over three channels)."""
    if name not in PHOTOS:
        raise KeyError(f"unknown photo '{name}'; available: {', '.join(PHOTOS)}")
    img = np.asarray(PHOTOS[name]())
    img = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]
    img = np.ascontiguousarray(img, dtype=np.uint8)
    img.flags.writeable = False  # shared by the cache
    return img


def folder_photos(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside a user folder, sorted."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def training_photo_names() -> list[str]:
    return [n for n in PHOTOS if n not in HELDOUT_PHOTOS]


def heldout_photos() -> dict[str, np.ndarray]:
    return {n: load_photo(n) for n in HELDOUT_PHOTOS}


def heldout_pairs(scale: int, max_side: int | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Held-out photos as (LR, HR) CHW pairs in [-1, 1]: HR centre-cropped to `max_side` (if given) and to a
    multiple of `scale`, LR its antialiased bicubic downscale."""
    pairs = {}
    for name, img in heldout_photos().items():
        if max_side:
            h, w = img.shape[:2]
            y, x = max(0, (h - max_side) // 2), max(0, (w - max_side) // 2)
            img = img[y : y + max_side, x : x + max_side]
        hr = torch.from_numpy(modcrop(img, scale).copy()).permute(2, 0, 1).float() / 127.5 - 1
        pairs[name] = (downscale(hr, scale), hr)
    return pairs


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop HxW(xC) so both sides divide by `scale` (the usual SR evaluation convention)."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


# --------------------------------------------------------------------------- degradations

def downscale(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """Antialiased bicubic downscale of CHW / NCHW in [-1, 1] (close to MATLAB's imresize)."""
    x = hr[None] if hr.ndim == 3 else hr
    y = F.interpolate(x, scale_factor=1 / scale, mode="bicubic", antialias=True, align_corners=False)
    return (y[0] if hr.ndim == 3 else y).clamp(-1, 1)


def _jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    from wordcanvas.utils.io import from_uint8, to_uint8

    buf = io.BytesIO()
    Image.fromarray(to_uint8(x)).save(buf, format="JPEG", quality=quality)
    return from_uint8(np.asarray(Image.open(buf).convert("RGB")).copy())


def degrade(hr: torch.Tensor, scale: int, degradations: tuple[str, ...], gen: torch.Generator) -> torch.Tensor:
    """HR CHW in [-1, 1] -> LR CHW: optional blur, bicubic downscale, optional noise, optional JPEG."""
    unknown = set(degradations) - set(DEGRADATIONS)
    if unknown:
        raise ValueError(f"unknown degradations {sorted(unknown)}; choose from {DEGRADATIONS}")
    rand = lambda lo, hi: lo + (hi - lo) * torch.rand((), generator=gen).item()  # noqa: E731
    x = hr
    if "blur" in degradations:
        x = gaussian_blur(x, rand(0.2, 1.5) * scale / 2)
    x = downscale(x, scale)
    if "noise" in degradations:
        x = (x + torch.randn(x.shape, generator=gen) * rand(0, 10 / 127.5)).clamp(-1, 1)
    if "jpeg" in degradations:
        x = _jpeg(x, int(rand(40, 95)))
    return x


# --------------------------------------------------------------------------- dataset

class SRPatches(Dataset):
    """Random (LR, HR) patch pairs cut from real photos, in [-1, 1], deterministic per (seed, epoch, index).

    The held-out photos are excluded unless named explicitly in `photos`. Each item is a random
    crop with a random flip / 90-degree rotation; `length` sets the size of one epoch, and
    `set_epoch` draws fresh crops for the same indices (epoch 0 is the default).

    `photo_scale=(lo, hi)` with lo < 1 shows each photo at many sizes: every crop is cut from the photo
    shrunk by a factor drawn log-uniformly from [lo, hi] (antialiased bicubic), so one photo yields
    patches as dense in detail as a small whole image, the way most test photos are.
    """

    def __init__(self, scale: int = 4, patch: int = 96, degradations: tuple[str, ...] = ("bicubic",),
                 seed: int = 0, photos: list[str] | None = None, user_folder: str | os.PathLike | None = None,
                 length: int = 10_000, photo_scale: tuple[float, float] = (1.0, 1.0)):
        if patch % scale:
            raise ValueError(f"patch {patch} must be a multiple of the scale {scale}")
        lo, hi = (float(v) for v in photo_scale)
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"photo_scale (lo, hi) must satisfy 0 < lo <= hi <= 1 (photos are only shrunk, "
                             f"never enlarged); got {tuple(photo_scale)}")
        self.photo_scale = (lo, hi)
        unknown = set(degradations) - set(DEGRADATIONS)
        if unknown:
            raise ValueError(f"unknown degradations {sorted(unknown)}; choose from {DEGRADATIONS}")
        self.scale, self.patch, self.degradations, self.seed, self.length = scale, patch, tuple(degradations), seed, length
        self.epoch = 0
        names = training_photo_names() if photos is None else list(photos)
        self.images = [load_photo(n) for n in names]
        self.names = list(names)
        if user_folder is not None:
            from wordcanvas.sr.upscale import load_image

            paths = folder_photos(user_folder)
            if not paths:
                raise ValueError(f"{user_folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            for path in paths:
                self.images.append(np.asarray(load_image(path).convert("RGB")))
                self.names.append(path.name)
        keep = [i for i, im in enumerate(self.images) if min(im.shape[:2]) >= patch]
        self.images, self.names = [self.images[i] for i in keep], [self.names[i] for i in keep]
        if not self.images:
            raise ValueError(f"no photo is at least {patch}x{patch} pixels")
        # big photos give more patches, but none dominates (retina and hubble are mostly black)
        self.weights = torch.tensor([min(im.shape[0] * im.shape[1], 512 * 512) for im in self.images],
                                    dtype=torch.float64)

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _generator(self, index: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 1_000_000_007 + int(index))

    def hr_patch(self, index: int, gen: torch.Generator | None = None) -> tuple[torch.Tensor, str]:
        """The HR crop of item `index` (CHW in [-1, 1]) and the name of the photo it comes from."""
        gen = gen or self._generator(index)
        lo, hi = self.photo_scale
        for _ in range(10):  # skip flat patches (sky, black backgrounds): they teach nothing
            k = int(torch.multinomial(self.weights, 1, generator=gen))
            img = self.images[k]
            h, w = img.shape[:2]
            side = self.patch
            if lo < 1:  # a crop of `side` px shrunk to `patch` px = a crop of the photo shrunk by patch/side
                factor = math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * float(torch.rand((), generator=gen)))
                side = min(round(self.patch / factor), h, w)
            y = int(torch.randint(0, h - side + 1, (), generator=gen))
            x = int(torch.randint(0, w - side + 1, (), generator=gen))
            crop = img[y : y + side, x : x + side]
            if crop.std() > 4:
                break
        hr = torch.from_numpy(crop.copy()).permute(2, 0, 1).float() / 127.5 - 1
        if side != self.patch:
            hr = F.interpolate(hr[None], size=(self.patch, self.patch), mode="bicubic", antialias=True,
                               align_corners=False)[0].clamp(-1, 1)
        flip, rot = torch.randint(0, 2, (), generator=gen).item(), torch.randint(0, 4, (), generator=gen).item()
        return torch.rot90(hr.flip(-1) if flip else hr, rot, (1, 2)).contiguous(), self.names[k]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = self._generator(index)
        hr, _ = self.hr_patch(index, gen)
        return degrade(hr, self.scale, self.degradations, gen), hr


def degrade_batch(hr: torch.Tensor, scale: int, degradations: tuple[str, ...], gen: torch.Generator) -> torch.Tensor:
    """NCHW HR -> NCHW LR; plain bicubic runs batched, other degradations draw per image from `gen`."""
    if tuple(degradations) == ("bicubic",):
        return downscale(hr, scale)
    return torch.stack([degrade(x, scale, degradations, gen) for x in hr.cpu()]).to(hr.device)


class SRTrainingPatches(CaptionedDataset):
    """HR patches as the training loop's items ({image, caption = source photo, labels = {}}); the
    SR family degrades them to LR inside its step, from the step's seeded generator."""

    name = "sr-patches"

    def __init__(self, patches: SRPatches):
        super().__init__(patches.seed)
        self.patches = patches
        self.resolution = patches.patch

    def __len__(self) -> int:
        return len(self.patches)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.patches.set_epoch(epoch)

    def image(self, i: int) -> torch.Tensor:
        return self.patches.hr_patch(i)[0]

    def captions(self, i: int) -> list[str]:
        return [self.patches.hr_patch(i)[1]]

    def __getitem__(self, i: int) -> dict:  # one crop per access (the base class would cut it twice)
        hr, name = self.patches.hr_patch(i)
        return {"image": hr, "caption": name, "labels": {}}

    def eval_prompts(self, n: int, seed: int = 0, heldout: bool = False) -> list[Prompt]:
        """The held-out photos by name: the sample grid shows them (nothing is selected on them)."""
        return [Prompt(name, {}) for name in HELDOUT_PHOTOS[:n]]
