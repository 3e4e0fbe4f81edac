"""Text-conditioned GAN (one-stage, DF-GAN style) and a plain class-conditional DCGAN baseline.

Generator: z -> 4x4 features -> upsampling blocks, each fused with (z, projected pooled text)
through stacked affines; optional masked cross-attention to the token states at chosen sizes.
GANCLSGenerator: the lighter GAN-CLS design (Reed et al. 2016): (z ++ projected pooled text) through
DCGAN transposed convolutions, each followed by conditional BatchNorm driven by (z, text); several
times cheaper per image on a CPU than the DF-GAN blocks at 32-64 px.
Discriminator: residual downsampling (DF-GAN) or plain strided convolutions (DCGAN trunk) to 4x4
features, then an unconditional realism head and a text-matching head (concatenation as in DF-GAN,
or a projection inner product); optional contrastive heads that score every image against every
caption: one from the pooled caption (sentence) and one from its tokens (word-region).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from wordcanvas.models.base import PretrainedModel
from wordcanvas.models.layers import (Affine, CrossAttention, DownBlock, RegionPrior, TextProjection, TokenPool,
                                      TokenRefiner, UpBlock, channels_at, check_resolution, lrelu)
from wordcanvas.text.base import TextEmbedding


@dataclass
class GeneratorConfig:
    resolution: int = 64                        # output size, a power of two >= 8 (32, 64, 128; 256 on GPU)
    channels: int = 3                           # 1 grey, 3 RGB
    text_dim: int = 384                         # the encoder's embedding size (pooled and token states)
    z_dim: int = 100                            # noise size
    cond_dim: int = 128                         # text projection size inside the generator
    ngf: int = 32                               # width at full resolution; doubles per halving
    max_channels: int = 256                     # width cap at low resolutions
    fusion: str = "affine"                      # "affine" (DF-GAN deep fusion) or "film" (modulated instance norm)
    attn_resolutions: tuple[int, ...] = (16,)   # cross-attention over text tokens at these sizes; () = pooled only
    attn_heads: int = 4                         # heads per cross-attention layer
    attn_positions: bool = False                # learned position vectors in the cross-attention queries, so
                                                # places can look for the tokens that name them
    token_pool: int = 0                         # > 0: add to the pooled text an attention pooling of the tokens
                                                # by this many learned queries (TokenPool: keeps which word goes
                                                # with which); 0 = the encoder's pooled vector only
    token_layers: int = 0                       # > 0: trainable self-attention layers over the projected tokens
                                                # before the cross-attention reads them (TokenRefiner)
    pooled_text: bool = True                    # False: the blocks get no pooled caption vector, so the caption
                                                # reaches the picture only through the place-by-place
                                                # cross-attention (as in latent diffusion's U-Net)
    output: str = "linear"                      # "linear": raw while training, clamped to [-1, 1] in eval mode
                                                # (no saturation to get stuck in); "tanh" as in DF-GAN

    def __post_init__(self):
        check_resolution(self.resolution)
        self.attn_resolutions = tuple(int(r) for r in self.attn_resolutions if 8 <= int(r) <= self.resolution)
        check_token_layers(self)
        check_pooled_text(self)
        if self.output not in ("linear", "tanh"):
            raise ValueError(f"output must be 'linear' or 'tanh', got {self.output!r}")


class Generator(PretrainedModel):
    config_class = GeneratorConfig
    model_type = "wordcanvas-gan-generator"

    def __init__(self, config: GeneratorConfig):
        super().__init__(config)
        c = config
        width = lambda size: channels_at(c.resolution, size, c.ngf, c.max_channels)  # noqa: E731
        self.text_proj = TextProjection(c.text_dim, c.cond_dim) if c.pooled_text else None
        self.token_proj = TextProjection(c.text_dim, c.cond_dim) if c.attn_resolutions else None
        self.token_refiner = TokenRefiner(c.cond_dim, c.token_layers) if c.token_layers else None
        self.token_pool = TokenPool(c.text_dim, c.cond_dim, c.token_pool) if c.token_pool > 0 else None
        self.fc = nn.Linear(c.z_dim, width(4) * 16)
        cond = c.z_dim + condition_size(c)
        self.sizes = [4 * 2 ** (i + 1) for i in range(c.resolution.bit_length() - 3)]  # 8, 16, ..., resolution
        self.blocks = nn.ModuleList(UpBlock(cond, width(s // 2), width(s), c.fusion) for s in self.sizes)
        self.attn = nn.ModuleDict({str(s): CrossAttention(width(s), c.cond_dim, c.attn_heads,
                                                          positions=s if c.attn_positions else 0)
                                   for s in c.attn_resolutions})
        self.to_rgb = nn.Conv2d(width(c.resolution), c.channels, 3, 1, 1)

    def forward(self, z: torch.Tensor, text: TextEmbedding) -> torch.Tensor:
        """z (B, z_dim), text for B captions -> images (B, C, H, W), in [-1, 1] except for the raw
        training output of output="linear"."""
        caption = text_condition(self, text)
        cond = z if caption is None else torch.cat([z, caption], dim=1)
        tokens = token_states(self, text)
        x = self.fc(z).view(z.shape[0], -1, 4, 4)
        for size, block in zip(self.sizes, self.blocks):
            x = block(x, cond)
            if str(size) in self.attn:
                x = self.attn[str(size)](x, tokens, text.mask)
        x = self.to_rgb(lrelu(x))
        if self.config.output == "tanh":
            return torch.tanh(x)
        return x if self.training else x.clamp(-1, 1)

    def sample_noise(self, n: int, generator: torch.Generator | None = None, truncation: float | None = None,
                     mode: str = "resample", device=None) -> torch.Tensor:
        return sample_noise(n, self.config.z_dim, generator, truncation, mode, device or self.fc.weight.device)


def check_token_layers(config) -> None:
    """token_layers refine what the cross-attention reads: refused, not ignored, without any."""
    if config.token_layers < 0:
        raise ValueError(f"token_layers must be >= 0, got {config.token_layers}")
    if config.token_layers and not config.attn_resolutions:
        raise ValueError(f"token_layers={config.token_layers} needs cross-attention (attn_resolutions within "
                         f"this {config.resolution} px generator's blocks); none is set")


def check_pooled_text(config) -> None:
    """Without the pooled vector the cross-attention is the caption's only way in: refused without it."""
    if not config.pooled_text and not config.attn_resolutions:
        raise ValueError(f"pooled_text=False leaves the generator no way to read the caption: set attn_resolutions "
                         f"(within this {config.resolution} px generator's blocks) for the tokens' cross-attention")


def condition_size(config) -> int:
    """Width of the caption vector the blocks read beside z (0 where they read none)."""
    return config.cond_dim if config.pooled_text or config.token_pool > 0 else 0


def token_states(model: nn.Module, text: TextEmbedding) -> torch.Tensor | None:
    """The caption's token states as a generator's cross-attention reads them: projected, then passed
    through its `token_refiner` where it has one; None where it has no cross-attention."""
    if model.token_proj is None:
        return None
    tokens = model.token_proj(text.tokens)
    return tokens if model.token_refiner is None else model.token_refiner(tokens, text.mask)


def text_condition(model: nn.Module, text: TextEmbedding) -> torch.Tensor | None:
    """A generator's caption vector: the projected pooled embedding (unless `pooled_text` is off), plus
    the attention-pooled tokens where the model has a `token_pool`; None where it has neither."""
    parts = [model.text_proj(text.pooled)] if model.text_proj is not None else []
    if model.token_pool is not None:
        parts.append(model.token_pool(text.tokens, text.mask))
    return sum(parts) if parts else None


def resized(grid: torch.Tensor, size: int) -> torch.Tensor:
    """A (B, C, g, g) grid at size x size: averaged down, or bilinearly up."""
    if grid.shape[-1] == size:
        return grid
    if grid.shape[-1] > size:
        return F.adaptive_avg_pool2d(grid, size)
    return F.interpolate(grid, size=(size, size), mode="bilinear", align_corners=False)


def sample_noise(n: int, z_dim: int, generator: torch.Generator | None = None, truncation: float | None = None,
                 mode: str = "resample", device="cpu") -> torch.Tensor:
    """Standard normal noise; with truncation t, entries beyond +-t are redrawn ("resample", a
    truncated normal) or the whole vector is scaled by t ("scale")."""
    z = torch.randn(n, z_dim, generator=generator, device=device)
    if truncation is None:
        return z
    if mode == "scale":
        return z * truncation
    if mode != "resample":
        raise ValueError(f"truncation mode must be 'resample' or 'scale', got {mode!r}")
    if truncation <= 0:
        raise ValueError(f"truncation must be positive, got {truncation}")
    for _ in range(1000):
        bad = z.abs() > truncation
        if not bad.any():
            break
        z[bad] = torch.randn(int(bad.sum()), generator=generator, device=device)
    return z.clamp(-truncation, truncation)


@dataclass
class GANCLSConfig:
    resolution: int = 32        # output size, a power of two >= 8
    channels: int = 1           # 1 grey, 3 RGB
    text_dim: int = 384         # the encoder's pooled embedding size
    z_dim: int = 100            # noise size
    cond_dim: int = 128         # projected text size (GAN-CLS: 128)
    ngf: int = 64               # width before the last layer; doubles per halving towards 4x4
    max_channels: int = 512     # width cap
    attn_resolutions: tuple[int, ...] = ()  # cross-attention over text tokens after the block of these sizes
    attn_heads: int = 4                     # heads per cross-attention layer
    attn_positions: bool = False            # learned position vectors in the cross-attention queries, so
                                            # places can look for the tokens that name them
    token_pool: int = 0                     # > 0: add to the projected pooled text an attention pooling of
                                            # the tokens by this many learned queries (TokenPool); the first
                                            # transposed convolution then draws each query's slot in place
    token_layers: int = 0                   # > 0: trainable self-attention layers over the projected tokens
                                            # before the cross-attention reads them (TokenRefiner)
    pooled_text: bool = True                # False: no pooled caption vector beside z; the caption reaches
                                            # the picture only through the place-by-place cross-attention
    region_grid: int = 0                    # > 0: a RegionPrior predicts this side's grid of region states from
                                            # the caption's tokens and every block adds them in place (the GAN
                                            # family teaches it the captioner's regions of the real images)
    region_dim: int = 128                   # width of those region states
    region_hypotheses: int = 1              # > 1: the prior predicts this many layouts per caption (relaxed
                                            # winner-takes-all) and the noise picks the one drawn

    def __post_init__(self):
        check_resolution(self.resolution)
        # the blocks end at resolution / 2: the last transposed convolution draws the image
        self.attn_resolutions = tuple(int(r) for r in self.attn_resolutions if 4 <= int(r) <= self.resolution // 2)
        check_token_layers(self)
        check_pooled_text(self)
        if self.region_grid < 0 or self.region_dim <= 0:
            raise ValueError(f"region_grid must be >= 0 and region_dim > 0, got {self.region_grid} and {self.region_dim}")
        if self.region_hypotheses < 1 or (self.region_hypotheses > 1 and not self.region_grid):
            raise ValueError(f"region_hypotheses must be >= 1 and needs a region prior (region_grid > 0), got "
                             f"{self.region_hypotheses} with region_grid {self.region_grid}")


class GANCLSGenerator(PretrainedModel):
    """GAN-CLS generator: (z ++ LeakyReLU(projected pooled text)) -> 4x4 transposed convolution ->
    x2 transposed convolutions -> tanh. After every convolution but the last: BatchNorm without its
    own affine, then a per-channel scale and shift predicted from (z, text) (conditional BatchNorm),
    so the caption conditions every block. With `attn_resolutions`, the blocks of those sizes are
    followed by masked cross-attention to the caption's token states (the design's answer for
    compositional captions: which digit goes where is carried by tokens, not by the pooled mean). Batch
    statistics are per process: a multi-process run is close to, not equal to, one process with the
    global batch (like the DCGAN baseline)."""

    config_class = GANCLSConfig
    model_type = "wordcanvas-gan-cls-generator"

    def __init__(self, config: GANCLSConfig):
        super().__init__(config)
        c = config
        self.text_proj = TextProjection(c.text_dim, c.cond_dim) if c.pooled_text else None
        n_up = c.resolution.bit_length() - 3  # 4 -> resolution
        widths = [min(c.max_channels, c.ngf * 2 ** (n_up - 1 - i)) for i in range(n_up)]  # at 4, 8, ..., resolution/2
        cond = c.z_dim + condition_size(c)
        self.convs = nn.ModuleList([nn.ConvTranspose2d(cond, widths[0], 4, 1, 0, bias=False)] +
                                   [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False) for a, b in zip(widths, widths[1:])])
        self.norms = nn.ModuleList(nn.BatchNorm2d(w, affine=False) for w in widths)
        self.affines = nn.ModuleList(Affine(cond, w) for w in widths)
        self.to_rgb = nn.ConvTranspose2d(widths[-1], c.channels, 4, 2, 1)
        self.sizes = [4 * 2 ** i for i in range(n_up)]
        self.token_proj = TextProjection(c.text_dim, c.cond_dim) if c.attn_resolutions else None
        self.token_refiner = TokenRefiner(c.cond_dim, c.token_layers) if c.token_layers else None
        self.token_pool = TokenPool(c.text_dim, c.cond_dim, c.token_pool) if c.token_pool > 0 else None
        self.attn = nn.ModuleDict({str(s): CrossAttention(w, c.cond_dim, c.attn_heads,
                                                          positions=s if c.attn_positions else 0)
                                   for s, w in zip(self.sizes, widths) if s in c.attn_resolutions})
        self.region_prior = (RegionPrior(c.text_dim, c.region_dim, c.region_grid ** 2, hypotheses=c.region_hypotheses)
                             if c.region_grid else None)
        # zero at the start, so a generator begins as without the regions
        self.region_in = nn.ModuleList(nn.Conv2d(c.region_dim, w, 1) for w in widths) if c.region_grid else None
        for m in self.region_in or []:
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)
        for m in self.convs:
            nn.init.normal_(m.weight, 0.0, 0.02)  # DCGAN initialisation

    def layout(self, text: TextEmbedding, z: torch.Tensor) -> torch.Tensor | None:
        """(B, region_dim, grid, grid) region states predicted from the caption (with several hypotheses:
        the one the noise z picks), or None without a prior. Detached: the prior learns from real images
        only (its own loss), so the generator's wish for easy inputs cannot blur what it says is where."""
        if self.region_prior is None:
            return None
        side, hypotheses = self.config.region_grid, self.config.region_hypotheses
        choice = RegionPrior.choose(z, hypotheses) if hypotheses > 1 else None
        regions = self.region_prior(text.tokens, text.mask, choice).detach()
        return regions.transpose(1, 2).reshape(regions.shape[0], -1, side, side)

    def forward(self, z: torch.Tensor, text: TextEmbedding) -> torch.Tensor:
        caption = text_condition(self, text)
        cond = z if caption is None else torch.cat([z, lrelu(caption)], dim=1)
        tokens = token_states(self, text)
        layout = self.layout(text, z)
        x = cond[:, :, None, None]
        for i, (size, conv, norm, affine) in enumerate(zip(self.sizes, self.convs, self.norms, self.affines)):
            x = affine(norm(conv(x)), cond)
            if layout is not None:
                x = x + self.region_in[i](resized(layout, size))
            x = F.relu(x)
            if str(size) in self.attn:
                x = self.attn[str(size)](x, tokens, text.mask)
        return torch.tanh(self.to_rgb(x))

    def sample_noise(self, n: int, generator: torch.Generator | None = None, truncation: float | None = None,
                     mode: str = "resample", device=None) -> torch.Tensor:
        return sample_noise(n, self.config.z_dim, generator, truncation, mode, device or self.to_rgb.weight.device)


@dataclass
class DiscriminatorConfig:
    resolution: int = 64          # input size, a power of two >= 8
    channels: int = 3             # 1 grey, 3 RGB
    text_dim: int = 384           # the encoder's pooled embedding size
    cond_dim: int = 128           # text projection size (concat head)
    ndf: int = 32                 # width at full resolution; doubles per halving
    max_channels: int = 256       # width cap
    cond_head: str = "concat"     # "concat" (DF-GAN: text tiled onto 4x4 features, convs) or "projection"
    cond_tokens: bool = False     # concat head only: each 4x4 region reads, by cross-attention from its learned
                                  # position, what the caption's tokens say about that place, instead of every
                                  # region getting the same pooled caption (so "a 3 on the left and a 7 on the
                                  # right" and its swap give the left regions different text)
    token_pool: int = 0           # > 0: the text the matching head judges by adds an attention pooling of the
                                  # caption's tokens by this many learned queries (TokenPool), so a caption
                                  # and its swap differ there; 0 = the pooled caption only
    residual_gain: float = 1.0    # initial gate of each residual path (DF-GAN: 0; 1 learned faster, steadier in short runs)
    trunk: str = "resnet"         # "resnet" (DF-GAN residual blocks) or "dcgan" (strided 4x4 convolutions, LeakyReLU,
                                  # no normalisation: cheaper; pairs with the GAN-CLS generator)
    mbstd_group: int = 0          # minibatch standard deviation (ProGAN) over groups of this many images, one extra
                                  # feature channel before the heads: D sees a batch's diversity, so collapsed
                                  # generators are told apart from real data; 0 = off
    contrastive_dim: int = 0      # size of the image-text contrastive head (XMC-GAN's sentence contrastive
                                  # loss: each image against every caption of the batch); 0 = no head
    contrastive_pool: str = "mean"  # how the head sees the 4x4 features: "mean" (what is there) or "flatten"
                                    # (what is where: for captions that place things, e.g. captioned MNIST)
    word_dim: int = 0             # size of the word-region contrastive head (AttnGAN's DAMSM, XMC-GAN's word
                                  # loss): each caption token attends over the 16 regions of the 4x4 features,
                                  # which know where they are, so "3" and "left" must find a 3 on the left;
                                  # 0 = no head
    word_attention: float = 5.0   # DAMSM gamma1: how sharply each token picks its regions
    word_pooling: float = 1.0     # DAMSM gamma2: per-token scores pooled by log-sum-exp; large lets the best
                                  # tokens decide, small makes every token count (DAMSM's 5 often ignored
                                  # "left"/"right" in the colour-and-side test; 1 never did)

    def __post_init__(self):
        check_resolution(self.resolution)
        if self.word_attention <= 0 or self.word_pooling <= 0:
            raise ValueError(f"word_attention and word_pooling must be > 0, got {self.word_attention} "
                             f"and {self.word_pooling}")
        if self.contrastive_pool not in ("mean", "flatten"):
            raise ValueError(f"contrastive_pool must be 'mean' or 'flatten', got {self.contrastive_pool!r}")
        if self.cond_head not in ("concat", "projection"):
            raise ValueError(f"cond_head must be 'concat' or 'projection', got {self.cond_head!r}")
        if self.cond_tokens and self.cond_head != "concat":
            raise ValueError("cond_tokens needs cond_head='concat' (the projection head has no regions to place text in)")
        if self.trunk not in ("resnet", "dcgan"):
            raise ValueError(f"trunk must be 'resnet' or 'dcgan', got {self.trunk!r}")


class Discriminator(PretrainedModel):
    """Returns (unconditional realism logit, text-matching logit), each (B,)."""

    config_class = DiscriminatorConfig
    model_type = "wordcanvas-gan-discriminator"

    def __init__(self, config: DiscriminatorConfig):
        super().__init__(config)
        c = config
        width = lambda size: channels_at(c.resolution, size, c.ndf, c.max_channels)  # noqa: E731
        sizes = [c.resolution >> i for i in range(c.resolution.bit_length() - 3)]  # resolution, ..., 8
        if c.trunk == "resnet":
            self.from_rgb = nn.Conv2d(c.channels, width(c.resolution), 3, 1, 1)
            self.blocks = nn.Sequential(*(DownBlock(width(s), width(s // 2), c.residual_gain) for s in sizes))
        else:  # DCGAN: each 4x4 stride-2 convolution halves the size; width ndf after the first, doubling
            self.from_rgb = nn.Identity()
            chans = [c.channels] + [width(s // 2) for s in sizes]
            self.blocks = nn.Sequential(*(layer for a, b in zip(chans, chans[1:])
                                          for layer in (nn.Conv2d(a, b, 4, 2, 1), nn.LeakyReLU(0.2))))
        feat = width(4) + (1 if c.mbstd_group > 0 else 0)
        self.uncond_head = nn.Sequential(nn.Conv2d(feat, feat // 2, 3, 1, 1), nn.LeakyReLU(0.2), nn.Conv2d(feat // 2, 1, 4))
        if c.cond_head == "concat":
            self.text_proj = TextProjection(c.text_dim, c.cond_dim)
            self.cond_head = nn.Sequential(nn.Conv2d(feat + c.cond_dim, feat // 2, 3, 1, 1), nn.LeakyReLU(0.2),
                                           nn.Conv2d(feat // 2, 1, 4))
            if c.cond_tokens:  # starts as the plain concat head: the attention's output projection is zero
                self.region_tokens = TextProjection(c.text_dim, c.cond_dim)
                self.region_text = CrossAttention(c.cond_dim, c.cond_dim, heads=4, positions=4)
        else:
            self.text_proj = TextProjection(c.text_dim, feat)
        self.token_pool = (TokenPool(c.text_dim, self.text_proj.proj.out_features, c.token_pool)
                           if c.token_pool > 0 else None)
        if c.contrastive_dim > 0:
            self.contrastive_image = nn.Linear(feat * (16 if c.contrastive_pool == "flatten" else 1), c.contrastive_dim)
            self.contrastive_text = TextProjection(c.text_dim, c.contrastive_dim)
        if c.word_dim > 0:
            self.word_regions = nn.Linear(feat, c.word_dim)
            self.word_positions = nn.Parameter(torch.randn(16, c.word_dim) * 0.02)  # one per 4x4 region
            self.word_tokens = TextProjection(c.text_dim, c.word_dim)

    @property
    def reads_tokens(self) -> bool:
        """Whether the matching head needs the captions' token states, not only the pooled vectors."""
        return self.config.cond_tokens or self.config.token_pool > 0

    def features(self, images: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.from_rgb(images))
        return minibatch_stddev(x, self.config.mbstd_group) if self.config.mbstd_group > 0 else x

    def heads(self, features: torch.Tensor, pooled: torch.Tensor, standardized: bool = False,
              text: TextEmbedding | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits from image features and pooled text (raw, or already passed through `standardize`:
        the matching-aware gradient penalty differentiates with respect to the standardised text, so
        its strength does not depend on the encoder's scale). text: the same captions, whose token
        states and mask are read where `cond_tokens` or `token_pool` is on (and ignored otherwise)."""
        if self.reads_tokens and text is None:
            used = [name for name in ("cond_tokens", "token_pool") if getattr(self.config, name)]
            raise ValueError(f"this discriminator reads the caption's tokens ({', '.join(used)}); pass the text")
        uncond = self.uncond_head(features).flatten()
        t = self.text_proj(pooled, standardized)
        if self.token_pool is not None:
            t = t + self.token_pool(text.tokens.to(t.dtype), text.mask)
        if self.config.cond_head == "concat":
            t = t[:, :, None, None].expand(-1, -1, *features.shape[2:]).contiguous()
            if self.config.cond_tokens:
                # the plain attention kernel: the matching-aware penalty differentiates through it twice
                with sdpa_kernel(SDPBackend.MATH):
                    t = self.region_text(t, self.region_tokens(text.tokens.to(t.dtype)), text.mask)
            return uncond, self.cond_head(torch.cat([features, t], dim=1)).flatten()
        h = lrelu(features).mean(dim=(2, 3))
        return uncond, uncond + (h * t).sum(dim=1)

    def forward(self, images: torch.Tensor, pooled: torch.Tensor, text: TextEmbedding | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(self.features(images), pooled, text=text)

    def image_embedding(self, features: torch.Tensor) -> torch.Tensor:
        """(B, contrastive_dim) unit vectors: each image in the contrastive head's space."""
        h = lrelu(features)
        h = h.flatten(1) if self.config.contrastive_pool == "flatten" else h.mean(dim=(2, 3))
        return F.normalize(self.contrastive_image(h), dim=1)

    def similarity(self, features: torch.Tensor, pooled: torch.Tensor, standardized: bool = False) -> torch.Tensor:
        """(B_images, B_texts) cosine similarities of every image with every caption in the
        contrastive head's space (needs contrastive_dim > 0)."""
        if self.config.contrastive_dim <= 0:
            raise ValueError("this discriminator has no contrastive head (contrastive_dim = 0)")
        image = self.image_embedding(features)
        text = F.normalize(self.contrastive_text(pooled, standardized), dim=1)
        return image @ text.T

    def word_similarity(self, features: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor,
                        paired: bool = False) -> torch.Tensor:
        """(B_images, B_texts) DAMSM matching scores: each real token of caption j attends over image
        i's regions (softmax of gamma1 x cosine), is scored by the cosine between itself and what it
        attended to, and the token scores are pooled by log-sum-exp (gamma2). paired: (B,) scores of
        image i with caption i only (what a near miss needs). Needs word_dim > 0."""
        c = self.config
        if c.word_dim <= 0:
            raise ValueError("this discriminator has no word-region head (word_dim = 0)")
        regions = self.word_regions(lrelu(features).flatten(2).transpose(1, 2)) + self.word_positions
        regions = F.normalize(regions, dim=-1)                                  # (Bi, R, d)
        words = F.normalize(self.word_tokens(tokens), dim=-1)                   # (Bj, T, d)
        gram = regions @ regions.transpose(1, 2)                                # (Bi, R, R)
        if not paired:  # every image against every caption: leading dims (Bi, Bj)
            regions, gram, words, mask = regions[:, None], gram[:, None], words[None], mask[None]
        cos = torch.einsum("...td,...rd->...tr", words, regions)                # (..., T, R)
        attention = torch.softmax(c.word_attention * cos, dim=-1)
        # cos(token, sum_r a_r v_r) without building the per-pair context: the numerator is
        # sum_r a_r cos_r, the context's squared norm a^T (V V^T) a
        norm_sq = torch.einsum("...tr,...rs,...ts->...t", attention, gram, attention)
        score = (attention * cos).sum(-1) / norm_sq.clamp_min(1e-12).sqrt()     # (..., T)
        score = (c.word_pooling * score).masked_fill(~mask.bool(), float("-inf"))
        return torch.logsumexp(score, dim=-1) / c.word_pooling


def minibatch_stddev(x: torch.Tensor, group: int) -> torch.Tensor:
    """Append one channel: the standard deviation of each feature over a group of images (images
    i, i + B/g, i + 2B/g, ... form a group, as in StyleGAN2), averaged over features and positions.
    A batch not divisible by `group` uses the largest divisor that is <= group."""
    b, c, h, w = x.shape
    g = max(d for d in range(1, min(group, b) + 1) if b % d == 0)
    y = x.reshape(g, -1, c, h, w)
    y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (B/g,)
    y = y.repeat(g)[:, None, None, None].expand(b, 1, h, w)
    return torch.cat([x, y], dim=1)


# --- plain conditional DCGAN baseline (Radford et al. 2016 + class conditioning) ---------------

@dataclass
class DCGANConfig:
    resolution: int = 32    # output size, a power of two >= 8
    channels: int = 1       # 1 grey, 3 RGB
    num_classes: int = 10   # class labels (an extra index is used for 'unknown')
    z_dim: int = 100        # noise size
    embed_dim: int = 50     # class embedding concatenated to z
    ngf: int = 64           # generator width before the last layer
    ndf: int = 64           # discriminator width after the first layer

    def __post_init__(self):
        check_resolution(self.resolution)


def _dcgan_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class DCGANGenerator(PretrainedModel):
    """(z ++ class embedding) -> transposed convolutions with BatchNorm/ReLU -> tanh."""

    config_class = DCGANConfig
    model_type = "wordcanvas-dcgan-generator"

    def __init__(self, config: DCGANConfig):
        super().__init__(config)
        c = config
        self.embed = nn.Embedding(c.num_classes + 1, c.embed_dim)
        n_up = c.resolution.bit_length() - 3  # 4 -> resolution
        width = [c.ngf * 2 ** (n_up - 1 - i) for i in range(n_up)]  # at 4, 8, ..., resolution/2
        layers = [nn.ConvTranspose2d(c.z_dim + c.embed_dim, width[0], 4, 1, 0, bias=False), nn.BatchNorm2d(width[0]), nn.ReLU(True)]
        for a, b in zip(width[:-1], width[1:]):
            layers += [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(width[-1], c.channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        _dcgan_init(self)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = torch.where(labels < 0, self.config.num_classes, labels)
        return self.net(torch.cat([z, self.embed(labels)], dim=1)[:, :, None, None])

    def sample_noise(self, n: int, generator: torch.Generator | None = None, truncation: float | None = None,
                     mode: str = "resample", device=None) -> torch.Tensor:
        return sample_noise(n, self.config.z_dim, generator, truncation, mode, device or self.embed.weight.device)


class DCGANDiscriminator(PretrainedModel):
    """Image with one-hot class planes -> strided convolutions (BatchNorm, LeakyReLU) -> one logit."""

    config_class = DCGANConfig
    model_type = "wordcanvas-dcgan-discriminator"

    def __init__(self, config: DCGANConfig):
        super().__init__(config)
        c = config
        n_down = c.resolution.bit_length() - 3  # resolution -> 4
        width = [c.ndf * 2 ** i for i in range(n_down)]
        layers = [nn.Conv2d(c.channels + c.num_classes + 1, width[0], 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        for a, b in zip(width[:-1], width[1:]):
            layers += [nn.Conv2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(width[-1], 1, 4, 1, 0, bias=False)]
        self.net = nn.Sequential(*layers)
        _dcgan_init(self)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = torch.where(labels < 0, self.config.num_classes, labels)
        planes = F.one_hot(labels, self.config.num_classes + 1).to(images.dtype)[:, :, None, None]
        planes = planes.expand(-1, -1, *images.shape[2:])
        return self.net(torch.cat([images, planes], dim=1)).flatten()


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
