"""Datasets by name: a plain dict of builders, each importing its module only when used.

    load_dataset("fashion-mnist")             Fashion-MNIST, 32x32 grey, 10 classes
    load_dataset("captioned-mnist")           one or two MNIST digits placed on a 64x64 canvas
    load_dataset("toy-faces")                 procedurally drawn faces with attributes
    load_dataset("celeba:/path/to/celeba")    a local copy of CelebA in its published layout
    load_dataset("/path/to/folder")           your images with captions (see data/folder.py)
    load_dataset("/path/to/shards")           WebDataset tar shards: a folder of .tar files, one .tar, or a
                                              brace pattern such as "shards/shard-{000000..000009}.tar"
"""
from __future__ import annotations

import os
from typing import Callable

from wordcanvas.data.base import CaptionedDataset, LabelSpec, Prompt


def _fashion_mnist(split: str, resolution: int, seed: int, **kw) -> CaptionedDataset:
    from wordcanvas.data.fashion_mnist import FashionMNIST

    return FashionMNIST(split=split, resolution=resolution, seed=seed, **kw)


def _captioned_mnist(split: str, resolution: int, seed: int, **kw) -> CaptionedDataset:
    from wordcanvas.data.captioned_mnist import CaptionedMNIST

    return CaptionedMNIST(split=split, resolution=resolution, seed=seed, **kw)


def _toy_faces(split: str, resolution: int, seed: int, **kw) -> CaptionedDataset:
    from wordcanvas.data.toy_faces import ToyFaces

    return ToyFaces(split=split, resolution=resolution, seed=seed, **kw)


def _celeba(root: str, split: str, resolution: int, seed: int, **kw) -> CaptionedDataset:
    from wordcanvas.data.celeba import CelebA

    return CelebA(root, split=split, resolution=resolution, seed=seed, **kw)


def _folder(root: str, split: str | None, resolution: int, seed: int, **kw) -> CaptionedDataset:
    from wordcanvas.data.folder import CaptionFolder

    return CaptionFolder(root, resolution=resolution, split=split, seed=seed, **kw)


def _shards(source: str, split: str | None, resolution: int | None, seed: int, **kw) -> CaptionedDataset:
    from wordcanvas.data.webdataset import ShardDataset

    return ShardDataset(source, resolution=resolution, split=split, seed=seed, **kw)


DATASETS: dict[str, Callable[..., CaptionedDataset]] = {
    "fashion-mnist": _fashion_mnist,
    "captioned-mnist": _captioned_mnist,
    "toy-faces": _toy_faces,
}
DATASET_NAMES: tuple[str, ...] = tuple(DATASETS)
PATH_FORMS = ("celeba:PATH", "PATH (a folder of images with captions)", "PATH (WebDataset .tar shards)")
DEFAULT_RESOLUTION: dict[str, int] = {
    "fashion-mnist": 32, "captioned-mnist": 64, "toy-faces": 64, "celeba": 64, "folder": 64,
    "shards": 64,  # unless the shards' dataset.json names their resolution
}


def dataset_kind(name: str) -> str:
    """'fashion-mnist', 'captioned-mnist', 'toy-faces', 'celeba', 'shards' or 'folder' for a dataset name."""
    if name in DATASETS:
        return name
    if name.startswith("celeba:"):
        return "celeba"
    from wordcanvas.data.webdataset import is_shard_source

    if is_shard_source(name):
        return "shards"
    if os.path.isdir(name):
        return "folder"
    choices = ", ".join([*DATASET_NAMES, *PATH_FORMS])
    if os.sep in name or "/" in name:
        raise ValueError(f"dataset folder {name!r} does not exist; datasets are: {choices}")
    raise ValueError(f"unknown dataset {name!r}; choose one of: {choices}")


def default_resolution(name: str) -> int:
    return DEFAULT_RESOLUTION[dataset_kind(name)]


def load_dataset(name: str, split: str = "train", resolution: int | None = None, seed: int = 0,
                 **kw) -> CaptionedDataset:
    """A dataset by name (see the module docstring); extra keywords go to its constructor."""
    kind = dataset_kind(name)
    if kind == "shards":  # resolution None: the one the shards were packed at
        return _shards(name, split, resolution, seed, **kw)
    resolution = int(resolution or DEFAULT_RESOLUTION[kind])
    if kind == "celeba":
        root = name.split(":", 1)[1]
        if not root:
            raise ValueError("celeba needs a path: celeba:/path/to/celeba")
        return _celeba(root, split, resolution, seed, **kw)
    if kind == "folder":
        return _folder(name, split, resolution, seed, **kw)
    return DATASETS[kind](split, resolution, seed, **kw)


__all__ = ["CaptionedDataset", "LabelSpec", "Prompt", "DATASETS", "DATASET_NAMES", "DEFAULT_RESOLUTION",
           "dataset_kind", "default_resolution", "load_dataset"]
