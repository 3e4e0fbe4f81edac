"""The image-text contrastive terms of the GAN (XMC-GAN's sentence contrastive loss): the loss against
a loop-by-loop reference, the head's errors, and that both terms do their job on coloured squares:
a training run teaches D's head to pick each real image's caption, and G's term makes the head pick
each fake's own caption."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from test_train_loop import NAMES, ColourSquares, HashEncoder, straight_and_resumed, tiny_config
from wordcanvas.models.gan import Discriminator, DiscriminatorConfig, GANCLSConfig, GANCLSGenerator
from wordcanvas.train import train
from wordcanvas.train.gan_step import GANSettings, contrastive_loss


def reference_loss(sim: np.ndarray, captions: list[str], temperature: float) -> float:
    """Mean of the image->text and text->image cross-entropies, written out row by row; the columns
    (rows) of other items with the very same caption are left out of each softmax."""
    logits = sim / temperature
    b = len(captions)

    def direction(m):
        total = 0.0
        for i in range(b):
            keep = [j for j in range(b) if j == i or captions[j] != captions[i]]
            total += logsumexp(m[i, keep]) - m[i, i]
        return total / b

    return (direction(logits) + direction(logits.T)) / 2


def test_contrastive_loss_matches_a_row_by_row_reference():
    g = torch.Generator().manual_seed(0)
    sim = torch.rand(6, 6, generator=g, dtype=torch.float64) * 2 - 1
    distinct = [f"caption {i}" for i in range(6)]
    repeated = ["a", "b", "a", "c", "b", "a"]  # items 0, 2, 5 and 1, 4 share a caption
    for captions in (distinct, repeated):
        for t in (0.1, 0.5):
            assert contrastive_loss(sim, captions, t).item() == pytest.approx(reference_loss(sim.numpy(), captions, t),
                                                                             rel=1e-10)
    # a perfect match (own caption far above the others) costs almost nothing; a uniform one costs log B
    assert contrastive_loss(torch.eye(6, dtype=torch.float64), distinct, 0.01).item() < 1e-10
    assert contrastive_loss(torch.zeros(6, 6, dtype=torch.float64), distinct, 0.1).item() == pytest.approx(np.log(6))


def test_contrastive_settings_and_missing_head_are_refused_with_a_reason():
    with pytest.raises(ValueError, match="contrastive must be >= 0"):
        GANSettings(contrastive=-1)
    with pytest.raises(ValueError, match="contrastive_temperature"):
        GANSettings(contrastive=1, contrastive_temperature=0)
    with pytest.raises(ValueError, match="contrastive_dim must be > 0"):
        GANSettings(contrastive=1, discriminator={"contrastive_dim": 0})
    assert GANSettings(contrastive=1).discriminator_config()["contrastive_dim"] == 128  # a head when the term is on
    assert GANSettings(contrastive=1).discriminator == {}  # the recorded settings stay as given
    d = Discriminator(DiscriminatorConfig(resolution=8, channels=3, text_dim=4, ndf=4, max_channels=8))
    with pytest.raises(ValueError, match="no contrastive head"):
        d.similarity(d.features(torch.zeros(2, 3, 8, 8)), torch.zeros(2, 4))


def canonical(encoder):
    """One image of each colour and the six captions 'a <colour> square'."""
    data = ColourSquares(n=24)
    images = torch.stack([data.image(i) for i in range(24)])
    return images, torch.arange(24) % 6, encoder.encode([f"a {c} square" for c in NAMES]).pooled


def test_training_with_the_term_teaches_the_discriminator_to_pick_each_images_caption(tmp_path):
    encoder = HashEncoder()
    cfg = tiny_config(tmp_path / "run", steps=80, ema_kimg=0,
                      model={"arch": "gan-cls", "generator": {"ngf": 8, "z_dim": 8, "cond_dim": 8},
                             "discriminator": {"ndf": 8, "max_channels": 32, "cond_head": "projection",
                                               "contrastive_dim": 16},
                             "augment": "", "reg": "none", "contrastive": 1.0})
    result = train(cfg, dataset=ColourSquares(n=96), encoder=encoder)
    d = result.family.modules["discriminator"].eval()
    images, colours, pooled = canonical(encoder)
    with torch.no_grad():
        picked = d.similarity(d.features(images), pooled).argmax(dim=1)
    assert (picked == colours).float().mean() >= 0.9  # chance: 1/6
    assert cfg.model["discriminator"]["contrastive_dim"] == 16
    rows = [json.loads(line) for line in (result.run_dir / "log.jsonl").read_text().splitlines()]
    logged = [row for row in rows if "contrastive_d" in row]
    assert logged and logged[-1]["contrastive_d"] < logged[0]["contrastive_d"]


def test_the_generator_term_makes_the_head_pick_each_fakes_own_caption():
    """A discriminator head fitted to real squares, then frozen; a generator trained on nothing but
    the contrastive term gets its images matched to their own captions. (Alone the term is fooled:
    it finds features the head reads, not necessarily the colours, which is why it is added to the
    adversarial loss, not used instead.)"""
    torch.manual_seed(0)
    encoder = HashEncoder()
    images, colours, pooled = canonical(encoder)
    d = Discriminator(DiscriminatorConfig(resolution=16, channels=3, text_dim=16, ndf=8, max_channels=32,
                                          trunk="dcgan", cond_head="projection", contrastive_dim=16))
    captions = [f"a {NAMES[c]} square" for c in colours.tolist()]
    opt = torch.optim.Adam(d.parameters(), lr=2e-3)
    for _ in range(60):
        opt.zero_grad()
        contrastive_loss(d.similarity(d.features(images), pooled[colours]), captions).backward()
        opt.step()
    d.requires_grad_(False)
    g = GANCLSGenerator(GANCLSConfig(resolution=16, channels=3, text_dim=16, z_dim=8, cond_dim=8, ngf=8))
    text = encoder.encode(captions)

    def picked_right() -> float:
        with torch.no_grad():
            fake = g.eval()(torch.randn(24, 8), text)
            return (d.similarity(d.features(fake), pooled).argmax(dim=1) == colours).float().mean().item()

    before = picked_right()
    opt = torch.optim.Adam(g.train().parameters(), lr=2e-3, betas=(0.5, 0.999))
    for _ in range(60):
        opt.zero_grad()
        contrastive_loss(d.similarity(d.features(g(torch.randn(24, 8), text)), text.pooled), captions).backward()
        opt.step()
    assert before <= 0.5 and picked_right() >= 0.9


@pytest.mark.parametrize("term, head", [("contrastive", "contrastive_image.weight"),
                                        ("word_contrastive", "word_positions")])
def test_a_run_with_the_term_resumes_exactly(tmp_path, term, head):
    """The head's default size is not written back into the run's settings, so the same command
    resumes (it used to be refused as 'different settings'), and the resumed run equals a straight one;
    the term is logged."""
    model = {"arch": "gan-cls", "generator": {"ngf": 8, "z_dim": 8, "cond_dim": 8},
             "discriminator": {"ndf": 8, "max_channels": 32, "cond_head": "projection"}, "augment": "",
             "reg_every": 2, term: 0.5}
    straight, resumed = straight_and_resumed(tmp_path, model, lambda: ColourSquares(n=48))
    assert head in dict(resumed.family.D.named_parameters())
    rows = [json.loads(line) for line in (straight.run_dir / "log.jsonl").read_text().splitlines()]
    assert [row for row in rows if np.isfinite(row.get(f"{term}_d", np.nan)) and np.isfinite(row[f"{term}_g"])]


# ---------------------------------------------------------------- hard negatives (near-miss captions)

def test_a_hard_negative_is_one_more_column_of_the_image_side_softmax():
    g = torch.Generator().manual_seed(1)
    sim = torch.rand(5, 5, generator=g, dtype=torch.float64) * 2 - 1
    hard = torch.rand(5, generator=g, dtype=torch.float64) * 2 - 1
    captions = ["a", "b", "a", "c", "d"]
    t = 0.2
    logits, extra = sim.numpy() / t, hard.numpy() / t
    to_text = np.mean([logsumexp([*(logits[i, j] for j in range(5) if j == i or captions[j] != captions[i]),
                                  extra[i]]) - logits[i, i] for i in range(5)])
    to_image = np.mean([logsumexp([logits[j, i] for j in range(5) if j == i or captions[j] != captions[i]])
                        - logits[i, i] for i in range(5)])
    assert contrastive_loss(sim, captions, t, hard).item() == pytest.approx((to_text + to_image) / 2, rel=1e-10)
    # a near miss the head confuses with the caption costs more than one it tells apart
    assert contrastive_loss(sim, captions, t, sim.diagonal()) > contrastive_loss(sim, captions, t, sim.diagonal() - 1)


class NearMissSquares(ColourSquares):
    """Colour squares whose near miss names another colour."""

    def contrast_captions(self, i):
        return [f"a {NAMES[(i + k) % 6]} square" for k in (1, 2)]


def test_hard_negatives_are_what_the_discriminator_sees_as_mismatched(tmp_path):
    """With hard_negatives=1 every real image's mismatched caption in D's matching-aware term is its
    own near miss (checked against D's logits computed apart, before the update); with 0, another
    item's caption; a dataset without near misses is refused with a reason."""
    from wordcanvas.train.gan_step import GANFamily
    from wordcanvas.train.loop import Dist, _collate
    from wordcanvas.models.layers import standardize

    encoder, data = HashEncoder(), NearMissSquares(n=16)
    assert "contrast" not in data[0]  # only when training asks for them
    batch = _collate([data.item(i, near_miss=True) for i in range(8)])
    assert batch["contrast"] == [data.item(i, near_miss=True)["contrast"] for i in range(8)]
    assert all(c not in data.captions(i) for i, c in enumerate(batch["contrast"]))
    model = {"arch": "gan-cls", "generator": {"ngf": 8, "z_dim": 8, "cond_dim": 8}, "augment": "", "reg": "none",
             "discriminator": {"ndf": 8, "max_channels": 32, "cond_head": "projection", "contrastive_dim": 16},
             "contrastive": 1.0}
    for share, mismatched in ((1.0, batch["contrast"]), (0.0, batch["caption"][-1:] + batch["caption"][:-1])):
        torch.manual_seed(0)
        fam = GANFamily(tiny_config(tmp_path / "run", model={**model, "hard_negatives": share}), data, encoder,
                        torch.device("cpu"), Dist())
        with torch.no_grad():
            expected = fam.D.heads(fam.D.features(batch["image"]), standardize(encoder.encode(mismatched).pooled),
                                   standardized=True)[1].mean()
        stats = fam.step(batch, 0)
        assert stats["d_mismatch"].item() == pytest.approx(expected.item(), rel=1e-5)
    fam = GANFamily(tiny_config(tmp_path / "run", model={**model, "hard_negatives": 0.5}), ColourSquares(n=16),
                    encoder, torch.device("cpu"), Dist())
    with pytest.raises(ValueError, match="near-miss captions"):
        fam.step(_collate([ColourSquares(n=16)[i] for i in range(8)]), 0)
    with pytest.raises(ValueError, match="hard_negatives must be in"):
        GANSettings(hard_negatives=1.5)
    # Through the loop: its loader brings the near misses (a batch without them raises), and the
    # dataset itself is left as it was.
    result = train(tiny_config(tmp_path / "loop", steps=2, model={**model, "hard_negatives": 1.0}), dataset=data,
                   encoder=encoder)
    assert result.step == 2 and "contrast" not in data[0]


class ManyNearMissSquares(ColourSquares):
    """Colour squares with five near misses each: every other colour."""

    def contrast_captions(self, i):
        return [f"a {NAMES[(i + k) % 6]} square" for k in range(1, 6)]


def test_mined_near_misses_are_the_candidates_the_discriminator_finds_most_plausible(tmp_path):
    """With hard_negative_pool = k each item brings k distinct near misses (none true, in item order
    in the batch), and D's mismatched term sees, per item, the one whose matching logit on the real
    image is highest (checked against D's logits for every candidate computed apart, before the
    update). A pool larger than an item's near misses repeats them; a pool below 1 is refused."""
    from wordcanvas.models.layers import standardize
    from wordcanvas.train.gan_step import GANFamily
    from wordcanvas.train.loop import Dist, _collate

    encoder, data, k = HashEncoder(), ManyNearMissSquares(n=16), 3
    items = [data.item(i, near_miss=k) for i in range(8)]
    for i, item in enumerate(items):
        assert len(set(item["contrast"])) == k and not set(item["contrast"]) & set(data.captions(i))
    assert sorted(set(data.item(0, near_miss=7)["contrast"])) == sorted(data.contrast_captions(0))
    batch = _collate(items)
    assert batch["contrast"] == [c for item in items for c in item["contrast"]]
    model = {"arch": "gan-cls", "generator": {"ngf": 8, "z_dim": 8, "cond_dim": 8}, "augment": "", "reg": "none",
             "discriminator": {"ndf": 8, "max_channels": 32, "cond_head": "projection"},
             "hard_negatives": 1.0, "hard_negative_pool": k}
    torch.manual_seed(0)
    fam = GANFamily(tiny_config(tmp_path / "run", model=model), data, encoder, torch.device("cpu"), Dist())
    assert fam.wants_near_misses == k
    with torch.no_grad():
        best = []
        for i, item in enumerate(items):
            logits = fam.D.heads(fam.D.features(batch["image"][i:i + 1]).expand(k, -1, -1, -1),
                                 standardize(encoder.encode(item["contrast"]).pooled), standardized=True)[1]
            best.append(logits.max())
    stats = fam.step(batch, 0)
    assert stats["d_mismatch"].item() == pytest.approx(torch.stack(best).mean().item(), rel=1e-5)
    with pytest.raises(ValueError, match="hard_negative_pool must be a whole number >= 1"):
        GANSettings(hard_negative_pool=0)
    result = train(tiny_config(tmp_path / "loop", steps=2, model=model), dataset=data, encoder=encoder)
    assert result.step == 2
