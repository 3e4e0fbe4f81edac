"""The GAN families for the training loop: losses, regularisers and one optimisation step.

GANFamily (text-conditioned, DF-GAN style): the discriminator sees (real, matching text),
(real, mismatched text: the batch's captions rolled by one, or with hard_negatives the item's own
near-miss caption) and (fake, text); losses hinge, non-saturating or WGAN; regularisers MA-GP,
R1 or WGAN-GP; DiffAugment on every image D sees; optional mode-seeking term; optional image-text
contrastive terms (XMC-GAN: sentence and word-region); optional re-description term (MirrorGAN: a
captioner trained on the real images reads each caption back from G's images). DCGANFamily: the
plain class-conditional baseline.

A family object gives the loop: modules (saved in checkpoints), optimizers, ema_pairs,
step(batch, step) -> stats, sample(prompts, n, seed), generate(prompts, seed), export_meta().
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from wordcanvas.data.base import Prompt
from wordcanvas.models.captioner import Captioner, CaptionerConfig, build_vocabulary
from wordcanvas.models.gan import (DCGANConfig, DCGANDiscriminator, DCGANGenerator, Discriminator,
                                   DiscriminatorConfig, GANCLSConfig, GANCLSGenerator, Generator, GeneratorConfig)
from wordcanvas.models.layers import standardize
from wordcanvas.text.base import TextEmbedding
from wordcanvas.train.augment import BatchRandom, diff_augment, parse_policy

# --- losses -------------------------------------------------------------------------------------

LOSSES = ("hinge", "ns", "wgan")


def d_real_loss(kind: str, logits: torch.Tensor) -> torch.Tensor:
    if kind == "hinge":
        return F.relu(1 - logits).mean()
    if kind == "ns":
        return F.softplus(-logits).mean()
    return -logits.mean()


def d_fake_loss(kind: str, logits: torch.Tensor) -> torch.Tensor:
    if kind == "hinge":
        return F.relu(1 + logits).mean()
    if kind == "ns":
        return F.softplus(logits).mean()
    return logits.mean()


def g_loss(kind: str, logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(-logits).mean() if kind == "ns" else -logits.mean()


def grad_sq_norm(outputs: torch.Tensor, inputs: list[torch.Tensor]) -> torch.Tensor:
    """Per-sample squared L2 norm of d(outputs.sum())/d(inputs), all inputs together (B,)."""
    grads = torch.autograd.grad(outputs.sum(), inputs, create_graph=True)
    return sum(g.flatten(1).square().sum(dim=1) for g in grads)


def magp_penalty(outputs: torch.Tensor, images: torch.Tensor, text: torch.Tensor, k: float = 2.0,
                 p: float = 6.0) -> torch.Tensor:
    """Matching-aware gradient penalty (DF-GAN): k * E[||(d/dx, d/de) D(x, e)||^p] on real images
    with matching text, which smooths D around the real, matching data points. Pass the text on a
    fixed scale (the family passes standardised pooled text): the penalty on d/de grows with 1/scale^p."""
    return k * grad_sq_norm(outputs, [images, text]).pow(p / 2).mean()


def r1_penalty(outputs: torch.Tensor, images: torch.Tensor, gamma: float = 10.0) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): gamma/2 * E[||d D(x)/dx||^2] on real images."""
    return gamma / 2 * grad_sq_norm(outputs, [images]).mean()


def wgan_gp_penalty(outputs: torch.Tensor, mixed: torch.Tensor, lam: float = 10.0) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017): lam * E[(||d D(x_mix)/dx|| - 1)^2] on real/fake mixtures."""
    return lam * (grad_sq_norm(outputs, [mixed]).add(1e-12).sqrt() - 1).square().mean()


def mode_seeking_loss(fake_a: torch.Tensor, fake_b: torch.Tensor, z_a: torch.Tensor, z_b: torch.Tensor,
                      eps: float = 1e-5) -> torch.Tensor:
    """Mode seeking (Mao et al. 2019): penalise images that differ less than their noise does."""
    ratio = (fake_a - fake_b).abs().mean() / (z_a - z_b).abs().mean()
    return 1 / (ratio + eps)


def contrastive_loss(similarity: torch.Tensor, captions: list[str], temperature: float = 0.1,
                     hard: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE over a batch (XMC-GAN's sentence contrastive loss; CLIP's form): image i must
    pick its own caption among the batch's captions, and caption i its own image. `similarity` is
    (B, B) cosine image-text similarity. Other images of an identical caption are not counted as
    negatives (masked out), so batches that repeat a caption do not push apart what should match.
    `hard` (B,): each image's similarity to its own near-miss caption, one more negative on the
    image-to-caption side (a hard negative the batch rarely holds)."""
    b = similarity.shape[0]
    ids = {}
    caption_ids = torch.tensor([ids.setdefault(c, len(ids)) for c in captions], device=similarity.device)
    same = (caption_ids[:, None] == caption_ids[None, :]) & ~torch.eye(b, dtype=torch.bool, device=similarity.device)
    logits = (similarity / temperature).masked_fill(same, float("-inf"))
    target = torch.arange(b, device=similarity.device)
    to_text = logits if hard is None else torch.cat([logits, hard[:, None] / temperature], dim=1)
    return (F.cross_entropy(to_text, target) + F.cross_entropy(logits.T, target)) / 2


def similarities(D, features: torch.Tensor, pooled: torch.Tensor, near_miss: torch.Tensor | None,
                 standardized: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, B) image-caption similarities and, with near misses (raw pooled embeddings), each image's
    similarity to its own near miss, from one pass of the contrastive head over the images."""
    if near_miss is None:
        return D.similarity(features, pooled, standardized), None
    texts = torch.cat([pooled, standardize(near_miss) if standardized else near_miss])
    sim = D.similarity(features, texts, standardized)
    b = len(pooled)
    return sim[:, :b], sim[:, b:].diagonal()


def word_similarities(D, features: torch.Tensor, text: TextEmbedding, near_miss: TextEmbedding | None
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """As `similarities`, from the word-region head and the captions' token states (each near miss
    scored against its own image only)."""
    sim = D.word_similarity(features, text.tokens.float(), text.mask)
    if near_miss is None:
        return sim, None
    return sim, D.word_similarity(features, near_miss.tokens.float(), near_miss.mask, paired=True)


# --- shared helpers ----------------------------------------------------------------------------

def step_generator(seed: int, step: int, rank: int, device: torch.device) -> torch.Generator:
    """A generator that is a function of (seed, step, rank) only, so a resumed run draws exactly
    what an uninterrupted one would (families whose draws may differ per process use the rank)."""
    mixed = (seed * 1_000_003 + step) * 1_009 + rank
    return torch.Generator(device=device).manual_seed(mixed % (2 ** 63 - 1))


def batch_random(seed: int, step: int, dist, device: torch.device) -> BatchRandom:
    """The source of all per-sample randomness of one step (noise, augmentation, reparameterisation):
    a function of (seed, step) for the GLOBAL batch, of which each process takes its own slice, so
    w processes x batch b draw per sample what one process with batch w*b draws (and with one
    process, exactly what step_generator(seed, step, 0) draws)."""
    return BatchRandom(step_generator(seed, step, 0, device), dist.rank, dist.world)


def roll_global(x: torch.Tensor, dist, shifts: int = 1) -> torch.Tensor:
    """x.roll(shifts, 0) over the global batch, this process's slice: sample i of the global batch
    gets row i - shifts of the global batch, however the batch is split over processes (one
    all_gather of x, which is detached: gradients do not cross processes)."""
    if dist.world == 1:
        return x.roll(shifts, dims=0)
    parts = [torch.empty_like(x) for _ in range(dist.world)]
    torch.distributed.all_gather(parts, x.detach().contiguous())
    b = len(x)
    return torch.cat(parts).roll(shifts, dims=0)[dist.rank * b:(dist.rank + 1) * b]


def roll_global_text(text: TextEmbedding, dist, shifts: int = 1) -> TextEmbedding:
    """roll_global for whole captions: the processes' batches may be padded to different lengths,
    so all are padded to the longest first."""
    if dist.world > 1:
        length = torch.tensor(text.tokens.shape[1], device=text.tokens.device)
        torch.distributed.all_reduce(length, op=torch.distributed.ReduceOp.MAX)
        text = TextEmbedding.cat([text], max_tokens=int(length))
    return TextEmbedding(*(roll_global(x, dist, shifts) for x in (text.tokens, text.mask, text.pooled)))


def is_trainable(encoder) -> bool:
    return isinstance(encoder, nn.Module) and any(p.requires_grad for p in encoder.parameters())


def embed_texts(encoder, texts: list[str], device: torch.device, grad: bool = False) -> TextEmbedding:
    if is_trainable(encoder):
        with torch.set_grad_enabled(grad):
            emb = encoder(list(texts))
    else:
        emb = encoder.encode(list(texts))
    return emb.to(device)


def settings_from(cls, data: dict):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} settings {unknown}; known: {sorted(names)}")
    return cls(**data)


def as_prompts(prompts) -> list[Prompt]:
    return [p if isinstance(p, Prompt) else Prompt(str(p), {}) for p in prompts]


@torch.no_grad()
def generate_images(fam, prompts, seed: int, **noise) -> torch.Tensor:
    """One image per prompt from a text family's inference model (GAN generator, VAE decoder) in
    eval mode, noise drawn from `seed` (`noise`: the model's sample_noise options); the training
    modes are restored afterwards."""
    prompts = as_prompts(prompts)
    model, modules = fam.inference_generator, [fam.inference_generator] + ([fam.encoder] if fam.trainable else [])
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    text = embed_texts(fam.encoder, [p.text for p in prompts], fam.device)
    z = model.sample_noise(len(prompts), torch.Generator(device=fam.device).manual_seed(seed), **noise)
    images = model(z, text).float()
    for m, mode in zip(modules, modes):
        m.train(mode)
    return images


# --- text-conditioned GAN ----------------------------------------------------------------------

ARCHS = {"dfgan": (Generator, GeneratorConfig, "resnet"), "gan-cls": (GANCLSGenerator, GANCLSConfig, "dcgan")}


@dataclass
class GANSettings:
    arch: str = "dfgan"                     # "dfgan" (residual blocks, deep fusion, token attention) or "gan-cls"
                                            # (DCGAN convolutions with conditional BatchNorm, pooled text; lighter)
    generator: dict = field(default_factory=dict)      # the arch's generator config fields (ngf, z_dim, fusion...)
    discriminator: dict = field(default_factory=dict)  # DiscriminatorConfig fields (ndf, cond_head...)
    loss: str = "hinge"                     # "hinge", "ns" (non-saturating logistic) or "wgan"
    reg: str = "magp"                       # "magp" (matching-aware GP), "r1", "wgan-gp" or "none"
    reg_weight: float = 2.0                 # MA-GP k, R1 gamma or WGAN-GP lambda
    magp_power: float = 6.0                 # MA-GP exponent p
    reg_every: int = 4                      # lazy regularisation: every N steps with weight x N
    mismatch_weight: float = 0.5            # share of D's 'fake' term given to real images with wrong text
    uncond_weight: float = 1.0              # weight of the unconditional realism terms (D and G)
    augment: str = "color,translation,cutout"  # DiffAugment policy for all images D sees; "" = off
    mode_seeking: float = 0.0               # weight of the mode-seeking diversity term; 0 = off
    contrastive: float = 0.0                # weight of the image-text contrastive terms (XMC-GAN): D learns to pick
                                            # each real image's caption among the batch's, G is rewarded when its
                                            # images are picked for their own captions; 0 = off
    word_contrastive: float = 0.0           # weight of the word-region contrastive terms (XMC-GAN's word loss,
                                            # AttnGAN's DAMSM): as above, scored from the caption's tokens, each
                                            # finding its region of the image: binds which thing goes where; 0 = off
    contrastive_temperature: float = 0.1    # softmax temperature of the contrastive terms
    hard_negatives: float = 0.0             # share of the mismatched captions D sees that are the item's own near
                                            # miss (data's contrast_captions: digits swapped, one moved...) instead
                                            # of another item's caption; with contrastive > 0 the near miss is also
                                            # one more negative for each image (D's real, G's fake); 0 = off
    hard_negative_pool: int = 1             # near-miss candidates per item; > 1: D is shown the one its matching
                                            # head finds most plausible on the real image (hard-negative mining),
                                            # so the kinds it cannot yet tell apart (two digits swapped) keep
                                            # coming back until it can (captioned MNIST: a swap is 1 draw in 7)
    captioner: float = 0.0                  # weight of the re-description term (MirrorGAN): a small captioner,
                                            # trained alongside on the real images only (never on G's), scores how
                                            # well each caption can be read back from G's image; G minimises its
                                            # per-word negative log-likelihood. It learns from every word, so it
                                            # sees which digit is where, which matching heads miss; 0 = off
    captioner_config: dict = field(default_factory=dict)  # CaptionerConfig fields (width, dim, layers, heads)
    captioner_lr: float = 3e-4              # the captioner's Adam learning rate
    captioner_init: str | None = None       # a saved captioner folder to start from (captioner_learnability.py
                                            # --save, or a run's checkpoints/step-N/captioner): G has a judge that
                                            # already reads the images from step 0; it must agree with
                                            # captioner_config and its vocabulary hold the dataset's words
    region_prior: float = 0.0               # weight of the region-prior term (gan-cls only; needs the captioner): a
                                            # RegionPrior in G predicts from the caption's tokens the captioner's
                                            # 8x8 region states of the real image (mean squared error) and G's
                                            # blocks add them in place, so which thing is where is learned from
                                            # real (image, caption) pairs rather than through G's images; 0 = off
    truncation: float | None = None         # noise truncation for sample grids, evaluation and export
    truncation_mode: str = "resample"       # "resample" (redraw |z| > t) or "scale" (z * t)
    standing_stats: int = 16                # batches that re-estimate the EMA generator's BatchNorm statistics
                                            # before it is sampled, evaluated or saved (BigGAN); 0 = copy the live ones

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {sorted(ARCHS)}, got {self.arch!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.reg not in ("magp", "r1", "wgan-gp", "none"):
            raise ValueError(f"reg must be 'magp', 'r1', 'wgan-gp' or 'none', got {self.reg!r}")
        parse_policy(self.augment)
        self.reg_every = max(1, int(self.reg_every))
        if self.captioner < 0 or self.captioner_lr <= 0:
            raise ValueError(f"captioner must be >= 0 and captioner_lr > 0, got {self.captioner} and {self.captioner_lr}")
        reserved = {"vocabulary", "resolution", "channels"} & set(self.captioner_config)
        if reserved:
            raise ValueError(f"captioner_config sets {sorted(reserved)}: these come from the dataset")
        if self.contrastive < 0 or self.word_contrastive < 0 or self.contrastive_temperature <= 0:
            raise ValueError("contrastive and word_contrastive must be >= 0 and contrastive_temperature > 0, got "
                             f"{self.contrastive}, {self.word_contrastive} and {self.contrastive_temperature}")
        if not 0 <= self.hard_negatives <= 1:
            raise ValueError(f"hard_negatives must be in [0, 1], got {self.hard_negatives}")
        if int(self.hard_negative_pool) != self.hard_negative_pool or self.hard_negative_pool < 1:
            raise ValueError(f"hard_negative_pool must be a whole number >= 1, got {self.hard_negative_pool}")
        if self.contrastive > 0 and self.discriminator.get("contrastive_dim", 1) <= 0:
            raise ValueError("contrastive > 0 needs a contrastive head: discriminator.contrastive_dim must be > 0")
        if self.word_contrastive > 0 and self.discriminator.get("word_dim", 1) <= 0:
            raise ValueError("word_contrastive > 0 needs a word-region head: discriminator.word_dim must be > 0")
        if self.region_prior < 0:
            raise ValueError(f"region_prior must be >= 0, got {self.region_prior}")
        if self.region_prior > 0 and (self.captioner <= 0 or self.arch != "gan-cls"):
            raise ValueError(f"region_prior > 0 learns the captioner's regions of the real images in a gan-cls "
                             f"generator: set captioner > 0 and arch 'gan-cls' (got captioner={self.captioner}, "
                             f"arch {self.arch!r})")
        if {"region_grid", "region_dim"} & set(self.generator):
            raise ValueError("generator.region_grid and region_dim come from region_prior and the captioner")

    def generator_config(self) -> dict:
        """The generator settings, with the region grid the captioner's regions set where region_prior is on
        (a copy, as for discriminator_config)."""
        if self.region_prior <= 0:
            return dict(self.generator)
        return {**self.generator, "region_grid": Captioner.region_grid,
                "region_dim": self.captioner_config.get("dim", CaptionerConfig.dim)}

    def build_generator(self, resolution: int, channels: int, text_dim: int) -> nn.Module:
        """The generator these settings train, freshly initialised."""
        gen_class, gen_config, _ = ARCHS[self.arch]
        return gen_class(gen_config(resolution=resolution, channels=channels, text_dim=text_dim,
                                    **self.generator_config()))

    def build_discriminator(self, resolution: int, channels: int, text_dim: int) -> Discriminator:
        """The discriminator these settings train (with the trunk of their architecture), freshly initialised."""
        return Discriminator(DiscriminatorConfig(**{"resolution": resolution, "channels": channels, "text_dim": text_dim,
                                                    "trunk": ARCHS[self.arch][2], **self.discriminator_config()}))

    def discriminator_config(self) -> dict:
        """The discriminator settings, with 128-wide contrastive heads for the terms that are on where no
        size is given (a copy: the run's recorded settings stay as the user wrote them, so resuming matches)."""
        heads = {"contrastive_dim": 128} if self.contrastive > 0 else {}
        if self.word_contrastive > 0:
            heads["word_dim"] = 128
        return {**heads, **self.discriminator}


def initial_captioner(folder: str, vocabulary: list[str], resolution: int, channels: int, settings: dict) -> Captioner:
    """A saved captioner to start from, refused when it cannot read this dataset's images or words,
    or was built otherwise than captioner_config asks."""
    captioner = Captioner.from_pretrained(folder)
    c = captioner.config
    differ = {k: (getattr(c, k, None), v) for k, v in settings.items() if getattr(c, k, None) != v}
    if differ:
        raise ValueError(f"captioner_init {folder} differs from captioner_config (saved, asked): {differ}")
    if (c.resolution, c.channels) != (resolution, channels):
        raise ValueError(f"captioner_init {folder} reads {c.resolution} px images with {c.channels} channel(s); "
                         f"this run has {resolution} px with {channels}")
    known = set(c.vocabulary)
    unknown = [w for w in vocabulary if w not in known]
    if unknown:
        raise ValueError(f"captioner_init {folder} does not know {len(unknown)} word(s) of this dataset's captions "
                         f"(e.g. {unknown[:5]}): it was trained on other captions")
    return captioner


class GANFamily:
    name = "gan"
    uses_text = True
    defaults = {"lr": 1e-4, "lr_d": 4e-4, "betas": (0.0, 0.9)}  # DF-GAN's two time-scale Adam

    def __init__(self, cfg, dataset, encoder, device: torch.device, dist):
        self.cfg, self.device, self.dist = cfg, device, dist
        self.s = s = settings_from(GANSettings, cfg.model)
        if encoder is None:
            raise ValueError("the 'gan' family needs a text encoder")
        self.encoder, self.trainable = encoder, is_trainable(encoder)
        sizes = (cfg.resolution, dataset.channels, encoder.dim)
        self.G = s.build_generator(*sizes).to(device)
        self.D = s.build_discriminator(*sizes).to(device)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False) if cfg.ema_kimg > 0 else None
        if self.trainable:
            encoder.to(device).train()
        lr, lr_d, betas = (cfg.lr or self.defaults["lr"], cfg.lr_d or self.defaults["lr_d"],
                           cfg.betas or self.defaults["betas"])
        g_params = list(self.G.parameters()) + (list(encoder.parameters()) if self.trainable else [])
        self.opt_g = torch.optim.Adam(g_params, lr=lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=lr_d, betas=betas)
        self.captioner = self.opt_c = None
        if s.captioner > 0:  # the vocabulary is every word of the training captions: the same on resume
            vocabulary = build_vocabulary(c for i in range(len(dataset)) for c in dataset.captions(i))
            if s.captioner_init:
                self.captioner = initial_captioner(s.captioner_init, vocabulary, cfg.resolution, dataset.channels,
                                                   s.captioner_config)
            else:
                self.captioner = Captioner(CaptionerConfig(vocabulary=vocabulary, resolution=cfg.resolution,
                                                           channels=dataset.channels, **s.captioner_config))
            self.captioner.to(device).train()
            self.opt_c = torch.optim.Adam(self.captioner.parameters(), lr=s.captioner_lr)
        self.augment = parse_policy(s.augment)
        self.amp = cfg.amp and device.type == "cuda"
        self.dataset = dataset  # captions for the standing statistics
        # the loader brings each item's near-miss captions: the candidates mining picks from
        self.wants_near_misses = int(s.hard_negative_pool) if s.hard_negatives > 0 else 0

    # the loop's view of the family
    @property
    def modules(self) -> dict[str, nn.Module]:
        mods = {"generator": self.G, "discriminator": self.D}
        if self.G_ema is not None:
            mods["generator_ema"] = self.G_ema
        if self.trainable:
            mods["encoder"] = self.encoder
        if self.captioner is not None:
            mods["captioner"] = self.captioner
        return mods

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        opts = {"generator": self.opt_g, "discriminator": self.opt_d}
        if self.opt_c is not None:
            opts["captioner"] = self.opt_c
        return opts

    @property
    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.G, self.G_ema)] if self.G_ema is not None else []

    @property
    def inference_generator(self) -> nn.Module:
        return self.G_ema if self.G_ema is not None else self.G

    def export_meta(self) -> dict:
        """How `generate` rebuilds this model from a checkpoint or the final folder."""
        return {"family": self.name, "generator": "generator_ema" if self.G_ema is not None else "generator",
                "encoder": {"name": self.cfg.encoder, "folder": "encoder" if self.trainable else None},
                "resolution": self.cfg.resolution, "channels": self.G.config.channels,
                "truncation": self.s.truncation, "truncation_mode": self.s.truncation_mode,
                "discriminator": "discriminator"}  # kept: it judges image-text match for automatic edits

    def autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else contextlib.nullcontext()

    def run_d(self, images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return self.D.features(diff_augment(images, self.augment, g) if self.augment else images)

    @torch.no_grad()
    def hardest_near_misses(self, real: torch.Tensor, candidates: TextEmbedding) -> TextEmbedding:
        """Of k near-miss captions per item (item-major), the one whose matching logit on the item's
        real image is highest: the near miss D currently finds most plausible."""
        b, D = len(real), self.D
        k = len(candidates) // b
        if k * b != len(candidates):
            raise ValueError(f"{len(candidates)} near-miss captions for {b} items: expected the same number per item")
        with self.autocast():
            features = D.features(real)  # un-augmented: the choice should not depend on the augmentation draw
            _, logits = D.heads(features.repeat_interleave(k, dim=0), standardize(candidates.pooled.float()),
                                standardized=True, text=candidates if D.reads_tokens else None)
        pick = logits.float().view(b, k).argmax(dim=1) + torch.arange(b, device=logits.device) * k
        return candidates[pick]

    def step(self, batch: dict, step: int) -> dict[str, torch.Tensor]:
        """One D and one G update. Every draw is per sample and the mismatched caption comes from the
        global batch, so gradients averaged over processes equal one process's on the global batch
        (up to summation order); only the mode-seeking and contrastive terms (pairs and negatives within
        the local batch) differ."""
        s, G, D = self.s, self.G, self.D
        g = batch_random(self.cfg.seed, step, self.dist, self.device)
        real, captions = batch["image"], batch["caption"]
        b = real.shape[0]
        stats = {}

        # The encoder changes only in the G update, so one pass serves both phases: with grad for
        # G (trainable encoders learn through it), detached for D.
        text_g = embed_texts(self.encoder, captions, self.device, grad=self.trainable)
        text = TextEmbedding(text_g.tokens.detach(), text_g.mask, text_g.pooled.detach())

        # Discriminator: real+matching text is real; fake, and real with another caption, are not.
        D.requires_grad_(True)
        with torch.no_grad(), self.autocast():
            fake = G(g.noise(G, b), text).float()
        do_reg = s.reg != "none" and step % s.reg_every == 0
        real = real.detach().requires_grad_(do_reg and s.reg in ("magp", "r1"))
        pooled = standardize(text.pooled.detach().float()).requires_grad_(do_reg and s.reg == "magp")
        mismatched = roll_global(pooled, self.dist)
        # D reads each caption's tokens: the mismatched captions bring theirs too (gathered only then)
        mis_text = roll_global_text(text, self.dist) if D.reads_tokens else None
        near_miss = near_miss_text = None  # each item's near-miss caption: pooled (B, text_dim), and whole
        if s.hard_negatives > 0:
            if "contrast" not in batch:
                raise ValueError("hard_negatives > 0 needs a dataset that writes near-miss captions "
                                 "(contrast_captions; built in: captioned-mnist, toy-faces)")
            near_miss_text = embed_texts(self.encoder, batch["contrast"], self.device)
            if len(near_miss_text) != b:  # k candidates per item: D's most plausible one is the near miss
                near_miss_text = self.hardest_near_misses(real.detach(), near_miss_text)
            near_miss = near_miss_text.pooled.detach().float()
            use = g.rand(b, device=self.device) < s.hard_negatives
            mismatched = torch.where(use[:, None], standardize(near_miss), mismatched)
            if mis_text is not None:
                both = TextEmbedding.cat([mis_text, near_miss_text])  # padded to a common length
                rolled, near = both[:b], both[b:]
                mis_text = TextEmbedding(torch.where(use[:, None, None], near.tokens, rolled.tokens),
                                         torch.where(use[:, None], near.mask, rolled.mask), mismatched)
        with self.autocast():
            f_real, f_fake = self.run_d(real, g), self.run_d(fake, g)
            u_real, m_real = D.heads(f_real, pooled, standardized=True, text=text)
            _, m_mis = D.heads(f_real, mismatched, standardized=True, text=mis_text)
            u_fake, m_fake = D.heads(f_fake, pooled, standardized=True, text=text)
            w = s.mismatch_weight
            loss_d = (d_real_loss(s.loss, m_real) + (1 - w) * d_fake_loss(s.loss, m_fake) + w * d_fake_loss(s.loss, m_mis)
                      + s.uncond_weight * (d_real_loss(s.loss, u_real) + d_fake_loss(s.loss, u_fake)))
            if s.contrastive > 0:
                sim, hard = similarities(D, f_real, pooled.detach(), near_miss, standardized=True)
                con_d = contrastive_loss(sim, captions, s.contrastive_temperature, hard)
                loss_d = loss_d + s.contrastive * con_d
                stats["contrastive_d"] = con_d.detach()
            if s.word_contrastive > 0:
                sim, hard = word_similarities(D, f_real, text, near_miss_text)
                word_d = contrastive_loss(sim, captions, s.contrastive_temperature, hard)
                loss_d = loss_d + s.word_contrastive * word_d
                stats["word_contrastive_d"] = word_d.detach()
            if do_reg:
                if s.reg == "magp":
                    reg = magp_penalty(m_real, real, pooled, s.reg_weight, s.magp_power)
                elif s.reg == "r1":
                    reg = r1_penalty(m_real + s.uncond_weight * u_real, real, s.reg_weight)
                else:
                    eps = g.rand(b, 1, 1, 1, device=self.device)
                    mixed = (eps * real.detach() + (1 - eps) * fake).requires_grad_(True)
                    u_mix, m_mix = D.heads(self.run_d(mixed, g), pooled, standardized=True, text=text)
                    reg = wgan_gp_penalty(m_mix + s.uncond_weight * u_mix, mixed, s.reg_weight)
                loss_d = loss_d + reg * s.reg_every
                stats["reg"] = reg.detach()
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.dist.sync_grads([D])
        self.opt_d.step()
        stats.update(loss_d=loss_d.detach(), d_real=m_real.detach().mean(), d_fake=m_fake.detach().mean(),
                     d_mismatch=m_mis.detach().mean())

        real_regions = None  # the captioner's regions of the real images: what G's region prior learns
        if self.captioner is not None:  # learns to read the captions back from real images only
            C = self.captioner.requires_grad_(True)
            with self.autocast():
                regions = C.encode_images(real.detach().float())
                loss_c = C.nll(real.detach().float(), captions, regions, per_word=True).mean()
            real_regions = regions.detach().float()
            self.opt_c.zero_grad(set_to_none=True)
            loss_c.backward()
            self.dist.sync_grads([C])
            self.opt_c.step()
            C.requires_grad_(False)
            stats["captioner_real"] = loss_c.detach()

        # Generator (and a trainable text encoder, through the embeddings it produces).
        D.requires_grad_(False)
        text = text_g
        with self.autocast():
            z = g.noise(G, b)
            fake = G(z, text)
            f_fake = self.run_d(fake.float(), g)
            u_fake, m_fake = D.heads(f_fake, text.pooled.float(), text=text)
            loss_g = g_loss(s.loss, m_fake) + s.uncond_weight * g_loss(s.loss, u_fake)
            if s.contrastive > 0:
                sim, hard = similarities(D, f_fake, text.pooled.float(), near_miss)
                con_g = contrastive_loss(sim, captions, s.contrastive_temperature, hard)
                loss_g = loss_g + s.contrastive * con_g
                stats["contrastive_g"] = con_g.detach()
            if s.word_contrastive > 0:
                sim, hard = word_similarities(D, f_fake, text, near_miss_text)
                word_g = contrastive_loss(sim, captions, s.contrastive_temperature, hard)
                loss_g = loss_g + s.word_contrastive * word_g
                stats["word_contrastive_g"] = word_g.detach()
            if self.captioner is not None:
                redescribe = self.captioner.nll(fake.float(), captions, per_word=True).mean()
                loss_g = loss_g + s.captioner * redescribe
                stats["captioner_fake"] = redescribe.detach()
            if s.region_prior > 0:
                prior = G.region_prior.loss(text.tokens, text.mask, real_regions)
                loss_g = loss_g + s.region_prior * prior
                stats["region_prior"] = prior.detach()
            if s.mode_seeking > 0 and b >= 2:
                h = b // 2
                z2 = g.noise(G, h)
                ms = mode_seeking_loss(fake[:h], G(z2, text[:h]), z[:h], z2)
                loss_g = loss_g + s.mode_seeking * ms
                stats["mode_seeking"] = ms.detach()
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.dist.sync_grads([G] + ([self.encoder] if self.trainable else []))
        self.opt_g.step()
        stats["loss_g"] = loss_g.detach()
        return stats

    @torch.no_grad()
    def prepare_inference(self, step: int) -> None:
        """BigGAN's standing statistics. The EMA generator's weights are an average over recent steps,
        but the BatchNorm statistics the EMA update copies from the live generator describe the live
        weights' activations. Re-estimate them for the averaged weights (cumulative average over
        `standing_stats` batches of fresh noise and training captions). The draws depend only on
        (seed, step), never on the global RNG, and the next EMA update copies the live statistics
        back, so training and exact resume are unaffected."""
        G, batches = self.G_ema, self.s.standing_stats
        norms = [m for m in G.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)] if G is not None else []
        if not norms or batches <= 0:
            return
        g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + step + 7)
        g_noise = torch.Generator(device=self.device).manual_seed(self.cfg.seed * 1_000_003 + step + 11)
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches below
        if self.trainable:
            self.encoder.eval()
        G.train()
        try:
            for _ in range(batches):
                items = torch.randint(len(self.dataset), (self.cfg.batch,), generator=g).tolist()
                captions = []
                for i in items:
                    options = self.dataset.captions(i)
                    captions.append(options[int(torch.randint(len(options), (), generator=g))])
                z = G.sample_noise(len(captions), g_noise, self.s.truncation, self.s.truncation_mode)
                G(z, embed_texts(self.encoder, captions, self.device))
        finally:
            G.eval()
            for m, momentum in zip(norms, momenta):
                m.momentum = momentum
            if self.trainable:
                self.encoder.train()

    def generate(self, prompts, seed: int = 0) -> torch.Tensor:
        """One image per prompt (str or Prompt) from the inference generator, noise from `seed`."""
        return generate_images(self, prompts, seed, truncation=self.s.truncation, mode=self.s.truncation_mode)

    def sample(self, prompts, n: int, seed: int = 0) -> torch.Tensor:
        """Sample grid: n images per prompt, the same n noise vectors for every prompt (prompt-major)."""
        prompts = as_prompts(prompts)
        rows = [self.generate([p] * n, seed) for p in prompts]
        return torch.cat(rows)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


# --- plain class-conditional DCGAN baseline ----------------------------------------------------

@dataclass
class DCGANSettings:
    model: dict = field(default_factory=dict)   # DCGANConfig fields (z_dim, embed_dim, ngf, ndf)
    label: str | None = None                   # dataset label to condition on; None = its first label


class DCGANFamily:
    """Non-saturating loss, Adam(2e-4, 0.5), BatchNorm; no EMA, no augmentation, no regulariser."""

    name = "dcgan"
    uses_text = False
    defaults = {"lr": 2e-4, "lr_d": 2e-4, "betas": (0.5, 0.999)}

    def __init__(self, cfg, dataset, encoder, device: torch.device, dist):
        self.cfg, self.device, self.dist = cfg, device, dist
        self.s = s = settings_from(DCGANSettings, cfg.model)
        spec = dataset.label_spec.classes
        if not spec:
            raise ValueError(f"the 'dcgan' family needs class labels; dataset {cfg.data!r} has none")
        self.label = s.label or next(iter(spec))
        if self.label not in spec:
            raise ValueError(f"dataset has no label {self.label!r}; it has {sorted(spec)}")
        self.classes = list(spec[self.label])
        self.phrases = dataset.class_phrases(self.label)  # how prompts name each class (the baseline reads no text)
        mc = DCGANConfig(**{"resolution": cfg.resolution, "channels": dataset.channels,
                            "num_classes": len(self.classes), **s.model})
        self.G, self.D = DCGANGenerator(mc).to(device), DCGANDiscriminator(mc).to(device)
        lr, lr_d, betas = (cfg.lr or self.defaults["lr"], cfg.lr_d or self.defaults["lr_d"],
                           cfg.betas or self.defaults["betas"])
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=lr_d, betas=betas)
        self.amp = cfg.amp and device.type == "cuda"

    modules = property(lambda self: {"generator": self.G, "discriminator": self.D})
    optimizers = property(lambda self: {"generator": self.opt_g, "discriminator": self.opt_d})
    ema_pairs = property(lambda self: [])
    inference_generator = property(lambda self: self.G)
    autocast = GANFamily.autocast

    def export_meta(self) -> dict:
        return {"family": self.name, "generator": "generator", "encoder": None, "label": self.label,
                "classes": self.classes, "class_phrases": self.phrases, "resolution": self.cfg.resolution, "channels": self.G.config.channels}

    def step(self, batch: dict, step: int) -> dict[str, torch.Tensor]:
        """Noise is drawn per sample of the global batch, but BatchNorm normalises over each process's
        own batch, so a multi-process run is NOT the same as one process with the global batch."""
        G, D = self.G, self.D
        g = batch_random(self.cfg.seed, step, self.dist, self.device)
        real, labels = batch["image"], batch["labels"][self.label].to(self.device)
        b = real.shape[0]

        D.requires_grad_(True)
        with self.autocast():
            with torch.no_grad():
                fake = G(g.noise(G, b), labels)
            d_real, d_fake = D(real, labels), D(fake.detach(), labels)
            loss_d = d_real_loss("ns", d_real) + d_fake_loss("ns", d_fake)
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.dist.sync_grads([D])
        self.opt_d.step()

        D.requires_grad_(False)
        with self.autocast():
            fake = G(g.noise(G, b), labels)
            loss_g = g_loss("ns", D(fake, labels))
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.dist.sync_grads([G])
        self.opt_g.step()
        return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(), "d_real": d_real.detach().mean(),
                "d_fake": d_fake.detach().mean()}

    def labels_for(self, prompts: list[Prompt]) -> torch.Tensor:
        """Class of each prompt: its label if given, else the class named in its text."""
        out = []
        for p in prompts:
            k = p.labels.get(self.label, -1) if p.labels else -1
            out.append(k if k >= 0 else class_from_text(p.text, self.phrases))
        return torch.tensor(out, dtype=torch.long, device=self.device)

    @torch.no_grad()
    def generate(self, prompts, seed: int = 0) -> torch.Tensor:
        prompts = as_prompts(prompts)
        was_training = self.G.training
        self.G.eval()
        z = self.G.sample_noise(len(prompts), torch.Generator(device=self.device).manual_seed(seed))
        images = self.G(z, self.labels_for(prompts)).float()
        self.G.train(was_training)
        return images

    sample = GANFamily.sample

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def class_from_text(text: str, phrases: list) -> int:
    """Index of the class one of whose phrases occurs in the text as whole words; the longest
    match wins ("ankle boot" over "boot"). `phrases` holds per class a list of phrases, or a class
    name with '/'-separated alternatives."""
    low = " " + re.sub(r"[^a-z0-9-]+", " ", text.lower()) + " "
    best, best_len = -1, 0
    for i, entry in enumerate(phrases):
        for alt in ([entry] if isinstance(entry, str) else entry):
            for word in alt.lower().split("/"):
                word = " " + " ".join(re.sub(r"[^a-z0-9-]+", " ", word).split()) + " "
                if word.strip() and word in low and len(word) > best_len:
                    best, best_len = i, len(word)
    if best < 0:
        known = ", ".join(e if isinstance(e, str) else "/".join(e[:3]) for e in phrases)
        raise ValueError(f"prompt {text!r} names none of the classes of this class-conditioned model "
                         f"(it reads no free text; name one of: {known})")
    return best
