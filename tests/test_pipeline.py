"""TextToImagePipeline: composes encoder -> generator -> style -> upscale; batching, seeds, caching, CLI."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from t2i_fixtures import tiny_run

from wordcanvas.assets import AssetMissing
from wordcanvas.generate import TextToImage
from wordcanvas.models import defaults
from wordcanvas.pipeline import BUILTIN_STYLES, TextToImagePipeline


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tiny_run(tmp_path_factory)


@pytest.fixture(scope="module")
def pipe(run_dir):
    torch.set_num_threads(1)
    return TextToImagePipeline.from_pretrained(run_dir)


def test_pipeline_draws_what_text_to_image_draws(pipe, run_dir):
    prompts = ["a red square", "a small blue box"]
    reference = TextToImage.from_pretrained(run_dir)(prompts, n=3, seed=7)
    images = pipe(prompts, n=3, seed=7)
    assert images.shape == (6, 3, 16, 16) and images.min() >= -1 and images.max() <= 1
    torch.testing.assert_close(images, reference, rtol=0, atol=1e-6)


def test_an_image_does_not_depend_on_what_shares_its_batch(pipe):
    batch = pipe.render(["a red square", "a green square", "a blue square", "a red square"], [3, 10, 11, 12])
    alone = pipe.render(["a green square"], [10])
    torch.testing.assert_close(batch[1:2], alone, rtol=0, atol=1e-5)
    torch.testing.assert_close(pipe(["a green square"], n=1, seed=10), alone, rtol=0, atol=1e-5)
    # a different seed or prompt gives a different image
    assert (batch[0] - batch[3]).abs().max() > 1e-3
    assert (pipe.render(["a blue square"], [10]) - alone).abs().max() > 1e-4


def test_prompt_embeddings_are_cached(run_dir):
    pipe = TextToImagePipeline.from_pretrained(run_dir)
    encoder = pipe.t2i.encoder
    seen: list[list[str]] = []
    original = encoder.encode

    def counting(texts):
        seen.append(list(texts))
        return original(texts)

    encoder.encode = counting
    pipe(["a red square", "a blue square", "a red square"], n=2, seed=0)
    pipe(["a blue square"], n=4, seed=1)
    assert seen == [["a red square", "a blue square"]]  # each distinct prompt encoded once, then remembered


def test_a_batch_of_more_new_prompts_than_the_cache_holds(run_dir):
    t2i = TextToImage.from_pretrained(run_dir)
    t2i.cache_size = 2
    prompts = ["a red square", "a blue square", "a green square", "a red square", "a small box"]
    together = t2i.embed(prompts)
    assert len(t2i._cache) == 2
    for i, p in enumerate(prompts):  # each row is that prompt's own embedding, in order
        torch.testing.assert_close(together.pooled[i], t2i.encoder.encode([p]).pooled[0])


def test_upscale_and_style(pipe):
    base = pipe(["a red square"], n=2, seed=1)
    up = pipe(["a red square"], n=2, seed=1, upscale=4, upscaler="bicubic")
    assert up.shape == (2, 3, 64, 64)
    reference = F.interpolate(base, scale_factor=4, mode="bicubic", align_corners=False).clamp(-1, 1)
    torch.testing.assert_close(up, reference, rtol=0, atol=1e-5)

    styled = pipe(["a red square"], n=2, seed=1, style="waves", upscale=2, upscaler="bicubic")
    assert styled.shape == (2, 3, 32, 32) and styled.min() >= -1 and styled.max() <= 1
    other = pipe(["a red square"], n=2, seed=1, style="dots", upscale=2, upscaler="bicubic")
    assert (styled - other).abs().mean() > 0.01  # the style image matters
    again = pipe(["a red square"], n=2, seed=1, style="waves", upscale=2, upscaler="bicubic")
    torch.testing.assert_close(styled, again, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="built-in style"):
        pipe(["a red square"], style="no-such-style")
    with pytest.raises(ValueError, match="upscale must be"):
        pipe(["a red square"], upscale=3)


def test_shipped_model_lookup(tmp_path, monkeypatch):
    assert set(defaults.SHIPPED_MODELS) == {"toy-faces", "fashion-mnist"}
    with pytest.raises(ValueError, match="unknown shipped model"):
        defaults.default_model_dir("cifar")
    monkeypatch.setattr(defaults, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(AssetMissing, match="toy-faces.*not installed"):
        defaults.default_model_dir()
    (tmp_path / "t2i-fashion-mnist").mkdir()
    assert defaults.resolve_model("fashion-mnist") == tmp_path / "t2i-fashion-mnist"
    with pytest.raises(FileNotFoundError, match="neither a shipped model"):
        defaults.resolve_model(tmp_path / "missing")


def test_cli_generate_with_style_and_upscale(run_dir, tmp_path):
    from wordcanvas.cli import main

    style = tmp_path / "painting.png"
    Image.fromarray(torch.randint(0, 255, (48, 40, 3), dtype=torch.uint8).numpy()).save(style)
    out = tmp_path / "out"
    assert main(["generate", "a red square", "-n", "2", "--seed", "0", "--upscale", "2", "--upscaler", "bicubic",
                 "--style", str(style), "--model", str(run_dir), "--threads", "1", "--out", str(out)]) == 0
    files = sorted(out.iterdir())
    assert [f.name for f in files] == ["000-a-red-square-seed0.png", "000-a-red-square-seed1.png"]
    png = Image.open(files[1])
    assert png.size == (32, 32) and png.text["seed"] == "1" and json.loads(png.text["upscale"]) == 2
    assert main(["generate", "a red square", "--style", str(tmp_path / "nope.png"), "--model", str(run_dir),
                 "--out", str(tmp_path / "x")]) == 2  # a clear error, not a traceback
    assert sorted(BUILTIN_STYLES) == sorted(["strokes", "glass", "marble", "waves", "dots", "shards"])
