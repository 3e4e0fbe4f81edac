"""The concat head that reads the caption's tokens per region (`discriminator.cond_tokens`): it starts
as the plain concat head, learns to tell a caption from the same caption with its two objects swapped
(which a pooled caption cannot tell apart), refuses what it cannot do, and trains and resumes through
the loop with near-miss captions as the mismatched ones."""
from __future__ import annotations

import pytest
import torch

from test_contrastive import NearMissSquares
from test_train_loop import HashEncoder, straight_and_resumed, tiny_config
from wordcanvas.models.gan import Discriminator, DiscriminatorConfig
from wordcanvas.text.base import TextEmbedding
from wordcanvas.train.gan_step import d_fake_loss, d_real_loss


def two_sides(batch: int, generator: torch.Generator):
    """Images with one colour on the left half and another on the right; each caption is two tokens,
    a side tag (one-hot) with the colour on that side, in random order (what a contextual encoder's
    "red ... left" token holds); pooled = the tokens' mean, the same for the caption and its swap."""
    left, right = (torch.rand(batch, 3, generator=generator) * 2 - 1 for _ in range(2))
    images = torch.empty(batch, 3, 16, 16)
    images[..., :8] = left[:, :, None, None]
    images[..., 8:] = right[:, :, None, None]

    def caption(a, b):
        tokens = torch.stack([torch.cat([torch.tensor([1.0, 0.0]).expand(batch, 2), a], 1),
                              torch.cat([torch.tensor([0.0, 1.0]).expand(batch, 2), b], 1)], 1)
        flip = torch.rand(batch, generator=generator) < 0.5
        tokens[flip] = tokens[flip].flip(1)
        return TextEmbedding(tokens, torch.ones(batch, 2, dtype=torch.bool), tokens.mean(1))

    return images, caption(left, right), caption(right, left)


def config(**kw) -> DiscriminatorConfig:
    return DiscriminatorConfig(**{"resolution": 16, "channels": 3, "text_dim": 5, "cond_dim": 16, "ndf": 8,
                                  "trunk": "dcgan", "cond_head": "concat", **kw})


def test_a_fresh_token_reading_head_is_the_plain_concat_head():
    torch.manual_seed(0)
    plain, reading = Discriminator(config()), Discriminator(config(cond_tokens=True))
    missing, unexpected = reading.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith(("region_text.", "region_tokens.")) for k in missing)
    images, text, _ = two_sides(4, torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(reading(images, text.pooled, text), plain(images, text.pooled))


def test_settings_and_missing_tokens_are_refused_with_a_reason():
    with pytest.raises(ValueError, match="cond_tokens needs cond_head='concat'"):
        config(cond_head="projection", cond_tokens=True)
    images, text, _ = two_sides(2, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="reads the caption's tokens"):
        Discriminator(config(cond_tokens=True))(images, text.pooled)


def swap_ranking(d: Discriminator) -> float:
    """Train d on the matching-aware terms only (matching caption real, swapped caption fake), then
    return how often it ranks the true caption above its swap on unseen images."""
    opt = torch.optim.Adam(d.parameters(), lr=1e-3, betas=(0.5, 0.999))
    data = torch.Generator().manual_seed(0)
    for _ in range(300):
        images, true, swapped = two_sides(32, data)
        features = d.features(images)
        loss = (d_real_loss("hinge", d.heads(features, true.pooled, text=true)[1])
                + d_fake_loss("hinge", d.heads(features, swapped.pooled, text=swapped)[1]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    images, true, swapped = two_sides(256, torch.Generator().manual_seed(1))
    torch.testing.assert_close(true.pooled, swapped.pooled)  # the pooled captions are the same
    with torch.no_grad():
        features = d.features(images)
        right = d.heads(features, true.pooled, text=true)[1]
        wrong = d.heads(features, swapped.pooled, text=swapped)[1]
    return (right > wrong).float().mean().item()


def test_the_head_learns_to_tell_a_caption_from_its_swap():
    """The token-reading head ranks the true caption above its swap on unseen images; the plain
    head gets the same pooled vector for both, so it cannot."""
    torch.manual_seed(0)
    assert swap_ranking(Discriminator(config(cond_tokens=True))) >= 0.9


def test_a_run_with_the_token_reading_head_and_near_misses_resumes_exactly(tmp_path):
    model = {"arch": "gan-cls", "generator": {"ngf": 8, "z_dim": 8, "cond_dim": 8}, "augment": "",
             "discriminator": {"ndf": 8, "max_channels": 32, "cond_head": "concat", "cond_tokens": True},
             "reg_every": 2, "hard_negatives": 0.5}
    _, resumed = straight_and_resumed(tmp_path, model, lambda: NearMissSquares(n=48))
    assert "region_text.positions" in dict(resumed.family.D.named_parameters())


def test_the_mismatched_captions_tokens_go_with_their_pooled_vector(tmp_path):
    """In the matching-aware term, the mismatched caption's tokens are those of the caption whose
    pooled vector D is given (its own near miss, or another item's caption), not the true caption's."""
    from wordcanvas.models.layers import standardize
    from wordcanvas.train.gan_step import GANFamily
    from wordcanvas.train.loop import Dist, _collate

    encoder, data = HashEncoder(), NearMissSquares(n=16)
    batch = _collate([data.item(i, near_miss=True) for i in range(8)])
    model = {"arch": "gan-cls", "generator": {"ngf": 8, "z_dim": 8, "cond_dim": 8}, "augment": "", "reg": "none",
             "discriminator": {"ndf": 8, "max_channels": 32, "cond_head": "concat", "cond_tokens": True}}
    for share, mismatched in ((1.0, batch["contrast"]), (0.0, batch["caption"][-1:] + batch["caption"][:-1])):
        torch.manual_seed(0)
        fam = GANFamily(tiny_config(tmp_path / "run", model={**model, "hard_negatives": share}), data, encoder,
                        torch.device("cpu"), Dist())
        torch.nn.init.normal_(fam.D.region_text.to_out.weight, std=0.5)  # past the start, so tokens count
        text, true = encoder.encode(mismatched), encoder.encode(batch["caption"])
        with torch.no_grad():
            features = fam.D.features(batch["image"])
            expected = fam.D.heads(features, standardize(text.pooled), standardized=True, text=text)[1].mean()
            with_true_tokens = fam.D.heads(features, standardize(text.pooled), standardized=True, text=true)[1].mean()
        assert abs(expected - with_true_tokens) > 1e-3  # the check below can tell the two apart
        stats = fam.step(batch, 0)
        assert stats["d_mismatch"].item() == pytest.approx(expected.item(), rel=1e-5)
