"""A small static HTML gallery: one image per card with its caption underneath."""
from __future__ import annotations

import html
import os
from dataclasses import dataclass
from pathlib import Path

from wordcanvas.utils.io import atomic_write_bytes


@dataclass
class GalleryItem:
    image: str        # path relative to the gallery's folder
    caption: str      # shown under the image
    note: str = ""    # smaller second line (seed, model, timing)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; background: #fafafa; color: #222; }}
h1 {{ font-size: 1.4rem; }} h2 {{ font-size: 1.1rem; margin-top: 2rem; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 1rem; }}
figure {{ margin: 0; width: 260px; background: #fff; padding: .5rem; border-radius: 6px; box-shadow: 0 1px 3px #0002; }}
figure img {{ width: 256px; image-rendering: pixelated; display: block; }}
figcaption {{ font-size: .9rem; margin-top: .4rem; }} .note {{ color: #777; font-size: .8rem; }}
</style></head><body><h1>{title}</h1>
{sections}
</body></html>
"""


def write_gallery(folder: str | os.PathLike, title: str, sections: dict[str, list[GalleryItem]]) -> Path:
    """Write folder/index.html; images must already be inside folder."""
    parts = []
    for heading, items in sections.items():
        cards = "\n".join(
            f'<figure><img src="{html.escape(it.image)}" alt="{html.escape(it.caption)}">'
            f"<figcaption>{html.escape(it.caption)}"
            + (f'<div class="note">{html.escape(it.note)}</div>' if it.note else "")
            + "</figcaption></figure>"
            for it in items
        )
        parts.append(f"<h2>{html.escape(heading)}</h2>\n<div class=\"grid\">\n{cards}\n</div>")
    path = Path(folder) / "index.html"
    atomic_write_bytes(path, PAGE.format(title=html.escape(title), sections="\n".join(parts)).encode())
    return path
