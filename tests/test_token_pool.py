"""Attention pooling of the caption's tokens (`token_pool` on the generators and the discriminator):
it starts as the model without it, lets the discriminator tell a caption from the same caption with
its two objects swapped (which the pooled caption cannot), lets a generator draw each object on the
side its caption names, refuses what it cannot do, and trains and resumes through the loop."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from test_contrastive import NearMissSquares
from test_region_text import swap_ranking, two_sides
from test_train_loop import straight_and_resumed
from wordcanvas.models.gan import (Discriminator, DiscriminatorConfig, GANCLSConfig, GANCLSGenerator, Generator,
                                   GeneratorConfig)
from wordcanvas.models.layers import TokenPool


def d_config(**kw) -> DiscriminatorConfig:
    return DiscriminatorConfig(**{"resolution": 16, "channels": 3, "text_dim": 5, "cond_dim": 16, "ndf": 8,
                                  "trunk": "dcgan", "cond_head": "concat", **kw})


@pytest.mark.parametrize("head", ["concat", "projection"])
def test_a_fresh_pooling_discriminator_is_the_plain_one(head):
    torch.manual_seed(0)
    plain, pooling = Discriminator(d_config(cond_head=head)), Discriminator(d_config(cond_head=head, token_pool=4))
    missing, unexpected = pooling.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("token_pool.") for k in missing)
    images, text, _ = two_sides(4, torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(pooling(images, text.pooled, text), plain(images, text.pooled))


def assert_a_fresh_generator_with_is_the_plain_one(family: str, setting: str, value, **kw):
    """A generator built with `setting` (whose weights are named after it), loaded with a plain one's
    weights, draws what the plain one draws."""
    kw = {"resolution": 16, "channels": 3, "text_dim": 5, "z_dim": 4, "cond_dim": 8, "ngf": 8, "attn_resolutions": (),
          **kw}
    cls, cfg = (GANCLSGenerator, GANCLSConfig) if family == "gan-cls" else (Generator, GeneratorConfig)
    torch.manual_seed(0)
    plain, other = cls(cfg(**kw)), cls(cfg(**kw, **{setting: value}))
    for p in plain.attn.parameters():  # let any cross-attention count, so the tokens reach the image
        torch.nn.init.normal_(p, std=0.3)
    missing, unexpected = other.load_state_dict(plain.state_dict(), strict=False)
    prefix = {"token_pool": "token_pool.", "token_layers": "token_refiner."}[setting]
    assert not unexpected and missing and all(k.startswith(prefix) for k in missing)
    _, text, _ = two_sides(4, torch.Generator().manual_seed(0))
    plain.eval(), other.eval()
    z = torch.randn(4, 4)
    with torch.no_grad():
        torch.testing.assert_close(other(z, text), plain(z, text))


@pytest.mark.parametrize("family", ["gan-cls", "dfgan"])
def test_a_fresh_pooling_generator_is_the_plain_one(family):
    assert_a_fresh_generator_with_is_the_plain_one(family, "token_pool", 3)


def test_missing_tokens_are_refused_with_a_reason():
    images, text, _ = two_sides(2, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="token_pool"):
        Discriminator(d_config(token_pool=4))(images, text.pooled)


def test_a_caption_without_real_tokens_pools_to_numbers():
    pool = TokenPool(5, 8, queries=3)
    torch.nn.init.normal_(pool.out.weight)
    out = pool(torch.randn(2, 4, 5), torch.zeros(2, 4, dtype=torch.bool))
    assert out.shape == (2, 8) and torch.isfinite(out).all()


def test_the_discriminator_learns_to_tell_a_caption_from_its_swap():
    """With pooled tokens the head ranks the true caption above its swap on unseen images, though
    the two captions' pooled vectors are the same."""
    torch.manual_seed(0)
    assert swap_ranking(Discriminator(d_config(token_pool=4))) >= 0.9


def two_sides_regression_error(**config) -> float:
    """A 16 px GAN-CLS generator (with `config`) regressed 300 steps straight onto two-sided images from
    their captions; its mean squared error on unseen ones. Drawing the two sides' average, all that a
    caption read as a bag of words allows, costs E[((left - right) / 2)^2] = 1/6."""
    torch.manual_seed(0)
    g = GANCLSGenerator(GANCLSConfig(resolution=16, channels=3, text_dim=5, z_dim=2, cond_dim=16, ngf=16, **config))
    opt = torch.optim.Adam(g.parameters(), lr=3e-3)
    data = torch.Generator().manual_seed(0)
    for _ in range(300):
        images, text, _ = two_sides(32, data)
        loss = F.mse_loss(g(torch.zeros(32, 2), text), images)
        opt.zero_grad()
        loss.backward()
        opt.step()
    images, text, _ = two_sides(256, torch.Generator().manual_seed(1))
    g.eval()
    with torch.no_grad():
        return F.mse_loss(g(torch.zeros(256, 2), text), images).item()


@pytest.mark.parametrize("token_pool, lowest", [(0, 0.1), (4, None)])
def test_a_generator_draws_each_colour_on_its_side_only_with_pooled_tokens(token_pool, lowest):
    """Regressed straight onto two-sided images from their captions: the GAN-CLS generator with
    token pooling reproduces them (each colour on the side its token names); from the pooled caption
    alone it can only draw the two sides' average, because a caption and its swap pool alike."""
    error = two_sides_regression_error(token_pool=token_pool)
    if lowest is None:
        assert error < 0.02
    else:
        assert error > lowest


def test_a_run_with_pooled_tokens_on_both_sides_and_near_misses_resumes_exactly(tmp_path):
    model = {"arch": "gan-cls", "generator": {"ngf": 8, "z_dim": 8, "cond_dim": 8, "token_pool": 3},
             "augment": "", "reg_every": 2, "hard_negatives": 0.5,
             "discriminator": {"ndf": 8, "max_channels": 32, "cond_head": "concat", "token_pool": 3}}
    _, resumed = straight_and_resumed(tmp_path, model, lambda: NearMissSquares(n=48))
    params = dict(resumed.family.D.named_parameters()) | dict(resumed.family.G.named_parameters())
    assert "token_pool.queries" in params
