"""Multi-process training and evaluation (torchrun, gloo on CPU) against one process.

Training: 2 processes x batch 2 must train like 1 process x batch 4 (the same global batch): each
rank takes its slice of the global batch and of every per-sample random draw, and gradients are
averaged, so the only differences are float summation orders.

TOLERANCE, after 4 steps, over every weight and Adam moment (a difference is divided by its
tensor's largest magnitude where that exceeds 1: the VAE's Adam moments, gradients of nats per
image, reach ~20): at most 1 element in 10^4 differs by more than 1e-5, none by more than 1e-4;
almost all agree to ~1e-7. The few outliers are float effects, not sampling: Adam divides each
gradient element by its own RMS, so an element whose gradient cancels to roundoff level (~1e-9,
its sign set by summation order) still steps by a sizeable fraction of the learning rate
(measured: 2 of 206k GAN weights beyond 1e-5, the largest 7.4e-5 with lr_d 4e-4; VAE weights all
within 1e-5). Steps 3-4 alone move most elements by more than 1e-5 (checked), and the old per-rank
draws differ in ~60% of the elements, so the bound is meaningful.

Not equal by construction, hence not tested here: the DCGAN (BatchNorm normalises over each
process's own batch), the GAN's mode-seeking term (pairs within the local batch) and VAE free bits
(a clamp of each process's batch-mean KL).

Evaluation: 2 processes each generate and extract Inception features for half of the batches; the
gathered result must equal one process's (FID to 1e-6 relative).
"""
from __future__ import annotations

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

from test_train_loop import ColourSquares, HashEncoder, all_state, tiny_config
from wordcanvas.train import train

CLOSE, OUTLIERS, WORST = 1e-5, 1e-4, 1e-4  # see the module doc
TESTS = str(Path(__file__).parent)

# MA-GP on steps 0 and 2; D reads the tokens per region, so the mismatched captions' tokens cross processes too
GAN_MODEL = {**tiny_config("unused").model, "mode_seeking": 0.0, "reg_every": 2,
             "discriminator": {**tiny_config("unused").model["discriminator"], "cond_tokens": True}}
VAE_MODEL = {"model": {"nf": 8, "max_channels": 16, "z_dim": 8, "cond_dim": 8, "attn_resolutions": [8]},
             "kl_warmup": 4, "adversarial_weight": 0.1, "discriminator": {"ndf": 8, "max_channels": 16, "cond_dim": 8}}


def gan_config(out, batch: int, steps: int, **kw):
    return tiny_config(out, batch=batch, steps=steps, ckpt_every=2, log_every=2, model=GAN_MODEL, **kw)


def vae_config(out, batch: int, steps: int, **kw):
    return tiny_config(out, family="vae", batch=batch, steps=steps, ckpt_every=0, log_every=2, model=VAE_MODEL, **kw)


def start_torchrun(script: Path, nproc: int = 2) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                             str(nproc), str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def torchrun(script: Path, nproc: int = 2, timeout: int = 300, proc: subprocess.Popen | None = None) -> None:
    """Run script on nproc local processes (or wait for `proc`, started by start_torchrun); on a
    timeout the whole process group is killed."""
    proc = proc or start_torchrun(script, nproc)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        pytest.fail(f"{script.name} did not finish in {timeout} s: {err[-4000:]}")
    assert proc.returncode == 0, err[-4000:]


def abs_diffs(a: dict, b: dict) -> torch.Tensor:
    assert a.keys() == b.keys()
    return torch.cat([(a[k].double() - b[k].double()).abs().flatten() for k in sorted(a)])


def assert_same_training(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    scale = {k: max([1.0] + [float(a[k].abs().max())] * bool(a[k].numel())) for k in a}
    d = torch.cat([(a[k].double() - b[k].double()).abs().flatten() / scale[k] for k in sorted(a)])
    beyond = int((d > CLOSE).sum())
    assert beyond <= OUTLIERS * len(d), f"{beyond} of {len(d)} elements differ by more than {CLOSE}"
    assert float(d.max()) < WORST


def train_records(run: Path) -> list[dict]:
    return [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if r["kind"] == "train"]


# --- training ----------------------------------------------------------------------------------

TRAIN_SCRIPT = """
import sys, torch
sys.path.insert(0, {tests!r})
from test_distributed import gan_config, vae_config
from test_train_loop import ColourSquares, HashEncoder, all_state
from wordcanvas.train import train
torch.distributed.init_process_group("gloo")  # one group for the three runs (train() then leaves it open)
data = ColourSquares(n=40)
gan = train(gan_config({root!r} + "/gan2", batch=2, steps=4), dataset=data, encoder=HashEncoder())
vae = train(vae_config({root!r} + "/vae2", batch=2, steps=4), dataset=data, encoder=HashEncoder())
half = train(gan_config({root!r} + "/half", batch=2, steps=2), dataset=data, encoder=HashEncoder())
rank = gan.family.dist.rank
torch.save({{"gan": all_state(gan), "vae": all_state(vae), "world": gan.family.dist.world}},
           {root!r} + f"/state{{rank}}.pt")
torch.distributed.destroy_process_group()
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two gloo processes x batch 2 (GAN 4 steps, VAE 4 steps, GAN 2 steps to resume from) and the
    same runs in this process with batch 4."""
    root = tmp_path_factory.mktemp("dist")
    script = root / "dist_train.py"
    script.write_text(textwrap.dedent(TRAIN_SCRIPT.format(tests=TESTS, root=str(root))))
    torchrun(script)
    data = ColourSquares(n=40)
    single = {"gan": train(gan_config(root / "gan1", batch=4, steps=4), dataset=data, encoder=HashEncoder()),
              "vae": train(vae_config(root / "vae1", batch=4, steps=4), dataset=data, encoder=HashEncoder())}
    ranks = [torch.load(root / f"state{r}.pt", weights_only=True) for r in (0, 1)]
    return root, single, ranks


@pytest.mark.parametrize("family", ["gan", "vae"])
def test_two_processes_train_like_one_with_the_same_global_batch(runs, family):
    root, single, ranks = runs
    assert ranks[0]["world"] == ranks[1]["world"] == 2
    one, two = all_state(single[family]), ranks[0][family]
    assert float(abs_diffs(two, ranks[1][family]).max()) == 0  # the replicas stay identical
    assert_same_training(one, two)
    # the logged losses are means over both ranks, so they match the single process's batch means
    log1, log2 = train_records(root / f"{family}1"), train_records(root / f"{family}2")
    assert [r["step"] for r in log1] == [r["step"] for r in log2] == [2, 4]
    for r1, r2 in zip(log1, log2):
        assert r1["kimg"] == r2["kimg"]
        losses = [k for k in r1 if k.startswith("loss")]
        assert losses and all(r1[k] == pytest.approx(r2[k], rel=1e-4, abs=1e-5) for k in losses)


def test_tolerance_is_far_below_what_training_moves(runs):
    """The bound means something: steps 3 and 4 move most weights by more than CLOSE, and some by
    more than WORST."""  # (per-rank noise, the old behaviour, changed ~60% of the elements by > 1e-5)
    from safetensors.torch import load_file

    root, single, _ = runs
    at2 = {}
    for name in single["gan"].family.modules:
        weights = load_file(root / "gan1" / "checkpoints" / "step-0000002" / name / "model.safetensors")
        at2.update({f"{name}.{k}": v for k, v in weights.items()})
    moved = abs_diffs({k: v for k, v in all_state(single["gan"]).items() if k in at2}, at2)
    assert float((moved > CLOSE).float().mean()) > 0.5 and float(moved.max()) > WORST


def test_resume_on_one_process_after_two(runs):
    """2 processes x batch 2 for 2 steps, then 1 process x batch 4 to step 4: the same as 4 steps on one."""
    root, single, _ = runs
    half = root / "half"
    assert json.loads((half / "checkpoints" / "step-0000002" / "manifest.json").read_text())["world"] == 2
    resumed = train(gan_config(half, batch=4, steps=4, resume=True), dataset=ColourSquares(n=40), encoder=HashEncoder())
    assert resumed.step == 4 and resumed.images_seen == 16
    assert_same_training(all_state(resumed), all_state(single["gan"]))
    assert [r["step"] for r in train_records(half)] == [2, 4]
    with pytest.raises(ValueError, match="different settings"):  # another global batch is another run
        train(gan_config(half, batch=2, steps=6), dataset=ColourSquares(n=40), encoder=HashEncoder())


# --- evaluation --------------------------------------------------------------------------------

_ORACLE: dict = {}


def oracle(prompts: list[str], seed: int) -> torch.Tensor:
    """A 'generator' returning real Fashion-MNIST test images of the prompted class, picked by seed;
    it records the seeds it was called with (which batches this process generated)."""
    from wordcanvas.data import load_dataset
    from wordcanvas.data.fashion_mnist import heldout_captions, train_captions

    if not _ORACLE:
        test = load_dataset("fashion-mnist", "test")
        _ORACLE["test"] = test
        _ORACLE["by_class"] = {k: [i for i in range(600) if test.labels(i)["class"] == k] for k in range(10)}
        _ORACLE["class_of"] = {t: k for k in range(10) for t in train_captions(k) + heldout_captions(k)}
        _ORACLE["seeds"] = []
    _ORACLE["seeds"].append(seed)
    g = torch.Generator().manual_seed(seed)
    picks = [_ORACLE["by_class"][_ORACLE["class_of"][p]] for p in prompts]
    return torch.stack([_ORACLE["test"].image(c[int(torch.randint(len(c), (1,), generator=g))]) for c in picks])


def evaluate_small(cache: Path) -> dict:
    """40 images in 4 batches of 10, FID against 40 real test images (cache: an empty folder, so the
    real features are extracted too); probe and R-precision ride along."""
    from wordcanvas.metrics.evaluate import evaluate_generator
    from wordcanvas.metrics.inception import InceptionFeatures

    os.environ["WORDCANVAS_CACHE"] = str(cache)
    return evaluate_generator(oracle, "fashion-mnist", n=40, batch_size=10, floor=False, diversity_prompts=0,
                              r_repeats=1, progress=False, keep_samples=16, extractor=InceptionFeatures(threads=1))


def quick_fid_small() -> float:
    """The training loop's quick FID evaluator (40 training images, chunks of 10) on the oracle."""
    from types import SimpleNamespace

    from wordcanvas.commands.train_cmd import quick_fid_evaluator

    cfg = SimpleNamespace(data="fashion-mnist", resolution=32, seed=0, data_options={})
    evaluate = quick_fid_evaluator(cfg, 40, chunk=10)
    return evaluate(lambda prompts, seed: oracle([p.text for p in prompts], seed))["fid"]


EVAL_SCRIPT = """
import json, sys, torch
from pathlib import Path
sys.path.insert(0, {tests!r})
torch.set_num_threads(1)
import test_distributed as t
torch.distributed.init_process_group("gloo")
result = t.evaluate_small(Path({root!r}) / "cache2")
rank = torch.distributed.get_rank()
torch.save({{"samples": result.pop("_samples"), "seeds": t._ORACLE["seeds"]}}, {root!r} + f"/eval{{rank}}.pt")
result["quick_fid"] = t.quick_fid_small()
Path({root!r} + f"/eval{{rank}}.json").write_text(json.dumps(result))
torch.distributed.destroy_process_group()
"""


def test_two_process_evaluation_gives_the_one_process_result(tmp_path, monkeypatch):
    from wordcanvas import assets

    try:
        assets.inception_torchscript(), assets.fashion_mnist_dir()
    except assets.AssetMissing as e:
        pytest.skip(str(e))
    script = tmp_path / "dist_eval.py"
    script.write_text(textwrap.dedent(EVAL_SCRIPT.format(tests=TESTS, root=str(tmp_path))))
    proc = start_torchrun(script)
    monkeypatch.setenv("WORDCANVAS_CACHE", str(tmp_path / "cache1"))  # restored after the test
    _ORACLE.clear()
    one = evaluate_small(tmp_path / "cache1")  # meanwhile, on otherwise idle cores
    torchrun(script, proc=proc)
    samples = one.pop("_samples")
    ranks = [json.loads((tmp_path / f"eval{r}.json").read_text()) for r in (0, 1)]
    extra = [torch.load(tmp_path / f"eval{r}.pt", weights_only=True) for r in (0, 1)]

    # each rank generated its half of the batches (batch b has seed b: evaluation seed 0)
    assert _ORACLE["seeds"] == [0, 1, 2, 3] and extra[0]["seeds"] == [0, 2] and extra[1]["seeds"] == [1, 3]
    # the loop's quick evaluator shares its chunks out the same way
    quick = quick_fid_small()
    assert ranks[0]["quick_fid"] == ranks[1]["quick_fid"] == pytest.approx(quick, rel=1e-6) and quick > 1
    for r in ranks + [one]:
        r.pop("seconds"), r.pop("quick_fid", None)
    assert ranks[0] == ranks[1]  # every rank returns the whole result
    two = ranks[0]
    assert two["n_fake"] == one["n_fake"] == 40 and two["n_real"] == one["n_real"] == 40
    assert two["fid"] == pytest.approx(one["fid"], rel=1e-6) and one["fid"] > 1
    for k in ("kid", "kid_std", "precision", "recall"):
        assert two[k] == pytest.approx(one[k], rel=1e-6, abs=1e-9)
    assert two["probe"]["per_attribute"] == one["probe"]["per_attribute"]
    assert two["r_precision"]["r_precision"] == one["r_precision"]["r_precision"]
    assert torch.equal(extra[0]["samples"], samples) and len(samples) == 16
    # the real features were extracted in shards too, and cached in the original order
    key = lambda cache: sorted((cache / "features").glob("*.npz"))  # noqa: E731
    assert len(key(tmp_path / "cache1")) == len(key(tmp_path / "cache2")) == 1
    a, b = (np.load(f[0])["features"].astype(np.float64) for f in (key(tmp_path / "cache1"), key(tmp_path / "cache2")))
    assert a.shape == (40, 2048) and np.allclose(a, b, rtol=0, atol=1e-5 * np.abs(a).max())
