"""ONNX export of a text-to-image generator and a super-resolution network, and their ONNX Runtime runners.

    paths = export_onnx("runs/faces", "runs/faces/final/onnx", upscale=4)   # generator.onnx (+ upscaler), onnx.json
    pipe = TextToImagePipeline.from_pretrained("runs/faces", backend="onnx")

The generator graph takes what `Generator.forward` reads from the text: noise z (B, z_dim), pooled
text (B, D), token states (B, T, D) and their mask (B, T) bool (the class-conditioned baseline:
z and labels (B,) int64); batch and token count are dynamic. The text encoder stays in torch (its
embeddings are cached per prompt anyway). A super-resolution network is exported on its colour
input with dynamic batch, height and width. `export_onnx` checks every exported graph against torch
on a fixed batch and records the largest absolute difference in onnx.json.
"""
from __future__ import annotations

import contextlib
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wordcanvas.text.base import TextEmbedding

OPSET = 17
TOLERANCE = 1e-4  # largest |onnx - torch| accepted for images in [-1, 1] (float32; typically ~1e-6)
MANIFEST = "onnx.json"


class _TextGenerator(nn.Module):
    """Generator.forward(z, TextEmbedding) with the embedding's tensors as separate graph inputs."""

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.generator = generator

    def forward(self, z, pooled, tokens, mask):
        return self.generator(z, TextEmbedding(tokens, mask, pooled))


@contextlib.contextmanager
def _static_feature_sizes():
    """The tracer records `x.shape[-1:]` in layers.standardize as a graph value, which the exporter's
    LayerNormalization cannot take; the feature size is fixed by the weights, so make it a constant."""
    from wordcanvas.models import layers

    original = layers.standardize
    layers.standardize = lambda states: F.layer_norm(states, (int(states.shape[-1]),))
    try:
        yield
    finally:
        layers.standardize = original


def _export(module: nn.Module, args: tuple, path: Path, input_names: list[str], dynamic: dict, opset: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with warnings.catch_warnings(), torch.no_grad(), _static_feature_sizes():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter warns about its own deprecation
        torch.onnx.export(module.eval(), args, str(tmp), dynamo=False, input_names=input_names,
                          output_names=["images"], dynamic_axes=dynamic, opset_version=opset, do_constant_folding=True)
    os.replace(tmp, path)
    return path


def generator_example(t2i, batch: int = 2) -> dict[str, torch.Tensor]:
    """Inputs of the generator graph for `batch` images of fixed prompts and seeds (device: CPU)."""
    g = torch.Generator().manual_seed(1234)
    z = torch.randn(batch, t2i.generator.config.z_dim, generator=g)
    if t2i.family == "dcgan":
        return {"z": z, "labels": torch.arange(batch) % max(1, t2i.generator.config.num_classes)}
    prompts = ["an example prompt", "another, longer example prompt with more words"]
    text = t2i.embed([prompts[i % 2] for i in range(batch)]).to("cpu")
    return {"z": z, "pooled": text.pooled, "tokens": text.tokens, "mask": text.mask}


def export_generator(t2i, path: str | os.PathLike, opset: int = OPSET) -> Path:
    """Write the generator of a TextToImage as an ONNX graph (CPU, float32)."""
    generator = t2i.generator.to("cpu").eval()
    example = generator_example(t2i)
    try:
        if t2i.family == "dcgan":
            return _export(generator, (example["z"], example["labels"]), Path(path), ["z", "labels"],
                           {"z": {0: "batch"}, "labels": {0: "batch"}, "images": {0: "batch"}}, opset)
        return _export(_TextGenerator(generator), tuple(example.values()), Path(path), list(example),
                       {"z": {0: "batch"}, "pooled": {0: "batch"}, "tokens": {0: "batch", 1: "tokens"},
                        "mask": {0: "batch", 1: "tokens"}, "images": {0: "batch"}}, opset)
    finally:
        t2i.generator.to(t2i.device)


def export_sr_network(model: nn.Module, path: str | os.PathLike, opset: int = OPSET) -> Path:
    """Write a super-resolution network (NCHW colour in [-1, 1] -> upscaled) as an ONNX graph."""
    channels = getattr(getattr(model, "config", None), "channels", 3)
    model = model.to("cpu").eval()
    example = torch.rand(1, channels, 24, 20, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return _export(model, (example,), Path(path), ["images_in"],
                   {"images_in": {0: "batch", 2: "height", 3: "width"}, "images": {0: "batch", 2: "out_height",
                                                                                  3: "out_width"}}, opset)


# --------------------------------------------------------------------------- runners

def _session(path: str | os.PathLike, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxGenerator:
    """ONNX Runtime generator: a dict of input tensors -> images (NCHW float tensor)."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        self.path = Path(path)
        self.session = _session(path, threads)
        self.inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        feed = {}
        for name in self.inputs:
            x = inputs[name].detach().cpu()
            feed[name] = x.numpy() if x.dtype in (torch.bool, torch.int64) else x.float().numpy()
        return torch.from_numpy(self.session.run(None, feed)[0])


class OnnxUpscalerNet(nn.Module):
    """Stands in for a torch SR network inside `Upscaler` (same `.scale` and `.config`), running ONNX Runtime."""

    def __init__(self, path: str | os.PathLike, like: nn.Module, threads: int | None = None):
        super().__init__()
        self.path, self.scale, self.config = Path(path), int(like.scale), getattr(like, "config", None)
        self.session = _session(path, threads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {"images_in": np.ascontiguousarray(x.detach().float().cpu().numpy())})[0]
        return torch.from_numpy(out)


# --------------------------------------------------------------------------- whole exports

def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def generator_identity(t2i) -> str:
    from wordcanvas.assets import sha256_file

    folder = Path(t2i.meta.get("path", ".")) / t2i.meta.get("generator", "generator")
    weights = folder / "model.safetensors"
    return sha256_file(weights) if weights.exists() else "unknown"


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
        return True
    except OSError:
        return False


def export_onnx(model: str | os.PathLike | None = None, out: str | os.PathLike | None = None, *, t2i=None,
                upscale: int | None = 4, upscaler: str = "auto", opset: int = OPSET) -> dict:
    """Export a model's generator (and, for upscale 2/4, the network upscaler it would use: bicubic has
    none) to the folder `out` (default: the model folder's onnx/); check each against torch; write onnx.json.
    Returns the manifest (file names relative to its "folder")."""
    from wordcanvas.generate import TextToImage
    from wordcanvas.models.defaults import resolve_model

    if t2i is None:
        t2i = TextToImage.from_pretrained(resolve_model(model))
    out = Path(out) if out is not None else Path(t2i.meta["path"]) / "onnx"
    if not _writable(out):
        raise ValueError(f"cannot write to {out}: pass --out to choose a folder")
    export_generator(t2i, out / "generator.onnx", opset)
    example = generator_example(t2i, batch=3)
    with torch.inference_mode():
        if t2i.family == "dcgan":
            ref = t2i.generator(example["z"].to(t2i.device), example["labels"].to(t2i.device)).cpu()
        else:
            ref = t2i.generator(example["z"].to(t2i.device), TextEmbedding(
                example["tokens"], example["mask"], example["pooled"]).to(t2i.device)).cpu()
    manifest = {
        "format": "onnx", "opset": opset, "torch": torch.__version__, "family": t2i.family,
        "resolution": t2i.resolution, "z_dim": t2i.generator.config.z_dim, "tolerance": TOLERANCE,
        "generator": {"file": "generator.onnx", "inputs": list(example), "identity": generator_identity(t2i),
                      "max_abs_diff": _max_diff(OnnxGenerator(out / "generator.onnx")(example), ref)},
        "upscalers": {},
    }
    if upscale and upscale > 1:
        from wordcanvas.pipeline import auto_upscaler
        from wordcanvas.sr.upscale import Upscaler

        up = Upscaler.from_name(auto_upscaler(upscale) if upscaler == "auto" else upscaler, upscale)
        if up.model is not None:
            path = export_upscaler(up, out)
            manifest["upscalers"][up.name] = {"file": path.name, "scale": int(up.model.scale),
                                              "max_abs_diff": check_upscaler(up, path)}
        else:
            manifest["upscalers"][up.name] = {"file": None, "note": "bicubic runs in torch; nothing to export"}
    for part in [manifest["generator"], *manifest["upscalers"].values()]:
        if part.get("max_abs_diff", 0) > TOLERANCE:
            raise RuntimeError(f"ONNX export of {part['file']} differs from torch by {part['max_abs_diff']:.2e} "
                               f"(> {TOLERANCE:g})")
    from wordcanvas.utils.io import atomic_write_json

    atomic_write_json(out / MANIFEST, manifest)
    return {**manifest, "folder": str(out)}


def upscaler_file(up) -> str:
    return f"upscaler-{up.name}-x{int(up.model.scale)}.onnx"


def export_upscaler(up, folder: str | os.PathLike, opset: int = OPSET) -> Path:
    return export_sr_network(up.model, Path(folder) / upscaler_file(up), opset)


def check_upscaler(up, path: Path) -> float:
    channels = getattr(getattr(up.model, "config", None), "channels", 3)
    x = torch.rand(2, channels, 16, 12, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.inference_mode():
        ref = up.model(x.to(up.device)).float().cpu()
    return _max_diff(OnnxUpscalerNet(path, up.model)(x), ref)


def _cache_folder(t2i) -> Path:
    from wordcanvas.assets import cache_dir

    return cache_dir() / "onnx" / generator_identity(t2i)[:16]


def ensure_export(t2i, onnx_dir: str | os.PathLike | None = None) -> Path:
    """A folder holding generator.onnx for this generator: `onnx_dir`, the model folder's onnx/, or
    (exported now) a cache folder keyed by the generator's weights. A stale export is not used."""
    identity = generator_identity(t2i)
    candidates = [Path(onnx_dir)] if onnx_dir is not None else [Path(t2i.meta.get("path", ".")) / "onnx",
                                                                 _cache_folder(t2i)]
    for folder in candidates:
        manifest = folder / MANIFEST
        if manifest.exists() and json.loads(manifest.read_text())["generator"]["identity"] == identity:
            return folder
    target = candidates[0] if onnx_dir is not None else candidates[-1]
    export_onnx(out=target, t2i=t2i, upscale=None)
    return target


def ensure_upscaler_export(up, onnx_dir: Path) -> Path:
    """The ONNX file of an Upscaler's network in onnx_dir (exported and checked on first use)."""
    path = Path(onnx_dir) / upscaler_file(up)
    if not path.exists():
        export_upscaler(up, onnx_dir)
        diff = check_upscaler(up, path)
        if diff > TOLERANCE:
            path.unlink()
            raise RuntimeError(f"ONNX export of the {up.name} upscaler differs from torch by {diff:.2e}")
    return path
