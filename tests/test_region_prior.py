"""The region prior (`model.region_prior`): a module in the GAN-CLS generator that predicts, from the
caption's tokens, the region states the captioner computes from the real image, and that the
generator's blocks add in place. It learns which thing is where from word order alone, it learns only
from its own loss (the generator's losses never reach it), it starts as no change to the generator,
and a run with it trains, resumes exactly and exports."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from test_captioner import GAN, NearMissSquares
from test_pooled_text import assert_onnx_equals_torch
from test_train_loop import HashEncoder, all_state, straight_and_resumed, tiny_config
from wordcanvas.models.gan import GANCLSConfig, GANCLSGenerator
from wordcanvas.models.layers import RegionPrior
from wordcanvas.text.base import TextEmbedding
from wordcanvas.train.gan_step import GANSettings

COLOUR, SIDE = 3, 2  # token = colour part ++ side-word part: a token is a colour word or a side word


def pair_captions(batch: int, g: torch.Generator):
    """Two colours, one per half of a 2x2 grid; the caption "<colour> <side> <colour> <side>" in
    context-free tokens (a colour token knows nothing of the side word after it), the two phrases in
    random order; and its swap, the same tokens with the two colours exchanged. Targets: the grid's
    (B, 4, 3) colours, left column first row by row."""
    left, right = (torch.rand(batch, COLOUR, generator=g) * 2 - 1 for _ in range(2))

    def caption(a, b):
        colour = lambda c: torch.cat([c, torch.zeros(batch, SIDE)], 1)  # noqa: E731
        side = lambda i: torch.cat([torch.zeros(batch, COLOUR), F.one_hot(torch.full((batch,), i), SIDE)], 1)  # noqa: E731
        first, second = torch.stack([colour(a), side(0)], 1), torch.stack([colour(b), side(1)], 1)
        flip = (torch.rand(batch, generator=g) < 0.5)[:, None, None]
        tokens = torch.cat([torch.where(flip, second, first), torch.where(flip, first, second)], 1)
        return TextEmbedding(tokens, torch.ones(batch, 4, dtype=torch.bool), tokens.mean(1))

    grid = torch.stack([left, right, left, right], 1)
    return caption(left, right), caption(right, left), grid


def test_the_region_prior_learns_from_word_order_which_colour_is_where():
    """Context-free tokens: which colour is on which side is in the order of the words only. Trained on
    (caption, grid) pairs, the prior predicts for nearly every unseen caption a grid nearer its own
    than its swap's (a bag of words cannot do better than a coin), and its error is a fraction of that
    of the caption's and its swap's average grid, the best a bag of words allows."""
    torch.manual_seed(0)
    lift = torch.randn(COLOUR, 16)  # region states wider than colours, as an image model's are
    prior = RegionPrior(COLOUR + SIDE, 16, regions=4, layers=2)
    opt = torch.optim.Adam(prior.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(400):
        text, _, grid = pair_captions(64, g)
        loss = F.mse_loss(prior(text.tokens, text.mask), grid @ lift)
        opt.zero_grad()
        loss.backward()
        opt.step()
    text, swapped, grid = pair_captions(256, torch.Generator().manual_seed(1))
    target, swap_target = grid @ lift, grid[:, [1, 0, 3, 2]] @ lift
    bag = F.mse_loss((target + swap_target) / 2, target).item()
    with torch.no_grad():
        for caption, own, other in ((text, target, swap_target), (swapped, swap_target, target)):
            predicted = prior(caption.tokens, caption.mask)
            nearer_own = ((predicted - own).square().mean((1, 2)) < (predicted - other).square().mean((1, 2)))
            assert nearer_own.float().mean().item() >= 0.95
            assert F.mse_loss(predicted, own).item() < 0.25 * bag


def open_captions(batch: int, g: torch.Generator):
    """Two colours named without sides ("<colour> <colour>", context-free tokens): the real grid puts
    either on the left at random, so every caption has two layouts. Returns the caption and both
    (B, 4, 3) layouts, the first colour on the left first."""
    a, b = (torch.rand(batch, COLOUR, generator=g) * 2 - 1 for _ in range(2))
    tokens = torch.stack([torch.cat([a, torch.zeros(batch, SIDE)], 1), torch.cat([b, torch.zeros(batch, SIDE)], 1)], 1)
    text = TextEmbedding(tokens, torch.ones(batch, 2, dtype=torch.bool), tokens.mean(1))
    return text, torch.stack([a, b, a, b], 1), torch.stack([b, a, b, a], 1)


def test_with_hypotheses_a_caption_with_open_places_gets_sharp_layouts_not_their_average():
    """One prediction per caption can only blur the two real layouts of an open caption into their
    average; two hypotheses trained by relaxed winner-takes-all each come near one of the layouts
    (at a quarter of the average's distance) and, for nearly every unseen caption, cover both."""
    torch.manual_seed(0)
    lift = torch.randn(COLOUR, 16)
    g = torch.Generator().manual_seed(0)
    priors = {h: RegionPrior(COLOUR + SIDE, 16, regions=4, layers=2, hypotheses=h) for h in (1, 2)}
    for prior in priors.values():
        opt = torch.optim.Adam(prior.parameters(), lr=2e-3)
        for _ in range(400):
            text, first, second = open_captions(64, g)
            real = torch.where((torch.rand(64, generator=g) < 0.5)[:, None, None], first, second) @ lift
            loss = prior.loss(text.tokens, text.mask, real)
            opt.zero_grad()
            loss.backward()
            opt.step()
    text, first, second = open_captions(256, torch.Generator().manual_seed(1))
    first, second = first @ lift, second @ lift
    average = (first + second) / 2
    blur = (average - first).square().mean((1, 2))  # how far the average is from either layout
    err = lambda p, t: (p - t).square().mean((-2, -1))  # noqa: E731
    with torch.no_grad():
        one = priors[1](text.tokens, text.mask)
        both = priors[2](text.tokens, text.mask)  # (B, 2, 4, 16)
    assert torch.minimum(err(one, first), err(one, second)).mean() > 0.75 * blur.mean()  # blurred
    nearest = torch.minimum(err(both, first[:, None]), err(both, second[:, None]))  # (B, 2)
    assert nearest.mean() < 0.25 * blur.mean()  # each hypothesis near one layout
    first_is = err(both, first[:, None]) < err(both, second[:, None])
    assert (first_is[:, 0] != first_is[:, 1]).float().mean() > 0.9  # and the two hypotheses differ
    chosen = priors[2](text.tokens, text.mask, torch.ones(256, dtype=torch.long))
    torch.testing.assert_close(chosen, both[:, 1], rtol=1e-5, atol=1e-5)  # one asked for = that one of all


def test_the_noise_picks_the_hypothesis_every_one_equally_often():
    z = torch.randn(20000, 4, generator=torch.Generator().manual_seed(0))
    choice = RegionPrior.choose(z, 4)
    assert set(choice.tolist()) == {0, 1, 2, 3}
    assert torch.bincount(choice).float().div(len(z)).sub(0.25).abs().max() < 0.02
    torch.testing.assert_close(RegionPrior.choose(z[:5], 4), choice[:5])  # fixed by the noise


def generator(**kw) -> GANCLSGenerator:
    torch.manual_seed(0)
    return GANCLSGenerator(GANCLSConfig(resolution=16, channels=3, text_dim=5, z_dim=4, cond_dim=8, ngf=8, **kw))


def test_a_generator_starts_as_without_its_regions_and_then_draws_them_in_place():
    g = generator(region_grid=4, region_dim=8).eval()
    text, swapped, _ = pair_captions(4, torch.Generator().manual_seed(0))
    z = torch.randn(4, 4)
    prior = g.region_prior
    with torch.no_grad():
        drawn = g(z, text)
        for p in prior.parameters():
            p.add_(torch.randn_like(p))
        torch.testing.assert_close(g(z, text), drawn)  # the region inputs start at zero
        for conv in g.region_in:
            torch.nn.init.normal_(conv.weight, std=0.3)
        layout = g.layout(text, z)
        assert layout.shape == (4, 8, 4, 4)
        assert (g(z, text) - drawn).abs().mean() > 1e-3
        assert (g(z, swapped) - g(z, text)).abs().mean() > 1e-4  # same pooled vector, other regions


def test_the_generators_losses_never_reach_its_region_prior():
    g = generator(region_grid=4, region_dim=8)
    for conv in g.region_in:
        torch.nn.init.normal_(conv.weight, std=0.3)
    text, _, _ = pair_captions(4, torch.Generator().manual_seed(0))
    g(torch.randn(4, 4), text).square().mean().backward()
    assert all(p.grad is None for p in g.region_prior.parameters())
    assert all(p.grad is not None for p in g.region_in.parameters())


WITH_PRIOR = {**GAN, "region_prior": 1.0}


def test_a_gan_step_teaches_the_prior_the_captioners_regions_of_the_real_images(tmp_path):
    """The prior's update in a GAN step is exactly one Adam step on the mean squared error between its
    regions for the batch's captions and the captioner's regions of their real images (the captioner
    as it was before its own update in that step)."""
    from wordcanvas.train.gan_step import GANFamily
    from wordcanvas.train.loop import Dist, _collate

    data = NearMissSquares(n=16)
    batch = _collate([data[i] for i in range(8)])
    torch.manual_seed(0)
    fam = GANFamily(tiny_config(tmp_path / "run", model=WITH_PRIOR), data, HashEncoder(), torch.device("cpu"), Dist())
    assert fam.G.config.region_grid == 8 and fam.G.config.region_dim == GAN["captioner_config"]["dim"]
    expected = copy.deepcopy(fam.G.region_prior)
    with torch.no_grad():
        target = fam.captioner.encode_images(batch["image"])
    text = HashEncoder().encode(batch["caption"])
    opt = torch.optim.Adam(expected.parameters(), lr=fam.opt_g.param_groups[0]["lr"],
                           betas=fam.opt_g.param_groups[0]["betas"])
    (WITH_PRIOR["region_prior"] * F.mse_loss(expected(text.tokens, text.mask), target)).backward()
    opt.step()
    stats = fam.step(batch, 0)
    assert stats["region_prior"].item() > 0
    for name, value in fam.G.region_prior.state_dict().items():
        torch.testing.assert_close(value, expected.state_dict()[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("change, message", [
    ({"captioner": 0.0}, "set captioner > 0"),
    ({"arch": "dfgan", "generator": {}}, "arch 'gan-cls'"),
    ({"generator": {**GAN["generator"], "region_grid": 4}}, "come from region_prior"),
])
def test_settings_that_cannot_teach_a_region_prior_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        GANSettings(**{**WITH_PRIOR, **change})


def test_a_run_with_a_region_prior_resumes_exactly(tmp_path):
    _, resumed = straight_and_resumed(tmp_path, WITH_PRIOR, lambda: NearMissSquares(n=48))
    assert any(".region_prior." in k for k in all_state(resumed))


def test_a_generator_draws_the_hypothesis_its_noise_picks():
    g = generator(region_grid=4, region_dim=8, region_hypotheses=3).eval()
    for conv in g.region_in:
        torch.nn.init.normal_(conv.weight, std=0.3)
    text, _, _ = pair_captions(3, torch.Generator().manual_seed(0))
    z = torch.randn(3, 4)
    z[:, 0] = torch.tensor([-2.0, 0.0, 2.0])  # one noise vector in each third of the first coordinate
    with torch.no_grad():
        every = g.region_prior(text.tokens, text.mask)  # (3, 3 hypotheses, 16, 8)
        layout = g.layout(text, z)
        for i in range(3):
            torch.testing.assert_close(layout[i].flatten(1).T, every[i, i], rtol=1e-5, atol=1e-5)
        moved = z.clone()
        moved[:, 0] = torch.tensor([2.0, -2.0, 0.0])  # the same rest of the noise, other hypotheses
        assert (g(moved, text) - g(z, text)).abs().mean() > 1e-4


def test_hypotheses_without_a_region_prior_are_refused():
    with pytest.raises(ValueError, match="needs a region prior"):
        GANCLSConfig(region_hypotheses=2)


@pytest.mark.parametrize("hypotheses", [1, 3])
def test_a_generator_with_a_region_prior_exports_to_onnx(tmp_path, hypotheses):
    torch.manual_seed(0)
    g = GANCLSGenerator(GANCLSConfig(resolution=16, channels=3, text_dim=12, z_dim=4, cond_dim=8, ngf=8,
                                     region_grid=4, region_dim=8, region_hypotheses=hypotheses)).eval()
    for conv in g.region_in:
        torch.nn.init.normal_(conv.weight, std=0.3)
    assert_onnx_equals_torch(g, tmp_path)
