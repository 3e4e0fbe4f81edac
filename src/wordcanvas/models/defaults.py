"""Text-to-image models shipped inside the package, by name.

    default_model_dir()                 # the toy-faces model folder
    default_model_dir("fashion-mnist")
    resolve_model("toy-faces")          # a shipped name or any run / model folder
"""
from __future__ import annotations

import os
from pathlib import Path

from wordcanvas.assets import AssetMissing

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"

# shipped model name -> folder under wordcanvas/weights/
SHIPPED_MODELS: dict[str, str] = {
    "toy-faces": "t2i-toy-faces",
    "fashion-mnist": "t2i-fashion-mnist",
}
DEFAULT_MODEL = "toy-faces"


def default_model_dir(name: str = DEFAULT_MODEL) -> Path:
    """The package folder of a shipped text-to-image model; AssetMissing when it is not installed."""
    if name not in SHIPPED_MODELS:
        raise ValueError(f"unknown shipped model '{name}': choose from {', '.join(SHIPPED_MODELS)}")
    folder = WEIGHTS_DIR / SHIPPED_MODELS[name]
    if not folder.is_dir():
        raise AssetMissing(
            f"the shipped '{name}' text-to-image model is not installed (expected {folder}); "
            f"train one with `wordcanvas train gan --data {name} --out runs/{name}` and pass "
            f"`--model runs/{name}`")
    return folder


def resolve_model(name_or_path: str | os.PathLike | None = None) -> Path:
    """A shipped model name (None: the default one), or a run / model / checkpoint folder."""
    if name_or_path is None or str(name_or_path) in SHIPPED_MODELS:
        return default_model_dir(DEFAULT_MODEL if name_or_path is None else str(name_or_path))
    path = Path(name_or_path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"model '{name_or_path}' is neither a shipped model ({', '.join(SHIPPED_MODELS)}) "
                                "nor an existing folder")
    return path
