"""A contact sheet of dataset samples with their captions underneath, to check data by eye."""
from __future__ import annotations

import torch
from PIL import Image, ImageDraw, ImageFont

from wordcanvas.data.base import CaptionedDataset
from wordcanvas.utils.io import tensor_to_pil

MAX_LINES = 5


def wrap_text(text: str, font: ImageFont.ImageFont, width: int, max_lines: int = MAX_LINES) -> list[str]:
    """Greedy word wrap by rendered width; an over-long last line ends with an ellipsis."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(lines[-1] + " " + word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        while lines[-1] and font.getlength(lines[-1] + "…") > width:
            lines[-1] = lines[-1][:-1]
        lines[-1] += "…"
    return lines


def render_grid(images: list[torch.Tensor], captions: list[str], cols: int = 8, tile: int | None = None,
                title: str | None = None, font_size: int = 12) -> Image.Image:
    """CHW [-1,1] images (grey or RGB) in a grid, each with its wrapped caption beneath."""
    font = ImageFont.load_default(size=font_size)
    line_h = font_size + 3
    side = images[0].shape[-1]
    tile = tile or side * max(1, -(-128 // side))  # integer upscale to at least 128 px: crisp pixels
    pad = 8
    wrapped = [wrap_text(c, font, tile) for c in captions]
    text_h = line_h * max(len(w) for w in wrapped) + 4
    cols = max(1, min(cols, len(images)))
    rows = -(-len(images) // cols)
    head = line_h + pad if title else 0
    sheet = Image.new("RGB", (pad + cols * (tile + pad), head + pad + rows * (tile + text_h + pad)), "white")
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((pad, pad // 2), title, fill="black", font=font)
    for k, (image, lines) in enumerate(zip(images, wrapped)):
        r, c = divmod(k, cols)
        x, y = pad + c * (tile + pad), head + pad + r * (tile + text_h + pad)
        pil = tensor_to_pil(image).convert("RGB")
        resample = Image.NEAREST if tile % pil.width == 0 else Image.BICUBIC
        sheet.paste(pil.resize((tile, tile), resample), (x, y))
        for j, line in enumerate(lines):
            draw.text((x, y + tile + 2 + j * line_h), line, fill="black", font=font)
    return sheet


def preview_grid(dataset: CaptionedDataset, n: int = 32, cols: int = 8, seed: int = 0,
                 title: str | None = None) -> Image.Image:
    """n random samples of `dataset` (chosen with `seed`) with the caption each one drew."""
    if len(dataset) == 0:
        raise ValueError("dataset is empty: nothing to preview")
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    items = [dataset[i] for i in order]
    return render_grid([it["image"] for it in items], [it["caption"] for it in items], cols=cols, title=title)
