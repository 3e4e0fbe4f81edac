"""The text-conditioned VAE: likelihoods and KL against independent references, a short Fashion-MNIST
run that must learn, exact resume through the shared loop, and the CLI (train, generate, reconstruct).

Text comes from a hash-based fake encoder (no downloads); the Fashion-MNIST runs use 16 px images
so everything stays fast on two cores.
"""
from __future__ import annotations

import atexit
import functools
import json
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wordcanvas.models.vae import (TextVAE, VAEConfig, discretized_log_prob, importance_weighted_nll,
                                   kl_gaussians, kl_standard_normal, negative_elbo, quantize)
from wordcanvas.train import TrainConfig, train

from test_train_loop import HashEncoder, all_state  # shared with the loop tests

LEVELS = torch.arange(256, dtype=torch.float64) / 127.5 - 1  # the 256 grey levels on the [-1, 1] scale


# --- likelihoods and KL against independent references ----------------------------------------

@pytest.mark.parametrize("kind", ["logistic", "gaussian"])
@pytest.mark.parametrize("loc,log_scale", [(0.0, -2.0), (0.93, -6.5), (-1.2, 0.5), (0.31, -4.0), (0.0, 1.9)])
def test_discretized_likelihood_sums_to_one_over_the_256_levels(kind, loc, log_scale):
    logp = discretized_log_prob(LEVELS, torch.tensor(loc, dtype=torch.float64),
                                torch.tensor(log_scale, dtype=torch.float64), kind)
    assert torch.isfinite(logp).all()
    assert logp.exp().sum().item() == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("kind", ["logistic", "gaussian"])
def test_discretized_likelihood_matches_cdf_differences(kind):
    """Each bin's mass equals F(x + 1/255) - F(x - 1/255) from torch.distributions (edges: the tails)."""
    from torch.distributions import Normal, TransformedDistribution, Uniform
    from torch.distributions.transforms import AffineTransform, SigmoidTransform

    loc, scale = torch.tensor(0.2, dtype=torch.float64), torch.tensor(0.15, dtype=torch.float64)
    if kind == "gaussian":
        dist = Normal(loc, scale)
    else:  # logistic = affine(logit(uniform))
        dist = TransformedDistribution(Uniform(torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)),
                                       [SigmoidTransform().inv, AffineTransform(loc, scale)])
    hi = dist.cdf(LEVELS + 1 / 255).clone()
    lo = dist.cdf(LEVELS - 1 / 255).clone()
    hi[-1], lo[0] = 1.0, 0.0
    ref = hi - lo
    got = discretized_log_prob(LEVELS, loc, scale.log(), kind).exp()
    torch.testing.assert_close(got, ref, atol=1e-12, rtol=1e-6)
    # float32, as in training: still finite and normalised far in the tails
    far = discretized_log_prob(LEVELS.float(), torch.tensor(-0.9), torch.tensor(-7.0), kind)
    assert torch.isfinite(far).all() and far.exp().sum().item() == pytest.approx(1.0, abs=1e-4)


def test_quantize_snaps_to_the_8_bit_levels():
    x = torch.tensor([-1.5, -1.0, -0.001, 0.5, 1.0, 2.0])
    q = quantize(x)
    torch.testing.assert_close((q + 1) * 127.5, ((q + 1) * 127.5).round())
    assert q.min() == -1 and q.max() == 1 and (q - x.clamp(-1, 1)).abs().max() <= 1 / 255 + 1e-6


def test_kl_of_two_gaussians_matches_torch_distributions():
    from torch.distributions import Normal, kl_divergence

    g = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(5, 7, generator=g) * 2, torch.randn(5, 7, generator=g)
    ref = kl_divergence(Normal(mean, (0.5 * logvar).exp()), Normal(torch.zeros(()), torch.ones(())))
    torch.testing.assert_close(kl_standard_normal(mean, logvar), ref)


def test_kl_to_a_text_prior_matches_torch_distributions():
    from torch.distributions import Normal, kl_divergence

    g = torch.Generator().manual_seed(1)
    mean, logvar, pm, plv = (torch.randn(5, 7, generator=g) for _ in range(4))
    ref = kl_divergence(Normal(mean, (0.5 * logvar).exp()), Normal(pm, (0.5 * plv).exp()))
    torch.testing.assert_close(kl_gaussians(mean, logvar, pm, plv), ref)
    torch.testing.assert_close(kl_gaussians(mean, logvar, torch.zeros(()), torch.zeros(())),
                               kl_standard_normal(mean, logvar))


def test_text_prior_starts_standard_and_noise_coordinates_round_trip():
    enc = HashEncoder()
    text = enc.encode(["a shoe", "a bag", "a coat"])
    model = tiny_vae()
    mean, logvar = model.prior(text)
    assert torch.equal(mean, torch.zeros(3, 4)) and torch.equal(logvar, torch.zeros(3, 4))  # N(0, I) at init
    with torch.no_grad():  # a trained prior differs per caption
        model.prior_net[-1].weight.normal_(generator=torch.Generator().manual_seed(0))
    mean, logvar = model.prior(text)
    assert (mean[0] - mean[1]).abs().max() > 0.1
    noise = torch.randn(3, 4, generator=torch.Generator().manual_seed(2))
    z = model.from_noise(noise, text)
    torch.testing.assert_close(z, mean + noise * (0.5 * logvar).exp())
    torch.testing.assert_close(model.to_noise(z, text), noise)
    torch.testing.assert_close(model(noise, text), model.decode(z, text))
    # the KL in the ELBO is against the caption's prior
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    qm, qlv = model.encode(x, text)
    terms = model.elbo_terms(x, text, torch.Generator().manual_seed(0))
    torch.testing.assert_close(terms["kl"], kl_gaussians(qm, qlv, mean, logvar))
    standard = tiny_vae(prior="standard")
    assert standard.prior_net is None and torch.equal(standard.from_noise(noise, text), noise)
    with pytest.raises(ValueError, match="prior"):
        VAEConfig(prior="flow")


def tiny_vae(likelihood="logistic", **kw) -> TextVAE:
    torch.manual_seed(0)
    return TextVAE(VAEConfig(resolution=8, channels=1, text_dim=16, z_dim=4, cond_dim=8, nf=8, max_channels=16,
                             likelihood=likelihood, **kw)).eval()


def test_importance_weighted_bound_is_at_least_as_tight_as_the_elbo():
    model, enc = tiny_vae(), HashEncoder()
    with torch.no_grad():  # a caption-dependent prior, as after training
        model.prior_net[-1].weight.normal_(0, 0.3, generator=torch.Generator().manual_seed(0))
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    text = enc.encode(["a shoe", "a bag", "a coat"])
    elbo = torch.stack([negative_elbo(model, x, text, torch.Generator().manual_seed(s)) for s in range(64)]).mean(0)
    iw = importance_weighted_nll(model, x, text, k=64, generator=torch.Generator().manual_seed(2))
    assert iw.shape == (3,) and torch.isfinite(iw).all()
    assert (iw <= elbo + 1e-3).all()  # log-mean-exp >= mean (Jensen); the analytic KL only tightens the ELBO side
    assert (iw > 0).all()  # -log of a probability mass over 64 discrete pixels


def test_decoder_outputs_and_likelihood_variants():
    enc = HashEncoder()
    text = enc.encode(["a shoe", "a bag"])
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(3)) * 2 - 1
    for likelihood, sigma in (("logistic", None), ("gaussian", None), ("gaussian", 0.1), ("bernoulli", None)):
        model = tiny_vae(likelihood, sigma=sigma)
        z = model.sample_noise(2, torch.Generator().manual_seed(0))
        img = model(z, text)
        assert img.shape == (2, 1, 8, 8) and img.min() >= -1 and img.max() <= 1
        logp = model.log_likelihood(x, model.decode_params(z, text))
        assert logp.shape == (2,) and (logp < 0).all()
    # a fixed-variance Gaussian is exactly a discretised normal around the decoder's mean
    model = tiny_vae("gaussian", sigma=0.1)
    params = model.decode_params(z, text)
    ref = discretized_log_prob(quantize(x), params, torch.full_like(params, math.log(0.1)), "gaussian").flatten(1).sum(1)
    torch.testing.assert_close(model.log_likelihood(x, params), ref)
    # temperature scales the prior draw
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    torch.testing.assert_close(model.sample_noise(3, g(), 0.5), 0.5 * model.sample_noise(3, g()))
    with pytest.raises(ValueError, match="sigma"):
        VAEConfig(likelihood="logistic", sigma=0.1)


# --- a short Fashion-MNIST run that must learn (shared with tests/test_edit.py) ------------------

WORDS = ["tshirt", "trousers", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]


def fashion16(size: int, split: str = "train"):
    from wordcanvas.data import load_dataset

    return load_dataset("fashion-mnist", split, 16, 0, size=size)


class OneWordFashion(torch.utils.data.Dataset):
    """16 px Fashion-MNIST captioned with one word per class: with the hash encoder's random word
    vectors, longer template captions would bury the class word (a real encoder does not need this)."""

    def __init__(self, size: int, split: str = "train"):
        self.data = fashion16(size, split)
        self.channels, self.resolution, self.label_spec = 1, 16, self.data.label_spec

    def __len__(self):
        return len(self.data)

    def image(self, i):
        return self.data.image(i)

    def labels(self, i):
        return self.data.labels(i)

    def captions(self, i):
        return [WORDS[self.data.labels(i)["class"]]]

    def __getitem__(self, i):
        return {"image": self.image(i), "caption": self.captions(i)[0], "labels": self.labels(i)}

    def eval_prompts(self, n, seed=0, heldout=False):
        from wordcanvas.data.base import Prompt

        return [Prompt(WORDS[k % 10], {"class": k % 10}) for k in range(n)]


def vae_config(out, **kw) -> TrainConfig:
    base = dict(family="vae", data="fashion-mnist", encoder="hash-test", resolution=16, out=str(out), batch=32,
                threads=1, log_every=25, sample_every=0, ckpt_every=0, progress=False, ema_kimg=0.5,
                sample_prompts=4, sample_per_prompt=2,
                model={"model": {"nf": 16, "max_channels": 64, "z_dim": 16, "cond_dim": 32}})
    base.update(kw)
    return TrainConfig(**base)


@functools.lru_cache(maxsize=1)
def trained_fashion_vae():
    """250 steps of the VAE on 16 px Fashion-MNIST (trained once per session, shared with test_edit.py)."""
    root = Path(tempfile.mkdtemp(prefix="wordcanvas-vae-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    model = {"model": {"nf": 16, "max_channels": 64, "z_dim": 16, "cond_dim": 32}, "beta_start": 20.0, "kl_warmup": 100}
    return train(vae_config(root / "run", steps=250, sample_every=250, model=model), dataset=OneWordFashion(4000),
                 encoder=HashEncoder())


@pytest.fixture(scope="module")
def learned():
    return trained_fashion_vae()


def test_short_run_lowers_the_negative_elbo_and_writes_the_run_folder(learned):
    records = [json.loads(line) for line in (learned.run_dir / "log.jsonl").read_text().splitlines()]
    bpd = [r["bpd"] for r in records if r["kind"] == "train"]
    assert len(bpd) == 10 and bpd[-1] < bpd[0] - 0.5, bpd
    assert bpd[-1] < 8.0  # bits/dim below a uniform distribution over 256 levels
    assert all({"loss_nelbo", "kl", "recon_nats", "active_dims"} <= set(r) for r in records)
    assert (learned.run_dir / "samples" / "step-000250.png").exists()
    meta = json.loads((learned.run_dir / "final" / "model.json").read_text())
    assert meta["family"] == "vae" and meta["truncation_mode"] == "scale"


@functools.lru_cache(maxsize=1)
def class_centroids() -> torch.Tensor:
    """Mean 16 px image of each class over 2,000 real training images (the judge below; the shipped
    probe is trained at 32 px and reads 16 px images poorly)."""
    data = fashion16(2000)
    x = torch.stack([data.image(i) for i in range(2000)])
    y = torch.tensor([data.labels(i)["class"] for i in range(2000)])
    return torch.stack([x[y == k].mean(0) for k in range(10)])


def judge_class(images: torch.Tensor) -> torch.Tensor:
    """Nearest class centroid (Euclidean), a judge independent of the model under test."""
    return torch.cdist(images.flatten(1), class_centroids().flatten(1)).argmin(1)


def test_the_centroid_judge_reads_real_images():
    from wordcanvas.data import load_dataset

    test = load_dataset("fashion-mnist", "test", 16, 0, size=300)
    x = torch.stack([test.image(i) for i in range(300)])
    y = torch.tensor([test.labels(i)["class"] for i in range(300)])
    assert (judge_class(x) == y).float().mean() >= 0.6


def test_samples_follow_the_caption_class(learned):
    """Prior samples (temperature 0.7) for each class's caption are judged to be of that class."""
    model, enc = learned.family.inference_generator, HashEncoder()
    text = enc.encode(WORDS)[torch.arange(10).repeat_interleave(10)]
    with torch.no_grad():
        images = model(model.sample_noise(100, torch.Generator().manual_seed(7), 0.7), text)
    accuracy = (judge_class(images) == torch.arange(10).repeat_interleave(10)).float().mean().item()
    assert accuracy >= 0.5, f"class accuracy {accuracy:.2f} (chance 0.1)"


def test_reconstructions_beat_prior_samples(learned):
    data = OneWordFashion(32, "test")
    x = torch.stack([data.image(i) for i in range(32)])
    captions = [data.captions(i)[0] for i in range(32)]
    model, text = learned.family.inference_generator, HashEncoder().encode(captions)
    with torch.no_grad():
        recon = model.reconstruct(x, text)
        prior = model(model.sample_noise(32, torch.Generator().manual_seed(0)), text)
    assert (recon - x).square().mean() < 0.6 * (prior - x).square().mean()


# --- exact resume (VAE-GAN and perceptual terms on, so their state is checkpointed too) ---------

def test_resume_is_bit_identical(tmp_path):
    model = {"model": {"nf": 8, "max_channels": 16, "z_dim": 8, "cond_dim": 8, "attn_resolutions": [8]},
             "kl_warmup": 4, "free_bits": 0.1, "adversarial_weight": 0.1, "perceptual_weight": 0.01,
             "perceptual_layers": ["relu1_2"], "discriminator": {"ndf": 8, "max_channels": 16, "cond_dim": 8}}
    cfg = lambda out, steps, **kw: vae_config(out, steps=steps, batch=8, ckpt_every=3, log_every=1,  # noqa: E731
                                              model=model, **kw)
    data = fashion16(48)
    straight = train(cfg(tmp_path / "a", 5), dataset=data, encoder=HashEncoder())
    train(cfg(tmp_path / "b", 3), dataset=data, encoder=HashEncoder())
    resumed = train(cfg(tmp_path / "b", 5, resume=True), dataset=data, encoder=HashEncoder())
    assert {"vae", "vae_ema", "discriminator"} <= set(straight.family.modules)
    a, b = all_state(straight), all_state(resumed)
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    records = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    assert [r["beta"] for r in records] == [0.0, 0.25, 0.5, 0.75, 1.0]  # KL annealing over 4 steps
    assert all("adversarial" in r and "perceptual" in r for r in records)


def test_vae_gan_prior_term_reaches_the_prior(tmp_path):
    """With adversarial_prior the decoder's adversarial term also judges prior samples, so its
    gradient reaches the text prior network; judging reconstructions alone, it cannot."""
    from wordcanvas.train.gan_step import batch_random
    from wordcanvas.train.loop import Dist
    from wordcanvas.train.vae_step import VAEFamily

    data = fashion16(16)
    batch = [data[i] for i in range(8)]
    images, captions = torch.stack([b["image"] for b in batch]), [b["caption"] for b in batch]
    grads = {}
    for prior_term in (True, False):
        model = {"model": {"nf": 8, "max_channels": 16, "z_dim": 8, "cond_dim": 8, "attn_resolutions": []},
                 "adversarial_weight": 0.1, "adversarial_prior": prior_term,
                 "discriminator": {"ndf": 8, "max_channels": 16, "cond_dim": 8}}
        torch.manual_seed(0)
        fam = VAEFamily(vae_config(tmp_path / str(prior_term), model=model), data, HashEncoder(), torch.device("cpu"),
                        Dist())
        for p in fam.vae.prior_net.parameters():  # the prior starts as N(0, I) (zero last layer): wake it
            torch.nn.init.normal_(p, std=0.1)
        text = HashEncoder().encode(captions)
        mean, _ = fam.vae.encode(images, text)
        recon = fam.vae.decode(mean, text)
        term = fam._adversarial(images, recon, text, batch_random(0, 0, fam.dist, torch.device("cpu")), {})
        fam.vae.zero_grad(set_to_none=True)
        term.backward()
        grads[prior_term] = sum(float(p.grad.abs().sum()) for p in fam.vae.prior_net.parameters() if p.grad is not None)
    assert grads[True] > 0 and grads[False] == 0


# --- command line ------------------------------------------------------------------------------

def test_cli_train_vae_generate_and_reconstruct(tmp_path, monkeypatch, capsys):
    from wordcanvas.cli import main
    from wordcanvas.utils.io import tensor_to_pil

    monkeypatch.setenv("WORDCANVAS_CACHE", str(tmp_path / "cache"))
    data = fashion16(24)
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(24):
        tensor_to_pil(data.image(i)).save(folder / f"{i:02d}.png")
        (folder / f"{i:02d}.txt").write_text(data.captions(i)[0] + "\n")
    run = tmp_path / "run"
    argv = ["train", "vae", "--data", str(folder), "--encoder", "trainable", "--res", "16", "--steps", "4",
            "--batch", "4", "--threads", "1", "--no-progress", "--out", str(run), "--ckpt-every", "2",
            "--set", 'model.model={"nf": 8, "max_channels": 16, "z_dim": 8, "cond_dim": 8}',
            "--set", "model.temperature=0.8"]
    assert main(argv) == 0
    assert json.loads((run / "config.json").read_text())["family"] == "vae"

    grid = tmp_path / "grid.png"
    assert main(["generate", "a sneaker", "a bag", "--model", str(run), "-n", "3", "--seed", "4", "--out", str(grid)]) == 0
    assert Image.open(grid).size == (3 * 18 + 2, 2 * 18 + 2)
    from wordcanvas.generate import TextToImage

    t2i = TextToImage.from_pretrained(run)
    a = t2i(["a sneaker"], n=2, seed=4)
    assert a.shape == (2, t2i.generator.config.channels, 16, 16)
    assert torch.equal(a, t2i(["a sneaker"], n=2, seed=4))
    assert not torch.equal(a, t2i(["a sneaker"], n=2, seed=4, truncation=0.2))  # temperature is used
    from_checkpoint = TextToImage.from_pretrained(run / "checkpoints" / "step-0000004")
    assert torch.equal(a, from_checkpoint(["a sneaker"], n=2, seed=4))  # the EMA model, as exported

    out = tmp_path / "recon.png"
    assert main(["reconstruct", str(folder / "00.png"), "--model", str(run), "--caption", data.captions(0)[0],
                 "--out", str(out)]) == 0
    assert Image.open(out).size == (16, 16)
    edited = tmp_path / "edit.png"
    assert main(["edit", str(folder / "00.png"), "--text", "a bag", "--source-caption", data.captions(0)[0],
                 "--model", str(run), "--out", str(edited)]) == 0
    assert Image.open(edited).size == (16, 16)
    stronger = tmp_path / "edit-strong.png"
    assert main(["edit", str(folder / "00.png"), "--text", "a bag", "--source-caption", data.captions(0)[0],
                 "--strength", "2", "--model", str(run), "--out", str(stronger)]) == 0
    assert np.asarray(Image.open(stronger)).tolist() != np.asarray(Image.open(edited)).tolist()  # the scale is used
    assert main(["edit", str(folder / "00.png"), "--text", "a bag", "--source-caption", data.captions(0)[0],
                 "--offset-weight", "0.1", "--model", str(run), "--out", str(tmp_path / "no.png")]) != 0
    assert "offset_weight is a GAN-inversion setting" in capsys.readouterr().err
    assert not (tmp_path / "no.png").exists()
