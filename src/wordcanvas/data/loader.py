"""A DataLoader for captioned datasets: images stacked, captions a list, labels LongTensors."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset


def collate(items: list[dict]) -> dict:
    """Batch items {image, caption, labels[, contrast]}: images (B,C,H,W), captions list[str], labels
    {name: (B,)}, and contrast (hard-negative captions, list[str]: one per item, or k per item in item
    order when each item brings a list of k) when every item has them.

    A label missing from some items (mixed datasets) is -1 there, the 'unknown' value.
    """
    names = sorted({k for item in items for k in item["labels"]})
    batch = {
        "image": torch.stack([item["image"] for item in items]),
        "caption": [item["caption"] for item in items],
        "labels": {k: torch.tensor([item["labels"].get(k, -1) for item in items], dtype=torch.long) for k in names},
    }
    if items and all("contrast" in item for item in items):  # hard-negative captions, where every item has one
        batch["contrast"] = [c for item in items for c in
                             (item["contrast"] if isinstance(item["contrast"], list) else [item["contrast"]])]
    return batch


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool = True, seed: int = 0, num_workers: int = 0,
                drop_last: bool = True) -> DataLoader:
    """Deterministic order for a given seed: shuffling draws from its own seeded generator."""
    if len(dataset) == 0:
        raise ValueError("cannot make a loader for an empty dataset")
    if drop_last and len(dataset) < batch_size:
        drop_last = False  # otherwise a small dataset would yield no batch at all
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, collate_fn=collate,
        num_workers=num_workers, persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )
