"""ONNX export of the generator and an SR network; ONNX Runtime matches torch within export.TOLERANCE."""
from __future__ import annotations

import json

import pytest
import torch
from t2i_fixtures import tiny_run, tiny_upscaler_dir

pytest.importorskip("onnxruntime")

from wordcanvas.export import TOLERANCE, OnnxGenerator, export_generator  # noqa: E402
from wordcanvas.generate import TextToImage  # noqa: E402
from wordcanvas.models.gan import Generator, GeneratorConfig  # noqa: E402
from wordcanvas.pipeline import TextToImagePipeline  # noqa: E402
from wordcanvas.text.base import TextEmbedding  # noqa: E402
from wordcanvas.text.trainable import TrainableEncoder, TrainableEncoderConfig  # noqa: E402


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tiny_run(tmp_path_factory)


@pytest.fixture(scope="module")
def sr_dir(tmp_path_factory):
    return tiny_upscaler_dir(tmp_path_factory)


def test_generator_graph_has_dynamic_batch_and_tokens_and_reads_the_mask(tmp_path):
    torch.manual_seed(0)
    gen = Generator(GeneratorConfig(resolution=16, text_dim=12, z_dim=6, cond_dim=8, ngf=8, max_channels=16,
                                    attn_resolutions=(8, 16), attn_heads=2, attn_positions=True,
                                    token_pool=3, token_layers=1)).eval()
    for attn in gen.attn.values():  # starts at zero (identity); give the token paths a real effect
        torch.nn.init.normal_(attn.to_out.weight, std=0.5)
    torch.nn.init.normal_(gen.token_pool.out.weight, std=0.5)
    for p in gen.token_refiner.parameters():
        torch.nn.init.normal_(p, std=0.3)
    encoder = TrainableEncoder(TrainableEncoderConfig(vocab=["[PAD]", "[UNK]", "[CLS]", "a"], dim=12, depth=1, heads=2))
    t2i = TextToImage(gen, encoder.eval(), {"family": "gan"})
    onnx = OnnxGenerator(export_generator(t2i, tmp_path / "g.onnx"))
    g = torch.Generator().manual_seed(1)
    for batch, tokens in ((1, 3), (5, 9)):
        z, states = torch.randn(batch, 6, generator=g), torch.randn(batch, tokens, 12, generator=g)
        lengths = torch.randint(1, tokens, (batch, 1), generator=g)  # every caption has padding
        mask = torch.arange(tokens) < lengths
        pooled = torch.randn(batch, 12, generator=g)
        with torch.no_grad():
            ref = gen(z, TextEmbedding(states, mask, pooled))
            other_mask = gen(z, TextEmbedding(states, torch.ones_like(mask), pooled))
        out = onnx({"z": z, "pooled": pooled, "tokens": states, "mask": mask})
        assert out.shape == (batch, 3, 16, 16)
        assert (out - ref).abs().max() <= TOLERANCE
        assert (ref - other_mask).abs().max() > 100 * TOLERANCE  # the mask matters, and the graph follows it
        assert (onnx({"z": z, "pooled": pooled, "tokens": states, "mask": torch.ones_like(mask)}) - other_mask
                ).abs().max() <= TOLERANCE


def test_cli_export_then_onnx_pipeline_matches_torch(run_dir, sr_dir, tmp_path, monkeypatch):
    from wordcanvas.cli import main

    monkeypatch.setenv("WORDCANVAS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "onnx"
    assert main(["export", "--model", str(run_dir), "--format", "onnx", "--upscaler", str(sr_dir),
                 "--out", str(out)]) == 0
    manifest = json.loads((out / "onnx.json").read_text())
    assert manifest["generator"]["inputs"] == ["z", "pooled", "tokens", "mask"]
    assert manifest["generator"]["max_abs_diff"] <= TOLERANCE
    (sr_name, sr_part), = manifest["upscalers"].items()
    assert (out / sr_part["file"]).exists() and sr_part["max_abs_diff"] <= TOLERANCE

    torch_pipe = TextToImagePipeline.from_pretrained(run_dir, upscaler=str(sr_dir))
    onnx_pipe = TextToImagePipeline.from_pretrained(run_dir, backend="onnx", onnx_dir=out, upscaler=str(sr_dir))
    prompts = ["a red square", "a small blue box with a longer caption"]
    a, b = torch_pipe(prompts, n=3, seed=4), onnx_pipe(prompts, n=3, seed=4)
    assert (a - b).abs().max() <= TOLERANCE
    a, b = torch_pipe(prompts[:1], n=2, seed=0, upscale=4), onnx_pipe(prompts[:1], n=2, seed=0, upscale=4)
    assert a.shape == (2, 3, 64, 64) and (a - b).abs().max() <= TOLERANCE
    bicubic = torch.nn.functional.interpolate(torch_pipe(prompts[:1], n=2, seed=0), scale_factor=4, mode="bicubic")
    assert (a - bicubic.clamp(-1, 1)).abs().mean() > 0.01  # the exported network really ran, not bicubic
    assert not (tmp_path / "cache" / "onnx").exists()  # the given export was used, nothing re-exported


def test_onnx_backend_exports_on_first_use_into_the_cache(run_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("WORDCANVAS_CACHE", str(tmp_path / "cache"))
    pipe = TextToImagePipeline.from_pretrained(run_dir, backend="onnx")
    assert (pipe.onnx_dir / "generator.onnx").exists() and str(pipe.onnx_dir).startswith(str(tmp_path / "cache"))
    torch_pipe = TextToImagePipeline.from_pretrained(run_dir)
    assert (pipe(["a green square"], n=2, seed=9) - torch_pipe(["a green square"], n=2, seed=9)).abs().max() <= TOLERANCE


def test_vae_decoder_exports_through_the_same_generator_interface(tmp_path):
    from wordcanvas.models.vae import TextVAE, VAEConfig

    torch.manual_seed(0)
    vae = TextVAE(VAEConfig(resolution=16, channels=1, text_dim=12, z_dim=4, cond_dim=8, nf=8, max_channels=16)).eval()
    encoder = TrainableEncoder(TrainableEncoderConfig(vocab=["[PAD]", "[UNK]", "[CLS]", "a"], dim=12, depth=1, heads=2))
    t2i = TextToImage(vae, encoder.eval(), {"family": "vae"})
    onnx = OnnxGenerator(export_generator(t2i, tmp_path / "vae.onnx"))
    g = torch.Generator().manual_seed(2)
    z, states, pooled = torch.randn(3, 4, generator=g), torch.randn(3, 5, 12, generator=g), torch.randn(3, 12, generator=g)
    mask = torch.ones(3, 5, dtype=torch.bool)
    with torch.no_grad():
        ref = vae(z, TextEmbedding(states, mask, pooled))
    out = onnx({"z": z, "pooled": pooled, "tokens": states, "mask": mask})
    assert out.shape == (3, 1, 16, 16) and (out - ref).abs().max() <= TOLERANCE
