"""Captioned images in WebDataset tar shards: one sample = `KEY.png` + `KEY.txt` (captions, one a
line) + `KEY.json` ({"labels": {...}}), many samples per `shard-NNNNNN.tar`, plus `dataset.json`
(name, channels, resolution, label classes) beside the shards.

    pack_shards(dataset, "shards/")          write them (`wordcanvas data pack NAME --out shards/`)
    ShardDataset("shards/")                  map-style, what the training loop reads (exact resume:
                                             items addressed by index, every rank takes its own slice)
    shard_stream("shards/", rank, world)     webdataset.WebDataset pipeline for streaming: shards
                                             split across ranks, then across DataLoader workers

A source is a folder of .tar files, one .tar, or a brace pattern ("shards/shard-{000000..000009}.tar").
"""
from __future__ import annotations

import glob
import io
import json
import os
import random
import tarfile
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from wordcanvas.data.base import CaptionedDataset, LabelSpec, Prompt
from wordcanvas.utils.images import load_rgb, resize_center_crop
from wordcanvas.utils.io import atomic_write_json, from_uint8, to_uint8

IMAGE_EXTS = ("png", "jpg", "jpeg", "webp")
META = "dataset.json"


def shard_list(source: str | os.PathLike) -> list[str]:
    """The shard files of a source, in a stable order; ValueError naming the source if there are none."""
    text = str(source)
    if os.path.isdir(text):
        urls = sorted(glob.glob(os.path.join(text, "*.tar")))
    else:
        from braceexpand import braceexpand  # webdataset's own dependency

        urls = [u for pattern in braceexpand(text) for u in sorted(glob.glob(pattern))]
    if not urls:
        raise ValueError(f"no .tar shards found at {text}")
    return urls


def is_shard_source(name: str) -> bool:
    """True for a folder holding .tar shards, a .tar file or a pattern of them."""
    if os.path.isdir(name):
        return any(Path(name).glob("*.tar"))
    return ".tar" in name


def _meta(urls: list[str]) -> dict:
    path = Path(urls[0]).parent / META
    return json.loads(path.read_text()) if path.is_file() else {}


def _labels(raw: bytes | None) -> dict[str, int]:
    if not raw:
        return {}
    data = json.loads(raw)
    return {str(k): int(v) for k, v in dict(data.get("labels", {})).items()}


def _captions(raw: bytes) -> list[str]:
    return [" ".join(t.split()) for t in raw.decode("utf-8", errors="replace").splitlines() if t.strip()]


def _image(raw: bytes, channels: int, resolution: int | None, name: str) -> torch.Tensor:
    array = load_rgb(raw, name=name)
    image = Image.fromarray(array)
    if resolution:
        image = resize_center_crop(image, resolution)
    if channels == 1:
        image = image.convert("L")
    return from_uint8(np.array(image))  # a writable copy for torch


# --- writing ------------------------------------------------------------------------------------

def pack_shards(dataset: CaptionedDataset, out: str | os.PathLike, per_shard: int = 1000,
                progress: bool = True) -> list[Path]:
    """Write every item of `dataset` (its images at its resolution, as lossless PNG, all its captions
    and labels) into tar shards of `per_shard` samples; returns the shard paths."""
    import webdataset as wds
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if any(out.glob("*.tar")):
        raise FileExistsError(f"{out} already holds .tar shards; choose an empty --out folder")
    with wds.ShardWriter(str(out / "shard-%06d.tar"), maxcount=per_shard, verbose=0, mtime=0.0) as sink:
        for i in tqdm(range(len(dataset)), desc=f"packing {out.name}", unit="img", disable=not progress):
            array = to_uint8(dataset.image(i))
            buffer = io.BytesIO()
            Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(buffer, format="PNG")
            sink.write({"__key__": f"{i:09d}", "png": buffer.getvalue(),
                        "txt": "\n".join(dataset.captions(i)).encode("utf-8"),
                        "json": json.dumps({"labels": dataset.labels(i)}).encode("utf-8")})
    atomic_write_json(out / META, {"name": getattr(dataset, "name", "dataset"), "channels": dataset.channels,
                                   "resolution": int(dataset.resolution), "count": len(dataset),
                                   "label_classes": dataset.label_spec.classes})
    return sorted(out.glob("*.tar"))


# --- map-style reading ----------------------------------------------------------------------------

def _index_shard(path: str) -> list[tuple[str, dict[str, tuple[int, int]]]]:
    """(key, {extension: (byte offset, size)}) for each sample of one shard, reading headers only."""
    from webdataset.tariterators import base_plus_ext  # the library's own key/extension rule

    samples: dict[str, dict[str, tuple[int, int]]] = {}
    try:
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, ext = base_plus_ext(member.name)
                if key is None:
                    continue
                samples.setdefault(key, {})[ext.lower()] = (member.offset_data, member.size)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise ValueError(f"shard {path} is not a readable tar file (truncated or corrupt?): {e}") from None
    return list(samples.items())


class ShardDataset(CaptionedDataset):
    """Random access into tar shards: every member's offset is indexed once; items are read by seeking."""

    name = "shards"

    def __init__(self, source: str | os.PathLike, resolution: int | None = None, split: str | None = None,
                 seed: int = 0):
        super().__init__(seed)
        if split not in (None, "all") and os.path.isdir(source) and (Path(source) / split).is_dir():
            source = Path(source) / split
        self.urls = shard_list(source)
        meta = _meta(self.urls)
        self.channels = int(meta.get("channels", 3))
        self.resolution = int(resolution or meta.get("resolution", 64))
        self.label_spec = LabelSpec({k: list(v) for k, v in meta.get("label_classes", {}).items()})
        self.name = str(meta.get("name", "shards"))
        self.items: list[tuple[int, str, str, dict[str, tuple[int, int]]]] = []  # shard, key, image ext, members
        self.skipped: list[tuple[str, str]] = []
        for s, url in enumerate(self.urls):
            for key, members in _index_shard(url):
                image_ext = next((e for e in IMAGE_EXTS if e in members), None)
                if image_ext is None or "txt" not in members:
                    self.skipped.append((f"{Path(url).name}:{key}", "no image" if image_ext is None else "no .txt captions"))
                    continue
                self.items.append((s, key, image_ext, members))
        if self.skipped:
            warnings.warn(f"{source}: skipped {len(self.skipped)} incomplete sample(s), e.g. {self.skipped[:3]}",
                          stacklevel=2)
        if not self.items:
            raise ValueError(f"no complete samples (image + .txt) in the shards at {source}")
        self._files: dict[int, object] = {}
        self._pid = os.getpid()
        self._captions_cache: dict[int, list[str]] = {}

    def __len__(self) -> int:
        return len(self.items)

    def _read(self, i: int, ext: str) -> bytes | None:
        shard, _, _, members = self.items[i]
        if ext not in members:
            return None
        if self._pid != os.getpid():  # a DataLoader worker: its own file handles
            self._files, self._pid = {}, os.getpid()
        f = self._files.get(shard)
        if f is None:
            f = self._files[shard] = open(self.urls[shard], "rb")
        offset, size = members[ext]
        f.seek(offset)
        return f.read(size)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_files": {}}

    def image(self, i: int) -> torch.Tensor:
        shard, key, ext, _ = self.items[i]
        return _image(self._read(i, ext), self.channels, self.resolution, f"{Path(self.urls[shard]).name}:{key}.{ext}")

    def captions(self, i: int) -> list[str]:
        if i not in self._captions_cache:
            caps = _captions(self._read(i, "txt"))
            if not caps:
                shard, key, _, _ = self.items[i]
                raise ValueError(f"{Path(self.urls[shard]).name}:{key}.txt holds no caption")
            self._captions_cache[i] = caps
        return self._captions_cache[i]

    def labels(self, i: int) -> dict[str, int]:
        return _labels(self._read(i, "json"))

    def eval_prompts(self, n: int, seed: int = 0, heldout: bool = False) -> list[Prompt]:
        if heldout:
            raise NotImplementedError("shards have no held-out paraphrases")
        rng = random.Random(seed)
        picks = [rng.randrange(len(self)) for _ in range(n)]
        return [Prompt(rng.choice(self.captions(i)), self.labels(i)) for i in picks]


# --- streaming ------------------------------------------------------------------------------------

def _split_by_rank(urls, rank: int, world: int):
    """Shard r, r + world, r + 2 world, ... for rank r (before the split across workers)."""
    for i, url in enumerate(urls):
        if i % world == rank:
            yield url


def _decode(sample: dict, channels: int, resolution: int | None, seed: int) -> dict:
    key = sample["__key__"]
    ext = next((e for e in IMAGE_EXTS if e in sample), None)
    if ext is None or "txt" not in sample:
        raise ValueError(f"sample {key} of {sample.get('__url__')} lacks an image or its .txt captions")
    caps = _captions(sample["txt"])
    caption = random.Random(f"{seed}:{key}").choice(caps) if caps else ""
    return {"image": _image(sample[ext], channels, resolution, f"{sample.get('__url__')}:{key}.{ext}"),
            "caption": caption, "labels": _labels(sample.get("json")), "key": key}


def shard_stream(source: str | os.PathLike, rank: int | None = None, world: int | None = None,
                 resolution: int | None = None, seed: int = 0):
    """An IterableDataset over the shards (webdataset.WebDataset): this rank's shards (rank/world
    default to torch.distributed or RANK/WORLD_SIZE), then split across DataLoader workers, so
    every sample is seen exactly once per epoch over all ranks and workers. For an even split, use
    a shard count that is a multiple of ranks x workers (pack with a matching per_shard)."""
    import webdataset as wds
    from webdataset.utils import pytorch_worker_info

    urls = shard_list(source)
    meta = _meta(urls)
    if rank is None or world is None:
        rank, world, _, _ = pytorch_worker_info()
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is outside a world of {world}")
    dataset = wds.WebDataset(urls, shardshuffle=False, nodesplitter=partial(_split_by_rank, rank=rank, world=world),
                             workersplitter=wds.split_by_worker, empty_check=False)
    return dataset.map(partial(_decode, channels=int(meta.get("channels", 3)),
                               resolution=resolution or meta.get("resolution"), seed=seed))
