"""`make demo`: the gallery of the shipped model's generations, upscaled and stylised."""
from __future__ import annotations

import pytest
from PIL import Image

from wordcanvas.models.defaults import SHIPPED_MODELS, WEIGHTS_DIR


@pytest.mark.skipif(not (WEIGHTS_DIR / SHIPPED_MODELS["fashion-mnist"]).is_dir(), reason="no shipped fashion-mnist model")
def test_demo_writes_generated_upscaled_and_stylised_images_with_their_prompts(tmp_path):
    from wordcanvas.demo import DEMO_PROMPTS, run_demo

    page = run_demo(tmp_path, seed=0).read_text()
    for prompt in DEMO_PROMPTS["fashion-mnist"]:
        assert prompt in page
    assert Image.open(tmp_path / "fashion-mnist-0-0.png").size == (32, 32)
    assert Image.open(tmp_path / "fashion-mnist-upscaled.png").size == (128, 128)
    styled = Image.open(tmp_path / "fashion-mnist-styled.png")
    assert styled.size == (128, 128) and styled.mode == "RGB"
    first = Image.open(tmp_path / "fashion-mnist-0-0.png").tobytes()
    run_demo(tmp_path / "again", seed=0)
    assert (tmp_path / "again" / "fashion-mnist-0-0.png").read_bytes() and \
        Image.open(tmp_path / "again" / "fashion-mnist-0-0.png").tobytes() == first  # same seed, same image
