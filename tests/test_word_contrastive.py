"""The word-region contrastive head of the discriminator (AttnGAN's DAMSM score, XMC-GAN's word loss):
its score against a token-by-token reference, padding, its errors, that it learns where things are
(a caption's colour and side). A training run with it resumes exactly: test_contrastive.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from test_train_loop import NAMES, PALETTE, HashEncoder
from wordcanvas.models.gan import Discriminator, DiscriminatorConfig
from wordcanvas.train.gan_step import GANSettings, contrastive_loss


def head(**kw) -> Discriminator:
    return Discriminator(DiscriminatorConfig(resolution=16, channels=3, text_dim=16, ndf=8, max_channels=32,
                                             trunk="dcgan", cond_head="projection", word_dim=8, **kw))


def reference_scores(d: Discriminator, features: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """DAMSM written out: for each image i, caption j and real token t, attention over the regions,
    the attended context sum_r a_r v_r built explicitly, the cosine of token and context, then
    log(sum_t exp(gamma2 R_t)) / gamma2."""
    c = d.config
    with torch.no_grad():
        regions = d.word_regions(torch.nn.functional.leaky_relu(features, 0.2).flatten(2).transpose(1, 2))
        regions = (regions + d.word_positions).double().numpy()
        words = d.word_tokens(tokens).double().numpy()
    regions /= np.linalg.norm(regions, axis=-1, keepdims=True)
    words /= np.linalg.norm(words, axis=-1, keepdims=True)
    out = np.zeros((len(regions), len(words)))
    for i, v in enumerate(regions):
        for j, e in enumerate(words):
            token_scores = []
            for t in np.flatnonzero(mask[j].numpy()):
                logits = c.word_attention * (v @ e[t])
                a = np.exp(logits - logits.max())
                a /= a.sum()
                context = a @ v
                token_scores.append(context @ e[t] / np.linalg.norm(context))
            out[i, j] = np.log(np.sum(np.exp(c.word_pooling * np.array(token_scores)))) / c.word_pooling
    return out


def test_word_similarity_matches_a_token_by_token_reference_and_ignores_padding():
    torch.manual_seed(0)
    d = head(word_attention=4.0, word_pooling=3.0)
    features = d.features(torch.rand(3, 3, 16, 16) * 2 - 1)
    tokens = torch.randn(4, 6, 16)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0]]).bool()
    with torch.no_grad():
        got = d.word_similarity(features, tokens, mask)
        assert got.shape == (3, 4)
        np.testing.assert_allclose(got.double().numpy(), reference_scores(d, features, tokens, mask), atol=1e-5)
        # what sits behind the mask does not count
        noisy = torch.where(mask[..., None], tokens, torch.randn_like(tokens) * 100)
        torch.testing.assert_close(d.word_similarity(features, noisy, mask), got)
        # paired: image i with caption i only, the diagonal of the full matrix
        torch.testing.assert_close(d.word_similarity(features, tokens[:3], mask[:3], paired=True), got.diagonal())


def test_word_settings_and_missing_head_are_refused_with_a_reason():
    with pytest.raises(ValueError, match="word_contrastive must be >= 0"):
        GANSettings(word_contrastive=-1)
    with pytest.raises(ValueError, match="word_dim must be > 0"):
        GANSettings(word_contrastive=1, discriminator={"word_dim": 0})
    with pytest.raises(ValueError, match="word_attention and word_pooling must be > 0"):
        head(word_pooling=0)
    settings = GANSettings(word_contrastive=1, contrastive=1)
    assert settings.discriminator_config() == {"contrastive_dim": 128, "word_dim": 128}
    assert GANSettings(word_contrastive=1, discriminator={"word_dim": 32}).discriminator_config()["word_dim"] == 32
    assert GANSettings(word_contrastive=1).discriminator == {}  # the recorded settings stay as given
    d = Discriminator(DiscriminatorConfig(resolution=8, channels=3, text_dim=4, ndf=4, max_channels=8))
    with pytest.raises(ValueError, match="no word-region head"):
        d.word_similarity(d.features(torch.zeros(2, 3, 8, 8)), torch.zeros(2, 3, 4), torch.ones(2, 3).bool())


SIDES = ("left", "right")


def sided_squares(n: int) -> tuple[torch.Tensor, list[str]]:
    """A square of one of six colours in the left or right half, captioned with its colour and side."""
    images, captions = [], []
    for i in range(n):
        colour, side = NAMES[i % 6], SIDES[(i // 6) % 2]
        g = torch.Generator().manual_seed(i)
        img = torch.full((3, 16, 16), -0.6) + 0.05 * torch.randn(3, 16, 16, generator=g)
        y = int(torch.randint(0, 9, (1,), generator=g))
        x = 0 if side == "left" else 8
        img[:, y:y + 8, x:x + 8] = torch.tensor(PALETTE[colour])[:, None, None]
        images.append(img)
        captions.append(f"a {colour} square on the {side}")
    return torch.stack(images), captions


def test_the_word_head_learns_which_caption_names_colour_and_side():
    """Trained on the word-region term alone, the head picks each image's caption among the twelve
    colour x side captions: a token finds its region, and the regions know where they are."""
    torch.manual_seed(0)
    encoder = HashEncoder()
    d = head()
    images, captions = sided_squares(144)
    text = encoder.encode(captions)
    opt = torch.optim.Adam(d.parameters(), lr=3e-3)
    for _ in range(120):
        opt.zero_grad()
        contrastive_loss(d.word_similarity(d.features(images), text.tokens, text.mask), captions).backward()
        opt.step()
    test_images, test_captions = sided_squares(192)
    choices = sorted(set(test_captions))
    choice_text = encoder.encode(choices)
    with torch.no_grad():
        picked = d.word_similarity(d.features(test_images[144:]), choice_text.tokens, choice_text.mask).argmax(1)
    right = [choices[k] == c for k, c in zip(picked.tolist(), test_captions[144:])]
    assert np.mean(right) >= 0.9  # chance: 1/12; the test images were not trained on
