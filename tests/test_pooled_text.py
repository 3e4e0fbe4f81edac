"""Generators without the pooled caption vector (`pooled_text=False`): the caption then reaches the
picture only through the place-by-place cross-attention. The pooled vector is really cut off, the
tokens still steer the picture, a generator that cannot read the caption at all is refused, such a
generator draws each colour on the side its caption names, and a run trains and resumes exactly."""
from __future__ import annotations

import pytest
import torch

from test_region_text import two_sides
from test_token_pool import two_sides_regression_error
from test_train_loop import ColourSquares, straight_and_resumed
from wordcanvas.models.gan import GANCLSConfig, GANCLSGenerator, Generator, GeneratorConfig
from wordcanvas.text.base import TextEmbedding


def generator(family: str, **kw):
    kw = {"resolution": 16, "channels": 3, "text_dim": 5, "z_dim": 4, "cond_dim": 8, "ngf": 8,
          "attn_resolutions": (8,), **kw}
    cls, cfg = (GANCLSGenerator, GANCLSConfig) if family == "gan-cls" else (Generator, GeneratorConfig)
    torch.manual_seed(0)
    g = cls(cfg(**kw))
    for p in g.parameters():  # some layers start as identities (DF-GAN's affines): let every path count
        torch.nn.init.normal_(p, std=0.3)
    return g.eval()


def with_pooled(text: TextEmbedding, pooled: torch.Tensor) -> TextEmbedding:
    return TextEmbedding(text.tokens, text.mask, pooled)


@pytest.mark.parametrize("family", ["gan-cls", "dfgan"])
def test_without_pooled_text_only_the_tokens_reach_the_picture(family):
    g = generator(family, pooled_text=False)
    assert g.text_proj is None and not any(name.startswith("text_proj.") for name in g.state_dict())
    _, text, swapped = two_sides(4, torch.Generator().manual_seed(0))
    z = torch.randn(4, 4)
    with torch.no_grad():
        drawn = g(z, text)
        torch.testing.assert_close(g(z, with_pooled(text, torch.randn_like(text.pooled))), drawn)
        # same pooled vector (a swap pools alike), other tokens: another picture
        assert (g(z, swapped) - drawn).abs().mean() > 1e-3


@pytest.mark.parametrize("family", ["gan-cls", "dfgan"])
def test_by_default_the_pooled_caption_still_conditions_every_block(family):
    g = generator(family)
    _, text, _ = two_sides(4, torch.Generator().manual_seed(0))
    z = torch.randn(4, 4)
    with torch.no_grad():
        assert (g(z, with_pooled(text, torch.randn_like(text.pooled))) - g(z, text)).abs().mean() > 1e-3


@pytest.mark.parametrize("family", ["gan-cls", "dfgan"])
def test_a_generator_that_could_not_read_the_caption_is_refused(family):
    with pytest.raises(ValueError, match="pooled_text=False.*attn_resolutions"):
        generator(family, pooled_text=False, attn_resolutions=())


def test_through_the_tokens_alone_a_generator_draws_each_colour_on_its_side():
    """Regressed onto two-sided images from their captions (whose pooled vectors cannot tell a caption
    from its swap), a GAN-CLS generator without the pooled vector but with positional cross-attention
    puts each colour on the side its token names."""
    error = two_sides_regression_error(attn_resolutions=(4, 8), attn_positions=True, pooled_text=False)
    assert error < 0.04


def test_a_run_without_pooled_text_resumes_exactly(tmp_path):
    model = {"arch": "gan-cls", "augment": "", "reg_every": 2,
             "generator": {"ngf": 8, "z_dim": 8, "cond_dim": 8, "attn_resolutions": [4, 8],
                           "attn_positions": True, "pooled_text": False},
             "discriminator": {"ndf": 8, "max_channels": 32}}
    _, resumed = straight_and_resumed(tmp_path, model, lambda: ColourSquares(n=48))
    assert not resumed.family.G.config.pooled_text


def assert_onnx_equals_torch(g, tmp_path) -> None:
    """g (text_dim 12, z_dim 4, 16 px, 3 channels) exported through the text-to-image wrapper draws
    what torch draws, for captions of different lengths."""
    pytest.importorskip("onnxruntime")
    from wordcanvas.export import TOLERANCE, OnnxGenerator, export_generator
    from wordcanvas.generate import TextToImage
    from wordcanvas.text.trainable import TrainableEncoder, TrainableEncoderConfig

    encoder = TrainableEncoder(TrainableEncoderConfig(vocab=["[PAD]", "[UNK]", "[CLS]", "a"], dim=12, depth=1, heads=2))
    onnx = OnnxGenerator(export_generator(TextToImage(g, encoder.eval(), {"family": "gan"}), tmp_path / "g.onnx"))
    rng = torch.Generator().manual_seed(1)
    z, states = torch.randn(3, 4, generator=rng), torch.randn(3, 5, 12, generator=rng)
    mask = torch.arange(5) < torch.tensor([[2], [5], [3]])
    pooled = torch.randn(3, 12, generator=rng)
    with torch.no_grad():
        ref = g(z, TextEmbedding(states, mask, pooled))
    out = onnx({"z": z, "pooled": pooled, "tokens": states, "mask": mask})  # an unused pooled input is harmless
    assert out.shape == (3, 3, 16, 16) and (out - ref).abs().max() <= TOLERANCE


def test_a_generator_without_pooled_text_exports_to_onnx(tmp_path):
    g = generator("gan-cls", text_dim=12, pooled_text=False, attn_resolutions=(4, 8), attn_positions=True)
    assert_onnx_equals_torch(g, tmp_path)
