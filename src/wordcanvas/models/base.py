"""save_pretrained / from_pretrained for every model: config.json + model.safetensors.

A model's constructor takes one config dataclass. config.json records the class name, the
config and the package version, so a folder for another model is refused with a reason.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from wordcanvas.utils.io import atomic_write_bytes, atomic_write_json

T = TypeVar("T", bound="PretrainedModel")

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class CheckpointError(ValueError):
    """A checkpoint folder or file that cannot be loaded; the message says why."""


def config_to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


def config_from_dict(cls: type, data: dict) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise CheckpointError(f"config has settings unknown to {cls.__name__}: {unknown}")
    return cls(**data)


class PretrainedModel(torch.nn.Module):
    config_class: ClassVar[type]
    model_type: ClassVar[str]

    def __init__(self, config):
        super().__init__()
        self.config = config

    def save_pretrained(self, folder: str | os.PathLike, state_dict: dict | None = None, extra: dict | None = None) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        sd = state_dict if state_dict is not None else self.state_dict()
        tensors = {k: v.detach().contiguous().cpu() for k, v in sd.items()}
        from safetensors.torch import save

        atomic_write_bytes(folder / WEIGHTS_NAME, save(tensors, metadata={"model_type": self.model_type}))
        from wordcanvas import __version__

        meta = {"model_type": self.model_type, "class": type(self).__name__, "wordcanvas_version": __version__,
                "config": config_to_dict(self.config), **(extra or {})}
        atomic_write_json(folder / CONFIG_NAME, meta)
        return folder

    @classmethod
    def read_config(cls, folder: str | os.PathLike) -> dict:
        path = Path(folder) / CONFIG_NAME
        if not path.exists():
            raise CheckpointError(f"{folder} is not a wordcanvas model folder: {CONFIG_NAME} is missing")
        try:
            meta = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{path} is not valid JSON ({e})") from None
        if meta.get("model_type") != cls.model_type:
            raise CheckpointError(
                f"{folder} holds a '{meta.get('model_type')}' model, not a '{cls.model_type}' model")
        return meta

    @classmethod
    def from_pretrained(cls: type[T], folder: str | os.PathLike, map_location: str = "cpu") -> T:
        meta = cls.read_config(folder)
        model = cls(config_from_dict(cls.config_class, meta["config"]))
        model.load_state_dict(load_weights(Path(folder) / WEIGHTS_NAME, model), strict=True)
        return model.to(map_location).eval()


def load_weights(path: Path, model: torch.nn.Module | None = None) -> dict[str, torch.Tensor]:
    """Read safetensors weights; refuse missing, corrupt or mismatched files with a reason."""
    if not path.exists():
        raise CheckpointError(f"weights file {path} is missing")
    try:
        sd = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file (truncated or corrupt?): {e}") from None
    if model is not None:
        expected = model.state_dict()
        missing = sorted(set(expected) - set(sd))
        unexpected = sorted(set(sd) - set(expected))
        if missing or unexpected:
            raise CheckpointError(
                f"{path} does not match {type(model).__name__}: missing {missing[:5]}, unexpected {unexpected[:5]}")
        for k, v in expected.items():
            if v.shape != sd[k].shape:
                raise CheckpointError(f"{path}: '{k}' has shape {tuple(sd[k].shape)}, model expects {tuple(v.shape)}")
    return sd
