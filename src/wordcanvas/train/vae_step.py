"""The text-conditioned VAE as a model family of the training loop (family "vae").

A step maximises the ELBO of the batch under the captions:
    loss = -log p(x | z, t) + beta_t * sum_d max(KL_d, free_bits)     (nats per image, batch mean)
with z ~ q(z | x, t) by reparameterisation, beta_t moved linearly from `beta_start` to `beta` over
`kl_warmup` steps (from 0: classic KL annealing; from above: the decoder first learns what the
caption says, since an expensive latent cannot carry it), and free bits applied per latent
dimension to the batch-mean KL (Kingma et al. 2016), so no dimension is pushed below `free_bits`
nats. Off by default, optional:
a VGG16 perceptual term on the decoded means and an adversarial term (VAE-GAN: a text-matching
discriminator, hinge loss, sees real images, reconstructions and prior samples; the decoder's
term covers reconstructions and, by default, prior samples, as in Larsen et al. 2016).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from wordcanvas.models.vae import TextVAE, VAEConfig, bits_per_dim
from wordcanvas.text.base import TextEmbedding
from wordcanvas.train.augment import BatchRandom
from wordcanvas.train.gan_step import (GANFamily, batch_random, d_fake_loss, d_real_loss, embed_texts, g_loss,
                                       generate_images, is_trainable, settings_from)


@dataclass
class VAESettings:
    model: dict = field(default_factory=dict)   # VAEConfig fields (z_dim, nf, likelihood, sigma, attn_resolutions...)
    beta: float = 1.0                           # weight of the KL term (1 = the ELBO; >1 = beta-VAE)
    kl_warmup: int = 0                          # steps over which the KL weight moves from beta_start to beta; 0 = none
    beta_start: float = 0.0                     # KL weight at step 0: 0 = classic KL annealing; above beta, the
                                                # latent starts nearly empty, so the decoder learns to read the caption
                                                # before z takes up the details (else z carries the class too)
    free_bits: float = 0.0                      # nats per latent dimension below which KL is not penalised
    temperature: float | None = None            # prior temperature for sample grids, evaluation and export
    perceptual_weight: float = 0.0              # VGG16 feature-matching term on decoded means; 0 = off
    perceptual_layers: tuple[str, ...] = ("relu1_2", "relu2_2", "relu3_3")
    adversarial_weight: float = 0.0             # VAE-GAN term for the decoder; 0 = off (no discriminator)
    adversarial_prior: bool = True              # VAE-GAN: the decoder's term also covers prior samples, not only
                                                # reconstructions (the samples users draw)
    discriminator: dict = field(default_factory=dict)  # DiscriminatorConfig fields for the VAE-GAN

    def __post_init__(self):
        if min(self.beta, self.beta_start, self.free_bits, self.kl_warmup) < 0:
            raise ValueError("beta, beta_start, free_bits and kl_warmup must be non-negative")
        self.perceptual_layers = tuple(self.perceptual_layers)


class VAEFamily:
    name = "vae"
    watch_loss = "loss_nelbo"  # the loop's finite-divergence guard watches it (loop.LossSpikeGuard)
    uses_text = True
    defaults = {"lr": 1e-3, "lr_d": 4e-4, "betas": (0.9, 0.999)}

    def __init__(self, cfg, dataset, encoder, device: torch.device, dist):
        self.cfg, self.device, self.dist = cfg, device, dist
        self.s = s = settings_from(VAESettings, cfg.model)
        if encoder is None:
            raise ValueError("the 'vae' family needs a text encoder")
        self.encoder, self.trainable = encoder, is_trainable(encoder)
        self.vae = TextVAE(VAEConfig(resolution=cfg.resolution, channels=dataset.channels, text_dim=encoder.dim,
                                     **s.model)).to(device)
        self.vae_ema = copy.deepcopy(self.vae).eval().requires_grad_(False) if cfg.ema_kimg > 0 else None
        if self.trainable:
            encoder.to(device).train()
        lr, betas = cfg.lr or self.defaults["lr"], cfg.betas or self.defaults["betas"]
        params = list(self.vae.parameters()) + (list(encoder.parameters()) if self.trainable else [])
        self.opt = torch.optim.Adam(params, lr=lr, betas=betas)
        self.D = self.opt_d = self.vgg = None
        if s.adversarial_weight > 0:
            from wordcanvas.models.gan import Discriminator, DiscriminatorConfig

            self.D = Discriminator(DiscriminatorConfig(resolution=cfg.resolution, channels=dataset.channels,
                                                       text_dim=encoder.dim, **s.discriminator)).to(device)
            self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d or self.defaults["lr_d"], betas=(0.0, 0.9))
        if s.perceptual_weight > 0:
            from wordcanvas.models.vgg import VGG16Features

            self.vgg = VGG16Features(s.perceptual_layers).to(device).requires_grad_(False).eval()
        self.amp = cfg.amp and device.type == "cuda"
        self.dims = dataset.channels * cfg.resolution ** 2

    # the loop's view of the family
    @property
    def modules(self) -> dict[str, nn.Module]:
        mods = {"vae": self.vae}
        if self.vae_ema is not None:
            mods["vae_ema"] = self.vae_ema
        if self.D is not None:
            mods["discriminator"] = self.D
        if self.trainable:
            mods["encoder"] = self.encoder
        return mods

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"vae": self.opt, **({"discriminator": self.opt_d} if self.opt_d is not None else {})}

    @property
    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.vae, self.vae_ema)] if self.vae_ema is not None else []

    @property
    def inference_generator(self) -> TextVAE:
        return self.vae_ema if self.vae_ema is not None else self.vae

    def export_meta(self) -> dict:
        return {"family": self.name, "generator": "vae_ema" if self.vae_ema is not None else "vae",
                "encoder": {"name": self.cfg.encoder, "folder": "encoder" if self.trainable else None},
                "resolution": self.cfg.resolution, "channels": self.vae.config.channels,
                "likelihood": self.vae.config.likelihood,
                "truncation": self.s.temperature, "truncation_mode": "scale"}

    autocast = GANFamily.autocast

    def beta_at(self, step: int) -> float:
        s = self.s
        if not s.kl_warmup or step >= s.kl_warmup:
            return s.beta
        return s.beta_start + (s.beta - s.beta_start) * step / s.kl_warmup

    def step(self, batch: dict, step: int) -> dict[str, torch.Tensor]:
        """One ELBO step. Draws are per sample of the global batch, so gradients averaged over
        processes equal one process's on the global batch (up to summation order) unless free_bits > 0
        (it clamps each process's own batch-mean KL per dimension)."""
        s, vae = self.s, self.vae
        g = batch_random(self.cfg.seed, step, self.dist, self.device)
        real, captions = batch["image"], batch["caption"]
        text = embed_texts(self.encoder, captions, self.device, grad=self.trainable)
        stats = {}
        with self.autocast():  # the networks in bf16 on CUDA; the likelihood and KL always in float32
            mean, logvar = vae.encode(real, text)
            params = vae.decode_params(reparameterize(mean.float(), logvar.float(), g), text).float()
        log_px, kl = vae.log_likelihood(real, params), vae.kl(mean.float(), logvar.float(), text)
        kl_dims = kl.mean(0)  # batch-mean KL per latent dimension
        kl_penalised = effective_kl(kl_dims, s.free_bits)
        beta = self.beta_at(step)
        loss = -log_px.mean() + beta * kl_penalised
        neg_elbo = -(log_px - kl.sum(1)).mean().detach()
        stats.update(loss_nelbo=neg_elbo, recon_nats=-log_px.mean().detach(), kl=kl_dims.sum().detach(),
                     active_dims=(kl_dims > 0.01).float().sum().detach(),
                     beta=torch.tensor(float(beta), device=neg_elbo.device))  # on the step's device, as the loop wants
        if vae.config.likelihood != "bernoulli":
            stats["bpd"] = bits_per_dim(neg_elbo, self.dims)
        need_image = self.vgg is not None or self.D is not None
        recon = vae.mean_image(params) if need_image else None
        if self.vgg is not None:
            feats_fake, feats_real = self.vgg(recon), self.vgg(real)
            perceptual = sum(F.mse_loss(feats_fake[k], feats_real[k]) for k in feats_real)
            loss = loss + s.perceptual_weight * perceptual * self.dims  # per-pixel mean -> per-image scale
            stats["perceptual"] = perceptual.detach()
        if self.D is not None:
            loss = loss + self._adversarial(real, recon, text, g, stats) * self.dims
        stats["loss"] = loss.detach()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.dist.sync_grads([vae] + ([self.encoder] if self.trainable else []))
        self.opt.step()
        return stats

    def _adversarial(self, real: torch.Tensor, recon: torch.Tensor, text: TextEmbedding, g: BatchRandom,
                     stats: dict) -> torch.Tensor:
        """Update D on (real, text) vs reconstructions and prior samples; return the decoder's term."""
        D, s = self.D, self.s
        pooled = text.pooled.detach()
        frozen_text = TextEmbedding(text.tokens.detach(), text.mask, pooled)
        noise = g.noise(self.vae, len(real))
        with torch.set_grad_enabled(s.adversarial_prior):  # one decoder pass: D sees it detached, the decoder's term not
            prior = self.vae(noise, frozen_text)
        D.requires_grad_(True)
        u_real, m_real = D(real, pooled, frozen_text)
        u_rec, m_rec = D(recon.detach(), pooled, frozen_text)
        u_pri, m_pri = D(prior.detach(), pooled, frozen_text)
        loss_d = (d_real_loss("hinge", m_real) + d_real_loss("hinge", u_real)
                  + 0.5 * (d_fake_loss("hinge", m_rec) + d_fake_loss("hinge", u_rec)
                           + d_fake_loss("hinge", m_pri) + d_fake_loss("hinge", u_pri)))
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.dist.sync_grads([D])
        self.opt_d.step()
        D.requires_grad_(False)
        u, m = D(recon, pooled, frozen_text)
        adv = g_loss("hinge", m) + g_loss("hinge", u)
        if s.adversarial_prior:  # Larsen et al.: the decoder (and the prior) also learn from D's view of prior samples
            u, m = D(prior, pooled, frozen_text)
            adv = 0.5 * (adv + g_loss("hinge", m) + g_loss("hinge", u))
        stats.update(loss_d=loss_d.detach(), adversarial=adv.detach())
        return s.adversarial_weight * adv

    def generate(self, prompts, seed: int = 0) -> torch.Tensor:
        """One prior sample per prompt (decoder mean), latents from `seed` at the configured temperature."""
        return generate_images(self, prompts, seed, truncation=self.s.temperature)

    sample = GANFamily.sample

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def reparameterize(mean: torch.Tensor, logvar: torch.Tensor, g: BatchRandom) -> torch.Tensor:
    """z = mean + eps * sigma with eps drawn per sample of the global batch (models.vae.reparameterize
    with a BatchRandom; the same numbers as it draws from the bare generator in a single process)."""
    eps = g.randn(*mean.shape, device=mean.device, dtype=mean.dtype)
    return mean + eps * torch.exp(0.5 * logvar)


def effective_kl(kl_dims: torch.Tensor, free_bits: float) -> torch.Tensor:
    """The KL that is penalised: per-dimension batch-mean KLs, each raised to at least free_bits."""
    return kl_dims.clamp(min=free_bits).sum() if free_bits > 0 else kl_dims.sum()

