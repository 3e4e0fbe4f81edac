"""Text-conditioned VAE: q(z | x, t) and p(x | z, t), with honest likelihoods.

Encoder: the discriminator's residual downsampling blocks to 4x4, global average pool, then an
MLP on (pooled image features, projected pooled text) -> (mean, log-variance) of a diagonal Gaussian.
Decoder: the GAN generator's architecture ((z, projected text) -> 4x4 -> DF-GAN upsampling blocks
fused with (z, projected text), optional cross-attention to the tokens), ending in the parameters
of a per-pixel likelihood. Unlike the GAN's, the first 4x4 map sees the text as well as z: a VAE's
latent can carry what the caption says, and a decoder that builds its layout from z alone learns
to take the class from z rather than from the caption.

- "logistic": discretised logistic over the 256 grey levels (PixelCNN++), learned per-pixel scale;
- "gaussian": discretised Gaussian over the 256 levels, per-pixel scale learned, or fixed (`sigma`);
- "bernoulli": Bernoulli with soft targets (x + 1) / 2, as in many VAE codes; NOT a distribution
  over 8-bit grey values, so it has no bits/dim.

The discretised likelihoods put mass on the 256 bins of width 2/255 centred on x = k / 127.5 - 1
(the end bins extend to +-infinity), so their log-probabilities sum to one over the pixel values
and -ELBO / (D ln 2) is an honest upper bound in bits per dimension.

Prior: "text" (default) learns p(z | t) = N(mu(t), diag sigma(t)^2) from the pooled caption,
as in the conditional VAE of Sohn et al. (2015); "standard" is N(0, I). With a standard prior a
latent that carries the garment's shape costs KL whatever the caption says, and a prior draw
brings a random shape that fights the caption (Fashion-MNIST class accuracy of temperature-1
samples 0.64, 0.88 even at temperature 0); a text prior puts each caption's draws where that
caption's images lie. The likelihood bounds stay honest: both are bounds on log p(x | t).

`TextVAE` also serves as a generator (forward(noise, text) -> mean image, sample_noise), so
`wordcanvas generate` and TextToImage treat it like the GAN's generator. Its input is the prior's
standard coordinates: latent = mu(t) + sigma(t) * noise, so the noise "truncation" with mode
"scale" is the sampling temperature, and an image encoded to noise coordinates under one caption
(`to_noise`) and decoded under another moves with the prior from one caption to the other.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from wordcanvas.models.base import PretrainedModel
from wordcanvas.models.gan import sample_noise
from wordcanvas.models.layers import (CrossAttention, DownBlock, TextProjection, UpBlock, channels_at,
                                      check_resolution, lrelu)
from wordcanvas.text.base import TextEmbedding

LIKELIHOODS = ("logistic", "gaussian", "bernoulli")
PRIORS = ("text", "standard")
PRIOR_MEAN_BOUND, PRIOR_LOGVAR_BOUND = 3.0, 2.0  # |mean| and |log-variance| of the text prior stay below these
BIN_HALF_WIDTH = 1.0 / 255.0  # images in [-1, 1]: 256 levels 2/255 apart


# --- likelihoods ---------------------------------------------------------------------------------

def _log_diff_exp(log_hi: torch.Tensor, log_lo: torch.Tensor) -> torch.Tensor:
    """log(exp(log_hi) - exp(log_lo)) for log_hi >= log_lo, accurate when both are close."""
    return log_hi + torch.log(-torch.expm1((log_lo - log_hi).clamp(max=-1e-12)))


def _log_cdf_and_sf(kind: str, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log F(u), log (1 - F(u))) of the standard logistic or normal distribution."""
    if kind == "logistic":
        return -F.softplus(-u), -F.softplus(u)
    return torch.special.log_ndtr(u), torch.special.log_ndtr(-u)


def discretized_log_prob(x: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor,
                         kind: str = "logistic") -> torch.Tensor:
    """Per-element log P(pixel bin of x) under a logistic / normal(loc, exp(log_scale)) discretised to
    the 256 levels of [-1, 1]. Mass of a bin = F(upper edge) - F(lower edge), computed in whichever
    tail keeps it accurate; the lowest and highest bins take all the mass below / above them."""
    if kind not in ("logistic", "gaussian"):
        raise ValueError(f"kind must be 'logistic' or 'gaussian', got {kind!r}")
    inv = torch.exp(-log_scale)
    centred = x - loc
    lo_cdf, lo_sf = _log_cdf_and_sf(kind, (centred - BIN_HALF_WIDTH) * inv)
    hi_cdf, hi_sf = _log_cdf_and_sf(kind, (centred + BIN_HALF_WIDTH) * inv)
    middle = torch.where(centred < 0, _log_diff_exp(hi_cdf, lo_cdf), _log_diff_exp(lo_sf, hi_sf))
    return torch.where(x < -1 + BIN_HALF_WIDTH, hi_cdf, torch.where(x > 1 - BIN_HALF_WIDTH, lo_sf, middle))


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Snap [-1, 1] images onto the 256 bin centres (what an 8-bit file holds)."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1


def kl_standard_normal(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) per latent dimension (same shape as mean), closed form."""
    return 0.5 * (mean.square() + logvar.exp() - 1 - logvar)


def kl_gaussians(mean: torch.Tensor, logvar: torch.Tensor, prior_mean: torch.Tensor,
                 prior_logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(prior_mean, exp(prior_logvar))) per dimension, closed form."""
    return 0.5 * (prior_logvar - logvar + (logvar.exp() + (mean - prior_mean).square()) * torch.exp(-prior_logvar) - 1)


def gaussian_log_density(z: torch.Tensor, mean: torch.Tensor | float = 0.0,
                         logvar: torch.Tensor | float = 0.0) -> torch.Tensor:
    """log N(z; mean, exp(logvar)) summed over the last dimension."""
    logvar = torch.as_tensor(logvar, dtype=z.dtype, device=z.device)
    return (-0.5 * (math.log(2 * math.pi) + logvar + (z - mean).square() * torch.exp(-logvar))).sum(-1)


# --- the model ---------------------------------------------------------------------------------

@dataclass
class VAEConfig:
    resolution: int = 32                    # image size, a power of two >= 8
    channels: int = 1                       # 1 grey, 3 RGB
    text_dim: int = 384                     # the encoder's embedding size (pooled and token states)
    z_dim: int = 32                         # latent size
    cond_dim: int = 128                     # text projection size inside encoder and decoder
    nf: int = 32                            # width at full resolution (encoder and decoder); doubles per halving
    max_channels: int = 256                 # width cap at low resolutions
    fusion: str = "affine"                  # decoder conditioning: "affine" (DF-GAN) or "film"
    attn_resolutions: tuple[int, ...] = ()  # decoder cross-attention over text tokens at these sizes
    attn_heads: int = 4                     # heads per cross-attention layer
    attn_positions: bool = False            # learned position vectors in the cross-attention queries
    likelihood: str = "logistic"            # "logistic", "gaussian" (both discretised) or "bernoulli"
    sigma: float | None = None              # gaussian: fixed std on the [-1, 1] scale; None = learned per pixel
    min_log_scale: float = -7.0             # floor of learned log-scales (PixelCNN++)
    max_log_scale: float = 2.0              # ceiling (a scale of e^2 already spans all levels)
    prior: str = "text"                     # p(z | t) learned from the caption ("text") or N(0, I) ("standard")

    def __post_init__(self):
        check_resolution(self.resolution)
        self.attn_resolutions = tuple(int(r) for r in self.attn_resolutions if 8 <= int(r) <= self.resolution)
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        if self.prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}, got {self.prior!r}")
        if self.sigma is not None and (self.likelihood != "gaussian" or self.sigma <= 0):
            raise ValueError("sigma (a fixed positive std) applies to the 'gaussian' likelihood only")

    @property
    def params_per_channel(self) -> int:
        learned_scale = self.likelihood == "logistic" or (self.likelihood == "gaussian" and self.sigma is None)
        return 2 if learned_scale else 1


class TextVAE(PretrainedModel):
    config_class = VAEConfig
    model_type = "wordcanvas-text-vae"

    def __init__(self, config: VAEConfig):
        super().__init__(config)
        c = config
        width = lambda size: channels_at(c.resolution, size, c.nf, c.max_channels)  # noqa: E731
        # q(z | x, t)
        self.enc_text = TextProjection(c.text_dim, c.cond_dim)
        self.from_rgb = nn.Conv2d(c.channels, width(c.resolution), 3, 1, 1)
        down = [c.resolution >> i for i in range(c.resolution.bit_length() - 3)]  # resolution, ..., 8
        self.down = nn.Sequential(*(DownBlock(width(s), width(s // 2), 1.0) for s in down))
        hidden = max(2 * c.z_dim, 256)
        self.posterior = nn.Sequential(nn.Linear(width(4) + c.cond_dim, hidden), nn.LeakyReLU(0.2),
                                       nn.Linear(hidden, 2 * c.z_dim))
        # p(x | z, t)
        self.text_proj = TextProjection(c.text_dim, c.cond_dim)
        self.token_proj = TextProjection(c.text_dim, c.cond_dim) if c.attn_resolutions else None
        self.fc = nn.Linear(c.z_dim + c.cond_dim, width(4) * 16)  # the caption shapes the 4x4 layout too
        self.sizes = [4 * 2 ** (i + 1) for i in range(c.resolution.bit_length() - 3)]  # 8, ..., resolution
        self.blocks = nn.ModuleList(UpBlock(c.z_dim + c.cond_dim, width(s // 2), width(s), c.fusion) for s in self.sizes)
        self.attn = nn.ModuleDict({str(s): CrossAttention(width(s), c.cond_dim, c.attn_heads,
                                                          positions=s if c.attn_positions else 0)
                                   for s in c.attn_resolutions})
        self.to_params = nn.Conv2d(width(c.resolution), c.channels * c.params_per_channel, 3, 1, 1)
        # p(z | t); the last layer starts at zero, so training starts from N(0, I)
        self.prior_net = None
        if c.prior == "text":
            self.prior_net = nn.Sequential(TextProjection(c.text_dim, c.cond_dim), nn.LeakyReLU(0.2),
                                           nn.Linear(c.cond_dim, 2 * c.z_dim))
            nn.init.zeros_(self.prior_net[-1].weight)
            nn.init.zeros_(self.prior_net[-1].bias)

    # prior
    def prior(self, text: TextEmbedding) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, logvar) of p(z | t), each (B, z_dim); zeros for the standard prior."""
        if self.prior_net is None:
            zeros = text.pooled.new_zeros(text.pooled.shape[0], self.config.z_dim)
            return zeros, zeros
        mean, logvar = self.prior_net(text.pooled).chunk(2, dim=1)
        # Both bounded smoothly (mean within +-3 per dimension, std within [1/e, e]), so the latents keep
        # the standard prior's scale and the KL's gradient (it grows as 1 / prior variance) stays tame.
        return (PRIOR_MEAN_BOUND * torch.tanh(mean / PRIOR_MEAN_BOUND),
                PRIOR_LOGVAR_BOUND * torch.tanh(logvar / PRIOR_LOGVAR_BOUND))

    def from_noise(self, noise: torch.Tensor, text: TextEmbedding) -> torch.Tensor:
        """Latents for standard-normal coordinates under the captions' prior."""
        if self.prior_net is None:
            return noise
        mean, logvar = self.prior(text)
        return mean + noise * torch.exp(0.5 * logvar)

    def to_noise(self, z: torch.Tensor, text: TextEmbedding) -> torch.Tensor:
        """The prior's standard coordinates of latents z under the captions (inverse of from_noise)."""
        if self.prior_net is None:
            return z
        mean, logvar = self.prior(text)
        return (z - mean) * torch.exp(-0.5 * logvar)

    def kl(self, mean: torch.Tensor, logvar: torch.Tensor, text: TextEmbedding) -> torch.Tensor:
        """KL(q(z | x, t) || p(z | t)) per latent dimension (B, z_dim), closed form."""
        if self.prior_net is None:
            return kl_standard_normal(mean, logvar)
        prior_mean, prior_logvar = self.prior(text)
        return kl_gaussians(mean, logvar, prior_mean.to(mean.dtype), prior_logvar.to(mean.dtype))

    # encoder
    def encode(self, images: torch.Tensor, text: TextEmbedding) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, C, H, W) in [-1, 1] with their captions -> posterior (mean, logvar), each (B, z_dim)."""
        h = lrelu(self.down(self.from_rgb(images))).mean(dim=(2, 3))
        mean, logvar = self.posterior(torch.cat([h, self.enc_text(text.pooled)], dim=1)).chunk(2, dim=1)
        return mean, logvar.clamp(-12.0, 6.0)

    # decoder
    def decode_params(self, z: torch.Tensor, text: TextEmbedding) -> torch.Tensor:
        """Raw likelihood parameters (B, C * params_per_channel, H, W) for latents z and captions."""
        cond = torch.cat([z, self.text_proj(text.pooled)], dim=1)
        tokens = self.token_proj(text.tokens) if self.token_proj is not None else None
        x = self.fc(cond).view(z.shape[0], -1, 4, 4)
        for size, block in zip(self.sizes, self.blocks):
            x = block(x, cond)
            if str(size) in self.attn:
                x = self.attn[str(size)](x, tokens, text.mask)
        return self.to_params(lrelu(x))

    def split_params(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(location or logits, log-scale or None)."""
        c = self.config
        if c.params_per_channel == 1:
            if c.likelihood == "gaussian":
                return params, torch.full_like(params, math.log(c.sigma))
            return params, None
        loc, log_scale = params.chunk(2, dim=1)
        return loc, log_scale.clamp(c.min_log_scale, c.max_log_scale)

    def mean_image(self, params: torch.Tensor) -> torch.Tensor:
        """The decoder's image: the distribution's mean (logistic/gaussian location), in [-1, 1]."""
        loc, _ = self.split_params(params)
        if self.config.likelihood == "bernoulli":
            return torch.sigmoid(loc) * 2 - 1
        return loc.clamp(-1, 1)

    def log_likelihood(self, images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """log p(x | z, t) per image (B,), in nats; discretised likelihoods snap x to the 8-bit levels."""
        loc, log_scale = self.split_params(params)
        if self.config.likelihood == "bernoulli":
            target = (images.clamp(-1, 1) + 1) / 2
            return -F.binary_cross_entropy_with_logits(loc, target, reduction="none").flatten(1).sum(1)
        return discretized_log_prob(quantize(images), loc, log_scale, self.config.likelihood).flatten(1).sum(1)

    def forward(self, noise: torch.Tensor, text: TextEmbedding) -> torch.Tensor:
        """The generator interface: the prior's standard coordinates (B, z_dim) and captions -> mean
        images (B, C, H, W) in [-1, 1]."""
        return self.decode(self.from_noise(noise, text), text)

    def decode(self, z: torch.Tensor, text: TextEmbedding) -> torch.Tensor:
        """Latents (B, z_dim) themselves (not noise) and captions -> mean images."""
        return self.mean_image(self.decode_params(z, text))

    def sample_noise(self, n: int, generator: torch.Generator | None = None, truncation: float | None = None,
                     mode: str = "scale", device=None) -> torch.Tensor:
        """Standard-normal draws for forward(); truncation t with mode "scale" is the temperature (noise * t)."""
        return sample_noise(n, self.config.z_dim, generator, truncation, mode, device or self.fc.weight.device)

    # whole-model helpers
    def reconstruct(self, images: torch.Tensor, text: TextEmbedding, generator: torch.Generator | None = None,
                    target_text: TextEmbedding | None = None) -> torch.Tensor:
        """Decode the posterior mean (or a posterior draw when `generator` is given), with the same
        captions, or with `target_text` (text-guided editing: the latent keeps its place in the prior's
        standard coordinates and moves with the prior from one caption to the other)."""
        mean, logvar = self.encode(images, text)
        z = mean if generator is None else reparameterize(mean, logvar, generator)
        if target_text is None:
            return self.decode(z, text)
        return self(self.to_noise(z, text), target_text)

    def elbo_terms(self, images: torch.Tensor, text: TextEmbedding, generator: torch.Generator | None = None
                   ) -> dict[str, torch.Tensor]:
        """One-sample ELBO pieces per image: log p(x|z,t) (nats), KL per latent dim (B, z_dim), the
        posterior and the decoder output."""
        mean, logvar = self.encode(images, text)
        z = reparameterize(mean, logvar, generator)
        params = self.decode_params(z, text)
        return {"log_px": self.log_likelihood(images, params), "kl": self.kl(mean, logvar, text),
                "mean": mean, "logvar": logvar, "z": z, "params": params}


def reparameterize(mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return mean + eps * torch.exp(0.5 * logvar)


def bits_per_dim(nats_per_image: torch.Tensor, dims: int) -> torch.Tensor:
    return nats_per_image / (dims * math.log(2))


@torch.no_grad()
def negative_elbo(model: TextVAE, images: torch.Tensor, text: TextEmbedding,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """-ELBO per image in nats (one posterior sample)."""
    t = model.elbo_terms(images, text, generator)
    return -(t["log_px"] - t["kl"].sum(1))


@torch.no_grad()
def importance_weighted_nll(model: TextVAE, images: torch.Tensor, text: TextEmbedding, k: int = 64,
                            generator: torch.Generator | None = None, chunk: int = 16) -> torch.Tensor:
    """-log p(x | t) estimated with k importance samples from q (Burda et al. 2016), per image, nats:
    -log mean_k p(x | z_k, t) p(z_k | t) / q(z_k | x, t); tighter than -ELBO as k grows."""
    mean, logvar = model.encode(images, text)
    prior_mean, prior_logvar = model.prior(text)
    weights = []
    for start in range(0, k, chunk):
        n = min(chunk, k - start)
        z = reparameterize(mean.repeat(n, 1), logvar.repeat(n, 1), generator)  # sample-major
        params = model.decode_params(z, text[torch.arange(len(images)).repeat(n)])
        log_px = model.log_likelihood(images.repeat(n, 1, 1, 1), params)
        log_w = (log_px + gaussian_log_density(z, prior_mean.repeat(n, 1), prior_logvar.repeat(n, 1))
                 - gaussian_log_density(z, mean.repeat(n, 1), logvar.repeat(n, 1)))
        weights.append(log_w.view(n, len(images)))
    log_w = torch.cat(weights)
    return -(torch.logsumexp(log_w, dim=0) - math.log(k))


def interpolate_latents(a: torch.Tensor, b: torch.Tensor, steps: int, spherical: bool = True) -> torch.Tensor:
    """steps latents from a to b (inclusive); spherical (slerp) keeps prior draws at a typical norm."""
    t = torch.linspace(0, 1, steps, device=a.device, dtype=a.dtype)[:, None]
    if not spherical:
        return a[None] * (1 - t) + b[None] * t
    na, nb = a / a.norm(), b / b.norm()
    omega = torch.acos((na * nb).sum().clamp(-1 + 1e-7, 1 - 1e-7))
    if omega.abs() < 1e-4:
        return a[None] * (1 - t) + b[None] * t
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so) * a[None] + (torch.sin(t * omega) / so) * b[None]
