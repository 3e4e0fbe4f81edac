"""The captioner (models/captioner.py) and the GAN's re-description term (`model.captioner`): words
and vocabulary, a causal decoder, a captioner that learns which thing is where (the binding a
pooled caption loses), and the GAN term: the captioner learns from real images only, and a run with
it resumes exactly."""
from __future__ import annotations

import copy

import pytest
import torch

from test_contrastive import NearMissSquares
from test_train_loop import HashEncoder, all_state, assert_identical, straight_and_resumed, tiny_config
from wordcanvas.models.base import CheckpointError
from wordcanvas.models.captioner import (BOS, EOS, SPECIALS, UNK, Captioner, CaptionerConfig, build_vocabulary,
                                          words)
from wordcanvas.train import train
from wordcanvas.train.gan_step import GANSettings

SHADES = {"black": -0.75, "grey": -0.25, "silver": 0.25, "white": 0.75}


def two_halves(n: int, g: torch.Generator):
    """16x16 images whose left and right halves have two different shades, the caption naming both
    (in random order of mention), and the swap: the same words with the two shades exchanged."""
    names = list(SHADES)
    images, captions, swaps = [], [], []
    for _ in range(n):
        a, b = torch.randperm(4, generator=g)[:2].tolist()
        image = torch.empty(1, 16, 16)
        image[:, :, :8], image[:, :, 8:] = SHADES[names[a]], SHADES[names[b]]
        images.append(image + 0.05 * torch.randn(1, 16, 16, generator=g))
        left_first = bool(torch.rand((), generator=g) < 0.5)
        for out, (x, y) in ((captions, (a, b)), (swaps, (b, a))):
            left, right = f"{names[x]} on the left", f"{names[y]} on the right"
            out.append(f"{left} and {right}" if left_first else f"{right} and {left}")
    return torch.stack(images), captions, swaps


def test_words_vocabulary_and_token_layout():
    assert words("A 3 is left of the Digit 17!") == ["a", "3", "is", "left", "of", "the", "digit", "1", "7"]
    vocabulary = build_vocabulary(["b a", "b c 3", "b"])
    assert vocabulary == SPECIALS + ["b", "3", "a", "c"]  # most frequent first, ties by spelling
    assert build_vocabulary(["b a", "b c"], min_count=2) == SPECIALS + ["b"]
    model = Captioner(CaptionerConfig(vocabulary=vocabulary, resolution=16, width=4, dim=16, layers=1, heads=2))
    inputs, targets = model.tokenize(["b a", "c zebra b"])
    b, a, c = (vocabulary.index(w) for w in "bac")
    assert inputs.tolist() == [[BOS, b, a, 0], [BOS, c, UNK, b]]
    assert targets.tolist() == [[b, a, EOS, 0], [c, UNK, b, EOS]]
    with pytest.raises(ValueError, match="must start with"):
        CaptionerConfig(vocabulary=["a", "b"])


def test_each_words_probability_depends_only_on_the_image_and_the_words_before_it():
    torch.manual_seed(0)
    vocabulary = build_vocabulary(["black grey silver white on the left right and"])
    model = Captioner(CaptionerConfig(vocabulary=vocabulary, resolution=16, width=4, dim=16, layers=2, heads=2))
    images = torch.randn(2, 1, 16, 16)
    regions = model.encode_images(images[:1].expand(2, -1, -1, -1))
    inputs, _ = model.tokenize(["black on the left and grey", "black on the right and white"])
    log_p = model.logits(regions, inputs).log_softmax(-1)
    assert torch.allclose(log_p[0, :3], log_p[1, :3], atol=1e-5)  # same image, same first words
    assert not torch.allclose(log_p[0, 4:], log_p[1, 4:], atol=1e-3)
    other = model.logits(model.encode_images(images[1:]), inputs[:1]).log_softmax(-1)
    assert not torch.allclose(other[0], log_p[0], atol=1e-3)  # and it reads the image
    nll = model.nll(images[:1].expand(2, -1, -1, -1), ["black on the left and grey", "black"])
    _, targets = model.tokenize(["black on the left and grey"])
    expected = -log_p[0].gather(1, targets[0][:, None]).sum()
    assert nll[0].item() == pytest.approx(expected.item(), rel=1e-5)
    per_word = model.nll(images[:1].expand(2, -1, -1, -1), ["black on the left and grey", "black"], per_word=True)
    assert per_word.tolist() == pytest.approx([nll[0].item() / 7, nll[1].item() / 2], rel=1e-5)


def test_the_captioner_learns_which_shade_is_on_which_side():
    """Trained on real pairs only, it ranks a caption above its swap (the same words, the two shades
    exchanged) on new images: what a pooled caption embedding cannot tell apart."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    images, captions, _ = two_halves(256, g)
    model = Captioner(CaptionerConfig(vocabulary=build_vocabulary(captions), resolution=16, width=8, dim=32,
                                      layers=1, heads=2))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        idx = torch.randint(len(images), (32,), generator=g)
        loss = model.nll(images[idx], [captions[i] for i in idx.tolist()], per_word=True).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    test_images, true, swapped = two_halves(200, torch.Generator().manual_seed(1))
    with torch.no_grad():
        right = (model.nll(test_images, true) < model.nll(test_images, swapped)).float().mean().item()
    assert right >= 0.9


GAN = {"arch": "gan-cls", "generator": {"ngf": 8, "z_dim": 8, "cond_dim": 8}, "augment": "", "reg_every": 2,
       "discriminator": {"ndf": 8, "max_channels": 32}, "captioner": 1.0,
       "captioner_config": {"width": 4, "dim": 16, "layers": 1, "heads": 2}}


def test_the_captioner_learns_from_real_images_only(tmp_path):
    """Its update in a GAN step is exactly one Adam step on the real images' captions: the
    generator's term (which reads G's images through it) moves the generator, never the captioner."""
    from wordcanvas.train.gan_step import GANFamily
    from wordcanvas.train.loop import Dist, _collate

    data = NearMissSquares(n=16)
    batch = _collate([data[i] for i in range(8)])
    torch.manual_seed(0)
    fam = GANFamily(tiny_config(tmp_path / "run", model=GAN), data, HashEncoder(), torch.device("cpu"), Dist())
    assert fam.captioner.config.vocabulary == build_vocabulary(c for i in range(len(data)) for c in data.captions(i))
    assert "captioner" in fam.modules and "captioner" in fam.optimizers
    expected = copy.deepcopy(fam.captioner)
    opt = torch.optim.Adam(expected.parameters(), lr=GANSettings().captioner_lr)
    expected.nll(batch["image"], batch["caption"], per_word=True).mean().backward()
    opt.step()
    g_before = copy.deepcopy(fam.G.state_dict())
    stats = fam.step(batch, 0)
    assert stats["captioner_fake"].item() > 0 and stats["captioner_real"].item() > 0
    assert_identical(fam.captioner.state_dict(), expected.state_dict())
    assert any(not torch.equal(v, g_before[k]) for k, v in fam.G.state_dict().items())


def test_a_run_with_the_captioner_resumes_exactly(tmp_path):
    _, resumed = straight_and_resumed(tmp_path, GAN, lambda: NearMissSquares(n=48))
    assert any(k.startswith("captioner.") for k in all_state(resumed))


class RenamedSquares(NearMissSquares):
    """The same images with other words for them: a vocabulary as long as before, other token ids."""

    def captions(self, i):
        return [c.replace("square", "tile") for c in super().captions(i)]


def test_a_resume_on_captions_with_other_words_is_refused_by_name(tmp_path):
    config = tiny_config(tmp_path / "run", steps=2, model=GAN)
    train(config, dataset=NearMissSquares(n=48), encoder=HashEncoder())
    with pytest.raises(CheckpointError, match=r"captioner built with other settings \(vocabulary: .*without \['square'\], with \['tile'\]"):
        train(tiny_config(tmp_path / "run", steps=4, model=GAN), dataset=RenamedSquares(n=48), encoder=HashEncoder())


def test_a_run_can_start_from_a_saved_captioner(tmp_path):
    """captioner_init: the run's captioner starts as the saved one (its config, its weights); one
    trained on other words or another image size is refused with the reason."""
    from wordcanvas.train.gan_step import GANFamily
    from wordcanvas.train.loop import Dist

    def words_of(dataset):
        return build_vocabulary(c for i in range(len(dataset)) for c in dataset.captions(i))

    data = NearMissSquares(n=16)
    torch.manual_seed(1)
    saved = Captioner(CaptionerConfig(vocabulary=words_of(data) + ["extra"], resolution=16, channels=3, width=4,
                                      dim=16, layers=1, heads=2))
    saved.save_pretrained(tmp_path / "saved")
    model = {**GAN, "captioner_init": str(tmp_path / "saved")}
    fam = GANFamily(tiny_config(tmp_path / "run", model=model), data, HashEncoder(), torch.device("cpu"), Dist())
    assert fam.captioner.config.vocabulary == saved.config.vocabulary and fam.captioner.training
    assert_identical(fam.captioner.state_dict(), saved.state_dict())
    Captioner(CaptionerConfig(vocabulary=words_of(RenamedSquares(n=16)), resolution=16, channels=3, width=4, dim=16,
                              layers=1, heads=2)).save_pretrained(tmp_path / "other-words")
    with pytest.raises(ValueError, match=r"does not know 1 word\(s\).*\['square'\]"):
        GANFamily(tiny_config(tmp_path / "run", model={**GAN, "captioner_init": str(tmp_path / "other-words")}), data,
                  HashEncoder(), torch.device("cpu"), Dist())
    Captioner(CaptionerConfig(vocabulary=words_of(data), resolution=32, channels=3, width=4, dim=16, layers=1,
                              heads=2)).save_pretrained(tmp_path / "bigger")
    with pytest.raises(ValueError, match="reads 32 px images"):
        GANFamily(tiny_config(tmp_path / "run", model={**GAN, "captioner_init": str(tmp_path / "bigger")}), data,
                  HashEncoder(), torch.device("cpu"), Dist())
    with pytest.raises(ValueError, match=r"differs from captioner_config \(saved, asked\): \{'width': \(4, 8\)\}"):
        GANFamily(tiny_config(tmp_path / "run", model={**model, "captioner_config": {"width": 8}}), data,
                  HashEncoder(), torch.device("cpu"), Dist())


def test_captioner_settings_are_checked():
    with pytest.raises(ValueError, match="captioner must be >= 0"):
        GANSettings(captioner=-1)
    with pytest.raises(ValueError, match="come from the dataset"):
        GANSettings(captioner=1, captioner_config={"vocabulary": ["a"]})
