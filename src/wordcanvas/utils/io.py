"""File edges: atomic writes and image conversion (library images are float NCHW in [-1, 1])."""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image


def atomic_write_bytes(path: str | os.PathLike, data: bytes, fsync: bool = True) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: never half-written.

    The temporary file is opened like any new file (mode 0o666 less the umask), not with mkstemp's
    0o600, so the result is as readable as a plain write would make it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """NCHW or CHW float in [-1, 1] -> NHWC or HWC uint8 (grey stays 1 channel)."""
    x = images.detach().float().cpu().clamp(-1, 1)
    x = ((x + 1) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).numpy()


def from_uint8(array: np.ndarray) -> torch.Tensor:
    """HWC / NHWC uint8 (or HW grey) -> CHW / NCHW float in [-1, 1]."""
    a = np.asarray(array)
    if a.ndim == 2:
        a = a[..., None]
    t = torch.from_numpy(np.ascontiguousarray(a)).float().movedim(-1, -3)
    return t / 127.5 - 1.0


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    a = to_uint8(image)
    if a.shape[-1] == 1:
        return Image.fromarray(a[..., 0], mode="L")
    return Image.fromarray(a)


def make_grid(images: torch.Tensor, nrow: int = 8, pad: int = 2, value: float = 1.0) -> torch.Tensor:
    """Tile NCHW images into one CHW image."""
    n, c, h, w = images.shape
    ncol = min(nrow, n)
    nrows = (n + ncol - 1) // ncol
    grid = torch.full((c, nrows * (h + pad) + pad, ncol * (w + pad) + pad), value, dtype=images.dtype)
    for i in range(n):
        r, col = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, y : y + h, x : x + w] = images[i]
    return grid
