"""The one training loop: learning, exact resume, checkpoints, signals, EMA, distributed, CLI, generation.

Everything runs on tiny models (16 px) with a hash-based fake text encoder and a synthetic dataset
of coloured squares whose caption names the colour, so the tests need no downloads.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wordcanvas.data.base import CaptionedDataset, LabelSpec, Prompt
from wordcanvas.models.base import CheckpointError
from wordcanvas.text.base import TextEmbedding, TextEncoder
from wordcanvas.train import TrainConfig, train
from wordcanvas.train import checkpoint as ckpt
from wordcanvas.train.loop import ema_beta, update_ema


# --- fakes ------------------------------------------------------------------------------------

class HashEncoder(TextEncoder):
    """Each word -> a fixed random vector seeded by its md5; pooled = mean of the words."""

    name, dim, max_tokens = "hash-test", 16, 8

    def _encode_batch(self, texts):
        tokens = torch.zeros(len(texts), self.max_tokens, self.dim)
        mask = torch.zeros(len(texts), self.max_tokens, dtype=torch.bool)
        for i, text in enumerate(texts):
            for j, word in enumerate(text.lower().split()[: self.max_tokens]):
                g = torch.Generator().manual_seed(int(hashlib.md5(word.encode()).hexdigest()[:8], 16))
                tokens[i, j], mask[i, j] = torch.randn(self.dim, generator=g), True
        return TextEmbedding(tokens, mask, tokens.sum(1) / mask.sum(1, keepdim=True).clamp(min=1))


PALETTE = {"red": (1.0, -1.0, -1.0), "green": (-1.0, 1.0, -1.0), "blue": (-1.0, -1.0, 1.0),
           "yellow": (1.0, 1.0, -1.0), "cyan": (-1.0, 1.0, 1.0), "magenta": (1.0, -1.0, 1.0)}
NAMES = list(PALETTE)


class ColourSquares(CaptionedDataset):
    """A saturated square (half the image side) at a random place on a dark noisy background."""

    channels, name = 3, "colour-squares"
    label_spec = LabelSpec({"colour": NAMES})

    def __init__(self, n: int = 192, resolution: int = 16, seed: int = 0):
        super().__init__(seed)
        self.n, self.resolution = n, resolution

    def __len__(self):
        return self.n

    def image(self, i):
        g = torch.Generator().manual_seed(1000 + i)
        r, s = self.resolution, self.resolution // 2
        img = torch.full((3, r, r), -0.6) + 0.05 * torch.randn(3, r, r, generator=g)
        y, x = torch.randint(0, r - s + 1, (2,), generator=g).tolist()
        img[:, y:y + s, x:x + s] = torch.tensor(PALETTE[NAMES[i % 6]])[:, None, None]
        return img.clamp(-1, 1)

    def captions(self, i):
        c = NAMES[i % 6]
        return [f"a {c} square", f"{c} block", f"a small {c} box"]

    def labels(self, i):
        return {"colour": i % 6}

    def eval_prompts(self, n, seed=0, heldout=False):
        return [Prompt(f"a {NAMES[k % 6]} square", {"colour": k % 6}) for k in range(n)]


def colour_of(images: torch.Tensor) -> torch.Tensor:
    """Independent judge: nearest palette colour to the mean of each image's bright pixels."""
    palette = torch.tensor(list(PALETTE.values()))
    out = []
    for im in images:
        px = im.flatten(1).T
        bright = px[px.max(1).values > 0]
        out.append(-1 if len(bright) == 0 else int(torch.cdist(bright.mean(0, keepdim=True), palette).argmin()))
    return torch.tensor(out)


TINY = {"generator": {"ngf": 8, "max_channels": 32, "cond_dim": 16, "z_dim": 8, "attn_resolutions": [8]},
        "discriminator": {"ndf": 8, "max_channels": 32, "cond_dim": 16}}


def tiny_config(out, **kw) -> TrainConfig:
    base = dict(family="gan", data="colour-squares", encoder="hash-test", resolution=16, out=str(out), batch=8,
                log_every=2, sample_every=0, ckpt_every=3, ema_kimg=0.05, progress=False, threads=1,
                sample_prompts=3, sample_per_prompt=2,
                model={**TINY, "reg_every": 2, "mode_seeking": 0.5})
    base.update(kw)
    return TrainConfig(**base)


def all_state(result) -> dict[str, torch.Tensor]:
    """Every weight and optimizer tensor of a finished run, flattened into one dict."""
    out = {}
    for name, module in result.family.modules.items():
        out.update({f"{name}.{k}": v for k, v in module.state_dict().items()})
    for name, opt in result.family.optimizers.items():
        for pid, st in opt.state_dict()["state"].items():
            out.update({f"opt.{name}.{pid}.{k}": v for k, v in st.items() if torch.is_tensor(v)})
    return out


def assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def straight_and_resumed(tmp_path, model: dict, make_dataset, steps: int = 4, stop: int = 2):
    """A tiny run with these model settings trained `steps` in one go and, in another folder, `stop`
    steps and then resumed to `steps` (a fresh copy of the settings each time, as each command line
    gives); every weight and optimizer tensor must be identical. Returns (straight, resumed)."""
    def run(folder: str, n: int):
        return train(tiny_config(tmp_path / folder, steps=n, model=json.loads(json.dumps(model))),
                     dataset=make_dataset(), encoder=HashEncoder())

    straight = run("straight", steps)
    run("split", stop)
    resumed = run("split", steps)
    assert resumed.step == steps
    assert_identical(all_state(straight), all_state(resumed))
    return straight, resumed


# --- a short run that must learn -------------------------------------------------------------

@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    """~200 steps on coloured squares; shared by the tests that need a trained model."""
    out = tmp_path_factory.mktemp("learned") / "run"
    cfg = TrainConfig(family="gan", data="colour-squares", encoder="hash-test", resolution=16, out=str(out),
                      steps=200, batch=32, lr=1e-3, lr_d=1e-3, ema_kimg=1.0, log_every=20, sample_every=100,
                      ckpt_every=100, progress=False, threads=1,
                      model={"generator": {"ngf": 16, "max_channels": 64, "cond_dim": 32, "z_dim": 16,
                                           "attn_resolutions": []},
                             "discriminator": {"ndf": 16, "max_channels": 64, "cond_dim": 32, "residual_gain": 0.0},
                             "augment": ""})
    return train(cfg, dataset=ColourSquares(), encoder=HashEncoder())


def test_short_training_learns_the_colour_named_in_the_caption(learned):
    prompts = [f"a {c} square" for c in NAMES for _ in range(8)]
    images = learned.family.generate(prompts, seed=123)
    truth = torch.arange(6).repeat_interleave(8)
    accuracy = (colour_of(images) == truth).float().mean().item()
    assert accuracy >= 0.5, f"conditional accuracy {accuracy:.2f} (chance 0.17)"


def test_discriminator_scores_matching_captions_above_mismatched_ones(learned):
    """The matching-aware terms taught D that a real image with another colour's caption is 'fake'."""
    fam = learned.family
    data = ColourSquares(n=300)
    images = torch.stack([data.image(192 + i) for i in range(60)])  # not among the 192 training images
    right = [f"a {NAMES[i % 6]} square" for i in range(60)]
    wrong = [f"a {NAMES[(i + 3) % 6]} square" for i in range(60)]  # the complementary colour
    enc = HashEncoder()
    with torch.no_grad():
        _, m_right = fam.D(images, enc.encode(right).pooled)
        _, m_wrong = fam.D(images, enc.encode(wrong).pooled)
    from wordcanvas.train.gan_step import d_fake_loss, d_real_loss

    assert (m_right > m_wrong).float().mean() > 0.9
    # Treated as a real pair, a mismatched caption costs D more than the true one.
    assert d_real_loss("hinge", m_wrong) > d_real_loss("hinge", m_right)
    assert d_fake_loss("hinge", m_wrong) < d_fake_loss("hinge", m_right)


def test_run_folder_has_log_plots_samples_checkpoints_and_final(learned):
    run = learned.run_dir
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in records if r["kind"] == "train"]
    assert train_steps == list(range(20, 201, 20))
    assert all({"loss_d", "loss_g", "images_per_s"} <= set(r) for r in records)
    assert (run / "losses.png").exists() and (run / "samples" / "step-000100.png").exists()
    grid = Image.open(run / "samples" / "step-000200.png")
    assert json.loads(grid.text["prompts"])[0] == "a red square"
    assert [p.name for p in ckpt.step_folders(run / "checkpoints")] == ["step-0000200", "step-0000100"]
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-0000200"
    assert json.loads((run / "final" / "model.json").read_text())["family"] == "gan"
    assert TrainConfig.from_dict(json.loads((run / "config.json").read_text())).steps == 200


def test_generation_is_deterministic_per_seed_and_prompt(learned):
    from wordcanvas.generate import TextToImage

    t2i = TextToImage.from_pretrained(learned.run_dir, encoder=HashEncoder())
    a = t2i(["a blue square", "a red square"], n=3, seed=5)
    assert a.shape == (6, 3, 16, 16) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, t2i(["a blue square", "a red square"], n=3, seed=5))
    # image j of a prompt uses seed + j (equal up to float rounding: batch size changes the conv kernels)
    torch.testing.assert_close(a[4:5], t2i("a red square", n=1, seed=6), atol=1e-5, rtol=0)
    b = t2i(["a blue square", "a red square"], n=3, seed=6)
    assert not torch.allclose(a[0], b[0])
    t2i_trunc = t2i(["a blue square"], n=64, seed=0, truncation=0.5)
    assert t2i_trunc.std(0).mean() < t2i(["a blue square"], n=64, seed=0).std(0).mean()  # less variety


def test_gan_cls_architecture_learns_and_generates_each_image_independently_of_its_batch(tmp_path):
    """The lighter GAN-CLS generator (conditional BatchNorm) through the same loop: it learns the
    colour, and in eval mode (running statistics) an image does not depend on the rest of its batch."""
    from wordcanvas.generate import TextToImage

    cfg = TrainConfig(family="gan", data="colour-squares", encoder="hash-test", resolution=16, out=str(tmp_path / "cls"),
                      steps=150, batch=32, lr=1e-3, lr_d=1e-3, ema_kimg=1.0, log_every=50, sample_every=0,
                      ckpt_every=0, progress=False, threads=1,
                      model={"arch": "gan-cls", "generator": {"ngf": 16, "cond_dim": 16, "z_dim": 16},
                             "discriminator": {"ndf": 8, "cond_head": "projection"}, "reg": "r1",
                             "reg_weight": 0.1, "augment": ""})
    result = train(cfg, dataset=ColourSquares(), encoder=HashEncoder())
    assert type(result.family.G).__name__ == "GANCLSGenerator"
    t2i = TextToImage.from_pretrained(result.run_dir, encoder=HashEncoder())
    prompts = [f"a {c} square" for c in NAMES]
    images = t2i(prompts, n=8, seed=3)
    accuracy = (colour_of(images) == torch.arange(6).repeat_interleave(8)).float().mean().item()
    assert accuracy >= 0.5, f"conditional accuracy {accuracy:.2f} (chance 0.17)"
    torch.testing.assert_close(images[8:9], t2i(prompts[1], n=1, seed=3), atol=1e-5, rtol=0)


def test_standing_statistics_describe_the_ema_generator_and_keep_resume_exact(tmp_path):
    """GAN-CLS (BatchNorm) with an EMA generator: before a checkpoint or export, the EMA generator's
    running statistics are re-estimated from its own activations (a cumulative average over the
    standing batches), deterministically, and an interrupted run still resumes bit for bit."""
    cls = {"arch": "gan-cls", "generator": {"ngf": 8, "cond_dim": 16, "z_dim": 8},
           "discriminator": {"ndf": 8, "cond_head": "projection"}, "reg": "r1", "reg_weight": 0.1, "augment": "",
           "standing_stats": 3}
    make = lambda out, steps: tiny_config(out, steps=steps, model=cls, ema_kimg=1.0)  # noqa: E731
    straight = train(make(tmp_path / "a", 6), dataset=ColourSquares(n=40), encoder=HashEncoder())
    train(make(tmp_path / "b", 3), dataset=ColourSquares(n=40), encoder=HashEncoder())
    resumed = train(make(tmp_path / "b", 6), dataset=ColourSquares(n=40), encoder=HashEncoder())
    assert_identical(all_state(straight), all_state(resumed))

    fam = straight.family
    norm = next(m for m in fam.G_ema.modules() if isinstance(m, torch.nn.BatchNorm2d))
    live = next(m for m in fam.G.modules() if isinstance(m, torch.nn.BatchNorm2d))
    kept = norm.running_mean.clone(), norm.running_var.clone()
    assert not torch.allclose(kept[0], live.running_mean), "the EMA generator kept the live statistics"
    seen = []
    handle = norm.register_forward_hook(lambda module, args, out: seen.append(args[0].detach().clone()))
    fam.prepare_inference(6)  # the same draws as the export of step 6
    handle.remove()
    assert len(seen) == 3 and not fam.G_ema.training
    torch.testing.assert_close(norm.running_mean, kept[0], rtol=0, atol=0)
    torch.testing.assert_close(norm.running_var, kept[1], rtol=0, atol=0)
    # independently: the mean of the layer's inputs over every standing batch, and the average of
    # the batches' unbiased variances
    inputs = torch.stack(seen)  # (batches, N, C, H, W)
    torch.testing.assert_close(norm.running_mean, inputs.mean(dim=(0, 1, 3, 4)), rtol=1e-5, atol=1e-6)
    per_batch_var = torch.stack([x.transpose(0, 1).reshape(x.shape[1], -1).var(dim=1) for x in seen])
    torch.testing.assert_close(norm.running_var, per_batch_var.mean(0), rtol=1e-5, atol=1e-6)
    # switched off: the live generator's statistics, as copied by the EMA update
    off = train(tiny_config(tmp_path / "c", steps=6, model={**cls, "standing_stats": 0}, ema_kimg=1.0),
                dataset=ColourSquares(n=40), encoder=HashEncoder())
    norms = [m for m in off.family.G_ema.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    lives = [m for m in off.family.G.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(torch.equal(a.running_mean, b.running_mean) for a, b in zip(norms, lives))


# --- EMA -------------------------------------------------------------------------------------

def test_ema_beta_and_update_follow_the_formula():
    # half-life 10 kimg, batch 32, no ramp-up: beta = 0.5 ** (32 / 10000)
    assert ema_beta(10.0, None, 50_000, 32) == pytest.approx(0.5 ** (32 / 10_000))
    # ramp-up: after 1000 images the half-life is at most 0.05 * 1000 = 50 images
    assert ema_beta(10.0, 0.05, 1000, 32) == pytest.approx(0.5 ** (32 / 50))
    assert ema_beta(10.0, 0.05, 0, 32) == 0.0  # first step copies the weights
    live, ema = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    live.register_buffer("count", torch.tensor([7.0]))
    ema.register_buffer("count", torch.tensor([0.0]))
    before = [p.detach().clone() for p in ema.parameters()]
    update_ema(ema, live, 0.9)
    for old, new, p in zip(before, ema.parameters(), live.parameters()):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * p.detach())
    assert ema.count.item() == 7.0


# --- exact resume, corrupt checkpoints, signals ----------------------------------------------

@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """6 steps without interruption (reference for the resume tests)."""
    return train(tiny_config(tmp_path_factory.mktemp("straight") / "run", steps=6),
                 dataset=ColourSquares(n=40), encoder=HashEncoder())


def test_resume_is_bit_identical_to_an_uninterrupted_run(straight_run, tmp_path):
    first = train(tiny_config(tmp_path / "run", steps=3), dataset=ColourSquares(n=40), encoder=HashEncoder())
    assert first.step == 3 and (tmp_path / "run" / "checkpoints" / "step-0000003").is_dir()
    resumed = train(tiny_config(tmp_path / "run", steps=6, resume=True), dataset=ColourSquares(n=40),
                    encoder=HashEncoder())
    assert resumed.step == 6
    assert_identical(all_state(straight_run), all_state(resumed))
    # Log: steps 2 (first run), then 4 and 6 (resumed), no duplicates.
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [2, 3, 4, 6]


def test_resume_with_a_trainable_encoder_is_bit_identical(tmp_path):
    """The trainable encoder (dropout: global RNG) is trained jointly, saved and restored."""
    from wordcanvas.text.trainable import TrainableEncoder

    data = ColourSquares(n=40)
    captions = sorted({c for i in range(6) for c in data.captions(i)})
    make = lambda: TrainableEncoder.build(captions, min_count=1, dim=16, depth=1, heads=2, max_tokens=8)  # noqa: E731
    runs = []
    for name, splits in (("a", [6]), ("b", [4, 6])):
        for steps in splits:
            runs.append(train(tiny_config(tmp_path / name, steps=steps, ckpt_every=0), dataset=data, encoder=make()))
    straight, resumed = runs[0], runs[2]
    assert "encoder" in straight.family.modules
    before = make().state_dict()
    after = straight.family.modules["encoder"].state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), "the encoder did not train"
    assert_identical(all_state(straight), all_state(resumed))
    assert (tmp_path / "a" / "final" / "encoder" / "model.safetensors").exists()


def test_corrupt_checkpoint_is_refused_and_resume_falls_back(straight_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(straight_run.run_dir, run)
    root = run / "checkpoints"
    newest = root / "step-0000006"
    # A torn weights file: refused by the checksum and by the safetensors reader.
    weights = newest / "generator" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"corrupt: generator/model.safetensors"):
        ckpt.verify_checkpoint(newest)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        from wordcanvas.models.gan import Generator

        Generator.from_pretrained(newest / "generator")
    warnings = []
    folder, manifest = ckpt.latest_good_checkpoint(root, warn=warnings.append)
    assert folder.name == "step-0000003" and manifest["step"] == 3
    assert len(warnings) == 1 and "falling back" in warnings[0]
    # Resuming falls back to step 3 and retrains steps 4-6 to the very same weights.
    with pytest.warns(UserWarning, match="corrupt"):
        resumed = train(tiny_config(run, steps=6), dataset=ColourSquares(n=40), encoder=HashEncoder())
    assert_identical(all_state(straight_run), all_state(resumed))
    assert ckpt.verify_checkpoint(newest)["step"] == 6  # rewritten whole
    # A same-size bit flip in the training state is caught by the manifest checksum.
    state = newest / ckpt.STATE
    raw = bytearray(state.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    state.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="training_state.pt has sha256"):
        ckpt.verify_checkpoint(newest)


def test_resume_refuses_a_run_folder_with_other_settings(straight_run, tmp_path):
    import shutil

    shutil.copytree(straight_run.run_dir, tmp_path / "run")
    with pytest.raises(ValueError, match="different settings"):
        train(tiny_config(tmp_path / "run", steps=8, seed=1), dataset=ColourSquares(n=40), encoder=HashEncoder())
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(tiny_config(tmp_path / "empty", steps=2, resume=True), dataset=ColourSquares(n=40), encoder=HashEncoder())


def test_sigterm_finishes_the_step_saves_and_exits(tmp_path):
    """SIGTERM arrives during step 4 (sent by the evaluator); the loop stops after it with a checkpoint."""

    def evaluator(generate):
        os.kill(os.getpid(), signal.SIGTERM)
        return {"fid": 1.0}

    before = signal.getsignal(signal.SIGTERM)
    result = train(tiny_config(tmp_path / "run", steps=50, eval_every=4, ckpt_every=0),
                   dataset=ColourSquares(n=40), encoder=HashEncoder(), evaluator=evaluator)
    assert result.stopped_early and result.step == 4
    assert ckpt.verify_checkpoint(tmp_path / "run" / "checkpoints" / "step-0000004")["step"] == 4
    assert ckpt.verify_checkpoint(tmp_path / "run" / "checkpoints" / "best")["best"]["value"] == 1.0
    assert (tmp_path / "run" / "final" / "generator" / "model.safetensors").exists()
    assert signal.getsignal(signal.SIGTERM) is before  # handlers restored


# --- other families and processes -------------------------------------------------------------

def test_dcgan_baseline_trains_through_the_same_loop(tmp_path):
    from wordcanvas.generate import TextToImage

    cfg = tiny_config(tmp_path / "run", family="dcgan", steps=4, model={"model": {"ngf": 8, "ndf": 8}})
    result = train(cfg, dataset=ColourSquares(n=40))
    assert set(result.family.modules) == {"generator", "discriminator"}
    t2i = TextToImage.from_pretrained(tmp_path / "run")
    images = t2i(["a magenta square", "cyan block"], n=2, seed=0)
    assert images.shape == (4, 3, 16, 16)
    assert torch.equal(images, t2i(["a magenta square", "cyan block"], n=2, seed=0))
    with pytest.raises(ValueError, match="names none of the classes"):
        t2i("a purple square")


def test_keep_steps_survive_pruning_of_older_checkpoints(tmp_path):
    cfg = tiny_config(tmp_path / "run", steps=8, ckpt_every=2, keep_last=2, keep_steps=[2])
    train(cfg, dataset=ColourSquares(n=40), encoder=HashEncoder())
    kept = [p.name for p in ckpt.step_folders(tmp_path / "run" / "checkpoints")]
    assert kept == ["step-0000008", "step-0000006", "step-0000002"]  # 4 pruned, 2 kept by request


DIST_SCRIPT = """
import json, sys, torch
sys.path.insert(0, {tests!r})
from test_train_loop import ColourSquares, HashEncoder, tiny_config
from wordcanvas.train import train
import torch.distributed as dist
result = train(tiny_config({out!r}, steps=4, batch=4, ckpt_every=2), dataset=ColourSquares(n=40), encoder=HashEncoder())
g = result.family.modules["generator"]
digest = float(sum(p.double().sum() for p in g.parameters()))
open({report!r} + str(result.family.dist.rank), "w").write(json.dumps({{"digest": digest, "step": result.step,
    "world": result.family.dist.world}}))
"""


def test_two_process_gloo_run_syncs_and_only_rank0_writes(tmp_path):
    out, report = tmp_path / "run", tmp_path / "rank"
    script = tmp_path / "dist_train.py"
    script.write_text(textwrap.dedent(DIST_SCRIPT.format(tests=str(Path(__file__).parent), out=str(out),
                                                         report=str(report))))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script)], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads(Path(f"{report}{r}").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 and r["step"] == 4 for r in ranks)
    assert ranks[0]["digest"] == ranks[1]["digest"]  # averaged gradients keep the replicas equal
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]  # one writer
    assert [p.name for p in ckpt.step_folders(out / "checkpoints")] == ["step-0000004", "step-0000002"]
    manifest = ckpt.verify_checkpoint(out / "checkpoints" / "step-0000004")
    assert manifest["images_seen"] == 4 * 4 * 2  # global batch = per-rank batch x world size


# --- command line ----------------------------------------------------------------------------

def test_cli_train_then_generate(tmp_path, monkeypatch, capsys):
    from wordcanvas.cli import main

    monkeypatch.setenv("WORDCANVAS_CACHE", str(tmp_path / "cache"))
    data = ColourSquares(n=24, resolution=16)
    folder = tmp_path / "images"
    folder.mkdir()
    from wordcanvas.utils.io import tensor_to_pil

    for i in range(24):
        tensor_to_pil(data.image(i)).save(folder / f"{i:02d}.png")
        (folder / f"{i:02d}.txt").write_text("\n".join(data.captions(i)) + "\n")
    config = tmp_path / "settings.json"
    config.write_text(json.dumps({"model": TINY, "log_every": 1, "sample_every": 2, "ckpt_every": 2,
                                  "sample_prompts": 2, "sample_per_prompt": 2}))
    run = tmp_path / "run"
    argv = lambda steps: ["train", "gan", "--data", str(folder), "--encoder", "trainable", "--res", "16",  # noqa: E731
                          "--steps", str(steps), "--batch", "4", "--threads", "1", "--config", str(config),
                          "--set", 'model.augment="translation"', "--no-progress", "--out", str(run)]
    assert main(argv(2)) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["model"]["augment"] == "translation" and saved["steps"] == 2 and saved["log_every"] == 1
    assert main(argv(4)) == 0  # the same command with more steps resumes
    assert [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()] == [1, 2, 3, 4]

    grid = tmp_path / "grid.png"
    assert main(["generate", "a red square", "a blue block", "--model", str(run), "-n", "3", "--seed", "4",
                 "--out", str(grid)]) == 0
    png = Image.open(grid)
    assert json.loads(png.text["prompts"]) == ["a red square", "a blue block"] and png.text["seed"] == "4"
    assert png.size == (3 * 18 + 2, 2 * 18 + 2)
    folder_out = tmp_path / "pngs"
    assert main(["generate", "a red square", "--model", str(run / "final"), "-n", "2", "--seed", "4",
                 "--out", str(folder_out)]) == 0
    files = sorted(folder_out.iterdir())
    assert [f.name for f in files] == ["000-a-red-square-seed4.png", "000-a-red-square-seed5.png"]
    assert Image.open(files[1]).text["prompt"] == "a red square" and Image.open(files[1]).text["seed"] == "5"

    # editing a GAN by inversion from the command line, with per-layer style offsets
    edited, plain = tmp_path / "edited.png", tmp_path / "plain.png"
    common = [str(folder / "00.png"), "--text", "a blue block", "--source-caption", data.captions(0)[0],
              "--model", str(run), "--steps", "3", "--threads", "1"]
    assert main(["edit", *common, "--style-weight", "0.01", "--out", str(edited)]) == 0
    assert main(["edit", *common, "--no-styles", "--out", str(plain)]) == 0
    assert Image.open(edited).size == (16, 16)
    pixels = lambda path: np.asarray(Image.open(path)).tolist()  # noqa: E731
    assert pixels(edited) != pixels(plain)  # the styles are used
    default, spelled = tmp_path / "default.png", tmp_path / "spelled.png"  # styles at 0.001 by default
    assert main(["edit", *common, "--out", str(default)]) == 0
    assert main(["edit", *common, "--style-weight", "0.001", "--out", str(spelled)]) == 0
    assert pixels(default) == pixels(spelled) and pixels(default) != pixels(plain)
    # a local blend with the source caption as the target: the caption change acts nowhere, the source comes back
    unchanged = tmp_path / "unchanged.png"
    assert main(["edit", str(folder / "00.png"), "--text", data.captions(0)[0], *common[3:], "--local-blend", "0.35",
                 "--out", str(unchanged)]) == 0
    assert pixels(unchanged) == pixels(folder / "00.png") != pixels(default)
    # so does the whole residual (the image minus its reconstruction) added back to an unchanged caption
    kept = tmp_path / "kept.png"
    assert main(["edit", str(folder / "00.png"), "--text", data.captions(0)[0], *common[3:], "--residual", "1",
                 "--out", str(kept)]) == 0
    assert pixels(kept) == pixels(folder / "00.png")
    assert float(Image.open(kept).text["residual"]) == 1.0
    # the discriminator (no contrastive head: its conditional logits) chooses strength and blend
    auto = tmp_path / "auto.png"
    assert main(["edit", *common, "--strength", "auto", "--out", str(auto)]) == 0
    assert Image.open(auto).size == (16, 16)
    with pytest.raises(SystemExit):
        main(["edit", *common, "--strength", "strong", "--out", str(auto)])
    assert "expected a number or 'auto'" in capsys.readouterr().err
    capsys.readouterr()
    assert main(["edit", *common, "--style-weight", "0.01", "--no-offset", "--out", str(tmp_path / "no.png")]) != 0
    assert "style_weight needs offset_weight" in capsys.readouterr().err
    assert not (tmp_path / "no.png").exists()
