"""Run records: JSONL log, loss/metric plots (matplotlib, Agg) and captioned sample grids."""
from __future__ import annotations

import json
import math
import os
import textwrap
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from wordcanvas.utils.io import make_grid, tensor_to_pil


class JsonlLog:
    """Appends one JSON object per line; a no-op when disabled (non-zero ranks)."""

    def __init__(self, path: str | os.PathLike, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")


def read_log(path: str | os.PathLike) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
    return records


def _smooth(values: list[float], beta: float = 0.9) -> list[float]:
    out, avg = [], None
    for v in values:
        avg = v if avg is None else beta * avg + (1 - beta) * v
        out.append(avg)
    return out


def plot_log(log_path: str | os.PathLike, out_path: str | os.PathLike, kind: str = "train",
             skip: tuple[str, ...] = ("step", "kind", "time", "kimg", "images_per_s", "epoch")) -> bool:
    """One panel per numeric key of the `kind` records against step; False when there is nothing to plot."""
    records = [r for r in read_log(log_path) if r.get("kind") == kind]
    keys = sorted({k for r in records for k, v in r.items()
                   if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool)})
    if not keys:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.6 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        pts = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
        if not pts:
            continue
        steps, values = zip(*pts)
        if kind == "train" and len(values) > 5:
            ax.plot(steps, values, alpha=0.25, lw=0.8)
            ax.plot(steps, _smooth(list(values)), lw=1.4)
        else:
            ax.plot(steps, values, marker="o", lw=1.4)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=90)
    plt.close(fig)
    return True


def png_info(meta: dict) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    for k, v in meta.items():
        info.add_text(str(k), v if isinstance(v, str) else json.dumps(v))
    return info


def captioned_grid(images: torch.Tensor, captions: list[str], per_row: int, label_width: int = 220,
                   scale: int | None = None) -> Image.Image:
    """Rows of `per_row` images, each row headed by its caption (images NCHW in [-1, 1])."""
    n, c, h, w = images.shape
    scale = scale or max(1, 64 // h)
    grid = tensor_to_pil(make_grid(images, nrow=per_row, pad=2, value=1.0)).convert("RGB")
    if scale > 1:
        grid = grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)
    canvas = Image.new("RGB", (label_width + grid.width, grid.height), "white")
    canvas.paste(grid, (label_width, 0))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    row_h = (h + 2) * scale
    per_line, max_lines = max(8, (label_width - 8) // 6), max(1, (row_h - 4) // 12)
    for r, caption in enumerate(captions):
        lines = textwrap.wrap(caption, per_line) or [""]
        if len(lines) > max_lines:
            lines = lines[:max_lines]
            lines[-1] = lines[-1][: per_line - 3] + "..."
        top = 2 * scale + r * row_h + max(0, (row_h - 12 * len(lines)) // 2)
        for k, line in enumerate(lines):
            draw.text((4, top + 12 * k), line, fill="black", font=font)
    return canvas


def save_sample_grid(images: torch.Tensor, captions: list[str], per_row: int, path: str | os.PathLike,
                     meta: dict | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = captioned_grid(images, captions, per_row)
    tmp = path.with_name(f".{path.name}.tmp")
    img.save(tmp, format="PNG", pnginfo=png_info({"prompts": captions, **(meta or {})}))
    os.replace(tmp, path)
    return path
