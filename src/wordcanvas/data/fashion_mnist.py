"""Fashion-MNIST (Xiao et al. 2017) with captions written from templates and natural class names.

Images are the original 28x28 grey pictures: padded by 2 px to 32x32 (the usual GAN setting,
no resampling), or resized bilinearly to any other resolution. One channel.

Training captions draw on TRAIN_TEMPLATES x TRAIN_NAMES; held-out prompts use HELDOUT_TEMPLATES x
HELDOUT_NAMES, whose words ("pic", "pants", "jumper", ...) never occur in a training caption,
to test whether a generator follows paraphrases through the text encoder.
"""
from __future__ import annotations

import functools
import gzip
import itertools
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from wordcanvas import assets
from wordcanvas.data.base import CaptionedDataset, LabelSpec, Prompt

CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

# Noun phrases with their article, so templates never need grammar.
TRAIN_NAMES = [
    ["a t-shirt", "a top", "a short-sleeved t-shirt"],
    ["a pair of trousers", "trousers"],
    ["a pullover", "a sweater"],
    ["a dress", "a summer dress"],
    ["a coat", "a winter coat"],
    ["a sandal", "a pair of sandals"],
    ["a shirt", "a long-sleeved shirt"],
    ["a sneaker", "a pair of sneakers"],
    ["a bag", "a handbag"],
    ["an ankle boot", "a boot"],
]
TRAIN_TEMPLATES = [
    "{}",
    "a photo of {}",
    "a picture of {}",
    "an image of {}",
    "a black and white photo of {}",
    "{} on a black background",
    "a small grey image of {}",
]
HELDOUT_NAMES = [
    ["a tee", "a singlet"],
    ["some pants", "a pair of slacks"],
    ["a jumper", "a knitted jersey"],
    ["a frock", "a gown"],
    ["an overcoat", "a parka"],
    ["a flip-flop", "some strappy footwear"],
    ["a blouse", "a button-down"],
    ["a trainer", "a running shoe"],
    ["a purse", "a tote"],
    ["a bootie", "a lace-up bootie"],
]
HELDOUT_TEMPLATES = ["a pic of {}", "here is {}", "a snapshot showing {}", "look, {}"]

SPLIT_FILES = {"train": "train", "test": "t10k"}


def train_captions(k: int) -> list[str]:
    return [t.format(n) for t, n in itertools.product(TRAIN_TEMPLATES, TRAIN_NAMES[k])]


def heldout_captions(k: int) -> list[str]:
    return [t.format(n) for t, n in itertools.product(HELDOUT_TEMPLATES, HELDOUT_NAMES[k])]


def class_phrases() -> list[list[str]]:
    """Per class: its name plus the training captions' nouns ("sweater", "boot"), never the held-out ones."""
    articles = ("a pair of ", "an ", "a ", "some ")
    nouns = [[next((n[len(a):] for a in articles if n.startswith(a)), n) for n in names] for names in TRAIN_NAMES]
    names = [[a.lower() for a in name.split("/")] for name in CLASS_NAMES]
    return [list(dict.fromkeys(b + n)) for b, n in zip(names, nouns)]


def _read_idx(path: Path, magic: int, header: int) -> np.ndarray:
    raw = gzip.open(path, "rb").read()
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise ValueError(f"{path} is not an IDX file of the expected kind (magic {found}, wanted {magic})")
    return np.frombuffer(raw, dtype=np.uint8, offset=header)


@functools.lru_cache(maxsize=4)
def load_arrays(folder: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (N,28,28) uint8, labels (N,) int64) from the gzipped IDX files; cached per process."""
    prefix = Path(folder) / SPLIT_FILES[split]
    images = _read_idx(Path(f"{prefix}-images-idx3-ubyte.gz"), 2051, 16).reshape(-1, 28, 28)
    labels = _read_idx(Path(f"{prefix}-labels-idx1-ubyte.gz"), 2049, 8).astype(np.int64)
    if len(images) != len(labels):
        raise ValueError(f"Fashion-MNIST {split}: {len(images)} images but {len(labels)} labels")
    return images, labels


class FashionMNIST(CaptionedDataset):
    label_spec = LabelSpec({"class": CLASS_NAMES})
    channels = 1
    name = "fashion-mnist"

    def __init__(self, split: str = "train", resolution: int = 32, seed: int = 0, size: int | None = None):
        super().__init__(seed)
        if split not in SPLIT_FILES:
            raise ValueError(f"unknown Fashion-MNIST split {split!r}; choose from {sorted(SPLIT_FILES)}")
        self.split, self.resolution = split, int(resolution)
        self.images, self.targets = load_arrays(str(assets.fashion_mnist_dir()), split)
        self.size = len(self.targets) if size is None else min(int(size), len(self.targets))
        self._captions = [train_captions(k) for k in range(10)]

    def __len__(self) -> int:
        return self.size

    def image(self, i: int) -> torch.Tensor:
        x = torch.from_numpy(self.images[i].astype(np.float32))[None] / 127.5 - 1.0  # (1,28,28)
        if self.resolution == 32:  # pad, do not resample: the standard 32x32 layout
            return F.pad(x, (2, 2, 2, 2), value=-1.0)
        if self.resolution == 28:
            return x
        size = (self.resolution, self.resolution)
        return F.interpolate(x[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0].clamp(-1, 1)

    def captions(self, i: int) -> list[str]:
        return self._captions[int(self.targets[i])]

    def labels(self, i: int) -> dict[str, int]:
        return {"class": int(self.targets[i])}

    def class_phrases(self, label: str = "class") -> list[list[str]]:
        return class_phrases()

    def eval_prompts(self, n: int, seed: int = 0, heldout: bool = False) -> list[Prompt]:
        """n prompts cycling through the 10 classes (balanced), phrasing drawn with `seed`."""
        rng = random.Random(seed)
        make = heldout_captions if heldout else train_captions
        return [Prompt(rng.choice(make(i % 10)), {"class": i % 10}) for i in range(n)]
