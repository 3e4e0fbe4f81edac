"""Checkpoints that are either complete and verified, or refused.

Layout of run_dir/checkpoints/:
    step-0001000/            one folder per checkpoint, written atomically
        generator/ ...       each model through save_pretrained (config.json + model.safetensors)
        training_state.pt    optimizers, step, images seen, RNG states (tensors and plain containers
                             only, so it loads with torch.load(weights_only=True))
        manifest.json        sha256 of every other file, the step, and how to rebuild the model
    best/                    same layout, the best evaluation so far
    latest                   text file naming the newest step folder (replaced atomically)

A checkpoint is assembled in a hidden temporary folder, fsynced, then renamed into place, so a
crash leaves either the previous state or the complete new one. Loading re-hashes every file.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import re
import shutil
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from wordcanvas.assets import sha256_file
from wordcanvas.models.base import CONFIG_NAME, WEIGHTS_NAME, CheckpointError, config_to_dict, load_weights
from wordcanvas.utils.io import atomic_write_bytes, atomic_write_json

MANIFEST = "manifest.json"
STATE = "training_state.pt"
LATEST = "latest"
BEST = "best"
STEP_RE = re.compile(r"^step-(\d+)$")


def step_name(step: int) -> str:
    return f"step-{step:07d}"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_module(module: nn.Module, folder: Path) -> None:
    """save_pretrained when the module has it; otherwise its state dict as safetensors."""
    if hasattr(module, "save_pretrained"):
        module.save_pretrained(folder)
        return
    from safetensors.torch import save

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    atomic_write_bytes(folder / WEIGHTS_NAME, save(tensors))
    atomic_write_json(folder / CONFIG_NAME, {"class": type(module).__name__})


def load_module(module: nn.Module, folder: Path) -> None:
    """Load weights written by save_module into an existing module. A model saved with its config
    must have been built with the same one: a captioner whose vocabulary changed with the dataset
    has the same shapes but other token ids, and is refused by name rather than loaded wrongly."""
    folder = Path(folder)
    config_file = folder / CONFIG_NAME
    if hasattr(module, "save_pretrained") and config_file.exists():
        saved = json.loads(config_file.read_text()).get("config") or {}
        mine = json.loads(json.dumps(config_to_dict(module.config)))  # tuples read back as lists
        if any(saved[k] != mine[k] for k in set(saved) & set(mine)):  # fields added since keep their defaults
            raise CheckpointError(f"{folder} holds a {folder.name} built with other settings "
                                  f"({config_difference(saved, mine)}); resume with the settings and data it was trained with")
    module.load_state_dict(load_weights(folder / WEIGHTS_NAME, module), strict=True)


def config_difference(saved: dict, mine: dict) -> str:
    """The fields two configs disagree on, briefly (a changed vocabulary by its words, not in full)."""
    parts = []
    for key in sorted(set(saved) & set(mine)):
        a, b = saved[key], mine[key]
        if a == b:
            continue
        if isinstance(a, list) and isinstance(b, list) and len(a) + len(b) > 8:
            gone, new = [w for w in a if w not in b][:3], [w for w in b if w not in a][:3]
            detail = f"{len(a)} -> {len(b)} entries"
            detail += f", without {gone}" if gone else ""
            detail += f", with {new}" if new else ""
            parts.append(f"{key}: {detail if gone or new else detail + ', reordered'}")
        else:
            parts.append(f"{key}: {a!r} -> {b!r}")
    return "; ".join(parts)


def write_folder_atomically(dest: Path, fill: Callable[[Path], None]) -> None:
    """Build dest in a temporary sibling folder, fsync everything, then swap it into place."""
    tmp = dest.parent / f".tmp-{dest.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        fill(tmp)
        for sub, _, _ in os.walk(tmp):
            _fsync_dir(Path(sub))
        old = None
        if dest.exists():  # e.g. rewriting a step after falling back from a corrupt checkpoint
            old = dest.parent / f".old-{dest.name}-{os.getpid()}"
            os.replace(dest, old)
        try:
            os.replace(tmp, dest)
        except OSError:
            if old is not None:  # put the previous version back rather than leave nothing
                os.replace(old, dest)
            raise
        _fsync_dir(dest.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_checkpoint(dest: Path, modules: dict[str, nn.Module], state: dict, meta: dict) -> Path:
    """Write one checkpoint folder atomically: modules, training state and a checksummed manifest."""
    dest = Path(dest)

    def fill(tmp: Path) -> None:
        for name, module in modules.items():
            save_module(module, tmp / name)
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write_bytes(tmp / STATE, buffer.getvalue())
        files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        manifest = {"format": 1, **meta, "modules": sorted(modules),
                    "files": {f: sha256_file(tmp / f) for f in files}}
        atomic_write_json(tmp / MANIFEST, manifest)

    write_folder_atomically(dest, fill)
    return dest


def save_checkpoint(root: Path, step: int, modules: dict[str, nn.Module], state: dict, meta: dict,
                    keep_last: int = 3, keep_steps: tuple[int, ...] = ()) -> Path:
    """checkpoints/step-XXXXXXX, then the `latest` pointer, then pruning to the newest keep_last
    (checkpoints of `keep_steps` are never pruned)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    folder = write_checkpoint(root / step_name(step), modules, state, {**meta, "step": step})
    atomic_write_bytes(root / LATEST, (folder.name + "\n").encode())
    kept = {step_name(s) for s in keep_steps}
    for old in step_folders(root)[keep_last:]:
        if old.name not in kept:
            shutil.rmtree(old, ignore_errors=True)
    return folder


def clean_temporaries(root: Path) -> None:
    """Remove what writers killed mid-write left in root: temporary folders and files (never visible
    as checkpoints). A folder set aside for a rewrite (.old-NAME-PID) goes back in place when its
    replacement never arrived."""
    root = Path(root)
    if not root.is_dir():
        return
    for path in root.iterdir():
        name = path.name
        if name.startswith(".old-") and path.is_dir():
            original = root / name[len(".old-"):].rsplit("-", 1)[0]
            if not original.exists():
                os.replace(path, original)
                continue
        if name.startswith((".tmp-", ".old-")) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif name.startswith(".") and name.endswith(".tmp") and path.is_file():
            path.unlink(missing_ok=True)


def step_folders(root: Path) -> list[Path]:
    """Step checkpoint folders, newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := STEP_RE.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def verify_checkpoint(folder: Path) -> dict:
    """The manifest of a complete, uncorrupted checkpoint; CheckpointError saying what is wrong otherwise."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.exists():
        raise CheckpointError(f"checkpoint {folder} has no {MANIFEST}: it is incomplete; refusing to load it")
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint {folder}: {MANIFEST} is unreadable ({e}); refusing to load it") from None
    for rel, expected in files.items():
        file = folder / rel
        if not file.is_file():
            raise CheckpointError(f"checkpoint {folder} is incomplete: {rel} is missing; refusing to load it")
        actual = sha256_file(file)
        if actual != expected:
            raise CheckpointError(
                f"checkpoint {folder} is corrupt: {rel} has sha256 {actual[:12]}..., the manifest says "
                f"{expected[:12]}... (torn write or damaged file); refusing to load it")
    return manifest


def load_training_state(folder: Path) -> dict:
    """The training state, unpickled with weights_only=True: tensors and plain containers only, so a
    crafted file cannot run code; anything else is refused with CheckpointError."""
    path = Path(folder) / STATE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} holds something other than tensors and plain containers, or is damaged "
                              f"({first}); refusing to load it") from None


def latest_good_checkpoint(root: Path, warn: Callable[[str], None] | None = None) -> tuple[Path, dict] | None:
    """The newest checkpoint that verifies; each refused one is reported through warn and skipped."""
    root = Path(root)
    warn = warn or (lambda msg: warnings.warn(msg, stacklevel=2))
    candidates = step_folders(root)
    pointer = root / LATEST
    if pointer.exists():
        named = root / pointer.read_text().strip()
        if named in candidates:  # the pointer first, then every other folder newest first
            candidates = [named] + [p for p in candidates if p != named]
    for folder in candidates:
        try:
            return folder, verify_checkpoint(folder)
        except CheckpointError as e:
            warn(f"{e}; falling back to the previous checkpoint")
    return None


# --- RNG state as tensors and plain containers (loadable with weights_only=True) ---------------

def rng_state() -> dict:
    import random

    import numpy as np

    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype("int64")), "pos": int(pos), "has_gauss": int(has_gauss),
                  "gauss": float(gauss)},
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype("uint32"), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["internal"].tolist()), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
