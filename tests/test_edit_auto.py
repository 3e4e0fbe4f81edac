"""strength='auto': the run's own discriminator chooses each image's edit among a ladder of
strengths and local blends, the least change (LPIPS) among the candidates it judges to match the
edited caption well enough."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from test_contrastive import canonical
from test_train_loop import NAMES, ColourSquares, HashEncoder, tiny_config
from wordcanvas.edit import AUTO_RESIDUAL, AUTO_SHARE, Editor, pick_least_change
from wordcanvas.generate import TextToImage
from wordcanvas.train import train


def test_pick_least_change_follows_each_images_relative_bar():
    match = torch.tensor([[0.0, 1.0, 5.0],
                          [0.5, 2.0, 1.0],
                          [1.0, 3.0, 3.0]])
    change = torch.tensor([[0.1, 0.1, 0.1],
                           [0.2, 0.2, 0.2],
                           [0.3, 0.05, 0.3]])
    # image 0: match 0..1, bar 0.5 at share 0.5, candidates 1 and 2 pass, 1 changes less
    # image 1: match 1..3, bar 2, candidates 1 and 2 pass, 2 changes less (0.05)
    # image 2: match 1..5, bar 3, candidates 0 and 2 pass, 0 changes less
    assert pick_least_change(match, change, 0.5).tolist() == [1, 2, 0]
    assert pick_least_change(match, change, 0.0).tolist() == [0, 2, 0]  # the least change overall
    assert pick_least_change(match, change, 1.0).tolist() == [2, 2, 0]  # the best match
    with pytest.raises(ValueError, match=r"share must be in \[0, 1\]"):
        pick_least_change(match, change, 1.5)
    with pytest.raises(ValueError, match="one \\(candidates, images\\) shape"):
        pick_least_change(match, change[:2], 0.5)


@pytest.fixture(scope="module")
def judged_run(tmp_path_factory):
    """A short GAN-CLS run with the contrastive head on coloured squares: its discriminator learns
    to tell which colour a square is (tests/test_contrastive.py)."""
    cfg = tiny_config(tmp_path_factory.mktemp("auto") / "run", steps=80, ema_kimg=0,
                      model={"arch": "gan-cls", "generator": {"ngf": 8, "z_dim": 8, "cond_dim": 8},
                             "discriminator": {"ndf": 8, "max_channels": 32, "cond_head": "projection",
                                               "contrastive_dim": 16},
                             "augment": "", "reg": "none", "contrastive": 1.0})
    return train(cfg, dataset=ColourSquares(n=96), encoder=HashEncoder())


def test_the_exported_model_keeps_its_discriminator_as_a_judge(judged_run):
    final = judged_run.run_dir / "final"
    assert json.loads((final / "model.json").read_text())["discriminator"] == "discriminator"
    editor = Editor(TextToImage.from_pretrained(final, encoder=HashEncoder()))
    trained = judged_run.family.modules["discriminator"].state_dict()
    loaded = editor.judge.state_dict()
    assert trained.keys() == loaded.keys() and all(torch.equal(trained[k], loaded[k]) for k in trained)
    # the judge reads the colours: a square matches its own colour's caption better than the next colour's
    images, colours, _ = canonical(HashEncoder())
    own = [f"a {NAMES[c]} square" for c in colours.tolist()]
    other = [f"a {NAMES[(c + 1) % 6]} square" for c in colours.tolist()]
    assert (editor.match(images, own, other) > 0).float().mean() >= 0.9
    assert torch.equal(editor.match(images, own, other), -editor.match(images, other, own))


def test_auto_edit_is_the_least_change_the_judge_accepts(judged_run):
    editor = Editor(TextToImage.from_pretrained(judged_run.run_dir, encoder=HashEncoder()))
    images, colours, _ = canonical(HashEncoder())
    images, colours = images[:6], colours[:6]
    source = [f"a {NAMES[c]} square" for c in colours.tolist()]
    target = [f"a {NAMES[(c + 3) % 6]} square" for c in colours.tolist()]
    auto = editor.edit(images, target, source, steps=5, strength="auto")
    assert auto.shape == images.shape and torch.equal(auto, editor.edit(images, target, source, steps=5,
                                                                        strength="auto"))
    latents = editor.latents(images, source, steps=5)
    ladder = editor.edit_ladder(latents, target, source, images, residual=AUTO_RESIDUAL)  # as "auto" builds it
    assert AUTO_RESIDUAL > 0 and len(ladder["settings"]) == ladder["images"].shape[0] == 30
    match, change = ladder["match"], ladder["change"]
    for j in range(len(images)):  # written out: which candidate reaches the bar with the least change
        low, high = match[:, j].min(), match[:, j].max()  # the bar in the table's own float32
        passing = [i for i in range(len(match)) if bool(match[i, j] >= low + AUTO_SHARE * (high - low))]
        best = min(passing, key=lambda i: float(change[i, j]))
        assert torch.equal(auto[j], ladder["images"][best, j])
    # each candidate's match and change are what the editor measures on that image alone
    i = 7
    strength, blend = ladder["settings"][i]
    alone = editor.edit_latents(latents, target, source, strength, local_blend=blend, images=images,
                                residual=AUTO_RESIDUAL)
    assert torch.equal(alone, ladder["images"][i])
    assert torch.allclose(ladder["lpips"][i], editor.lpips_distance(alone, images))
    # the change adds what the judge sees: 1 - cosine of the two images in its contrastive image space
    d = editor.judge
    assert d.config.contrastive_dim > 0 and d.config.contrastive_pool == "mean"
    with torch.no_grad():
        embed = lambda x: torch.nn.functional.normalize(  # noqa: E731
            d.contrastive_image(torch.nn.functional.leaky_relu(d.features(x), 0.2).mean(dim=(2, 3))), dim=1)
        seen = 1 - torch.nn.functional.cosine_similarity(embed(alone), embed(images), dim=1)
    assert seen.abs().max() > 1e-4  # the edit moved the images in the judge's eyes
    assert torch.allclose(ladder["change"][i], editor.lpips_distance(alone, images) + seen, atol=1e-5)


def test_auto_edit_is_refused_without_a_judge(judged_run, tmp_path):
    copy = tmp_path / "final"
    shutil.copytree(judged_run.run_dir / "final", copy)
    shutil.rmtree(copy / "discriminator")
    editor = Editor(TextToImage.from_pretrained(copy, encoder=HashEncoder()))
    images = canonical(HashEncoder())[0][:2]
    with pytest.raises(ValueError, match="needs a text-conditioned GAN saved with its discriminator"):
        editor.edit(images, "a red square", "a blue square", steps=2, strength="auto")
    editor = Editor(TextToImage.from_pretrained(judged_run.run_dir, encoder=HashEncoder()))
    with pytest.raises(ValueError, match="chooses the local blend itself"):
        editor.edit(images, "a red square", "a blue square", steps=2, strength="auto", local_blend=0.35)


def test_the_shipped_face_model_edits_automatically_from_the_command_line(tmp_path):
    """The shipped toy-faces GAN carries its discriminator and its dataset is known (so the source
    caption can be predicted): `wordcanvas edit --model toy-faces --strength auto` runs as is."""
    from PIL import Image

    from wordcanvas.cli import main
    from wordcanvas.data.toy_faces import ToyFaces
    from wordcanvas.edit import run_dataset
    from wordcanvas.models.defaults import default_model_dir
    from wordcanvas.utils.io import tensor_to_pil

    folder = default_model_dir("toy-faces")
    assert run_dataset(folder) == "toy-faces" and (folder / "discriminator" / "config.json").exists()
    face, out = tmp_path / "face.png", tmp_path / "edited.png"
    tensor_to_pil(ToyFaces("test", 64, size=1, seed=0).image(0)).save(face)
    assert main(["edit", str(face), "--text", "a man wearing glasses", "--model", "toy-faces", "--strength", "auto",
                 "--steps", "5", "--threads", "1", "--out", str(out)]) == 0
    assert Image.open(out).size == (64, 64)
