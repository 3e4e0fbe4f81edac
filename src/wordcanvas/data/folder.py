"""Your own images with captions: a folder of pictures and text, checked once when opened.

Captions come from any mix of
- a same-named .txt next to each image (one caption per line, blank lines ignored),
- a captions.jsonl manifest at the root: {"file": "a/b.png", "caption": "..."} or "captions": [...],
- a captions.csv manifest at the root with columns file,caption (several rows per file allowed).

Every image is decoded once at construction (utils.images.open_image: pixel limit, full decode);
anything that would fail later (unreadable or truncated files, images without captions, empty caption files,
manifest rows for missing files, decompression bombs) is skipped, listed in `skipped` as
(name, reason) and summarised in one warning.

Splits: with split "train"/"test" and a subfolder of that name, the subfolder is the dataset;
otherwise a stable hash of each relative path puts `test_fraction` of the images in "test"
and the rest in "train". split=None (or "all") keeps everything.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from wordcanvas.data.base import CaptionedDataset, Prompt
from wordcanvas.utils.images import ImageLoadError, open_image, resize_center_crop, to_rgb
from wordcanvas.utils.io import from_uint8

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
MANIFESTS = ("captions.jsonl", "captions.csv")
AUTO_CACHE_BYTES = 256 << 20  # cache decoded images when they fit in this much memory
SHOW_SKIPPED = 10


def load_image(path: str | os.PathLike, resolution: int) -> np.ndarray:
    """Decode (size-checked, EXIF-rotated), convert to RGB, resize and crop: HWC uint8."""
    return np.array(resize_center_crop(to_rgb(open_image(path)), resolution))


def _check_image(path: Path, decode: bool = True) -> None:
    if decode:  # a full decode catches truncated data that PIL's verify lets through (JPEG)
        open_image(path)


def _reason(e: BaseException) -> str:
    detail = str(e).split(": ", 1)[-1] if isinstance(e, ImageLoadError) else f"{type(e).__name__}: {e}"
    if "decompression bomb" in detail:
        return detail if detail.startswith("refused") else f"refused as a possible decompression bomb ({detail})"
    return f"unreadable image ({detail})"


def _clean(text: str) -> str:
    return " ".join(str(text).split())


class CaptionFolder(CaptionedDataset):
    channels = 3
    name = "folder"

    def __init__(self, root: str | os.PathLike, resolution: int = 64, split: str | None = None, seed: int = 0,
                 cache: bool | None = None, test_fraction: float = 0.1, progress: bool = True):
        super().__init__(seed)
        root = Path(root)
        if not root.is_dir():
            raise ValueError(f"caption folder {root} does not exist or is not a folder")
        if split not in (None, "all") and (root / split).is_dir():
            root, split = root / split, None
        self.root, self.resolution, self.split = root, int(resolution), split
        self.skipped: list[tuple[str, str]] = []
        manifest_captions = self._read_manifests()
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())
        rels = {p.relative_to(root).as_posix(): p for p in files}
        for rel in sorted(set(manifest_captions) - set(rels)):
            exists = (root / rel).is_file()
            why = f"not a supported image type ({', '.join(sorted(IMAGE_EXTS))})" if exists else "file is missing"
            self.skipped.append((rel, f"listed in a caption manifest but {why}"))
        if split not in (None, "all"):
            if split not in ("train", "test"):
                raise ValueError(f"unknown split {split!r} for a caption folder; use train, test or None")
            rels = {r: p for r, p in rels.items() if self._is_test(r, test_fraction) == (split == "test")}

        n_bytes = len(rels) * self.resolution**2 * 3
        self.cache = n_bytes <= AUTO_CACHE_BYTES if cache is None else bool(cache)
        self.items: list[tuple[Path, list[str]]] = []
        self._decoded: list[np.ndarray] = []
        show = progress and len(rels) > 200
        for rel, path in tqdm(rels.items(), desc=f"checking {root.name}", disable=not show, unit="img"):
            captions, problem = self._sidecar_captions(path)
            captions = manifest_captions.get(rel, []) + captions
            if not captions:
                self.skipped.append((rel, problem or "no caption (no .txt file and no manifest row)"))
                continue
            try:
                _check_image(path, decode=not self.cache)
                if self.cache:  # the decode that checks the file also fills the cache
                    self._decoded.append(load_image(path, self.resolution))
            except Exception as e:  # noqa: BLE001 - any decoder failure means: skip this file
                self.skipped.append((rel, _reason(e)))
                continue
            self.items.append((path, captions))

        if self.skipped:
            shown = "; ".join(f"{n} ({r})" for n, r in self.skipped[:SHOW_SKIPPED])
            more = len(self.skipped) - SHOW_SKIPPED
            warnings.warn(f"{root}: skipped {len(self.skipped)} item(s): {shown}"
                          + (f"; and {more} more (see .skipped)" if more > 0 else ""), stacklevel=2)
        if not self.items:
            raise ValueError(
                f"no usable image-caption pairs in {root} (split {split}): {len(self.skipped)} item(s) skipped. "
                "Put a same-named .txt with one caption per line next to each image, or a captions.jsonl / "
                "captions.csv manifest at the root"
            )

    @staticmethod
    def _is_test(rel: str, fraction: float) -> bool:
        return int(hashlib.sha1(rel.encode()).hexdigest()[:8], 16) % 10_000 < fraction * 10_000

    def _read_manifests(self) -> dict[str, list[str]]:
        captions: dict[str, list[str]] = {}

        def add(manifest: str, row_no: int, file, texts) -> None:
            texts = [_clean(t) for t in texts if isinstance(t, str) and _clean(t)]
            if not isinstance(file, str) or not file.strip():
                self.skipped.append((f"{manifest}:{row_no}", "manifest row without a file name"))
            elif not texts:
                self.skipped.append((f"{manifest}:{row_no}", f"manifest row for {file} has no caption"))
            else:
                captions.setdefault(Path(os.path.normpath(file.strip())).as_posix(), []).extend(texts)

        jsonl = self.root / "captions.jsonl"
        if jsonl.is_file():
            for n, line in enumerate(jsonl.read_text(encoding="utf-8-sig", errors="replace").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    texts = row.get("captions", [row.get("caption")])
                    add("captions.jsonl", n, row.get("file"), texts if isinstance(texts, list) else [texts])
                except (ValueError, AttributeError) as e:
                    self.skipped.append((f"captions.jsonl:{n}", f"not a JSON object ({e})"))
        table = self.root / "captions.csv"
        if table.is_file():
            with open(table, newline="", encoding="utf-8-sig", errors="replace") as f:
                reader = csv.DictReader(f)
                if not {"file", "caption"} <= set(reader.fieldnames or []):
                    self.skipped.append(("captions.csv", f"needs columns file,caption; found {reader.fieldnames}"))
                else:
                    for n, row in enumerate(reader, 2):
                        add("captions.csv", n, row.get("file"), [row.get("caption")])
        return captions

    @staticmethod
    def _sidecar_captions(path: Path) -> tuple[list[str], str | None]:
        txt = path.with_suffix(".txt")
        if not txt.is_file():
            return [], None
        lines = [_clean(t) for t in txt.read_text(encoding="utf-8-sig", errors="replace").splitlines()]
        lines = [t for t in lines if t]
        return lines, None if lines else f"empty caption file {txt.name}"

    def __len__(self) -> int:
        return len(self.items)

    def image(self, i: int) -> torch.Tensor:
        array = self._decoded[i] if self.cache else load_image(self.items[i][0], self.resolution)
        return from_uint8(array)

    def captions(self, i: int) -> list[str]:
        return self.items[i][1]

    def eval_prompts(self, n: int, seed: int = 0, heldout: bool = False) -> list[Prompt]:
        """Captions drawn from the folder (no labels: a folder knows no attributes)."""
        if heldout:
            raise NotImplementedError("a caption folder has no held-out paraphrases")
        rng = random.Random(seed)
        return [Prompt(rng.choice(self.items[rng.randrange(len(self.items))][1]), {}) for _ in range(n)]
