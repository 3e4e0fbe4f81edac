"""Content and style images available offline, random crops, and the held-out benchmark set.

Photos and textures come from installed packages (scikit-image, scikit-learn, matplotlib,
PyWavelets; see wordcanvas.sr.data.PHOTOS). Real paintings are not available offline, so the
style pool is widened with procedurally drawn "artworks" (brush strokes, stained glass, marbling,
op-art waves, pointillism, cubist shards), each a pure function of (kind, seed).

The benchmark's content and style images (HELDOUT_CONTENT, HELDOUT_STYLES) are never cut into
training crops, neither as content nor as style.
"""
from __future__ import annotations

import math
import os
import warnings
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from wordcanvas.data.base import CaptionedDataset
from wordcanvas.sr.data import PHOTOS, folder_photos, load_photo
from wordcanvas.utils.images import ImageLoadError, load_rgb

HELDOUT_CONTENT = ("astronaut", "chelsea", "coffee", "china")
HELDOUT_STYLES = ("immunohistochemistry", "gravel", "glass-101", "strokes-101")
ART_KINDS = ("strokes", "glass", "marble", "waves", "dots", "shards")
TRAIN_ART_SEEDS = range(6)  # art-<kind>-<seed> for these seeds are training styles; seeds >= 100 are reserved
EXTRA_SKIMAGE = ("colorwheel",)  # scikit-image images beyond the photo registry, used as training styles
ART_SIZE = 384


# --------------------------------------------------------------------------- procedural artworks

def _palette(rng: np.random.Generator, n: int) -> np.ndarray:
    """n colours (float RGB in [0, 1]) around a random base hue: analogous plus one accent."""
    from matplotlib.colors import hsv_to_rgb

    base = rng.uniform()
    hues = (base + rng.normal(0, 0.08, n) + np.where(rng.uniform(size=n) < 0.25, 0.5, 0)) % 1
    hsv = np.stack([hues, rng.uniform(0.35, 1.0, n), rng.uniform(0.25, 1.0, n)], 1)
    return hsv_to_rgb(hsv)


def _smooth_noise(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """Gaussian-smoothed white noise normalised to zero mean, unit std."""
    from scipy.ndimage import gaussian_filter

    n = gaussian_filter(rng.normal(size=(size, size)), scale, mode="wrap")
    return (n - n.mean()) / (n.std() + 1e-8)


def _art_strokes(rng: np.random.Generator, size: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    pal = _palette(rng, 6)
    img = Image.new("RGB", (size, size), tuple(int(c * 255) for c in pal[0]))
    draw = ImageDraw.Draw(img)
    flow = _smooth_noise(rng, size, size / 6) * math.pi  # stroke direction follows a smooth field
    length, width = rng.uniform(6, 16), int(rng.integers(3, 8))
    for _ in range(int(size * size / 45)):
        x, y = rng.uniform(0, size, 2)
        a = flow[int(y), int(x)] + rng.normal(0, 0.15)
        col = np.clip(pal[rng.integers(len(pal))] + rng.normal(0, 0.06, 3), 0, 1)
        dx, dy = length * math.cos(a), length * math.sin(a)
        draw.line([(x - dx, y - dy), (x + dx, y + dy)], fill=tuple(int(c * 255) for c in col), width=width)
    return np.asarray(img)


def _art_glass(rng: np.random.Generator, size: int) -> np.ndarray:
    from scipy.ndimage import binary_dilation
    from scipy.spatial import cKDTree

    pal = _palette(rng, 7)
    pts = rng.uniform(0, size, (int(rng.integers(60, 220)), 2))
    yy, xx = np.mgrid[:size, :size]
    cell = cKDTree(pts).query(np.stack([yy.ravel(), xx.ravel()], 1))[1].reshape(size, size)
    colours = np.clip(pal[rng.integers(len(pal), size=len(pts))] + rng.normal(0, 0.05, (len(pts), 3)), 0, 1)
    img = colours[cell] * (0.85 + 0.15 * _smooth_noise(rng, size, 3)[..., None].clip(-1, 1))
    edge = (cell != np.roll(cell, 1, 0)) | (cell != np.roll(cell, 1, 1))
    img[binary_dilation(edge, iterations=int(rng.integers(1, 3)))] = 0.05  # lead came between the panes
    return (img.clip(0, 1) * 255).astype(np.uint8)


def _art_marble(rng: np.random.Generator, size: int) -> np.ndarray:
    import matplotlib

    cmap = matplotlib.colormaps[str(rng.choice(["copper", "twilight", "magma", "cividis", "ocean", "terrain",
                                                "cool", "spring", "YlOrBr", "PuBuGn", "RdYlBu", "BrBG"]))]
    yy, xx = np.mgrid[:size, :size] / size
    turbulence = sum(_smooth_noise(rng, size, size / 2 ** k) / 2 ** k for k in range(1, 6))
    v = np.sin(2 * math.pi * rng.uniform(2, 8) * (xx * math.cos(rng.uniform(0, 3)) + yy) + rng.uniform(2, 5) * turbulence)
    return (cmap((v + 1) / 2)[..., :3] * 255).astype(np.uint8)


def _art_waves(rng: np.random.Generator, size: int) -> np.ndarray:
    pal = _palette(rng, 3)
    yy, xx = np.mgrid[:size, :size] / size
    cy, cx = rng.uniform(0, 1, 2)
    r = np.hypot(yy - cy, xx - cx) + 0.08 * _smooth_noise(rng, size, size / 10)
    v = np.sin(2 * math.pi * rng.uniform(10, 25) * r)
    t = np.clip(v * 4, -1, 1)[..., None] * 0.5 + 0.5  # near-binary op-art rings
    return ((t * pal[0] + (1 - t) * pal[1]) * 255).astype(np.uint8)


def _art_dots(rng: np.random.Generator, size: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    pal = _palette(rng, 6)
    img = Image.new("RGB", (size, size), tuple(int(c * 255) for c in pal[0] * 0.9 + 0.1))
    draw = ImageDraw.Draw(img)
    field = _smooth_noise(rng, size, size / 8)  # regions of the canvas favour different colours
    radius = rng.uniform(2, 5)
    for _ in range(int(size * size / (3 * radius * radius))):
        x, y = rng.uniform(0, size, 2)
        k = int(np.clip((field[int(y), int(x)] + 2) / 4 * len(pal) + rng.normal(0, 0.8), 0, len(pal) - 1))
        col = tuple(int(c * 255) for c in np.clip(pal[k] + rng.normal(0, 0.05, 3), 0, 1))
        r = radius * rng.uniform(0.7, 1.3)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=col)
    return np.asarray(img)


def _art_shards(rng: np.random.Generator, size: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    pal = _palette(rng, 5)
    img = Image.new("RGB", (size, size), tuple(int(c * 255) for c in pal[0]))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(40, 120))):
        cx, cy = rng.uniform(0, size, 2)
        pts = [(cx + rng.normal(0, size / 8), cy + rng.normal(0, size / 8)) for _ in range(int(rng.integers(3, 6)))]
        col = tuple(int(c * 255) for c in np.clip(pal[rng.integers(len(pal))] + rng.normal(0, 0.07, 3), 0, 1))
        draw.polygon(pts, fill=col, outline=(20, 20, 20), width=int(rng.integers(1, 4)))
    return np.asarray(img)


ART: dict = {"strokes": _art_strokes, "glass": _art_glass, "marble": _art_marble, "waves": _art_waves,
             "dots": _art_dots, "shards": _art_shards}


def art_image(kind: str, seed: int, size: int = ART_SIZE) -> np.ndarray:
    """A procedural artwork as (size, size, 3) uint8; the same (kind, seed, size) gives the same image."""
    if kind not in ART:
        raise KeyError(f"unknown artwork kind {kind!r}; choose from {', '.join(ART)}")
    rng = np.random.default_rng([ART_KINDS.index(kind), int(seed), 424242])
    return np.ascontiguousarray(ART[kind](rng, size))


# --------------------------------------------------------------------------- named images

def _skimage_extra(name: str) -> np.ndarray:
    from skimage import data

    return getattr(data, name)()


@lru_cache(maxsize=None)
def load_style_source(name: str) -> np.ndarray:
    """An image by name as HxWx3 uint8: a bundled photo ('brick'), 'colorwheel', or an artwork '<kind>-<seed>'."""
    if name in PHOTOS:
        return load_photo(name)
    if name in EXTRA_SKIMAGE:
        img = np.asarray(_skimage_extra(name))[..., :3]
        return np.ascontiguousarray(img if img.ndim == 3 else np.repeat(img[..., None], 3, 2), dtype=np.uint8)
    kind, _, seed = name.rpartition("-")
    if kind in ART and seed.isdigit():
        return art_image(kind, int(seed))
    raise KeyError(f"unknown image {name!r}: not a bundled photo, {EXTRA_SKIMAGE}, or '<art kind>-<seed>'")


def training_content_names() -> list[str]:
    """Bundled photos used as training content (everything but the held-out content and styles)."""
    return [n for n in PHOTOS if n not in HELDOUT_CONTENT and n not in HELDOUT_STYLES]


def training_style_names() -> list[str]:
    """Training styles: every training photo/texture, extra scikit-image images and the training artworks."""
    art = [f"{k}-{s}" for k in ART_KINDS for s in TRAIN_ART_SEEDS]
    return [*training_content_names(), *EXTRA_SKIMAGE, *[a for a in art if a not in HELDOUT_STYLES]]


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> 3xHxW float in [-1, 1]."""
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).float() / 127.5 - 1  # copies: cached arrays are read-only


def heldout_pairs(size: int = 256) -> list[tuple[str, str, torch.Tensor, torch.Tensor]]:
    """(content name, style name, content, style) for every held-out content x style pair, each a
    centre-cropped square resized to size x size (CHW in [-1, 1])."""
    def square(img: np.ndarray) -> torch.Tensor:
        h, w = img.shape[:2]
        s = min(h, w)
        crop = to_tensor(img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s])
        return F.interpolate(crop[None], size=(size, size), mode="bicubic", antialias=True, align_corners=False)[0].clamp(-1, 1)

    contents = {n: square(load_style_source(n)) for n in HELDOUT_CONTENT}
    styles = {n: square(load_style_source(n)) for n in HELDOUT_STYLES}
    return [(c, s, contents[c], styles[s]) for c in HELDOUT_CONTENT for s in HELDOUT_STYLES]


# --------------------------------------------------------------------------- random crops

def random_crop(img: torch.Tensor, size: int, g: torch.Generator, min_scale: float = 0.35) -> torch.Tensor:
    """A random square crop of side in [min_scale, 1] x the shorter side (at least `size` when the image
    allows), resized to size x size, randomly mirrored. img: CHW float."""
    _, h, w = img.shape
    short = min(h, w)
    lo = min(short, max(size, int(min_scale * short)))
    side = int(torch.randint(lo, short + 1, (1,), generator=g))
    y = int(torch.randint(0, h - side + 1, (1,), generator=g))
    x = int(torch.randint(0, w - side + 1, (1,), generator=g))
    crop = img[:, y:y + side, x:x + side]
    if side != size:
        crop = F.interpolate(crop[None], size=(size, size), mode="bilinear", antialias=side > size,
                             align_corners=False)[0]
    if bool(torch.rand((), generator=g) < 0.5):
        crop = crop.flip(-1)
    return crop.clamp(-1, 1)


def _load_folder(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    paths = folder_photos(folder)
    if not paths:
        raise ValueError(f"{folder} holds no images")
    out = {}
    for p in paths:
        try:
            out[p.name] = to_tensor(load_rgb(p))
        except ImageLoadError as e:  # a bad file in a user's folder is reported and skipped
            warnings.warn(f"skipped {e}", stacklevel=2)
    if not out:
        raise ValueError(f"{folder} holds no readable images")
    return out


class ContentCrops(CaptionedDataset):
    """Random content crops for decoder training: training photos (or a user folder) and, with
    probability `faces`, a procedural toy face. Item i of epoch e is a pure function of (seed, e, i).

    Length is virtual (`items`): a step of the training loop addresses items, crops are drawn fresh.
    """

    name = "style-content"

    def __init__(self, resolution: int = 128, items: int = 4096, seed: int = 0, faces: float = 0.2,
                 folder: str | None = None):
        super().__init__(seed)
        if not 32 <= resolution <= 512:
            raise ValueError(f"resolution must be in 32..512, got {resolution}")
        if not 0 <= faces <= 1:
            raise ValueError(f"faces must be a probability in [0, 1], got {faces}")
        self.resolution, self.items, self.faces = int(resolution), int(items), float(faces)
        if folder:
            self.photos = _load_folder(folder)
        else:
            self.photos = {n: to_tensor(load_style_source(n)) for n in training_content_names()}
        self.names = list(self.photos)
        self._faces = None
        if self.faces > 0:
            from wordcanvas.data.toy_faces import ToyFaces

            self._faces = ToyFaces("train", resolution=min(256, max(32, self.resolution)), seed=seed)

    def __len__(self) -> int:
        return self.items

    def _generator(self, i: int) -> torch.Generator:
        return torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch * 7_919 + int(i)) & 0x7FFFFFFFFFFF)

    def _source(self, i: int, g: torch.Generator) -> str:
        if self._faces is not None and bool(torch.rand((), generator=g) < self.faces):
            return f"toy-face-{int(torch.randint(len(self._faces), (1,), generator=g))}"
        return self.names[int(torch.randint(len(self.names), (1,), generator=g))]

    def image(self, i: int) -> torch.Tensor:
        g = self._generator(i)
        src = self._source(i, g)
        if src.startswith("toy-face-"):
            face = self._faces.image(int(src.rsplit("-", 1)[1]))
            if face.shape[-1] != self.resolution:
                face = F.interpolate(face[None], size=(self.resolution,) * 2, mode="bilinear", align_corners=False)[0]
            return face.clamp(-1, 1)
        return random_crop(self.photos[src], self.resolution, g)

    def captions(self, i: int) -> list[str]:
        return [self._source(i, self._generator(i))]


def style_bank(names: list[str], resolution: int, crops_per_style: int, seed: int = 0,
               folder: str | None = None) -> tuple[torch.Tensor, list[str]]:
    """Fixed random style crops: uint8 (K, 3, res, res) and the source name of each crop.

    Kept as uint8 to stay small; a training step picks crops from it, and their VGG statistics
    are computed once and cached by the trainer."""
    sources = _load_folder(folder) if folder else {n: to_tensor(load_style_source(n)) for n in names}
    g = torch.Generator().manual_seed(seed * 7_777 + 1)
    crops, labels = [], []
    for name, img in sources.items():
        for _ in range(crops_per_style):
            crop = random_crop(img, resolution, g, min_scale=0.25)
            crops.append(((crop + 1) * 127.5).round().to(torch.uint8))
            labels.append(name)
    return torch.stack(crops), labels
