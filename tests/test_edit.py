"""Text-guided editing and reconstruction: the VAE path (on the short Fashion-MNIST run that
tests/test_vae.py trains) and GAN inversion (on a small random generator whose true latents are known)."""
from __future__ import annotations

import pytest
import torch

from test_vae import WORDS, HashEncoder, OneWordFashion, judge_class, trained_fashion_vae
from wordcanvas.edit import Editor, face_caption, load_image, predict_captions, run_dataset


@pytest.fixture(scope="module")
def vae_editor():
    from wordcanvas.generate import TextToImage

    run = trained_fashion_vae().run_dir
    return Editor(TextToImage.from_pretrained(run, encoder=HashEncoder()), dataset=run_dataset(run / "final"))


@pytest.fixture(scope="module")
def held_out():
    data = OneWordFashion(32, "test")  # images the run never saw
    images = torch.stack([data.image(i) for i in range(32)])
    labels = torch.tensor([data.labels(i)["class"] for i in range(32)])
    return images, labels, [data.captions(i)[0] for i in range(32)]


def test_vae_edit_shapes_and_determinism(vae_editor, held_out):
    images, labels, captions = held_out
    target = [WORDS[(int(k) + 5) % 10] for k in labels]
    a = vae_editor.edit(images, target, source=captions)
    assert a.shape == images.shape and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, vae_editor.edit(images, target, source=captions))


def test_vae_unchanged_caption_gives_a_close_reconstruction(vae_editor, held_out):
    images, labels, captions = held_out
    same = vae_editor.edit(images, captions, source=captions)
    assert torch.equal(same, vae_editor.reconstruct(images, captions))
    error = (same - images).square().mean()
    shuffled = (images - images.roll(1, dims=0)).square().mean()  # distance to another garment
    assert error < 0.35 * shuffled, (float(error), float(shuffled))


def test_vae_edit_moves_towards_the_target_class(vae_editor, held_out):
    images, labels, captions = held_out
    target = (labels + 5) % 10
    edited = vae_editor.edit(images, [WORDS[int(k)] for k in target], source=captions)
    same = vae_editor.reconstruct(images, captions)
    assert (edited - same).abs().mean() > 0.02  # the caption changes the picture
    # the latent keeps some of the source's shape, so not every edit lands; chance is 0.1
    assert (judge_class(edited) == target).float().mean() >= 0.25


def test_automatic_strength_needs_a_gan_and_its_discriminator(vae_editor, held_out):
    images, _, captions = held_out
    with pytest.raises(ValueError, match="needs a text-conditioned GAN saved with its discriminator"):
        vae_editor.edit(images[:2], "bag", source=captions[:2], strength="auto")


def test_missing_source_caption_is_predicted_or_refused(vae_editor, held_out):
    from wordcanvas.data.fashion_mnist import train_captions

    images, labels, _ = held_out
    assert vae_editor.dataset == "fashion-mnist"
    predicted = predict_captions(images, "fashion-mnist")
    assert all(any(p in train_captions(k) for k in range(10)) for p in predicted)  # training-style captions
    assert torch.equal(vae_editor.edit(images, "bag"), vae_editor.edit(images, "bag", source=predicted))
    blind = Editor(vae_editor.t2i, dataset=None)
    with pytest.raises(ValueError, match="pass the source caption"):
        blind.edit(images, "bag")
    with pytest.raises(ValueError, match=r"images must be \(N, 1, 16, 16\)"):
        blind.edit(images[:, :, :8], "a bag", source="a coat")


def test_face_caption_states_the_predicted_attributes():
    from wordcanvas.data.grammar import ATTRIBUTES

    import numpy as np

    attrs = {name: 0 for name in ATTRIBUTES}
    attrs.update(gender=1, age=2, hair_style=1, hair_color=4, eyeglasses=1, beard=1)
    text = face_caption(attrs, np.random.default_rng(0))
    for word in ("man", "old", "grey", "short"):
        assert word in text, text
    assert "glasses" in text or "eyeglasses" in text


def test_load_image_crops_resizes_and_converts(tmp_path):
    from PIL import Image

    Image.new("RGB", (40, 30), (255, 0, 0)).save(tmp_path / "red.png")
    x = load_image(tmp_path / "red.png", 1, 16)
    assert x.shape == (1, 1, 16, 16)
    torch.testing.assert_close(x, torch.full_like(x, 0.299 * 255 / 127.5 - 1), atol=0.01, rtol=0)
    assert load_image(tmp_path / "red.png", 3, 8)[0, :, 0, 0].tolist() == pytest.approx([1, -1, -1])


# --- GAN inversion on a generator whose true latents are known --------------------------------

@pytest.fixture(scope="module")
def gan_editor():
    from wordcanvas.generate import TextToImage
    from wordcanvas.models.gan import Generator, GeneratorConfig

    torch.manual_seed(0)
    G = Generator(GeneratorConfig(resolution=16, channels=3, text_dim=16, z_dim=8, cond_dim=16, ngf=16,
                                  max_channels=32, attn_resolutions=()))
    from wordcanvas.models.layers import Affine

    for m in G.modules():  # affines start as the identity; make the caption matter, as training would
        if isinstance(m, Affine):
            torch.nn.init.normal_(m.mlp[-1].weight, std=0.2)
    return Editor(TextToImage(G, HashEncoder(), {"family": "gan"}))


def test_gan_inversion_recovers_a_generated_image(gan_editor):
    G = gan_editor.model
    captions = ["a red square", "a blue block", "a small green box"]
    text = HashEncoder().encode(captions)
    with torch.no_grad():
        targets = G(G.sample_noise(3, torch.Generator().manual_seed(11)), text)
        start = G(G.sample_noise(3, torch.Generator().manual_seed(12)), text)
    z = gan_editor.invert(targets, captions, steps=40, lr=0.05, candidates=4, seed=0)
    assert z.shape == (3, 8)
    short = lambda: gan_editor.invert(targets, captions, steps=3, candidates=2, seed=1)  # noqa: E731
    torch.testing.assert_close(short(), short(), rtol=0, atol=0)  # deterministic
    with torch.no_grad():
        recon = G(z, text)
    before = (start - targets).square().mean()
    after = (recon - targets).square().mean()
    assert after < 0.25 * before, (float(after), float(before))
    # unchanged caption: edit == reconstruct; another caption changes the picture
    same = gan_editor.edit(targets, captions, source=captions, steps=3, candidates=2)
    assert torch.equal(same, gan_editor.reconstruct(targets, captions, steps=3, candidates=2))
    other = gan_editor.edit(targets, "a yellow square", source=captions, steps=3, candidates=2)
    assert other.shape == targets.shape and not torch.allclose(other, same)


def test_gan_inversion_with_a_caption_offset(gan_editor, vae_editor, held_out):
    """Images drawn under one caption but inverted under another: z alone cannot undo the caption,
    a fitted pooled-embedding offset can (lower error at equal steps). The edit regenerates with the
    target caption's embedding plus that same offset."""
    G = gan_editor.model
    drawn, told = ["a red square", "a blue block", "a small green box"], ["a yellow disc", "a tall tower", "a cat"]
    with torch.no_grad():
        targets = G(G.sample_noise(3, torch.Generator().manual_seed(21)), HashEncoder().encode(drawn))
    common = dict(steps=60, lr=0.05, candidates=4, seed=0)
    z_only = gan_editor.invert(targets, told, **common)
    z, offset = gan_editor.invert(targets, told, offset_weight=1e-3, **common)
    assert z.shape == (3, 8) and offset.shape == (3, 16)
    told_text = HashEncoder().encode(told)
    with torch.no_grad():
        err_z = (G(z_only, told_text) - targets).square().mean()
        err_offset = (G(z, Editor._shifted(told_text, offset)) - targets).square().mean()
    assert err_offset < 0.5 * err_z, (float(err_offset), float(err_z))
    # the edit: target + offset at strength 1; at the GAN default (1.5) the caption change is pushed further
    target_text = HashEncoder().encode(["a purple square"] * 3)
    edited = gan_editor.edit(targets, "a purple square", source=told, offset_weight=1e-3, lpips_weight=1.0,
                             style_weight=None, strength=1, **common)
    with torch.no_grad():
        expected = G(z, Editor._shifted(target_text, offset))
    torch.testing.assert_close(edited, expected, rtol=0, atol=1e-6)
    from wordcanvas.edit import GAN_EDIT_DEFAULTS

    z, offset = gan_editor.invert(targets, told, offset_weight=GAN_EDIT_DEFAULTS["offset_weight"],
                                  lpips_weight=GAN_EDIT_DEFAULTS["lpips_weight"], **common)
    pushed = told_text.pooled + 1.5 * (target_text.pooled - told_text.pooled) + offset
    with torch.no_grad():
        expected = G(z, type(target_text)(target_text.tokens, target_text.mask, pushed))
    no_styles = dict(common, style_weight=None)  # the default offset editor without its style offsets
    torch.testing.assert_close(gan_editor.edit(targets, "a purple square", source=told, **no_styles), expected,
                               rtol=0, atol=1e-6)
    # one inversion, regenerated at another strength: the same as a full edit at that strength
    latents = gan_editor.latents(targets, told, **common)
    for strength in (1.0, 2.0):
        torch.testing.assert_close(gan_editor.edit_latents(latents, "a purple square", told, strength),
                                   gan_editor.edit(targets, "a purple square", source=told, strength=strength,
                                                   **common), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="offset_weight"):
        vae_editor.edit(held_out[0][:2], "a dress", source="a shirt", offset_weight=0.1)
    with pytest.raises(ValueError, match="style_weight"):
        vae_editor.edit(held_out[0][:2], "a dress", source="a shirt", style_weight=0.1)


@pytest.mark.parametrize("arch", ["gan-cls", "dfgan"])
def test_gan_inversion_with_per_layer_style_offsets(gan_editor, arch):
    """An image drawn with the generator's conditional scales and shifts moved off what noise and
    caption predict: z + caption offset cannot reach it as closely as z + offset + fitted per-layer
    style offsets. The edit keeps the styles; zero styles are the plain generator; bad settings
    are refused. Both generator architectures (their affine layers are found, not declared)."""
    from wordcanvas.edit import style_layers, styled
    from wordcanvas.generate import TextToImage
    from wordcanvas.models.gan import GANCLSConfig, GANCLSGenerator
    from wordcanvas.models.layers import Affine

    if arch == "dfgan":
        editor = gan_editor
        G = editor.model
    else:
        torch.manual_seed(0)
        G = GANCLSGenerator(GANCLSConfig(resolution=16, channels=3, text_dim=16, z_dim=8, cond_dim=16, ngf=16))
        for m in G.modules():
            if isinstance(m, Affine):
                torch.nn.init.normal_(m.mlp[-1].weight, std=0.2)
        G.eval()  # BatchNorm on its running statistics, as a trained generator samples
        editor = Editor(TextToImage(G, HashEncoder(), {"family": "gan"}))
    layers = style_layers(G)
    assert len(layers) == (2 if arch == "gan-cls" else 8)  # at 4 and 8 px / 2 blocks x 2 fusions x 2 affines
    captions = ["a red square", "a blue block", "a small green box"]
    text = HashEncoder().encode(captions)
    z0 = G.sample_noise(3, torch.Generator().manual_seed(31))
    drawn = [0.5 * torch.randn(3, layer.mlp[-1].out_features, generator=torch.Generator().manual_seed(40 + i))
             for i, layer in enumerate(layers)]
    with torch.no_grad():
        with styled(G, [torch.zeros_like(d) for d in drawn]):
            zero = G(z0, text)
        torch.testing.assert_close(zero, G(z0, text), rtol=0, atol=0)
        with styled(G, drawn):
            targets = G(z0, text)
        assert not torch.allclose(targets, zero) and torch.equal(G(z0, text), zero)  # hooks gone after the block
    common = dict(steps=600, lr=0.05, candidates=4, seed=0, lpips_weight=0.0)
    z, offset = editor.invert(targets, captions, offset_weight=1e-3, **common)
    z_s, offset_s, styles = editor.invert(targets, captions, offset_weight=1e-3, style_weight=1e-4, **common)
    assert [s.shape for s in styles] == [d.shape for d in drawn]
    with torch.no_grad():
        err_offset = (G(z, Editor._shifted(text, offset)) - targets).square().mean()
        with styled(G, styles):
            err_styles = (G(z_s, Editor._shifted(text, offset_s)) - targets).square().mean()
    assert err_styles < 0.25 * err_offset, (float(err_styles), float(err_offset))
    # the edit: target caption + offset, with the fitted styles
    target_text = HashEncoder().encode(["a purple square"] * 3)
    edited = editor.edit_latents((z_s, offset_s, styles), "a purple square", captions, strength=1.0)
    with torch.no_grad(), styled(G, styles):
        expected = G(z_s, Editor._shifted(target_text, offset_s))
    torch.testing.assert_close(edited, expected, rtol=0, atol=1e-6)
    short = dict(offset_weight=0.1, style_weight=0.1, steps=3, candidates=2)  # edit() = latents() + edit_latents()
    torch.testing.assert_close(editor.edit(targets, "a purple square", source=captions, strength=1.0, **short),
                               editor.edit_latents(editor.latents(targets, captions, **short), "a purple square",
                                                   captions, strength=1.0), rtol=0, atol=0)
    # the library defaults: styles at GAN_EDIT_DEFAULTS' weight beside the offset; none without the offset
    from wordcanvas.edit import GAN_EDIT_DEFAULTS

    brief = dict(steps=3, candidates=2)
    filled = editor.latents(targets, captions, **brief)
    spelled = editor.latents(targets, captions, offset_weight=GAN_EDIT_DEFAULTS["offset_weight"],
                             style_weight=GAN_EDIT_DEFAULTS["style_weight"],
                             lpips_weight=GAN_EDIT_DEFAULTS["lpips_weight"], **brief)
    assert len(filled) == 3 and all(torch.equal(a, b) for a, b in zip(filled[:2], spelled[:2]))
    assert all(torch.equal(a, b) for a, b in zip(filled[2], spelled[2]))
    assert len(editor.latents(targets, captions, style_weight=None, **brief)) == 2
    assert torch.is_tensor(editor.latents(targets, captions, offset_weight=None, **brief))
    with pytest.raises(ValueError, match="needs offset_weight"):
        editor.invert(targets, captions, offset_weight=None, style_weight=0.1, steps=2, candidates=2)
    with pytest.raises(ValueError, match="style_weight must be >= 0"):
        editor.invert(targets, captions, offset_weight=0.1, style_weight=-1.0, steps=2, candidates=2)
    with pytest.raises(ValueError, match="affine layers"), styled(G, drawn[:1]):
        pass


def test_interpolation_between_prompts_and_images(vae_editor, held_out):
    images, _, captions = held_out
    frames = vae_editor.interpolate("sneaker", "dress", steps=5, seed=3)
    assert frames.shape == (5, 1, 16, 16)
    ends = vae_editor.t2i(["sneaker", "dress"], n=1, seed=3)  # both from the prior draw of seed 3
    torch.testing.assert_close(frames[0], ends[0], atol=1e-5, rtol=0)
    pair = vae_editor.interpolate(captions[0], captions[1], steps=4, images=(images[:1], images[1:2]))
    torch.testing.assert_close(pair[0], vae_editor.reconstruct(images[:1], captions[0])[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(pair[-1], vae_editor.reconstruct(images[1:2], captions[1])[0], atol=1e-5, rtol=0)


def test_gaussian_blur_matches_scipy():
    from scipy.ndimage import gaussian_filter

    from wordcanvas.utils.filters import gaussian_blur

    x = torch.rand(2, 3, 17, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for sigma in (0.5, 1.0, 2.3):
        # torch's "reflect" padding is scipy's "mirror"; radius int(3 sigma + 0.5) is scipy's truncate=3
        expected = gaussian_filter(x.numpy(), sigma=(0, 0, sigma, sigma), mode="mirror", truncate=3.0)
        torch.testing.assert_close(gaussian_blur(x, sigma), torch.from_numpy(expected))
        torch.testing.assert_close(gaussian_blur(x[0], sigma), torch.from_numpy(expected[0]))  # CHW too


class CaptionOnTheLeft(torch.nn.Module):
    """A generator whose caption acts on the left half of the picture only; the right half is drawn
    from z under a fixed caption. What a local blend must find and respect."""

    def __init__(self, generator):
        super().__init__()
        self.generator, self.config = generator, generator.config
        self.fixed = HashEncoder().encode(["a grey background"])

    def sample_noise(self, *args, **kwargs):
        return self.generator.sample_noise(*args, **kwargs)

    def forward(self, z, text):
        from wordcanvas.text.base import TextEmbedding

        n, half = len(z), self.config.resolution // 2
        fixed = TextEmbedding(self.fixed.tokens.expand(n, -1, -1), self.fixed.mask.expand(n, -1),
                              self.fixed.pooled.expand(n, -1))
        return torch.cat([self.generator(z, text)[..., :half], self.generator(z, fixed)[..., half:]], dim=-1)


def test_local_blend_keeps_the_source_where_the_caption_does_not_act(gan_editor):
    from wordcanvas.edit import blend_edit
    from wordcanvas.generate import TextToImage

    editor = Editor(TextToImage(CaptionOnTheLeft(gan_editor.model), HashEncoder(), {"family": "gan"}))
    captions = ["a red square", "a blue block"]
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1  # not the model's own
    change = editor.change_map(captions, ["a yellow square", "a blue block"], strength=1.0)  # as edit() draws it
    assert change.shape == (2, 1, 16, 16) and change.min() >= 0
    assert float(change[0].max()) == pytest.approx(1.0) and torch.equal(change[1], torch.zeros(1, 16, 16))
    assert torch.equal(change[0, :, :, 10:], torch.zeros(1, 16, 6))  # the right half, past the smoothing's reach
    brief = dict(steps=3, candidates=2, offset_weight=0.1)
    plain = editor.edit(images, ["a yellow square", "a blue block"], source=captions, strength=1.0, **brief)
    local = editor.edit(images, ["a yellow square", "a blue block"], source=captions, strength=1.0,
                        local_blend=0.35, **brief)
    assert torch.equal(local[1], images[1])  # the unchanged caption: the source itself, not its reconstruction
    assert torch.equal(local[0, :, :, 10:], images[0, :, :, 10:])  # where the caption does not act
    strong = (change[0, 0] >= 0.35).nonzero()
    assert len(strong) > 0
    rows, cols = strong[:, 0], strong[:, 1]
    torch.testing.assert_close(local[0][:, rows, cols], plain[0][:, rows, cols])  # where it acts, the edit
    assert not torch.allclose(plain[0, :, :, 10:], images[0, :, :, 10:])  # the plain edit redraws everything
    # the blend itself: change / threshold, clipped, as the mix weight
    edited = torch.ones(1, 3, 4, 4)
    source = -torch.ones(1, 3, 4, 4)
    ramp = torch.linspace(0, 1, 16).view(1, 1, 4, 4)
    torch.testing.assert_close(blend_edit(source, edited, ramp, threshold=0.5),
                               (2 * (ramp / 0.5).clamp(max=1) - 1).expand(1, 3, 4, 4))
    with pytest.raises(ValueError, match="threshold"):
        blend_edit(source, edited, ramp, threshold=0.0)
    with pytest.raises(ValueError, match="shapes"):
        blend_edit(source, edited, ramp[..., :2])
    with pytest.raises(ValueError, match="source images"):
        editor.edit_latents(editor.latents(images, captions, **brief), captions, captions, local_blend=0.35)


def test_residual_puts_back_what_the_inversion_lost(gan_editor):
    """with_residual: edited + r x (source - reconstruction). At r = 1 an unchanged caption returns the source
    itself (not the model's version); a changed caption moves it exactly as much as the plain edit moves the
    reconstruction (before clamping); the automatic strength works on top of it."""
    captions = ["a red square", "a blue block"]
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(5)) * 1.6 - 0.8  # not the model's own
    brief = dict(steps=3, candidates=2, offset_weight=0.1)
    latents = gan_editor.latents(images, captions, **brief)
    recon = gan_editor.edit_latents(latents, captions, captions, strength=1.0)
    assert not torch.allclose(recon, images, atol=0.05)  # the inversion loses detail
    kept = gan_editor.edit_latents(latents, captions, captions, strength=1.0, images=images, residual=1.0)
    torch.testing.assert_close(kept, images, atol=1e-6, rtol=0)
    target = ["a yellow square", "a blue block"]
    plain = gan_editor.edit_latents(latents, target, captions, strength=1.0)
    half = gan_editor.edit_latents(latents, target, captions, strength=1.0, images=images, residual=0.5)
    torch.testing.assert_close(half, (plain + 0.5 * (images - recon)).clamp(-1, 1), atol=1e-6, rtol=0)
    assert torch.equal(gan_editor.edit_latents(latents, target, captions, strength=1.0, images=images, residual=0.0),
                       plain)
    with pytest.raises(ValueError, match="residual must be in"):
        gan_editor.edit_latents(latents, target, captions, strength=1.0, images=images, residual=1.5)
    with pytest.raises(ValueError, match="source images"):
        gan_editor.edit_latents(latents, target, captions, strength=1.0, residual=1.0)
    with pytest.raises(ValueError, match="residual must be in"):  # the automatic strength checks it too
        gan_editor.edit_ladder(latents, target, captions, images, residual=float("nan"))
