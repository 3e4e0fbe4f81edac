"""Super-resolution: networks, tiling, colour/grey/alpha handling, Real-ESRGAN and SRMD conversion, loading, CLI."""
from __future__ import annotations

import argparse
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.color import rgb2ycbcr
from skimage.filters import sobel
from skimage.metrics import peak_signal_noise_ratio

from wordcanvas import assets
from wordcanvas.models.base import CheckpointError
from wordcanvas.models.sr import SRMD_BICUBIC_CODE, FastSR, RRDBNet, SRMDNet, load_sr_model, sr_preset
from wordcanvas.sr import ImageLoadError, Upscaler, load_image, upscale as upscale_mod
from wordcanvas.sr.data import HELDOUT_PHOTOS, PHOTOS, SRPatches, downscale, load_photo
from wordcanvas.sr.ncnn import NcnnFormatError, convert_srmd, load_realesrgan, load_srmd, read_conv_weights


def _realesrgan_files():
    try:
        folder = assets.realesrgan_models()
    except assets.AssetMissing as e:
        pytest.skip(str(e))
    return folder / "realesrgan-x4plus.param", folder / "realesrgan-x4plus.bin"


@pytest.fixture(scope="module")
def realesrgan():
    _realesrgan_files()
    return load_realesrgan()


def _photo_crop(name: str, size: int, y: int = 0, x: int = 0) -> np.ndarray:
    return np.ascontiguousarray(load_photo(name)[y : y + size, x : x + size])


def _y(rgb: np.ndarray) -> np.ndarray:
    return rgb2ycbcr(rgb)[..., 0]


# --------------------------------------------------------------------------- networks

@pytest.mark.parametrize("name", ["fast", "quality"])
@pytest.mark.parametrize("scale", [2, 4])
def test_network_shapes_and_roundtrip(name, scale, tmp_path):
    net = sr_preset(name, scale).eval()
    x = torch.rand(2, 3, 12, 20) * 2 - 1
    with torch.no_grad():
        y = net(x)
    assert y.shape == (2, 3, 12 * scale, 20 * scale)
    n_params = sum(p.numel() for p in net.parameters())
    assert (10_000 < n_params < 100_000) if name == "fast" else (500_000 < n_params < 2_000_000)
    loaded = load_sr_model(net.save_pretrained(tmp_path / name))
    assert type(loaded) is type(net)
    with torch.no_grad():
        assert torch.equal(loaded(x), y)


def test_realesrgan_architecture_shape():
    net = sr_preset("realesrgan").eval()
    assert 16_500_000 < sum(p.numel() for p in net.parameters()) < 16_900_000  # 16.7M, as published
    with torch.no_grad():
        assert net(torch.zeros(1, 3, 6, 5)).shape == (1, 3, 24, 20)
    with pytest.raises(ValueError):
        sr_preset("fast", 3)


# --------------------------------------------------------------------------- tiling

@pytest.mark.parametrize("net", [FastSR, RRDBNet], ids=["fast", "quality"])
def test_tiled_equals_untiled(net):
    torch.manual_seed(0)
    model = sr_preset("fast" if net is FastSR else "quality", 4).eval()
    x = torch.rand(1, 3, 45, 62) * 2 - 1
    with torch.no_grad():
        whole = model(x).clamp(-1, 1)  # reference: the plain network on the whole image
    tiled = Upscaler(model, 4, tile=12, overlap=8).upscale(x)  # 4 x 6 tiles, each seeing at most 28 x 27
    assert tiled.shape == whole.shape
    assert (tiled - whole).abs().max() * 127.5 < 1.0  # within 1/255 in uint8 terms
    seams = Upscaler(model, 4, tile=12, overlap=0).upscale(x)  # control: without context the seams show
    assert (seams - whole).abs().max() * 127.5 > 1.0


def test_self_ensemble_is_equivariant_and_tiles():
    """Averaging over the 8 symmetries of the square makes the upscaler commute with each of them
    (the plain network does not), leaves an already-equivariant map unchanged, and still tiles."""
    from wordcanvas.sr.upscale import self_ensemble

    torch.manual_seed(0)
    model = sr_preset("quality", 4).eval()
    x = torch.rand(1, 3, 21, 30) * 2 - 1
    plain, ens = Upscaler(model, 4, tile=0), Upscaler(model, 4, tile=0, ensemble=True)
    turn = lambda t: torch.rot90(t, 1, (2, 3))  # noqa: E731
    mirror = lambda t: t.flip(-1)  # noqa: E731
    for g in (turn, mirror, lambda t: turn(mirror(t))):
        assert (ens.upscale(g(x)) - g(ens.upscale(x))).abs().max() < 1e-5
        assert (plain.upscale(g(x)) - g(plain.upscale(x))).abs().max() > 1e-3
    nearest = lambda t: torch.nn.functional.interpolate(t, scale_factor=4, mode="nearest")  # noqa: E731
    assert torch.allclose(self_ensemble(nearest, x), nearest(x), atol=1e-6)
    tiled = Upscaler(model, 4, tile=12, overlap=8, ensemble=True).upscale(x)
    assert (tiled - ens.upscale(x)).abs().max() * 127.5 < 1.0


def test_mirrored_edges_run_the_network_on_the_reflected_image_and_cut_it_off(tmp_path):
    """edge_pad: the network runs on the image mirrored beyond its edges (numpy's reflect padding here, built
    separately) and the margin is cut off; tiling still matches the whole image; a network folder's config.json
    sets the default; an image too small to mirror runs as it is."""
    from wordcanvas.sr.upscale import mirror_edges

    torch.manual_seed(0)
    model = sr_preset("quality", 4).eval()
    x = torch.rand(1, 3, 21, 30) * 2 - 1
    reflected = torch.from_numpy(np.pad(x.numpy(), ((0, 0), (0, 0), (5, 5), (5, 5)), mode="reflect"))
    with torch.no_grad():
        expected = model(reflected)[:, :, 20:-20, 20:-20].clamp(-1, 1)
        plain = model(x).clamp(-1, 1)
    padded = Upscaler(model, 4, tile=0, edge_pad=5).upscale(x)
    assert padded.shape == (1, 3, 84, 120) and (padded - expected).abs().max() < 1e-5
    assert (padded - plain).abs().max() > 1e-3  # the edges changed ...
    assert (padded - plain)[:, :, 30:-30, 30:-30].abs().max() < 1e-3  # ... the middle, out of the margin's reach, not
    tiled = Upscaler(model, 4, tile=12, overlap=8, edge_pad=5).upscale(x)
    assert (tiled - padded).abs().max() * 127.5 < 1.0

    model.save_pretrained(tmp_path / "net", extra={"edge_pad": 5})
    assert Upscaler.from_pretrained(tmp_path / "net").edge_pad == 5
    assert torch.allclose(Upscaler.from_pretrained(tmp_path / "net", tile=0).upscale(x), padded, atol=1e-5)
    assert Upscaler.from_pretrained(tmp_path / "net", edge_pad=0).edge_pad == 0  # the caller's choice wins
    model.save_pretrained(tmp_path / "plain")
    assert Upscaler.from_pretrained(tmp_path / "plain").edge_pad == 0

    line = torch.rand(1, 3, 1, 9) * 2 - 1  # one row: nothing to mirror it with
    with torch.no_grad():
        assert torch.equal(mirror_edges(model, line, 4, 5), model(line))
    assert Upscaler(model, 4, edge_pad=5).upscale(line).shape == (1, 3, 4, 36)
    with pytest.raises(ValueError, match="edge_pad"):
        Upscaler(model, 4, edge_pad=-1)
    for bad in ("8", -2, 2.5):  # a hand-edited config.json is refused with the value it holds
        model.save_pretrained(tmp_path / "bad", extra={"edge_pad": bad})
        with pytest.raises(CheckpointError, match=f"edge_pad to {bad!r}"):
            Upscaler.from_pretrained(tmp_path / "bad")


# --------------------------------------------------------------------------- colour, grey, alpha

def test_colour_preserved(realesrgan):
    lr = _photo_crop("astronaut", 32, 300, 200)  # orange suit and white: a tint or channel swap shows
    out = np.asarray(Upscaler(realesrgan, 4).upscale_pil(Image.fromarray(lr))).astype(float)
    assert out.shape == (128, 128, 3)
    lr_mean, out_mean = lr.reshape(-1, 3).mean(0), out.reshape(-1, 3).mean(0)
    assert np.abs(lr_mean - out_mean).max() < 4.0, (lr_mean, out_mean)
    small = np.asarray(Image.fromarray(out.astype(np.uint8)).resize((32, 32), Image.BOX)).astype(float)
    for c in range(3):  # each channel still matches its own input channel
        assert np.corrcoef(small[..., c].ravel(), lr[..., c].ravel())[0, 1] > 0.9


def test_grey_in_grey_out_and_x2_from_x4(realesrgan):
    grey = Image.fromarray(_photo_crop("camera", 16, 100, 200)[..., 0])
    up = Upscaler(realesrgan, 2)  # x4 network, downsampled to x2
    out = up.upscale_pil(grey)
    assert out.mode == "L" and out.size == (32, 32)
    ref = np.asarray(grey.resize((32, 32), Image.BICUBIC)).astype(float)
    assert np.abs(np.asarray(out).astype(float) - ref).mean() < 12  # same picture, not a different one


def test_alpha_kept_and_rgb_unchanged():
    torch.manual_seed(0)
    up = Upscaler(sr_preset("fast", 4), 4)
    rgb = _photo_crop("coffee", 20, 150, 250)
    alpha = np.tile(np.linspace(0, 255, 20, dtype=np.uint8), (20, 1))
    out = up.upscale_pil(Image.fromarray(np.dstack([rgb, alpha])))
    assert out.mode == "RGBA" and out.size == (80, 80)
    out = np.asarray(out)
    ref_alpha = np.asarray(Image.fromarray(alpha).resize((80, 80), Image.BICUBIC)).astype(float)
    assert np.abs(out[..., 3].astype(float) - ref_alpha).max() <= 12
    assert np.array_equal(out[..., :3], np.asarray(up.upscale_pil(Image.fromarray(rgb))))  # alpha does not leak
    la = up.upscale_pil(Image.fromarray(np.dstack([rgb[..., 0], alpha])))
    assert la.mode == "LA" and la.size == (80, 80)
    pal = up.upscale_pil(Image.fromarray(rgb).convert("P"))
    assert pal.mode == "RGB"


# --------------------------------------------------------------------------- Real-ESRGAN conversion

def test_ncnn_conversion_counts_every_layer_and_byte(tmp_path):
    param, bin_ = _realesrgan_files()
    n_conv_lines = sum(1 for line in param.read_text().splitlines() if line.startswith("Convolution "))
    convs = read_conv_weights(param, bin_)
    assert len(convs) == n_conv_lines == 351
    # every byte accounted for: 4-byte flag + fp16 weights padded to 4 + fp32 bias per layer
    expected = sum(4 + (w.numel() * 2 + 3) // 4 * 4 + 4 * b.numel() for w, b in convs)
    assert expected == bin_.stat().st_size
    data = bin_.read_bytes()
    for bad in (data[:-4], data + b"\0" * 4):
        (tmp_path / "m.bin").write_bytes(bad)
        with pytest.raises(NcnnFormatError, match="bytes|truncated"):
            read_conv_weights(param, tmp_path / "m.bin")
    (tmp_path / "bad.param").write_text("123\n1 1\n")
    with pytest.raises(NcnnFormatError, match="magic"):
        read_conv_weights(tmp_path / "bad.param", bin_)


def test_conversion_matches_ncnn_reference(realesrgan):
    ncnn = pytest.importorskip("ncnn")  # the original runtime, CPU only, as an independent reference
    param, bin_ = _realesrgan_files()
    x = _photo_crop("coffee", 20, 120, 220).astype(np.float32) / 255
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    for opt in ("use_fp16_storage", "use_fp16_arithmetic", "use_fp16_packed", "use_bf16_storage"):
        setattr(net.opt, opt, False)
    net.opt.num_threads = 1
    assert net.load_param(str(param)) == 0 and net.load_model(str(bin_)) == 0
    chw = np.ascontiguousarray(x.transpose(2, 0, 1))
    mat = ncnn.Mat(chw)  # keep `chw` alive: the Mat borrows its memory
    ex = net.create_extractor()
    ex.input("data", mat)
    ret, out = ex.extract("output")
    assert ret == 0
    reference = np.array(out)
    with torch.no_grad():
        ours = ((realesrgan(torch.from_numpy(chw)[None] * 2 - 1) + 1) / 2)[0].numpy()
    assert reference.shape == ours.shape == (3, 80, 80)
    assert np.abs(reference - ours).max() < 1e-3


def test_realesrgan_beats_bicubic_on_sharpness_without_losing_fidelity(realesrgan):
    """Held-out photo, x4 from a 32x32 bicubic-downscaled crop. Real-ESRGAN is a GAN model: its
    Y-PSNR sits near bicubic's (measured within +0.4 / -3.0 dB on the held-out photos), while its
    edges are far closer to the real image's. A wrong conversion fails both checks."""
    photo = load_photo("astronaut")
    hr = np.asarray(Image.fromarray(photo[40:424, 104:488]).resize((128, 128), Image.LANCZOS))
    lr = Image.fromarray(hr).resize((32, 32), Image.BICUBIC)
    sr = np.asarray(Upscaler(realesrgan, 4).upscale_pil(lr))
    bic = np.asarray(lr.resize((128, 128), Image.BICUBIC))
    crop = lambda a: a[4:-4, 4:-4]  # noqa: E731  (border = scale, the usual SR convention)
    psnr = lambda a: peak_signal_noise_ratio(crop(_y(hr)), crop(_y(a)), data_range=255)  # noqa: E731
    edges = lambda a: sobel(crop(_y(a)) / 255).mean()  # noqa: E731
    assert psnr(sr) > psnr(bic) - 3.0, (psnr(sr), psnr(bic))
    assert abs(edges(sr) - edges(hr)) < 0.6 * abs(edges(bic) - edges(hr))


def test_converted_weights_are_cached(realesrgan):
    cached = [p for p in (assets.cache_dir() / "sr").glob("realesrgan-x4plus-*") if (p / "model.safetensors").exists()]
    assert cached
    again = RRDBNet.from_pretrained(cached[0])
    for k, v in realesrgan.state_dict().items():
        assert torch.equal(v, again.state_dict()[k])


# --------------------------------------------------------------------------- SRMD conversion

def _srmd_folder():
    try:
        return assets.srmd_models()
    except assets.AssetMissing as e:
        pytest.skip(str(e))


@pytest.mark.parametrize("scale", [2, 4])
def test_srmd_conversion_counts_every_layer_and_byte(scale, tmp_path):
    folder = _srmd_folder()
    param, bin_ = folder / f"srmdnf_x{scale}.param", folder / f"srmdnf_x{scale}.bin"
    n_conv_lines = sum(1 for line in param.read_text().splitlines() if line.startswith("Convolution "))
    convs = read_conv_weights(param, bin_)
    assert len(convs) == n_conv_lines == 12
    # every byte accounted for: 4-byte flag + fp16 weights padded to 4 + fp32 bias per layer
    assert sum(4 + (w.numel() * 2 + 3) // 4 * 4 + 4 * b.numel() for w, b in convs) == bin_.stat().st_size
    net = convert_srmd(param, bin_, scale)
    assert convs[0][0].shape[1] == 3 + len(SRMD_BICUBIC_CODE) and sum(p.numel() for p in net.parameters()) > 1.5e6
    with pytest.raises(NcnnFormatError, match="noisy-input"):  # srmd_x*: one more input channel (noise level)
        convert_srmd(folder / f"srmd_x{scale}.param", folder / f"srmd_x{scale}.bin", scale)
    with pytest.raises(NcnnFormatError, match="shape"):
        convert_srmd(param, bin_, 6 - scale)  # the other scale's sub-pixel layer
    (tmp_path / "m.bin").write_bytes(bin_.read_bytes()[:-8])
    with pytest.raises(NcnnFormatError, match="bytes|truncated"):
        convert_srmd(param, tmp_path / "m.bin", scale)


def test_srmd_matches_ncnn_reference():
    """The converted network against ncnn's own CPU run of the same files, with the input srmd-ncnn-vulkan builds
    (the tile edge-padded by the receptive radius, the bicubic degradation code as 15 constant channels)."""
    ncnn = pytest.importorskip("ncnn")
    folder = _srmd_folder()
    x = _photo_crop("coffee", 20, 120, 220).astype(np.float32) / 255
    pad = 12
    padded = np.pad(x, ((pad, pad), (pad, pad), (0, 0)), mode="edge").transpose(2, 0, 1)
    code = np.broadcast_to(np.array(SRMD_BICUBIC_CODE, np.float32)[:, None, None], (15, *padded.shape[1:]))
    chw = np.ascontiguousarray(np.concatenate([padded, code]))
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    for opt in ("use_fp16_storage", "use_fp16_arithmetic", "use_fp16_packed", "use_bf16_storage"):
        setattr(net.opt, opt, False)
    net.opt.num_threads = 1
    assert net.load_param(str(folder / "srmdnf_x4.param")) == 0 and net.load_model(str(folder / "srmdnf_x4.bin")) == 0
    mat = ncnn.Mat(chw)
    ex = net.create_extractor()
    ex.input("input", mat)
    ret, out = ex.extract("output")
    assert ret == 0
    reference = np.array(out)[:, pad * 4:-pad * 4, pad * 4:-pad * 4]
    with torch.no_grad():
        ours = ((load_srmd(4)(torch.from_numpy(x.transpose(2, 0, 1).copy())[None] * 2 - 1) + 1) / 2)[0].numpy()
    assert reference.shape == ours.shape == (3, 80, 80)
    assert np.abs(reference - ours).max() < 1e-3


def test_srmd_beats_bicubic_on_heldout_like_its_paper():
    """SRMD's noise-free network is PSNR-oriented; its paper reports +1.53 dB over bicubic on BSD100 at x4
    (27.49 vs 25.96 dB). On the held-out photos (skimage's PSNR, PIL's bicubic) it must gain over 1 dB."""
    up = Upscaler.from_name("srmd", 4)
    assert isinstance(up.model, SRMDNet) and up.model.scale == 4
    gains = []
    for name in HELDOUT_PHOTOS:
        photo = load_photo(name)
        h, w = photo.shape[0] // 4 * 4, photo.shape[1] // 4 * 4
        hr = photo[:h, :w]
        lr = Image.fromarray(hr).resize((w // 4, h // 4), Image.BICUBIC)
        sr, bic = np.asarray(up.upscale_pil(lr)), np.asarray(lr.resize((w, h), Image.BICUBIC))
        psnr = lambda a: peak_signal_noise_ratio(_y(hr)[4:-4, 4:-4], _y(a)[4:-4, 4:-4], data_range=255)  # noqa: E731
        gains.append(psnr(sr) - psnr(bic))
    assert np.mean(gains) > 1.0 and min(gains) > 0, gains


def test_srmd_exports_to_onnx_with_any_image_size(tmp_path):
    pytest.importorskip("onnxruntime")
    from wordcanvas.export import OnnxUpscalerNet, export_upscaler

    up = Upscaler.from_name("srmd", 2)
    path = export_upscaler(up, tmp_path)
    onnx_net = OnnxUpscalerNet(path, up.model)
    for h, w in ((16, 12), (9, 23)):  # the edge padding and the final crop follow the input size
        x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(h)) * 2 - 1
        with torch.no_grad():
            ref = up.model(x)
        out = onnx_net(x)
        assert out.shape == ref.shape == (1, 3, 2 * h, 2 * w)
        assert (out - ref).abs().max() < 1e-4


# --------------------------------------------------------------------------- names, weights, loading

def test_from_name_needs_trained_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(upscale_mod, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(assets.AssetMissing, match="no trained weights"):
        Upscaler.from_name("fast", 4)
    sr_preset("fast", 2).save_pretrained(tmp_path / "sr-fast-x2")
    up = Upscaler.from_name("fast", 2)
    assert up.upscale(torch.zeros(1, 3, 8, 8)).shape == (1, 3, 16, 16)
    with pytest.raises(ValueError, match="unknown upscaler"):
        Upscaler.from_name("nope")
    bic = Upscaler.from_name("bicubic", 4).upscale(torch.zeros(1, 3, 5, 7))
    assert bic.shape == (1, 3, 20, 28)


def _png_header_only(path, width, height):
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))  # noqa: E731
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_bad_inputs_refused_clearly(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(_photo_crop("coffee", 40)).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ImageLoadError, match="corrupt or truncated"):
        load_image(truncated)
    text = tmp_path / "notes.png"
    text.write_text("not an image at all")
    with pytest.raises(ImageLoadError, match="not an image"):
        load_image(text)
    bomb = tmp_path / "bomb.png"
    _png_header_only(bomb, 50_000, 50_000)  # 2.5 gigapixels announced by a 100-byte file
    with pytest.raises(ImageLoadError, match="limit|bomb"):
        load_image(bomb)
    with pytest.raises(ImageLoadError, match="above the limit of 1,000"):
        load_image(good, max_pixels=1000)
    with pytest.raises(ImageLoadError, match="no such file"):
        load_image(tmp_path / "missing.png")
    assert load_image(good).size == (40, 40)


# --------------------------------------------------------------------------- CLI

def test_cli_upscales_folder_and_reports_bad_file(tmp_path, capsys):
    from wordcanvas.commands import sr_cmd

    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_photo_crop("coffee", 24)).save(src / "a.png")
    Image.fromarray(_photo_crop("camera", 20)[..., 0]).save(src / "b.jpg")
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    model_dir = sr_preset("fast", 2).save_pretrained(tmp_path / "my-fast")
    parser = argparse.ArgumentParser()
    add_args, run, _ = sr_cmd.VERBS["upscale"]
    add_args(parser)
    out = tmp_path / "out"
    args = parser.parse_args([str(src), str(tmp_path / "missing*.png"), "--scale", "2", "--model", str(model_dir),
                              "--out", str(out), "--tile", "8"])
    assert run(args) == 1  # some inputs failed, the rest were done
    err = capsys.readouterr().err
    assert "broken.png" in err and "missing*.png" in err
    assert Image.open(out / "a_x2.png").size == (48, 48)
    b = Image.open(out / "b_x2.png")
    assert b.size == (40, 40) and b.mode == "L"
    assert not (out / "broken_x2.png").exists()
    args = parser.parse_args([str(src / "*.png"), "--scale", "4", "--model", "bicubic", "--out", str(out)])
    assert run(args) == 1 and Image.open(out / "a_x4.png").size == (96, 96)
    # --edge-pad reaches the upscaler: the same network with mirrored edges gives another image, equal to the API's
    for pad in ("0", "6"):
        args = parser.parse_args([str(src / "a.png"), "--scale", "2", "--model", str(model_dir), "--edge-pad", pad,
                                  "--out", str(tmp_path / f"pad{pad}")])
        assert run(args) == 0
    lr = Image.open(src / "a.png")
    for pad in (0, 6):
        api = Upscaler.from_pretrained(model_dir, edge_pad=pad).upscale_pil(lr)
        assert np.array_equal(np.asarray(Image.open(tmp_path / f"pad{pad}" / "a_x2.png")), np.asarray(api))
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "pad0" / "a_x2.png")),
                              np.asarray(Image.open(tmp_path / "pad6" / "a_x2.png")))


# --------------------------------------------------------------------------- training data

def test_photos_and_patches():
    assert set(HELDOUT_PHOTOS) <= set(PHOTOS)
    for name in PHOTOS:  # every listed photo loads offline as HxWx3 uint8
        img = load_photo(name)
        assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8 and min(img.shape[:2]) >= 150
    ds = SRPatches(scale=4, patch=48, degradations=("bicubic",), seed=3, length=8)
    assert set(ds.names).isdisjoint(HELDOUT_PHOTOS)
    lr, hr = ds[5]
    assert lr.shape == (3, 12, 12) and hr.shape == (3, 48, 48)
    assert hr.min() >= -1 and hr.max() <= 1 and hr.std() > 0
    assert torch.equal(ds[5][0], lr) and not torch.equal(ds[6][1], hr)  # deterministic per index
    assert torch.allclose(lr, downscale(hr, 4))
    noisy = SRPatches(scale=2, patch=32, degradations=("blur", "noise", "jpeg"), seed=3, length=4)
    lr2, hr2 = noisy[0]
    assert lr2.shape == (3, 16, 16) and lr2.min() >= -1 and lr2.max() <= 1


def _dominant_period(patch: torch.Tensor) -> float:
    """Period in pixels of the strongest horizontal frequency of a CHW patch (numpy FFT)."""
    grey = patch.mean(0).numpy()
    spectrum = np.abs(np.fft.rfft(grey - grey.mean(), axis=1)).sum(0)
    return grey.shape[1] / int(np.argmax(spectrum[1:]) + 1)


def test_photo_scale_shrinks_the_photo_before_cropping(tmp_path):
    """A grating of period 16 px seen through photo_scale=(0.5, 0.5) has period 8 px in every patch (flips and
    rotations keep the period: the grating is the same along both axes); the default keeps 16 px."""
    yy, xx = np.mgrid[0:400, 0:400]
    grating = 128 + 100 * np.sin(2 * np.pi * xx / 16) * np.sin(2 * np.pi * yy / 16)
    Image.fromarray(np.repeat(grating[..., None], 3, 2).round().astype(np.uint8)).save(tmp_path / "grating.png")
    for photo_scale, period in (((1.0, 1.0), 16), ((0.5, 0.5), 8)):
        ds = SRPatches(scale=4, patch=64, photos=[], user_folder=tmp_path, length=4, photo_scale=photo_scale)
        for i in range(4):
            lr, hr = ds[i]
            assert hr.shape == (3, 64, 64) and lr.shape == (3, 16, 16) and hr.abs().max() <= 1
            assert _dominant_period(hr) == pytest.approx(period), (photo_scale, i)
    # a range draws a different shrink per crop
    ds = SRPatches(scale=4, patch=64, photos=[], user_folder=tmp_path, length=16, photo_scale=(0.25, 1.0))
    periods = {round(_dominant_period(ds[i][1]), 1) for i in range(16)}
    assert len(periods) > 3 and all(4 - 0.5 < p <= 16.5 for p in periods), periods
    # a photo smaller than the region asked for is taken whole
    Image.fromarray(np.zeros((70, 90, 3), np.uint8) + 50).save(tmp_path / "grating.png")
    small = SRPatches(scale=4, patch=64, photos=[], user_folder=tmp_path, length=2, photo_scale=(0.25, 0.25))
    assert small[0][1].shape == (3, 64, 64)
    for bad in ((0.0, 1.0), (0.5, 2.0), (0.8, 0.5)):
        with pytest.raises(ValueError, match="photo_scale"):
            SRPatches(scale=4, patch=64, photos=[], user_folder=tmp_path, photo_scale=bad)
