"""What every dataset yields: an image, a caption sampled per access, and the labels it knows."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.utils.data import Dataset


@dataclass
class LabelSpec:
    """Names of each label and of its classes, e.g. {"class": ["T-shirt/top", ...]}.

    A label value of -1 means 'unknown / not applicable' for that sample.
    """

    classes: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Prompt:
    """An evaluation prompt with the labels it implies (only the attributes it mentions)."""

    text: str
    labels: dict[str, int]


class CaptionedDataset(Dataset):
    """Base class. Items are dicts: image (C,H,W float in [-1,1]), caption (str), labels (dict[str,int]).

    Subclasses implement __len__, `image(i)`, `captions(i)` and `labels(i)`; captions are
    sampled per access with a generator seeded from (seed, epoch, index), so loading is
    deterministic for a given epoch.
    """

    label_spec: LabelSpec = LabelSpec()
    channels: int = 3
    resolution: int = 64
    name: str = "dataset"

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def image(self, i: int) -> torch.Tensor:
        raise NotImplementedError

    def captions(self, i: int) -> list[str]:
        raise NotImplementedError

    def labels(self, i: int) -> dict[str, int]:
        return {}

    def contrast_captions(self, i: int) -> list[str]:
        """Captions wrong about item i in one fact (digits swapped, another digit, another place...):
        hard negatives for image-text matching. None by default: only a dataset that writes its own
        captions from labels knows what a near miss is."""
        return []

    def __getitem__(self, i: int) -> dict:
        return self.item(i)

    def item(self, i: int, near_miss: int = 0) -> dict:
        """Image, one drawn caption and labels of item i; with near_miss = k >= 1, also near-miss
        captions as "contrast" (what training with hard negatives asks the loader for): one drawn
        caption for k = 1, a list of k distinct ones for k > 1 (repeating only when the item has fewer)."""
        caps = self.captions(i)
        g = torch.Generator().manual_seed(hash((self.seed, self.epoch, int(i))) & 0x7FFFFFFF)
        caption = caps[int(torch.randint(len(caps), (1,), generator=g))]
        drawn = {"image": self.image(i), "caption": caption, "labels": self.labels(i)}
        contrasts = self.contrast_captions(i) if near_miss else []
        if contrasts and near_miss == 1:
            drawn["contrast"] = contrasts[int(torch.randint(len(contrasts), (1,), generator=g))]
        elif contrasts:
            picks = torch.cat([torch.randperm(len(contrasts), generator=g) for _ in range(-(-near_miss // len(contrasts)))])
            drawn["contrast"] = [contrasts[int(k)] for k in picks[:near_miss]]
        return drawn

    def class_phrases(self, label: str) -> list[list[str]]:
        """Per class of `label`, the phrases that name it in captions (for the class-conditioned
        baseline's prompt lookup); by default the class name and its '/'-separated alternatives."""
        return [[a.strip().lower() for a in name.split("/") if a.strip()] for name in self.label_spec.classes[label]]

    def eval_prompts(self, n: int, seed: int = 0, heldout: bool = False) -> list[Prompt]:
        """Prompts with the labels they imply, for probe scoring of generated images.

        heldout=True uses paraphrase templates that training never sees (where the dataset has them).
        """
        raise NotImplementedError(f"{type(self).__name__} has no evaluation prompts")
