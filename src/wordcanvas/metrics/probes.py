"""Probe classifiers: small CNNs trained on REAL images that read back, from a generated image,
what its prompt asked for (clothing class, face attributes, which digits sit where).

They are judges only, never training losses: a generator optimised against a probe would learn
the probe's blind spots, and the score would stop meaning "a person would agree".

Two ways of reading a prediction against a prompt (`ProbeConfig.scheme`):

- "labels": one softmax head per label (Fashion-MNIST `class`, every toy-face attribute); an
  attribute the prompt mentions is right when the head's argmax equals it.
- "cells": captioned MNIST. Which of two digits is "digit1" is invisible in the picture (captions
  name them in either order), so the probe does not guess it: it has one head per cell of the
  3x3 layout grid with 11 classes (digit 0-9, or EMPTY) and the prompt is checked against the
  predicted scene {(cell, digit)}:
    digit1 / digit2: the named digit is drawn somewhere (twice when both name the same digit);
    pos1 / pos2:     the named cell holds a digit (lenient: a picture with ink in every cell passes);
    placed1 / placed2: the named cell holds the named digit (identity and position together);
    count:           as many digits are drawn as the prompt names (1 or 2);
    relation:        the two named digits are drawn in cells with that relation;
  and "all correct" means the predicted scene is one the prompt allows (each named digit in its
  named cell, or in the named relation, and nothing else drawn).

Shipped probes live in wordcanvas/weights/probes/<dataset>/ (config.json + model.safetensors);
config.json records a version string and the sha256 of the weights, which `load_probe` checks,
so every benchmark is judged by the same, unchanged probe.
"""
from __future__ import annotations

import itertools
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from wordcanvas.assets import sha256_file
from wordcanvas.data.base import Prompt
from wordcanvas.models.base import CONFIG_NAME, WEIGHTS_NAME, CheckpointError, PretrainedModel
from wordcanvas.utils.io import atomic_write_json

PROBE_VERSION = "1"
WEIGHTS_ROOT = Path(__file__).resolve().parent.parent / "weights"
CELLS = 9
EMPTY = 10  # "cells" scheme: class index of a cell with no digit


# ---------------------------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------------------------

def fit_input(images: torch.Tensor, channels: int, resolution: int) -> torch.Tensor:
    """Bring NCHW [-1, 1] images to a network's channels (grey <-> RGB) and size (antialiased bilinear)."""
    x = images.float().clamp(-1, 1)
    if x.shape[1] != channels:
        if x.shape[1] == 1:
            x = x.expand(-1, channels, -1, -1)
        elif channels == 1 and x.shape[1] == 3:
            x = (x * x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        else:
            raise ValueError(f"cannot turn {x.shape[1]}-channel images into {channels} channels")
    if x.shape[-2:] != (resolution, resolution):
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)
    return x.contiguous()


class ConvTrunk(nn.Module):
    """(conv3x3 -> BN -> ReLU -> maxpool 2) per width, then average-pooled to grid x grid and flattened.

    One conv per stage keeps it cheap on CPU; keeping a coarse grid (rather than one global
    average) lets the heads tell where things are.
    """

    def __init__(self, channels: int, widths: list[int], grid: int):
        super().__init__()
        layers, c = [], channels
        for w in widths:
            layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            c = w
        self.layers = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(grid), nn.Flatten())
        self.out_dim = c * grid * grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


@dataclass
class ProbeConfig:
    dataset: str = "fashion-mnist"                               # registry name of the dataset it judges
    heads: dict[str, int] = field(default_factory=lambda: {"class": 10})  # head name -> number of classes
    scheme: str = "labels"                                       # "labels" or "cells" (see module doc)
    resolution: int = 32                                         # input size; other sizes are resized
    channels: int = 1                                            # input channels; grey <-> RGB converted
    widths: list[int] = field(default_factory=lambda: [32, 64, 96])  # conv stage widths
    grid: int = 2                                                # pooled feature grid before the heads
    hidden: int = 128                                            # shared hidden layer before the heads
    dropout: float = 0.2
    version: str = PROBE_VERSION


class Probe(PretrainedModel):
    config_class = ProbeConfig
    model_type = "probe"

    def __init__(self, config: ProbeConfig):
        super().__init__(config)
        if config.scheme not in ("labels", "cells"):
            raise ValueError(f"unknown probe scheme {config.scheme!r}")
        self.trunk = ConvTrunk(config.channels, list(config.widths), config.grid)
        if config.scheme == "cells":
            # One classifier shared by the 9 cells (1x1 convs over the 3x3 feature grid): every
            # training image teaches it nine times, and a digit is read the same way everywhere.
            if config.grid != 3 or len(config.heads) != CELLS:
                raise ValueError("the 'cells' scheme needs grid=3 and one head per cell")
            width = config.widths[-1]
            self.cell_head = nn.Sequential(nn.Dropout(config.dropout), nn.Conv2d(width, config.hidden, 1),
                                           nn.ReLU(inplace=True), nn.Dropout(config.dropout),
                                           nn.Conv2d(config.hidden, EMPTY + 1, 1))
        else:
            self.shared = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(self.trunk.out_dim, config.hidden),
                                        nn.ReLU(inplace=True), nn.Dropout(config.dropout))
            self.heads = nn.ModuleDict({name: nn.Linear(config.hidden, k) for name, k in config.heads.items()})

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per head for NCHW [-1, 1] images of any size and 1 or 3 channels."""
        h = self.trunk(fit_input(images, self.config.channels, self.config.resolution))
        if self.config.scheme == "cells":
            g = self.config.grid
            logits = self.cell_head(h.view(len(h), -1, g, g)).flatten(2)  # (N, 11, 9), cells row by row
            return {f"cell{c}": logits[:, :, c] for c in range(CELLS)}
        h = self.shared(h)
        return {name: head(h) for name, head in self.heads.items()}

    @torch.inference_mode()
    def predict(self, images: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
        """Argmax class per head: {head: LongTensor (N,)}."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        parts = [{k: v.argmax(1).cpu() for k, v in self(b.to(device)).items()} for b in images.split(batch_size)]
        self.train(was_training)
        return {k: torch.cat([p[k] for p in parts]) for k in self.config.heads}


# ---------------------------------------------------------------------------------------------
# Judging a prediction against the labels a prompt implies
# ---------------------------------------------------------------------------------------------

def relation(cell_a: int, cell_b: int) -> int:
    from wordcanvas.data.captioned_mnist import relation as _relation

    return _relation(cell_a, cell_b)


def cell_targets(labels: dict[str, int]) -> list[int]:
    """Captioned-MNIST labels -> the 9 cell classes (digit, or EMPTY)."""
    grid = [EMPTY] * CELLS
    for d, p in (("digit1", "pos1"), ("digit2", "pos2")):
        if labels.get(d, -1) >= 0 and labels.get(p, -1) >= 0:
            grid[labels[p]] = labels[d]
    return grid


def scene(grid: Iterable[int]) -> frozenset[tuple[int, int]]:
    return frozenset((c, int(d)) for c, d in enumerate(grid) if d != EMPTY)


def allowed_scenes(labels: dict[str, int]) -> frozenset[frozenset[tuple[int, int]]]:
    """Every captioned-MNIST scene {(cell, digit)} that the labels of a prompt allow."""
    a, b = labels.get("digit1", -1), labels.get("digit2", -1)
    if a < 0:
        return frozenset()
    any_cell = range(CELLS)
    cells_a = [labels["pos1"]] if labels.get("pos1", -1) >= 0 else any_cell
    if b < 0:
        return frozenset(frozenset({(c, a)}) for c in cells_a)
    cells_b = [labels["pos2"]] if labels.get("pos2", -1) >= 0 else any_cell
    r = labels.get("relation", -1)
    return frozenset(frozenset({(x, a), (y, b)}) for x in cells_a for y in cells_b
                     if x != y and (r < 0 or relation(x, y) == r))


def judge_cells(grid: list[int], labels: dict[str, int]) -> tuple[dict[str, bool], bool]:
    """Per-attribute verdicts and the all-correct verdict of a predicted 9-cell grid (see module doc)."""
    drawn = Counter(d for d in grid if d != EMPTY)
    a, b = labels.get("digit1", -1), labels.get("digit2", -1)
    out: dict[str, bool] = {}
    if a >= 0:
        out["digit1"] = drawn[a] >= 1
        out["count"] = sum(drawn.values()) == 1 + (b >= 0)
    if b >= 0:
        out["digit2"] = drawn[b] >= 1 + (a == b)
    for k, (d, p) in enumerate((("digit1", "pos1"), ("digit2", "pos2")), start=1):
        if labels.get(p, -1) >= 0:
            out[p] = grid[labels[p]] != EMPTY
            if labels.get(d, -1) >= 0:
                out[f"placed{k}"] = grid[labels[p]] == labels[d]
    r = labels.get("relation", -1)
    if r >= 0 and a >= 0 and b >= 0:
        out["relation"] = any(grid[x] == a and grid[y] == b and relation(x, y) == r
                              for x, y in itertools.permutations(range(CELLS), 2))
    return out, scene(grid) in allowed_scenes(labels)


def prompt_kind(labels: dict[str, int]) -> str:
    """Which kind of captioned-MNIST prompt the labels belong to: the kinds differ in difficulty
    (one digit in its cell is far easier than two bound to theirs), so scores are also read apart."""
    if labels.get("digit2", -1) < 0:
        return "one digit"
    return "two digits in named cells" if labels.get("pos2", -1) >= 0 else "two digits in a relation"


def judge_labels(pred: dict[str, int], labels: dict[str, int]) -> tuple[dict[str, bool], bool]:
    """One verdict per mentioned label (value >= 0) that the probe has a head for; all-correct = all of them."""
    out = {k: int(pred[k]) == int(v) for k, v in labels.items() if v >= 0 and k in pred}
    return out, all(out.values())


def score_predictions(predictions: dict[str, torch.Tensor], prompts: list[Prompt], scheme: str = "labels") -> dict:
    """Aggregate verdicts: per-attribute accuracy over the prompts that mention it, and the all-correct rate
    (for the "cells" scheme also per kind of prompt, `all_correct_by_kind`).

    predictions: {head: LongTensor (N,)} (as `Probe.predict` returns), row i judged against prompts[i].
    """
    n = len(prompts)
    if any(len(v) != n for v in predictions.values()):
        raise ValueError(f"{n} prompts but predictions for {[len(v) for v in predictions.values()]} images")
    rows = {k: v.tolist() for k, v in predictions.items()}
    right, seen, all_right = Counter(), Counter(), 0
    kind_n, kind_right = Counter(), Counter()
    for i, prompt in enumerate(prompts):
        if scheme == "cells":
            verdicts, ok = judge_cells([rows[f"cell{c}"][i] for c in range(CELLS)], prompt.labels)
            kind = prompt_kind(prompt.labels)
            kind_n[kind] += 1
            kind_right[kind] += bool(ok)
        else:
            verdicts, ok = judge_labels({k: v[i] for k, v in rows.items()}, prompt.labels)
        for name, good in verdicts.items():
            seen[name] += 1
            right[name] += bool(good)
        all_right += bool(ok)
    out = {
        "n": n,
        "all_correct": all_right / n if n else float("nan"),
        "per_attribute": {k: {"accuracy": right[k] / seen[k], "count": seen[k]} for k in sorted(seen)},
    }
    if kind_n:  # "cells": all-correct per kind of prompt (see prompt_kind)
        out["all_correct_by_kind"] = {k: {"all_correct": kind_right[k] / kind_n[k], "count": kind_n[k]}
                                      for k in sorted(kind_n)}
    return out


def probe_scores(probe: Probe, images: torch.Tensor, prompts: list[Prompt], batch_size: int = 256) -> dict:
    """Score images (NCHW, [-1, 1]) made from `prompts`: per-attribute accuracy, all-correct rate, counts."""
    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
    out = score_predictions(probe.predict(images, batch_size), prompts, probe.config.scheme)
    out["probe"] = probe_identity(probe)
    return out


def probe_identity(probe: Probe) -> dict:
    return {"dataset": probe.config.dataset, "version": probe.config.version,
            "sha256": getattr(probe, "weights_sha256", None)}


# ---------------------------------------------------------------------------------------------
# Real data
# ---------------------------------------------------------------------------------------------

def real_arrays(dataset, n: int | None = None, progress: bool = True) -> tuple[torch.Tensor, list[dict[str, int]]]:
    """The first n items of a dataset as uint8 NCHW images and their full label dicts."""
    n = len(dataset) if n is None else min(int(n), len(dataset))
    render = getattr(dataset, "render", None)  # toy faces: skip the float round trip
    images = torch.empty(n, dataset.channels, dataset.resolution, dataset.resolution, dtype=torch.uint8)
    labels = []
    for i in tqdm(range(n), desc=f"{dataset.name} {getattr(dataset, 'split', '')}", unit="img",
                  disable=not progress, leave=False):
        if render is not None:
            images[i] = torch.from_numpy(render(i)).permute(2, 0, 1)
        else:
            images[i] = ((dataset.image(i).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        labels.append(dataset.labels(i))
    return images, labels


def to_float(images_u8: torch.Tensor) -> torch.Tensor:
    return images_u8.float() / 127.5 - 1.0


def label_prompts(labels: list[dict[str, int]]) -> list[Prompt]:
    """Prompts that state every known label of real images (text unused by the probes)."""
    return [Prompt("", dict(l)) for l in labels]


def probe_real_accuracy(probe: Probe, dataset, n: int | None = None, batch_size: int = 256,
                        progress: bool = True) -> dict:
    """Ceiling: the probe's scores on real images of `dataset` judged against all their labels."""
    images, labels = real_arrays(dataset, n, progress)
    return probe_scores(probe, to_float(images), label_prompts(labels), batch_size)


# ---------------------------------------------------------------------------------------------
# Training (plain torch; probes are trained once and shipped)
# ---------------------------------------------------------------------------------------------

PROBE_SETUPS: dict[str, dict] = {  # dataset -> ProbeConfig settings (heads from the label spec)
    # v2: a fourth stage, a thin first one (memory-bound at 32 px) and a global pool (keeps the dual
    # encoder's head small); trained longer with shifts and flips. v1 ([32, 64, 128], grid 2): 91.4 %.
    "fashion-mnist": dict(scheme="labels", resolution=32, channels=1, widths=[16, 64, 128, 192], grid=1, version="2"),
    "toy-faces": dict(scheme="labels", resolution=64, channels=3, widths=[16, 32, 64, 96, 128], grid=2),
    # 48 px: four halvings end on a 3x3 map whose cells are exactly the layout's cells.
    "captioned-mnist": dict(scheme="cells", resolution=48, channels=1, widths=[24, 48, 96, 128], grid=3),
}


def probe_config_for(dataset_name: str, dataset) -> ProbeConfig:
    setup = dict(PROBE_SETUPS[dataset_name])
    if setup["scheme"] == "cells":
        heads = {f"cell{c}": 11 for c in range(CELLS)}
    else:
        heads = {name: len(classes) for name, classes in dataset.label_spec.classes.items()}
    return ProbeConfig(dataset=dataset_name, heads=heads, **setup)


def probe_targets(config: ProbeConfig, labels: list[dict[str, int]]) -> dict[str, torch.Tensor]:
    """{head: LongTensor (N,)} training targets; -1 marks unknown (ignored by the loss)."""
    if config.scheme == "cells":
        grid = torch.tensor([cell_targets(l) for l in labels], dtype=torch.long)
        return {f"cell{c}": grid[:, c] for c in range(CELLS)}
    return {k: torch.tensor([l.get(k, -1) for l in labels], dtype=torch.long) for k in config.heads}


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by up to +-max_shift pixels (edge-replicated), a light augmentation."""
    if max_shift <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, mode="replicate")
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, n), generator=generator)
    rows = (torch.arange(h)[None] + dy[:, None])[:, None, :, None].expand(-1, x.shape[1], -1, w + 2 * max_shift)
    out = padded.gather(2, rows)
    cols = (torch.arange(w)[None] + dx[:, None])[:, None, None, :].expand(-1, x.shape[1], h, -1)
    return out.gather(3, cols)


def train_classifier(model: nn.Module, images_u8: torch.Tensor, targets: dict[str, torch.Tensor], steps: int,
                     batch_size: int = 128, lr: float = 3e-3, weight_decay: float = 5e-4, seed: int = 0,
                     max_shift: int = 0, flip: bool = False, desc: str = "probe") -> list[float]:
    """Multi-head cross-entropy with AdamW and a one-cycle schedule; returns the loss per step."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    losses = []
    with tqdm(range(steps), desc=desc, unit="step", leave=False) as bar:
        for step in bar:
            idx = torch.randint(len(images_u8), (batch_size,), generator=g)
            x = to_float(images_u8[idx])
            x = random_shift(x, max_shift, g)
            if flip:
                mirror = torch.rand(len(x), generator=g) < 0.5
                x = torch.where(mirror[:, None, None, None], x.flip(-1), x)
            logits = model(x)
            loss = sum(F.cross_entropy(logits[k], t[idx], ignore_index=-1) for k, t in targets.items())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            if step % 20 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    model.eval()
    return losses


# ---------------------------------------------------------------------------------------------
# Versioned, checksummed save / load (probes and dual encoders)
# ---------------------------------------------------------------------------------------------

def save_versioned(model: PretrainedModel, folder: str | os.PathLike, extra: dict | None = None) -> str:
    """save_pretrained, then record the weights' sha256 in config.json; returns the sha256."""
    folder = Path(folder)
    model.save_pretrained(folder, extra=extra)
    digest = sha256_file(folder / WEIGHTS_NAME)
    meta = json.loads((folder / CONFIG_NAME).read_text())
    meta["weights_sha256"] = digest
    atomic_write_json(folder / CONFIG_NAME, meta)
    for name in (CONFIG_NAME, WEIGHTS_NAME):  # shipped package data: readable by everyone
        os.chmod(folder / name, 0o644)
    return digest


def load_versioned(cls: type[PretrainedModel], folder: str | os.PathLike) -> PretrainedModel:
    """from_pretrained after checking the weights against the sha256 recorded in config.json."""
    folder = Path(folder)
    meta = cls.read_config(folder)
    want = meta.get("weights_sha256")
    if want is not None and (folder / WEIGHTS_NAME).exists():
        got = sha256_file(folder / WEIGHTS_NAME)
        if got != want:
            raise CheckpointError(f"{folder / WEIGHTS_NAME} has sha256 {got[:12]}..., "
                                  f"config.json expects {want[:12]}...")
    model = cls.from_pretrained(folder)
    model.weights_sha256 = want
    model.meta = meta
    return model


def shipped_dir(kind: str, dataset_name: str) -> Path:
    return WEIGHTS_ROOT / kind / dataset_name


def load_probe(dataset_name: str, folder: str | os.PathLike | None = None) -> Probe:
    """The shipped probe of a built-in dataset (or one saved in `folder`)."""
    folder = Path(folder) if folder is not None else shipped_dir("probes", dataset_name)
    if not (folder / CONFIG_NAME).exists():
        raise FileNotFoundError(f"no probe for {dataset_name!r} at {folder}; train one with benchmarks/train_probes.py")
    return load_versioned(Probe, folder)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["Probe", "ProbeConfig", "load_probe", "probe_scores", "probe_real_accuracy", "score_predictions",
           "judge_cells", "judge_labels", "allowed_scenes", "cell_targets", "real_arrays", "EMPTY", "PROBE_VERSION"]
