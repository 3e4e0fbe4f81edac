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


# Prompts per shipped model: training phrasings, then a held-out paraphrase (words no training caption uses).
DEMO_PROMPTS = {
    "toy-faces": ["a middle-aged woman wearing a hat", "a smiling young man with glasses",
                  "an elderly gentleman sporting spectacles"],
    "fashion-mnist": ["a sneaker", "a pair of trousers", "a dress", "a handbag", "a pic of a running shoe"],
}


def generated(out: Path, name: str, seed: int = 0, n: int = 4) -> list[GalleryItem]:
    """Images of a shipped model for its demo prompts, then one upscaled x4 and one stylised."""
    import time

    from wordcanvas.pipeline import TextToImagePipeline

    pipe = TextToImagePipeline.from_pretrained(name)
    items = []
    for k, prompt in enumerate(DEMO_PROMPTS[name]):
        start = time.perf_counter()
        images = pipe(prompt, n=n, seed=seed)
        ms = (time.perf_counter() - start) * 1000
        for j, image in enumerate(pipe.to_pil(images)):
            file = f"{name}-{k}-{j}.png"
            image.save(out / file)
            items.append(GalleryItem(file, prompt, f"seed {seed + j}, {pipe.resolution}px" + (f", {ms:.0f} ms for {n}" if j == 0 else "")))
    prompt = DEMO_PROMPTS[name][0]
    for file, note, kwargs in ((f"{name}-upscaled.png", "upscaled x4 (shipped fast network)", {"upscale": 4}),
                               (f"{name}-styled.png", "stylised (AdaIN, built-in style 'strokes'), then x4",
                                {"style": "strokes", "upscale": 4})):
        pipe.to_pil(pipe(prompt, n=1, seed=seed, **kwargs))[0].save(out / file)
        items.append(GalleryItem(file, prompt, f"seed {seed}, {note}"))
    return items


def run_demo(out: str | os.PathLike = "demo", seed: int = 0) -> Path:
    from wordcanvas.models.defaults import SHIPPED_MODELS, WEIGHTS_DIR

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sections: dict[str, list[GalleryItem]] = {}
    for name, folder in SHIPPED_MODELS.items():
        if (WEIGHTS_DIR / folder).is_dir():
            sections[f"Generated: {name} (shipped model)"] = generated(out, name, seed)
        else:
            print(f"no shipped {name} model in this version; skipping its generations")
    sections["Datasets"] = dataset_previews(out, seed)
    return write_gallery(out, "wordcanvas demo", sections)
