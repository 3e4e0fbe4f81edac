"""CelebA in its original layout, captioned through the same grammar as the toy faces.

    root/
      img_align_celeba/000001.jpg ...
      list_attr_celeba.txt      line 1: image count; line 2: the 40 attribute names;
                                then "000001.jpg  -1  1  1 ..." (1 = present, -1 = absent)
      list_eval_partition.txt   "000001.jpg 0" with 0 = train, 1 = valid, 2 = test

The 40 CelebA attributes are mapped onto `grammar.ATTRIBUTES`; whatever CelebA cannot tell
is -1 (unknown) and never mentioned by a caption: it has no red hair, no short/long hair, no
middle-aged/old split ("not Young" stays unknown), no skin tone except Pale_Skin, no
background colour. Images are centre-cropped to a square and resized with a Lanczos filter.

Missing or unreadable images are skipped, counted and named in a warning (and kept in
`self.skipped`) instead of crashing: at construction (header check, or full decode with
verify="full"), and, should a file still fail later, when it is read.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from wordcanvas.data.base import CaptionedDataset, LabelSpec, Prompt
from wordcanvas.data.grammar import ATTRIBUTES, BALD, FEMALE, MALE, caption

PARTITIONS = {"train": (0,), "valid": (1,), "val": (1,), "test": (2,), "all": (0, 1, 2)}
_HAIR_COLORS = {"Black_Hair": 0, "Brown_Hair": 1, "Blond_Hair": 2, "Gray_Hair": 4}
_IMAGE_ERRORS = (OSError, ValueError, SyntaxError)  # what PIL raises for broken files
_BINARY = {"hat": "Wearing_Hat", "eyeglasses": "Eyeglasses", "smiling": "Smiling",
           "lipstick": "Wearing_Lipstick", "earrings": "Wearing_Earrings"}


def map_attributes(raw: dict[str, int]) -> dict[str, int]:
    """CelebA's +1/-1 attributes -> grammar attributes (class index, -1 when CelebA cannot tell)."""
    has = lambda name: raw.get(name) == 1  # noqa: E731
    out = {name: -1 for name in ATTRIBUTES}
    if "Male" in raw:
        out["gender"] = MALE if has("Male") else FEMALE
    if has("Young"):
        out["age"] = 0
    if has("Bald"):
        out["hair_style"] = BALD
    else:
        colors = [c for name, c in _HAIR_COLORS.items() if has(name)]
        if len(colors) == 1:  # none or several ticked: unknown
            out["hair_color"] = colors[0]
    for name, celeba_name in _BINARY.items():
        if celeba_name in raw:
            out[name] = int(has(celeba_name))
    if "No_Beard" in raw:
        out["beard"] = int(not has("No_Beard"))
    if has("Pale_Skin"):
        out["skin_tone"] = 0
    return out


def read_attributes(path: str | Path) -> tuple[list[str], dict[str, list[int]]]:
    """list_attr_celeba.txt -> (attribute names, {filename: [+1/-1, ...]})."""
    lines = Path(path).read_text().splitlines()
    names = lines[1].split()
    rows = {}
    for line in lines[2:]:
        parts = line.split()
        if not parts:
            continue
        if len(parts) != len(names) + 1:
            raise ValueError(f"{path}: row {parts[0]!r} has {len(parts) - 1} values for {len(names)} attributes")
        rows[parts[0]] = [int(v) for v in parts[1:]]
    return names, rows


def read_partition(path: str | Path) -> dict[str, int]:
    """list_eval_partition.txt -> {filename: 0 | 1 | 2}."""
    out = {}
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if parts:
            out[parts[0]] = int(parts[1])
    return out


class CelebA(CaptionedDataset):
    """CelebA (Liu et al. 2015) from a local folder in its original layout.

    root: the folder holding img_align_celeba/ and the two list files.
    split: "train" | "valid" | "test" | "all".
    crop: side of the centred square crop in source pixels (None: the largest square).
    verify: "header" opens every image at construction (cheap), "full" decodes them, "none" trusts the files.
    """

    label_spec = LabelSpec(classes=ATTRIBUTES)
    name = "celeba"

    def __init__(self, root: str | Path, split: str = "train", resolution: int = 64, seed: int = 0,
                 caption_set: str = "train", captions_per_image: int = 5, crop: int | None = None,
                 verify: str = "header"):
        super().__init__(seed)
        if split not in PARTITIONS:
            raise ValueError(f"split must be one of {list(PARTITIONS)}, got {split!r}")
        if verify not in ("header", "full", "none"):
            raise ValueError(f"verify must be 'header', 'full' or 'none', got {verify!r}")
        self.root, self.split, self.resolution = Path(root), split, resolution
        self.caption_set, self.captions_per_image, self.crop = caption_set, captions_per_image, crop
        self.image_dir = self.root / "img_align_celeba"
        for needed in (self.image_dir, self.root / "list_attr_celeba.txt", self.root / "list_eval_partition.txt"):
            if not needed.exists():
                raise FileNotFoundError(f"CelebA layout incomplete: {needed} is missing")

        self.attribute_names, rows = read_attributes(self.root / "list_attr_celeba.txt")
        partition = read_partition(self.root / "list_eval_partition.txt")
        wanted = sorted(f for f, p in partition.items() if p in PARTITIONS[split])
        self.skipped: list[tuple[str, str]] = []  # (filename, reason)
        self.files: list[str] = []
        for f in wanted:
            reason = "no attributes" if f not in rows else self._check(f, verify)
            if reason:
                self.skipped.append((f, reason))
            else:
                self.files.append(f)
        self._raw = {f: rows[f] for f in self.files}
        if self.skipped:
            self._warn(self.skipped)

    def _check(self, filename: str, verify: str) -> str | None:
        path = self.image_dir / filename
        if not path.is_file():
            return "missing"
        if verify == "none":
            return None
        try:
            with Image.open(path) as img:
                if verify == "full":
                    img.draft("RGB", (self.resolution, self.resolution))
                    img.load()
        except _IMAGE_ERRORS as e:
            return f"unreadable ({type(e).__name__}: {e})"
        return None

    def _warn(self, skipped: list[tuple[str, str]]) -> None:
        names = ", ".join(f for f, _ in skipped[:10]) + (" ..." if len(skipped) > 10 else "")
        warnings.warn(f"CelebA {self.split}: skipped {len(skipped)} corrupt or missing image(s): {names}", stacklevel=3)

    def __len__(self) -> int:
        return len(self.files)

    def raw_attributes(self, i: int) -> dict[str, int]:
        """The 40 original CelebA attributes as +1 / -1."""
        return dict(zip(self.attribute_names, self._raw[self.files[i]]))

    def labels(self, i: int) -> dict[str, int]:
        return map_attributes(self.raw_attributes(i))

    def load(self, i: int) -> np.ndarray:
        """uint8 (H, W, 3): centre crop, Lanczos resize. Raises on an unreadable file."""
        res = self.resolution
        with Image.open(self.image_dir / self.files[i]) as img:
            w, h = img.size
            side = min(w, h) if self.crop is None else min(self.crop, w, h)
            img.draft("RGB", (max(1, w * res // side), max(1, h * res // side)))  # JPEG DCT downscale, >= needed size
            k = img.size[0] / w
            img = img.convert("RGB")
            s, left, top = side * k, (img.size[0] - side * k) / 2, (img.size[1] - side * k) / 2
            img = img.resize((res, res), Image.LANCZOS, box=(left, top, left + s, top + s))
            return np.asarray(img)

    def image(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.load(i).copy()).permute(2, 0, 1).float() / 127.5 - 1.0

    def captions(self, i: int) -> list[str]:
        rng = np.random.default_rng([self.seed, 2, int(i)])
        attrs = self.labels(i)
        return [caption(attrs, rng, self.caption_set, color_beards=False)[0] for _ in range(self.captions_per_image)]

    def item(self, i: int, near_miss: int = 0) -> dict:
        # A file that breaks after the construction check is skipped for the next good one;
        # the base class then takes image, caption and labels from that same picture.
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        for k in range(len(self)):
            j = (int(i) + k) % len(self)
            try:
                return super().item(j, near_miss)
            except _IMAGE_ERRORS as e:
                if all(f != self.files[j] for f, _ in self.skipped):
                    self.skipped.append((self.files[j], f"unreadable ({type(e).__name__}: {e})"))
                    self._warn(self.skipped[-1:])
        raise RuntimeError("CelebA: no readable image left")

    def eval_prompts(self, n: int, seed: int = 0, heldout: bool = False) -> list[Prompt]:
        """Captions of n random images of this split, with the labels they state."""
        rng = np.random.default_rng([seed, 7919])
        out = []
        for i in rng.integers(0, len(self), n):
            text, mentioned = caption(self.labels(int(i)), rng, "heldout" if heldout else "train", color_beards=False)
            out.append(Prompt(text, mentioned))
        return out
