"""Trainable self-attention over the caption's tokens before a generator's cross-attention
(`token_layers`, `TokenRefiner`): it starts as the identity (a model starts as without it), ignores
padding, and lets an image place read a digit whose side is named by another word, which
cross-attention to the tokens alone cannot."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from test_token_pool import assert_a_fresh_generator_with_is_the_plain_one
from wordcanvas.models.gan import GANCLSConfig, GeneratorConfig
from wordcanvas.models.layers import CrossAttention, TokenRefiner


def test_a_fresh_refiner_is_the_identity():
    tokens = torch.randn(3, 5, 16)
    torch.testing.assert_close(TokenRefiner(16, layers=2)(tokens, torch.ones(3, 5, dtype=torch.bool)), tokens)


def test_padding_does_not_change_the_real_tokens():
    torch.manual_seed(0)
    refiner = TokenRefiner(16, layers=2)
    for p in refiner.parameters():
        torch.nn.init.normal_(p, std=0.2)
    tokens, mask = torch.randn(2, 6, 16), torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    other = tokens.clone()
    other[0, 4:] = torch.randn(2, 16) * 10
    with torch.no_grad():
        a, b = refiner(tokens, mask), refiner(other, mask)
    torch.testing.assert_close(a[0, :4], b[0, :4])
    assert not torch.allclose(a[0, :4], tokens[0, :4])  # it did change the tokens
    empty = refiner(tokens, torch.zeros(2, 6, dtype=torch.bool))
    assert torch.isfinite(empty).all()


@pytest.mark.parametrize("family", ["gan-cls", "dfgan"])
def test_a_fresh_refining_generator_is_the_plain_one(family):
    assert_a_fresh_generator_with_is_the_plain_one(family, "token_layers", 1, attn_resolutions=(8,))


@pytest.mark.parametrize("config", [GANCLSConfig, GeneratorConfig])
def test_token_layers_without_cross_attention_are_refused(config):
    with pytest.raises(ValueError, match="token_layers=1 needs cross-attention"):
        config(resolution=16, attn_resolutions=(), token_layers=1)
    with pytest.raises(ValueError, match="token_layers=1 needs cross-attention"):
        config(resolution=16, attn_resolutions=(64,), token_layers=1)  # outside this generator's blocks


def relation_task(batch: int, generator: torch.Generator):
    """Captions of three tokens, "A <relation> B": A's and B's contents, and a middle word saying
    whether A is left or right of B. Target: each half of a 4x4 map shows the content of the token on
    that side. Which token a half needs depends on another token, the relation word."""
    a, b = torch.randn(batch, 4, generator=generator), torch.randn(batch, 4, generator=generator)
    a_left = torch.rand(batch, generator=generator) < 0.5
    tokens = torch.zeros(batch, 3, 8)
    tokens[:, 0, 0], tokens[:, 0, 4:] = 1, a
    tokens[:, 1, 1], tokens[:, 1, 3] = 1, a_left.float() * 2 - 1
    tokens[:, 2, 2], tokens[:, 2, 4:] = 1, b
    left, right = torch.where(a_left[:, None], a, b), torch.where(a_left[:, None], b, a)
    target = torch.zeros(batch, 8, 4, 4)
    target[:, :4, :, :2] = left[:, :, None, None]
    target[:, :4, :, 2:] = right[:, :, None, None]
    return torch.zeros(batch, 8, 4, 4), tokens, target


@pytest.mark.parametrize("layers", [0, 1])
def test_refined_tokens_let_a_place_read_the_digit_a_relation_puts_there(layers):
    torch.manual_seed(0)
    # one head: with several, a head can attend to the relation word as a sink for the other side,
    # so the toy would not need binding
    attn = CrossAttention(channels=8, token_dim=8, heads=1, head_dim=8, positions=4)
    refiner = TokenRefiner(8, layers=layers, heads=2, hidden=4)
    opt = torch.optim.Adam([*attn.parameters(), *refiner.parameters()], lr=0.01)
    data = torch.Generator().manual_seed(0)
    for _ in range(400):
        x, tokens, target = relation_task(64, data)
        loss = F.mse_loss(attn(x, refiner(tokens)), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, tokens, target = relation_task(256, torch.Generator().manual_seed(1))
    with torch.no_grad():
        error = F.mse_loss(attn(x, refiner(tokens)), target) / target.pow(2).mean()
    if layers:
        assert error < 0.1   # each half reads the digit the relation word puts there
    else:
        assert error > 0.3   # a token's key ignores the relation word: the head's weights on A and B keep their ratio
