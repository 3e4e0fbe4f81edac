"""Super-resolution training: the "sr" family in the shared loop, its losses, exact resume, the CLI, and the
shipped networks (each must beat bicubic on a held-out photo it never saw)."""
from __future__ import annotations

import argparse
import io
import json
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio

from wordcanvas.models.sr import bicubic_phase_filters, load_sr_model, sr_preset
from wordcanvas.sr import Upscaler
from wordcanvas.sr.data import HELDOUT_PHOTOS, SRPatches, SRTrainingPatches, load_photo
from wordcanvas.train.config import TrainConfig
from wordcanvas.train.loop import train
from wordcanvas.train.sr_step import PerceptualLoss, relativistic_loss


def _cfg(out, **kw) -> TrainConfig:
    base = dict(family="sr", out=str(out), resolution=32, batch=8, threads=1, progress=False, sample_every=0,
                ckpt_every=0, log_every=1, ema_kimg=0.0, model={"preset": "fast", "scale": 2})
    base.update(kw)
    return TrainConfig(**base)


def _heldout_crops(size: int = 64) -> np.ndarray:
    """Centre crops of the held-out photos, HxWx3 uint8 (never cut into training patches)."""
    out = []
    for name in HELDOUT_PHOTOS:
        img = load_photo(name)
        h, w = img.shape[:2]
        out.append(img[(h - size) // 2:(h + size) // 2, (w - size) // 2:(w + size) // 2])
    return np.stack(out)


def _y_psnr(ref: np.ndarray, out: np.ndarray, border: int) -> float:
    """Y-channel PSNR (skimage's BT.601 conversion and PSNR: independent of wordcanvas.metrics)."""
    y = lambda a: rgb2ycbcr(a)[border:-border, border:-border, 0]  # noqa: E731
    return float(peak_signal_noise_ratio(y(ref), y(out), data_range=255))


def _upscale_pil(up: Upscaler, hr: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(network output, bicubic, nearest) for the LR made by PIL's bicubic downscale of hr."""
    h, w = hr.shape[:2]
    lr = Image.fromarray(hr).resize((w // scale, h // scale), Image.BICUBIC)
    return (np.asarray(up.upscale_pil(lr)), np.asarray(lr.resize((w, h), Image.BICUBIC)),
            np.asarray(lr.resize((w, h), Image.NEAREST)))


# --------------------------------------------------------------------------- pieces

def test_bicubic_phase_filters_equal_torch_bicubic():
    x = torch.rand(2, 3, 19, 23) * 2 - 1
    for s in (2, 4):
        y = F.pixel_shuffle(F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), bicubic_phase_filters(s), groups=3), s)
        ref = F.interpolate(x, scale_factor=s, mode="bicubic", align_corners=False)
        assert (y - ref).abs().max() < 1e-5


def test_training_patches_are_items_of_the_loop_and_redrawn_per_epoch():
    ds = SRTrainingPatches(SRPatches(scale=4, patch=32, seed=1, length=5))
    item = ds[2]
    assert item["image"].shape == (3, 32, 32) and item["caption"] not in HELDOUT_PHOTOS and item["labels"] == {}
    assert torch.equal(ds[2]["image"], item["image"])
    ds.set_epoch(1)
    assert not torch.equal(ds[2]["image"], item["image"])
    assert [p.text for p in ds.eval_prompts(12)] == list(HELDOUT_PHOTOS)


def test_perceptual_and_relativistic_losses():
    torch.manual_seed(0)
    loss = PerceptualLoss({"conv1_2": 0.1, "conv2_2": 1.0})
    y = torch.rand(2, 3, 32, 32) * 2 - 1
    assert float(loss(y.clone(), y)) == 0.0
    x = (y + 0.2 * torch.randn_like(y)).clamp(-1, 1).requires_grad_(True)
    value = loss(x, y)
    value.backward()
    assert value > 0 and x.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in loss.parameters())
    # D's loss is low when real logits exceed fake ones; G's loss is its mirror image
    real, fake = torch.full((4, 1, 2, 2), 3.0), torch.full((4, 1, 2, 2), -3.0)
    d_loss, g_loss = relativistic_loss(real, fake, True), relativistic_loss(real, fake, False)
    expected_d = -np.log(1 / (1 + np.exp(-6.0)))  # BCE of sigmoid(+6) against 1, in closed form
    assert abs(float(d_loss) - expected_d) < 1e-6 and abs(float(g_loss) - (6 + expected_d)) < 1e-5


# --------------------------------------------------------------------------- training in the loop

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A fast x2 network trained for 80 tiny steps through the CLI (`wordcanvas train sr`)."""
    from wordcanvas.commands import train_cmd

    out = tmp_path_factory.mktemp("sr") / "run"
    parser = argparse.ArgumentParser()
    add_args, run, _ = train_cmd.VERBS["train"]
    add_args(parser)
    args = parser.parse_args(["sr", "--res", "32", "--batch", "8", "--steps", "80", "--threads", "1", "--lr", "2e-3",
                              "--log-every", "1", "--sample-every", "0", "--no-progress", "--set", "model.preset=fast",
                              "--set", "model.scale=2", "--out", str(out)])
    assert run(args) == 0
    return out


def test_training_lowers_l1_and_beats_nearest_on_heldout(trained):
    log = [json.loads(line) for line in (trained / "log.jsonl").read_text().splitlines()]
    l1 = [r["l1"] for r in log if r["kind"] == "train"]
    assert len(l1) == 80 and np.mean(l1[-10:]) < np.mean(l1[:10])
    torch.manual_seed(0)  # the loop's initialisation: torch.manual_seed(cfg.seed), then the family builds the net
    start = sr_preset("fast", 2)
    hr = _heldout_crops(64)
    errors = {}
    for name, net in (("start", start), ("trained", load_sr_model(trained))):
        up = Upscaler(net, 2)
        outs = [_upscale_pil(up, im, 2) for im in hr]
        errors[name] = np.mean([np.abs(o.astype(float) - h).mean() for (o, _, _), h in zip(outs, hr)])
        psnr = {k: np.mean([_y_psnr(h, o[i], 2) for o, h in zip(outs, hr)]) for i, k in enumerate(("net", "bic", "near"))}
        errors[name + "_psnr"] = psnr
    assert errors["trained"] < errors["start"], errors
    assert errors["trained_psnr"]["net"] > errors["trained_psnr"]["near"] + 1.0, errors
    # the run exports a sample grid and a final network that Upscaler loads from the run folder
    assert any((trained / "samples").glob("*.png"))
    assert Upscaler.from_name(str(trained), 2).upscale(torch.zeros(1, 3, 8, 8)).shape == (1, 3, 16, 16)


def _whole_and_resumed(tmp_path, steps: int, split_at: int, **kw):
    """The families of one run of `steps` steps and of a run stopped at `split_at` then resumed; their
    weights (raw and EMA) must be bit-identical."""
    whole = train(_cfg(tmp_path / "whole", steps=steps, **kw)).family
    train(_cfg(tmp_path / "split", steps=split_at, **kw))
    resumed = train(_cfg(tmp_path / "split", steps=steps, resume=True, **kw)).family
    for name in ("generator", "generator_ema"):
        a, b = whole.modules[name].state_dict(), resumed.modules[name].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    return whole, resumed


def test_resume_is_exact(tmp_path):
    kw = dict(model={"preset": "fast", "scale": 2, "degradations": ["bicubic", "noise"], "lr_halve_at": [4]},
              ema_kimg=1.0, batch=4, lr=1e-3)
    whole, resumed = _whole_and_resumed(tmp_path, 6, 3, **kw)
    assert whole.opt.param_groups[0]["lr"] == resumed.opt.param_groups[0]["lr"] == 5e-4  # halved once, at step 4


def test_resume_with_a_teacher_and_shrunk_photos_is_exact(tmp_path):
    """The teacher is not checkpointed but rebuilt from the settings, and photo_scale draws from the seeded
    crop generator: a run split in two still ends with the same weights as one run."""
    teacher = sr_preset("fast", 2)
    with torch.no_grad():
        teacher.to_subpixels.bias.fill_(0.1)
    teacher.save_pretrained(tmp_path / "teacher")
    kw = dict(model={"preset": "fast", "scale": 2, "teacher": str(tmp_path / "teacher"), "teacher_weight": 0.7,
                     "photo_scale": [0.4, 1.0]}, ema_kimg=1.0, batch=4, lr=1e-3)
    _whole_and_resumed(tmp_path, 5, 2, **kw)
    log = [json.loads(line) for line in (tmp_path / "split" / "log.jsonl").read_text().splitlines()]
    distilled = [entry["step"] for entry in log if entry.get("kind") == "train" and "l1_teacher" in entry]
    assert distilled and max(distilled) == 5  # the resumed half distilled too

def test_gan_fine_tune_starts_from_init_and_trains_d(tmp_path):
    init = sr_preset("fast", 2)
    torch.nn.init.normal_(init.to_subpixels.weight, std=0.01)  # recognisable weights
    init.save_pretrained(tmp_path / "psnr")
    with pytest.raises(ValueError, match="model.init"):
        train(_cfg(tmp_path / "noinit", steps=1, model={"preset": "fast", "scale": 2, "loss": "gan"}))
    cfg = _cfg(tmp_path / "gan", steps=1, batch=2,
               model={"preset": "fast", "scale": 2, "loss": "gan", "init": str(tmp_path / "psnr"), "disc_width": 8})
    fam = train(cfg.replace(steps=1)).family
    moved = (fam.generator.to_subpixels.weight - init.to_subpixels.weight).abs().max()
    assert 0 < moved < 0.01  # started from init, then took one small step
    log = [json.loads(line) for line in (tmp_path / "gan" / "log.jsonl").read_text().splitlines()]
    assert {"loss_perceptual", "loss_g_adv", "loss_d"} <= set(log[-1]) and all(np.isfinite(v) for v in log[-1].values()
                                                                                if isinstance(v, float))
    assert (tmp_path / "gan" / "checkpoints").is_dir() and any((tmp_path / "gan" / "checkpoints").glob("*/discriminator"))
    with pytest.raises(ValueError, match="not the 'quality'"):
        train(_cfg(tmp_path / "wrong", steps=1, model={"preset": "quality", "scale": 2, "loss": "gan",
                                                          "init": str(tmp_path / "psnr")}))


def test_init_from_another_scale_takes_every_tensor_that_fits(tmp_path):
    x4 = sr_preset("quality", 4)
    for p in x4.parameters():
        torch.nn.init.normal_(p, std=0.02)  # recognisable weights
    x4.save_pretrained(tmp_path / "x4")
    fam = train(_cfg(tmp_path / "x2", steps=1, lr=1e-12,
                     model={"preset": "quality", "scale": 2, "init": str(tmp_path / "x4")})).family
    mine, theirs = fam.generator.state_dict(), x4.state_dict()
    assert set(theirs) - set(mine) == {"conv_up2.weight", "conv_up2.bias"}  # x4's second upsampling stage
    for k, v in mine.items():  # a step of lr 1e-12 leaves them equal to float precision
        assert torch.allclose(v, theirs[k], atol=1e-6), k
    with pytest.raises(ValueError, match="another scale"):  # another preset is refused
        train(_cfg(tmp_path / "fast", steps=1, model={"preset": "fast", "scale": 2, "init": str(tmp_path / "x4")}))


def test_teacher_distillation_learns_the_teachers_function(tmp_path):
    """With model.teacher the student learns what the teacher does, not only the photos: a teacher that adds a
    tint of +0.2 to bicubic upsampling passes it on in proportion to teacher_weight; without one, no tint."""
    teacher = sr_preset("fast", 2)
    with torch.no_grad():
        teacher.to_subpixels.weight.zero_()
        teacher.to_subpixels.bias.fill_(0.2)  # output = bicubic + 0.2 everywhere
    teacher.save_pretrained(tmp_path / "teacher")
    crops = torch.from_numpy(_heldout_crops(32)).permute(0, 3, 1, 2).float() / 127.5 - 1
    lr = F.avg_pool2d(crops, 2)
    tint = {}
    for weight in (None, 0.5, 1.0):
        model = {"preset": "fast", "scale": 2, **({"teacher": str(tmp_path / "teacher"), "teacher_weight": weight}
                                                  if weight else {})}
        fam = train(_cfg(tmp_path / f"w{weight}", steps=60, lr=3e-3, seed=1, model=model)).family
        with torch.no_grad():
            tint[weight] = float((fam.generator.eval()(lr) - F.interpolate(lr, scale_factor=2, mode="bicubic")).mean())
    assert abs(tint[None]) < 0.03, tint
    assert abs(tint[1.0] - 0.2) < 0.04 and abs(tint[0.5] - 0.1) < 0.04, tint
    log = json.loads((tmp_path / "w1.0" / "log.jsonl").read_text().splitlines()[-1])
    assert log["l1_teacher"] < log["l1"], log  # it follows the teacher, not the photos


def test_mse_loss_learns_the_mean_where_l1_learns_the_median(tmp_path):
    """loss 'mse' fits the mean of its targets, 'l1' their median: with a teacher that adds +0.5 to bicubic
    upsampling at a share of 0.2, the student's offset goes to the mean, 0.2 x 0.5 = 0.1, under MSE, and stays
    near 0 (the median of targets mostly at the photo) under L1."""
    teacher = sr_preset("fast", 2)
    with torch.no_grad():
        teacher.to_subpixels.weight.zero_()
        teacher.to_subpixels.bias.fill_(0.5)
    teacher.save_pretrained(tmp_path / "teacher")
    crops = torch.from_numpy(_heldout_crops(32)).permute(0, 3, 1, 2).float() / 127.5 - 1
    lr = F.avg_pool2d(crops, 2)
    offset = {}
    for loss in ("l1", "mse"):
        model = {"preset": "fast", "scale": 2, "loss": loss, "teacher": str(tmp_path / "teacher"), "teacher_weight": 0.2}
        fam = train(_cfg(tmp_path / loss, steps=60, lr=3e-3, seed=1, model=model)).family
        with torch.no_grad():
            offset[loss] = float((fam.generator.eval()(lr) - F.interpolate(lr, scale_factor=2, mode="bicubic")).mean())
    assert abs(offset["mse"] - 0.1) < 0.04 and offset["l1"] < offset["mse"] - 0.05, offset


def test_teacher_ensemble_shows_each_patch_turned_and_turns_the_output_back(tmp_path):
    """teacher_ensemble: every patch's target is the teacher's output on one of the 8 symmetries of the patch, turned
    back, drawn at random; over the draws the 8 targets average to the teacher's self-ensemble (the upscaler's,
    built separately). A teacher that is not symmetric (bicubic plus neighbour differences) tells them apart."""
    from wordcanvas.sr.upscale import self_ensemble

    sr_preset("fast", 2).save_pretrained(tmp_path / "teacher")
    model = {"preset": "fast", "scale": 2, "teacher": str(tmp_path / "teacher"), "teacher_ensemble": True}
    fam = train(_cfg(tmp_path / "run", steps=1, model=model)).family

    def lopsided(x):  # no symmetry of the square leaves it alone: unequal right and lower neighbour differences
        up = F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
        return up + 0.5 * (up.roll(-1, -1) - up) + 0.25 * (up.roll(-1, -2) - up)

    fam.teacher = lopsided
    patch = torch.rand(1, 3, 6, 6) * 2 - 1
    batch = patch.expand(64, -1, -1, -1).contiguous()
    taught = fam._teach(batch, torch.Generator().manual_seed(0))
    candidates = []
    for flip in (False, True):
        for k in range(4):
            turned = torch.rot90(patch.flip(-1) if flip else patch, k, (2, 3))
            back = torch.rot90(lopsided(turned), -k, (2, 3))
            candidates.append(back.flip(-1) if flip else back)
    candidates = torch.cat(candidates)
    distance = (candidates[:, None] - candidates[None]).abs().flatten(2).amax(2)
    assert (distance + torch.eye(8)).min() > 1e-2  # the 8 targets all differ
    which = [int((candidates - t).abs().flatten(1).amax(1).argmin()) for t in taught]
    assert all((candidates[w] - t).abs().max() < 1e-5 for w, t in zip(which, taught))  # each is one of them
    assert set(which) == set(range(8))  # and 64 draws meet all 8
    assert torch.allclose(candidates.mean(0, keepdim=True), self_ensemble(lopsided, patch), atol=1e-5)


def test_teacher_refusals(tmp_path):
    sr_preset("fast", 4).save_pretrained(tmp_path / "x4")
    cases = [({"teacher": str(tmp_path / "x4")}, "not a x2 network"),
             ({"teacher": str(tmp_path / "x4"), "scale": 4, "teacher_weight": 0}, "in \\(0, 1\\]"),
             ({"teacher": str(tmp_path / "x4"), "scale": 4, "loss": "gan", "init": str(tmp_path / "x4")},
              "cannot be combined"),
             ({"teacher": "no-such-network"}, "unknown upscaler"),
             ({"loss": "l2"}, "loss must be 'l1', 'mse' or 'gan'"),
             ({"teacher_ensemble": True}, "set model.teacher too")]
    for extra, message in cases:
        with pytest.raises(ValueError, match=message):
            train(_cfg(tmp_path / "refused", steps=1, model={"preset": "fast", "scale": 2, **extra}))


# --------------------------------------------------------------------------- shipped networks

@pytest.mark.parametrize("name,scale", [("fast", 2), ("fast", 4), ("quality", 2), ("quality", 4)])
def test_shipped_networks_beat_bicubic_on_heldout(name, scale):
    up = Upscaler.from_name(name, scale)
    hr = _heldout_crops(96)
    outs = [_upscale_pil(up, im, scale) for im in hr]
    gain = np.mean([_y_psnr(h, o, scale) - _y_psnr(h, b, scale) for (o, b, _), h in zip(outs, hr)])
    assert gain > 0.3, gain


def test_shipped_gan_network_is_sharper_than_the_psnr_one():
    """The adversarial + perceptual fine-tune restores edge energy the L1 network smooths away."""
    hr = _heldout_crops(96)
    grad = lambda a: np.abs(np.diff(a.astype(float), axis=0)).mean() + np.abs(np.diff(a.astype(float), axis=1)).mean()  # noqa: E731
    energy = {n: np.mean([grad(_upscale_pil(Upscaler.from_name(n, 4), h, 4)[0]) for h in hr]) for n in ("quality", "quality-gan")}
    target = np.mean([grad(h) for h in hr])
    assert energy["quality"] < energy["quality-gan"] <= 1.5 * target, (energy, target)


def _load_script(name: str):
    """A module of scripts/ (not an installed package), loaded from its file."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fetch_sr_photos_copies_the_named_photos_downscaled(tmp_path, monkeypatch):
    """The Debian photo collector, on package trees laid out as the real ones (apt is not called):
    only the named photos come out, the largest of each Plasma wallpaper's sizes, long side capped."""
    fetch = _load_script("fetch_sr_photos")
    trees = {p: tmp_path / "debs" / p for p in fetch.PACKAGES}
    nature = trees["mate-backgrounds"] / "usr/share/backgrounds/mate/nature"
    nature.mkdir(parents=True)
    for i, name in enumerate((*fetch.MATE_NATURE, "NotAPhoto")):
        Image.new("RGB", (2000, 1000), (i, 0, 0)).save(nature / f"{name}.jpg")
    for name in (*fetch.PLASMA_PHOTOS, "Autumn"):
        images = trees["plasma-workspace-wallpapers"] / "usr/share/wallpapers" / name / "contents/images"
        images.mkdir(parents=True)
        Image.new("RGB", (640, 480), (0, 0, 0)).save(images / "640x480.jpg")
        Image.new("RGB", (1000, 500), (0, 255, 0)).save(images / "1000x500.jpg")
    monkeypatch.setattr(fetch, "unpack", lambda package, work: trees[package])
    monkeypatch.setattr(fetch.shutil, "which", lambda tool: "/bin/" + tool)
    out = tmp_path / "photos"
    assert fetch.main(["--out", str(out), "--max-side", "800"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([f"mate-{n}.png" for n in fetch.MATE_NATURE] + [f"plasma-{n}.png" for n in fetch.PLASMA_PHOTOS])
    assert Image.open(out / "mate-Aqua.png").size == (800, 400)       # 2000 x 1000 capped at 800
    kite = Image.open(out / "plasma-Kite.png")
    assert kite.size == (800, 400) and kite.getpixel((400, 200))[1] > 200  # the 1000 x 500 (green) one
    patches = SRPatches(scale=4, patch=32, photos=[], user_folder=out, length=4)
    assert len(patches.images) == 24 and patches[0][1].shape == (3, 32, 32)

    # --more: six more packages; enlightenment's backgrounds are Eet archives holding a JPEG
    for package, (folder, photos) in fetch.MORE.items():
        trees[package] = tmp_path / "debs" / package
        (trees[package] / folder).mkdir(parents=True)
        for name in (*photos, "NotAPhoto.jpg"):
            if name.endswith(".edj"):
                (trees[package] / folder / name).write_bytes(_eet_archive({
                    "edje/edje_file": b"\x00" * 40, "edje/images/0": _jpeg((1600, 900), (0, 0, 255)),
                    "edje/images/1": _jpeg((300, 200), (255, 0, 0))}))
            else:
                Image.new("RGB", (1000, 1000), (9, 9, 9)).save(trees[package] / folder / name)
    more = tmp_path / "more"
    assert fetch.main(["--out", str(more), "--max-side", "800", "--more"]) == 0
    assert len(list(more.iterdir())) == 24 + sum(len(p) for _, p in fetch.MORE.values()) == 50
    bamboo = Image.open(more / "enlightenment-Bamboo.png")  # the larger image of the archive, capped
    assert bamboo.size == (800, 450) and bamboo.getpixel((400, 225))[2] > 200
    assert (more / "maldives-background.png").exists()  # a file name that says nothing gets the theme's name
    with pytest.raises(ValueError, match="not an Eet archive"):
        fetch.eet_images(b"\x89PNG" + b"\x00" * 20)
    with pytest.raises(ValueError, match="truncated Eet archive"):
        fetch.eet_images(_eet_archive({"edje/images/0": b"x"})[:30])

    # --gcompris: the photos inside five activities' Qt resource files (images stored as they are, between
    # other data); small ones, repeats and broken signatures are skipped
    package, folder, activities = fetch.GCOMPRIS
    trees[package] = tmp_path / "debs" / package
    (trees[package] / folder).mkdir(parents=True)
    buffer = io.BytesIO()
    Image.new("RGB", (600, 400), (0, 128, 0)).save(buffer, "WEBP")
    blobs = [_jpeg((1024, 700), (200, 0, 0)), _jpeg((100, 80), (0, 0, 200)), buffer.getvalue(),
             _jpeg((1024, 700), (200, 0, 0)), b"\xff\xd8\xff\xe0 not a jpeg", _png((300, 500), (1, 2, 3))]
    for activity in activities:
        (trees[package] / folder / f"{activity}.rcc").write_bytes(b"qres\x00\x00\x00\x03" + b"\x00\x01".join(blobs))
    assert [img.size for img in fetch.embedded_images(b"junk".join(blobs))] == [(1024, 700), (600, 400), (300, 500)]
    wide = tmp_path / "wide"
    assert fetch.main(["--out", str(wide), "--max-side", "800", "--more", "--gcompris"]) == 0
    assert len(list(wide.iterdir())) == 50 + 3 * len(activities)
    monument = Image.open(wide / "gcompris-explore_monuments-000.png")
    assert monument.size == (800, 547) and monument.getpixel((400, 270))[0] > 150
    assert Image.open(wide / "gcompris-categorization-002.png").size == (300, 500)


def _jpeg(size, colour) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "JPEG")
    return buffer.getvalue()


def _png(size, colour) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def _eet_archive(entries: dict[str, bytes]) -> bytes:
    """An Eet v2 file as Enlightenment writes it: header, directory of (offset, size, data size,
    name offset, name size, flags), names, then the data."""
    directory_end = 12 + 24 * len(entries)
    names = b"".join(n.encode() + b"\0" for n in entries)
    name_at, data_at, directory, data = directory_end, directory_end + len(names), b"", b""
    for name, blob in entries.items():
        directory += struct.pack(">6I", data_at + len(data), len(blob), len(blob), name_at, len(name) + 1, 0)
        name_at += len(name) + 1
        data += blob
    return struct.pack(">III", 0x1EE70F42, len(entries), 0) + directory + names + data


def test_make_sr_graphics_draws_seeded_images_without_heldout_photos(tmp_path, monkeypatch):
    """The synthetic-graphics maker: the asked number of square PNGs, the same bytes for the same seed,
    other images for another seed, hard edges drawn in, and no held-out photo ever used as a background."""
    from wordcanvas.sr.data import HELDOUT_PHOTOS

    graphics = _load_script("make_sr_graphics")
    backgrounds = []
    load = graphics.load_photo
    monkeypatch.setattr(graphics, "load_photo", lambda name: backgrounds.append(name) or load(name))
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        assert graphics.main(["--out", str(tmp_path / name), "--count", "4", "--size", "96", "--seed", str(seed)]) == 0
        runs[name] = [p.read_bytes() for p in sorted((tmp_path / name).iterdir())]
    assert len(runs["a"]) == 4 and runs["a"] == runs["b"] and runs["a"] != runs["c"]
    assert backgrounds and not set(backgrounds) & set(HELDOUT_PHOTOS)
    for path in sorted((tmp_path / "a").iterdir()):
        image = np.asarray(Image.open(path), dtype=np.float32)
        assert image.shape == (96, 96, 3)
        step = max(np.abs(np.diff(image, axis=0)).max(), np.abs(np.diff(image, axis=1)).max())
        assert step > 80, path.name  # a hard edge (a shape's border, a letter) in some channel, even after the blur


def test_sample_grid_of_a_large_patch_size_cuts_every_photo_to_the_smallest(tmp_path):
    """At 160 px patches the grid asks for 320 px centre crops, but chelsea is 300 px high: every tile is cut to
    300 px around the centre, so the grid still assembles (it used to fail at the end of such a run)."""
    fam = train(_cfg(tmp_path / "run", resolution=160, batch=2, steps=1, sample_every=1)).family
    assert list((tmp_path / "run" / "samples").glob("*.png"))
    tiles = fam.sample(["chelsea", "astronaut"], 4)  # per photo: LR (nearest), bicubic, network, HR
    assert tiles.shape == (8, 3, 300, 300)
    for row, name in enumerate(["chelsea", "astronaut"]):
        img = load_photo(name)
        y, x = (img.shape[0] - 300) // 2, (img.shape[1] - 300) // 2
        expected = torch.from_numpy(img[y:y + 300, x:x + 300].copy()).permute(2, 0, 1).float() / 127.5 - 1
        assert torch.allclose(tiles[4 * row + 3].cpu(), expected)
