"""The demo behind `make demo`: bundled models where they exist, dataset previews always."""
from __future__ import annotations

import os
from pathlib import Path

from wordcanvas.gallery import GalleryItem, write_gallery

PREVIEW_DATASETS = ("toy-faces", "fashion-mnist", "captioned-mnist")


def dataset_previews(out: Path, seed: int = 0) -> list[GalleryItem]:
    from wordcanvas.data import load_dataset
    from wordcanvas.data.preview import preview_grid

    items = []
    for name in PREVIEW_DATASETS:
        try:
            dataset = load_dataset(name, split="train", seed=seed)
        except FileNotFoundError as e:  # e.g. Fashion-MNIST not installed
            print(f"skipping {name}: {e}")
            continue
        grid = preview_grid(dataset, n=16, cols=4, seed=seed, title=f"{name}: real training samples")
        file = f"preview-{name}.png"
        grid.save(out / file)
        items.append(GalleryItem(file, f"{name}: real samples with their training captions",
                                 f"{len(dataset)} samples at {dataset.resolution}px"))
    return items


def run_demo(out: str | os.PathLike = "demo", seed: int = 0) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sections: dict[str, list[GalleryItem]] = {}
    sections["Datasets"] = dataset_previews(out, seed)
    return write_gallery(out, "wordcanvas demo", sections)
