"""GAN models and losses: shapes, sizes, token attention, truncation, penalties vs finite differences,
DiffAugment."""
from __future__ import annotations

import pytest
import torch

from wordcanvas.models.gan import (DCGANConfig, DCGANDiscriminator, DCGANGenerator, Discriminator,
                                   DiscriminatorConfig, GANCLSConfig, GANCLSGenerator, Generator, GeneratorConfig, count_parameters, minibatch_stddev,
                                   sample_noise)
from wordcanvas.models.layers import CrossAttention, UpBlock, upsample2x
from wordcanvas.text.base import TextEmbedding
from wordcanvas.train.augment import diff_augment, rand_translation
from wordcanvas.train.gan_step import (d_fake_loss, d_real_loss, g_loss, magp_penalty, mode_seeking_loss, r1_penalty,
                                        wgan_gp_penalty)


def text(b: int, dim: int, t: int = 6, seed: int = 0) -> TextEmbedding:
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(t)[None].expand(b, t) < torch.randint(1, t + 1, (b, 1), generator=g)
    return TextEmbedding(torch.randn(b, t, dim, generator=g), mask, torch.randn(b, dim, generator=g))


@pytest.mark.parametrize("res,channels,text_dim", [(32, 1, 384), (64, 3, 576), (128, 3, 128)])
def test_generator_and_discriminator_shapes(res, channels, text_dim):
    g = Generator(GeneratorConfig(resolution=res, channels=channels, text_dim=text_dim, ngf=8, max_channels=32,
                                  attn_resolutions=(16, 32)))
    d = Discriminator(DiscriminatorConfig(resolution=res, channels=channels, text_dim=text_dim, ndf=8, max_channels=32))
    emb = text(2, text_dim)
    images = g.eval()(torch.randn(2, g.config.z_dim), emb)
    assert images.shape == (2, channels, res, res)
    assert images.abs().max() <= 1  # training mode gives the raw (unclamped) output to the discriminator
    uncond, match = d(images, emb.pooled)
    assert uncond.shape == match.shape == (2,)
    d_proj = Discriminator(DiscriminatorConfig(resolution=res, channels=channels, text_dim=text_dim, ndf=8,
                                               max_channels=32, cond_head="projection"))
    assert [t.shape for t in d_proj(images, emb.pooled)] == [(2,), (2,)]


@pytest.mark.parametrize("res,channels", [(32, 1), (64, 3)])
def test_gan_cls_generator_and_dcgan_trunk_shapes_and_text_dependence(res, channels):
    g = GANCLSGenerator(GANCLSConfig(resolution=res, channels=channels, text_dim=24, ngf=8)).eval()
    d = Discriminator(DiscriminatorConfig(resolution=res, channels=channels, text_dim=24, ndf=8, trunk="dcgan",
                                          cond_head="projection"))
    emb, z = text(3, 24), torch.randn(3, g.config.z_dim)
    images = g(z, emb)
    assert images.shape == (3, channels, res, res) and images.abs().max() <= 1
    assert [t.shape for t in d(images, emb.pooled)] == [(3,), (3,)]
    # the caption reaches the image (through the input and every conditional BatchNorm)
    other = TextEmbedding(emb.tokens, emb.mask, emb.pooled.roll(1, dims=0))
    with torch.no_grad():
        for affine in g.affines:  # past the identity start of the per-block modulation
            torch.nn.init.normal_(affine.mlp[-1].weight, std=0.1)
    assert not torch.allclose(g(z, emb), g(z, other), atol=1e-4)


def test_gan_cls_cross_attention_reads_tokens_beyond_the_pooled_caption():
    cfg = GANCLSConfig(resolution=32, channels=1, text_dim=24, ngf=8, attn_resolutions=(8, 16, 32))
    assert cfg.attn_resolutions == (8, 16)  # the last block ends at 16 px; 32 is the image itself
    g = GANCLSGenerator(cfg).eval()
    emb, z = text(3, 24), torch.randn(3, g.config.z_dim)
    assert g(z, emb).shape == (3, 1, 32, 32)
    swapped = TextEmbedding(emb.tokens.roll(1, 0), emb.mask.roll(1, 0), emb.pooled)  # same pooled text, other tokens
    reordered = TextEmbedding(emb.tokens.flip(1), emb.mask.flip(1), emb.pooled)
    padded = TextEmbedding(torch.cat([emb.tokens, torch.randn(3, 2, 24)], 1),
                           torch.cat([emb.mask, torch.zeros(3, 2, dtype=emb.mask.dtype)], 1), emb.pooled)
    with torch.no_grad():
        # a fresh layer is the identity (its output projection starts at zero): pooled text only
        assert torch.allclose(g(z, emb), g(z, swapped), atol=1e-6)
        for attn in g.attn.values():
            torch.nn.init.normal_(attn.to_out.weight, std=0.5)
            torch.nn.init.normal_(attn.to_q.weight, std=0.5)
        assert not torch.allclose(g(z, emb), g(z, swapped), atol=1e-4)  # the token states now reach the image
        # attention is over a set: where a token sits comes from its contextual state, not its slot
        assert torch.allclose(g(z, emb), g(z, reordered), atol=1e-5)
        assert torch.allclose(g(z, emb), g(z, padded), atol=1e-5)  # masked tokens are not read
    assert {"attn.8.to_q.weight", "attn.16.to_kv.weight", "token_proj.proj.weight"} <= set(g.state_dict())


def test_minibatch_stddev_measures_each_groups_spread():
    x = torch.randn(6, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    out = minibatch_stddev(x, 4)  # 6 is not divisible by 4: groups of 3, members i, i + 2, i + 4
    assert out.shape == (6, 4, 4, 4) and torch.equal(out[:, :3], x)
    for i in range(6):
        members = x[i % 2::2]
        spread = ((members - members.mean(0)).square().mean(0)).sqrt().mean()
        assert torch.allclose(out[i, 3], spread.expand(4, 4), atol=1e-6)
    collapsed = minibatch_stddev(x[:1].expand(4, -1, -1, -1), 4)  # identical images: no spread
    assert collapsed[:, 3].abs().max() < 1e-3
    d = Discriminator(DiscriminatorConfig(resolution=16, channels=1, text_dim=8, ndf=4, max_channels=8, mbstd_group=4,
                                          cond_head="projection"))
    assert [t.shape for t in d(torch.randn(8, 1, 16, 16), torch.randn(8, 8))] == [(8,), (8,)]


def test_default_sizes_suit_a_cpu():
    g64 = Generator(GeneratorConfig(resolution=64, channels=3, text_dim=384))
    assert 2e6 <= count_parameters(g64) <= 5e6
    dc = DCGANGenerator(DCGANConfig(resolution=32, channels=1, num_classes=10))
    assert 1.1e6 <= count_parameters(dc) <= 1.5e6
    z, labels = torch.randn(3, 100), torch.tensor([0, 9, -1])  # -1: unknown class
    assert dc(z, labels).shape == (3, 1, 32, 32)
    assert DCGANDiscriminator(DCGANConfig(resolution=32))(torch.randn(3, 1, 32, 32), labels).shape == (3,)


def test_generator_roundtrip_save_load(tmp_path):
    g = Generator(GeneratorConfig(resolution=16, channels=3, text_dim=8, ngf=8, attn_resolutions=(8,),
                                  attn_positions=True))
    for attn in g.attn.values():  # past the identity start, so the loaded positions must matter
        torch.nn.init.normal_(attn.to_out.weight, std=0.5)
    g.save_pretrained(tmp_path / "g")
    h = Generator.from_pretrained(tmp_path / "g")
    assert h.config == g.config and h.config.attn_resolutions == (8,) and h.config.attn_positions
    torch.testing.assert_close(h.attn["8"].positions, g.attn["8"].positions, rtol=0, atol=0)
    z, emb = torch.randn(2, g.config.z_dim), text(2, 8)
    torch.testing.assert_close(g.eval()(z, emb), h(z, emb), rtol=0, atol=0)


def test_up_block_equals_upsample_then_convolve():
    """The fast block (fusion and shortcut before upsampling, transposed 4x4 conv) computes the plain
    DF-GAN block: shortcut(up(x)) + conv2(fuse2(conv1(fuse1(up(x)))))."""
    torch.manual_seed(0)
    block = UpBlock(cond_dim=5, in_ch=6, out_ch=4).double()
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.5)  # affines start as the identity; make them count
    x, cond = torch.randn(2, 6, 5, 5, dtype=torch.float64), torch.randn(2, 5, dtype=torch.float64)

    def plain():
        up = torch.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")
        h = torch.nn.functional.conv2d(block.fuse1(up, cond), block.conv1.weight, block.conv1.bias, padding=1)
        return block.shortcut(up) + block.conv2(block.fuse2(h, cond))

    torch.testing.assert_close(block(x, cond), plain(), rtol=1e-12, atol=1e-12)  # training path
    with torch.no_grad():
        torch.testing.assert_close(block(x, cond), plain(), rtol=1e-12, atol=1e-12)  # cached kernel
        block.conv1.weight.mul_(-2.0)  # an optimizer step or a weight load must refresh the cache
        torch.testing.assert_close(block(x, cond), plain(), rtol=1e-12, atol=1e-12)
    assert torch.equal(upsample2x(x), torch.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest"))


def test_cross_attention_reads_real_tokens_and_ignores_padding():
    attn = CrossAttention(channels=8, token_dim=4, heads=2, head_dim=4)
    torch.nn.init.normal_(attn.to_out.weight)  # it starts as the identity; make it do something
    x = torch.randn(1, 8, 4, 4)
    tokens = torch.randn(1, 3, 4)
    mask = torch.tensor([[True, True, False]])
    out = attn(x, tokens, mask)
    padded_changed = tokens.clone()
    padded_changed[0, 2] += 5.0
    torch.testing.assert_close(attn(x, padded_changed, mask), out)
    real_changed = tokens.clone()
    real_changed[0, 0] += 5.0
    assert not torch.allclose(attn(x, real_changed, mask), out)
    assert torch.isfinite(attn(x, tokens, torch.zeros(1, 3, dtype=torch.bool))).all()  # no real token: no NaN


def left_right_task(batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two tokens per caption, each a side tag ("left"/"right", one-hot) and a random content vector,
    in random order; the target map holds the left token's content on the left half and the right
    token's on the right half. The input map is blank, so only knowing where a query sits can tell
    which token it should read."""
    content = torch.randn(batch, 2, 4, generator=generator)
    tags = torch.eye(2).expand(batch, 2, 2)
    swap = torch.rand(batch, generator=generator) < 0.5
    tokens = torch.cat([tags, content], dim=-1)
    tokens[swap] = tokens[swap].flip(1)
    target = torch.zeros(batch, 8, 4, 4)
    target[:, :4, :, :2] = content[:, 0, :, None, None]
    target[:, :4, :, 2:] = content[:, 1, :, None, None]
    return torch.zeros(batch, 8, 4, 4), tokens, target


@pytest.mark.parametrize("positions", [0, 4])
def test_cross_attention_with_positions_places_tokens_by_what_they_name(positions):
    torch.manual_seed(0)
    attn = CrossAttention(channels=8, token_dim=6, heads=2, head_dim=8, positions=positions)
    opt = torch.optim.Adam(attn.parameters(), lr=0.02)
    data = torch.Generator().manual_seed(0)
    for _ in range(300):
        x, tokens, target = left_right_task(64, data)
        loss = torch.nn.functional.mse_loss(attn(x, tokens), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, tokens, target = left_right_task(256, torch.Generator().manual_seed(1))
    with torch.no_grad():
        error = torch.nn.functional.mse_loss(attn(x, tokens), target) / target.pow(2).mean()
    if positions:
        assert error < 0.05   # each half reads its own token
    else:
        assert error > 0.4    # a blank map gives every place the same query: both halves get one mixture


def test_cross_attention_positions_refuse_another_map_size():
    attn = CrossAttention(channels=8, token_dim=4, heads=2, head_dim=4, positions=4)
    with pytest.raises(ValueError, match="positions for 16 places, got a 8x8 map"):
        attn(torch.randn(1, 8, 8, 8), torch.randn(1, 3, 4))


def test_generator_output_depends_on_the_caption_tokens():
    g = Generator(GeneratorConfig(resolution=16, channels=3, text_dim=8, ngf=8, attn_resolutions=(8, 16)))
    for p in g.attn.parameters():
        torch.nn.init.normal_(p, std=0.3)
    z, emb = torch.randn(1, g.config.z_dim), text(1, 8)
    other = TextEmbedding(emb.tokens.flip(1), emb.mask.flip(1), emb.pooled)  # same pooled, other token order
    assert not torch.allclose(g(z, emb), g(z, other))


def test_truncated_noise():
    g = torch.Generator().manual_seed(0)
    z = sample_noise(2000, 16, g, truncation=0.7)
    assert z.abs().max() <= 0.7 and z.std() > 0.3  # redrawn, not clipped into a spike at +-0.7
    assert (z.abs() > 0.69).float().mean() < 0.02
    full = sample_noise(4, 16, torch.Generator().manual_seed(1))
    torch.testing.assert_close(sample_noise(4, 16, torch.Generator().manual_seed(1), 0.5, "scale"), full * 0.5)


def test_losses_match_their_definitions():
    x = torch.tensor([-2.0, 0.5, 3.0])
    assert d_real_loss("hinge", x).item() == pytest.approx((3 + 0.5 + 0) / 3)
    assert d_fake_loss("hinge", x).item() == pytest.approx((0 + 1.5 + 4) / 3)
    assert d_real_loss("ns", x).item() == pytest.approx(torch.log1p(torch.exp(-x)).mean().item())
    assert d_fake_loss("wgan", x).item() == pytest.approx(x.mean().item())
    assert g_loss("hinge", x).item() == pytest.approx(-x.mean().item())
    assert g_loss("ns", x).item() == pytest.approx(torch.log1p(torch.exp(-x)).mean().item())


def test_mode_seeking_term_follows_its_definition_and_pushes_images_apart():
    """Mao et al. 2019: the term is the inverse of |dI| / |dz| (mean absolute differences), so
    minimising it makes two noise vectors' images differ more."""
    torch.manual_seed(0)
    g = GANCLSGenerator(GANCLSConfig(resolution=8, channels=1, text_dim=6, z_dim=4, cond_dim=4, ngf=4)).eval()
    caption = text(2, 6)
    za, zb = torch.randn(2, 4), torch.randn(2, 4)
    a, b = g(za, caption), g(zb, caption)
    by_hand = 1 / (float((a - b).abs().sum()) / a.numel() / (float((za - zb).abs().sum()) / za.numel()) + 1e-5)
    assert mode_seeking_loss(a, b, za, zb).item() == pytest.approx(by_hand, rel=1e-5)
    before = float((a - b).abs().mean())
    opt = torch.optim.SGD(g.parameters(), lr=0.05)
    for _ in range(5):
        opt.zero_grad()
        mode_seeking_loss(g(za, caption), g(zb, caption), za, zb).backward()
        opt.step()
    with torch.no_grad():
        assert float((g(za, caption) - g(zb, caption)).abs().mean()) > before


@pytest.fixture
def tiny_d():
    torch.manual_seed(0)
    d = Discriminator(DiscriminatorConfig(resolution=8, channels=1, text_dim=3, cond_dim=4, ndf=4, max_channels=8)).double()
    for block in d.blocks:
        block.gamma.data.fill_(0.7)  # make the residual path count (it starts at zero)
    return d


def finite_difference_grads(f, inputs: list[torch.Tensor], h: float = 1e-6) -> list[torch.Tensor]:
    """Central differences of f(*inputs), a per-sample vector whose samples are independent: every
    (element, +-h) perturbation of every sample goes through f in one big batch."""
    b = inputs[0].shape[0]
    sizes = [x[0].numel() for x in inputs]
    n = sum(sizes)
    batch = [x.repeat_interleave(2 * n, dim=0).clone() for x in inputs]  # sample-major, 2n copies each
    row = 0
    for k, x in enumerate(inputs):
        flat = batch[k].view(b, n, 2, -1)
        for idx in range(sizes[k]):
            flat[:, row + idx, 0, idx] += h
            flat[:, row + idx, 1, idx] -= h
        row += sizes[k]
    out = f(*batch).view(b, n, 2)
    diff = (out[..., 0] - out[..., 1]) / (2 * h)  # (b, n)
    return [g.reshape(x.shape) for g, x in zip(diff.split(sizes, dim=1), inputs)]


def test_gradient_penalties_match_finite_differences(tiny_d):
    g = torch.Generator().manual_seed(3)
    images = torch.randn(3, 1, 8, 8, generator=g, dtype=torch.float64)
    pooled = torch.randn(3, 3, generator=g, dtype=torch.float64)
    match = lambda x, e: tiny_d(x, e)[1]  # noqa: E731
    both = lambda x, e: sum(tiny_d(x, e))  # noqa: E731
    gx, ge = finite_difference_grads(match, [images, pooled])
    norm = (gx.flatten(1).square().sum(1) + ge.square().sum(1)).sqrt()
    x, e = images.clone().requires_grad_(True), pooled.clone().requires_grad_(True)
    ours = magp_penalty(match(x, e), x, e, k=2.0, p=6.0)
    assert ours.item() == pytest.approx((2.0 * norm.pow(6)).mean().item(), rel=1e-6)

    gx_both, _ = finite_difference_grads(both, [images, pooled])
    x = images.clone().requires_grad_(True)
    expected_r1 = 10.0 / 2 * gx_both.flatten(1).square().sum(1).mean()
    assert r1_penalty(both(x, pooled), x, 10.0).item() == pytest.approx(expected_r1.item(), rel=1e-6)

    x = images.clone().requires_grad_(True)
    expected_gp = 10.0 * ((gx_both.flatten(1).square().sum(1).sqrt() - 1) ** 2).mean()
    assert wgan_gp_penalty(both(x, pooled), x, 10.0).item() == pytest.approx(expected_gp.item(), rel=1e-6)


def test_gradient_penalty_is_differentiable_for_the_discriminator(tiny_d):
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    e = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    magp_penalty(tiny_d(x, e)[1], x, e).backward()
    assert all(p.grad is not None for p in tiny_d.blocks.parameters())


def test_diffaugment_is_seeded_and_differentiable():
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    policy = "color,translation,cutout"
    a = diff_augment(x, policy, torch.Generator().manual_seed(0))
    assert torch.equal(a, diff_augment(x, policy, torch.Generator().manual_seed(0)))
    assert not torch.equal(a, diff_augment(x, policy, torch.Generator().manual_seed(1)))
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert torch.equal(diff_augment(x, ""), x)
    with pytest.raises(ValueError, match="unknown DiffAugment"):
        diff_augment(x, "rotate")


def test_translation_moves_content_and_fills_with_zeros():
    x = torch.arange(64.0).view(1, 1, 8, 8) + 1  # no zeros in the input
    for seed in range(5):
        out = rand_translation(x, torch.Generator().manual_seed(seed))
        kept = out[out != 0]
        assert set(kept.tolist()) <= set(x.flatten().tolist())
        rows = [r for r in out[0, 0] if (r != 0).any()]
        assert all(torch.all(torch.diff(r[r != 0]) == 1) for r in rows)  # each row is a shifted slice


def test_class_lookup_reads_every_training_phrasing_and_refuses_unknown_words():
    """The DCGAN baseline maps prompts to classes by the phrases of the training captions; the
    fix for "a sweater" / "a boot" being refused, checked against every training caption."""
    from wordcanvas.data import fashion_mnist as fm
    from wordcanvas.train.gan_step import class_from_text

    phrases = fm.class_phrases()
    for k in range(len(fm.CLASS_NAMES)):
        for caption in fm.train_captions(k):
            assert class_from_text(caption, phrases) == k, caption
    assert class_from_text("An Ankle Boot!", phrases) == fm.CLASS_NAMES.index("Ankle boot")  # longest match wins
    assert class_from_text("a photo of a t-shirt", phrases) == 0  # "shirt" inside "t-shirt" is not a match
    with pytest.raises(ValueError, match="reads no free text"):
        class_from_text("a jumper", phrases)  # a held-out paraphrase: the baseline cannot know it


@pytest.mark.parametrize("name", ["gan_fashion-mnist", "gan_toy-faces", "gan_captioned-mnist"])
def test_recipe_configs_build_their_models(name):
    """The configs the benchmarks and shipped models were trained with stay loadable as the code moves."""
    from pathlib import Path

    from wordcanvas.train.config import load_config
    from wordcanvas.train.gan_step import GANSettings

    cfg = load_config(Path(__file__).resolve().parent.parent / "configs" / f"{name}.json")
    s = GANSettings(**cfg.model)
    common = dict(resolution=cfg.resolution, channels=1 if cfg.data.endswith("mnist") else 3, text_dim=384)
    g = s.build_generator(**common).eval()
    d = s.build_discriminator(**common)
    captions = text(4, 384)
    images = g(torch.randn(4, g.config.z_dim), captions)
    assert images.shape == (4, common["channels"], cfg.resolution, cfg.resolution)
    assert [t.shape for t in d(images, captions.pooled, text=captions)] == [(4,), (4,)]
    if s.captioner > 0:
        from wordcanvas.models.captioner import Captioner, CaptionerConfig

        reader = Captioner(CaptionerConfig(resolution=cfg.resolution, channels=common["channels"], **s.captioner_config))
        assert reader.nll(images, ["a caption"] * 4).shape == (4,)


def test_contrastive_head_flatten_pool_sees_where_features_are():
    feats = torch.randn(2, 33, 4, 4)
    moved = feats.flip(-1)  # the same features, mirrored left-right
    kw = dict(resolution=32, channels=1, text_dim=8, ndf=8, max_channels=32, contrastive_dim=16, mbstd_group=4)
    mean_d = Discriminator(DiscriminatorConfig(**kw))
    flat_d = Discriminator(DiscriminatorConfig(**kw, contrastive_pool="flatten"))
    with torch.no_grad():
        assert torch.allclose(mean_d.image_embedding(feats), mean_d.image_embedding(moved), atol=1e-6)
        assert not torch.allclose(flat_d.image_embedding(feats), flat_d.image_embedding(moved), atol=1e-3)
        e = flat_d.image_embedding(feats)
        assert e.shape == (2, 16) and torch.allclose(e.norm(dim=1), torch.ones(2))
        images = torch.randn(3, 1, 32, 32)
        assert flat_d.similarity(flat_d.features(images), torch.randn(5, 8)).shape == (3, 5)
    with pytest.raises(ValueError, match="contrastive_pool"):
        DiscriminatorConfig(contrastive_pool="max")
