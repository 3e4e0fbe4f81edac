"""Super-resolution networks as a model family of the training loop (family "sr").

The loop's batch holds HR patches (`sr.data.SRTrainingPatches`: random crops of the bundled
training photos, plus a user folder); each step degrades them to LR (bicubic, optionally
blur / noise / JPEG) with the step's seeded generator, so resume stays exact. Three losses:
  - "l1": PSNR-oriented, L1(G(lr), hr), as ESRGAN's first stage;
  - "mse": the same with the squared error, whose mean PSNR measures: a last fine-tuning stage after "l1"
    (L1 trains faster and steadier from scratch, as EDSR found);
  - "gan": ESRGAN's second stage, started from a PSNR-trained network (`init`):
        pixel_weight x L1 + perceptual_weight x sum_l w_l L1(vgg_l(G(lr)), vgg_l(hr))
        + adv_weight x relativistic-average adversarial loss,
    with VGG16 features taken before the ReLU (ESRGAN's choice; VGG19 is not available offline)
    and a spectral-norm patch discriminator.
The learning rate is halved at the steps listed in `lr_halve_at` (ESRGAN's multi-step schedule).
With `teacher` set, "l1" and "mse" also distil a frozen pretrained network (knowledge distillation for SR): the target
is (1 - teacher_weight) x hr + teacher_weight x teacher(lr) in L1 (or MSE), which carries what the teacher learnt from
photos we do not have (SRMD: DIV2K, BSD and WED) into our smaller network. `teacher_ensemble` distils the teacher's
self-ensemble instead (EDSR+: its outputs over the 8 flips and rotations, averaged), which is closer to the HR
photo than any one pass: each step shows the teacher every patch under a random symmetry and turns its output back.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

from wordcanvas.models.sr import bicubic_upsample, load_sr_model, sr_preset
from wordcanvas.models.vgg import VGG16_POOL_AFTER, VGG16_RELUS, VGG16Features
from wordcanvas.train.gan_step import settings_from, step_generator

# pre-activation VGG16 layers ("conv3_3" is the conv before relu3_3) and their weights, as Real-ESRGAN weighs VGG19's
PERCEPTUAL_LAYERS = {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_3": 1.0, "conv4_3": 1.0, "conv5_3": 1.0}


@dataclass
class SRSettings:
    preset: str = "fast"                    # network: "fast" (FastSR) or "quality" (RRDB-lite); models.sr.sr_preset
    scale: int = 4                          # 2 or 4
    loss: str = "l1"                        # "l1" or "mse" (PSNR-oriented) or "gan" (L1 + VGG16 perceptual + adversarial)
    init: str | None = None                 # network to start from (folder or run; needed for "gan"); may be another scale
    degradations: list = field(default_factory=lambda: ["bicubic"])  # also "blur", "noise", "jpeg" (sr.data.degrade)
    user_folder: str | None = None          # a folder of your own photos, cut into patches beside the bundled ones
    patches: int = 20_000                   # items per epoch (crops are redrawn every epoch)
    photo_scale: list = field(default_factory=lambda: [1.0, 1.0])  # crops come from photos shrunk by [lo, hi]
    lr_halve_at: list = field(default_factory=list)  # steps at which the learning rate halves
    pixel_weight: float = 1e-2              # gan: weight of the L1 pixel loss
    perceptual_weight: float = 1.0          # gan: weight of the VGG16 feature loss
    perceptual_layers: dict = field(default_factory=lambda: dict(PERCEPTUAL_LAYERS))
    adv_weight: float = 5e-3                # gan: weight of the generator's adversarial loss
    disc_width: int = 32                    # gan: channels of the discriminator's first layer
    teacher: str | None = None              # l1: a frozen network to distil ("srmd", "realesrgan" or a folder)
    teacher_weight: float = 0.5             # l1 with teacher: share of the teacher's output in the L1 target
    teacher_ensemble: bool = False          # l1 with teacher: distil its self-ensemble (random symmetry per patch)


# --------------------------------------------------------------------------- losses and discriminator

class PerceptualLoss(nn.Module):
    """sum_l w_l * L1(phi_l(x), phi_l(y)) over pre-activation VGG16 features (ImageNet normalisation)."""

    def __init__(self, layers: dict[str, float] = PERCEPTUAL_LAYERS):
        super().__init__()
        names = [n.replace("conv", "relu") for n in layers]
        unknown = set(names) - set(VGG16_RELUS)
        if unknown:
            raise ValueError(f"unknown VGG16 layers {sorted(n.replace('relu', 'conv') for n in unknown)}")
        self.weights = {VGG16_RELUS.index(n): float(w) for n, w in zip(names, layers.values())}
        self.vgg = VGG16Features(layers=names)  # frozen, eval

    def features(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        x, out = self.vgg.normalize(x), {}
        for i in range(max(self.weights) + 1):
            x = self.vgg.convs[i](x)
            if i in self.weights:
                out[i] = x
            x = F.relu(x)
            if i in VGG16_POOL_AFTER:
                x = F.max_pool2d(x, 2, 2)
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Gradients flow into x only; y is the fixed target."""
        with torch.no_grad():
            fy = self.features(y)
        return sum(self.weights[i] * F.l1_loss(f, fy[i]) for i, f in self.features(x).items())


class PatchDiscriminator(nn.Module):
    """VGG-style strided convs with spectral norm; one realism logit per receptive-field patch."""

    def __init__(self, width: int = 32, channels: int = 3):
        super().__init__()
        sn = lambda cin, cout, stride: spectral_norm(nn.Conv2d(cin, cout, 4 if stride == 2 else 3, stride, 1))  # noqa: E731
        w = width
        layers, cin = [nn.Conv2d(channels, w, 3, 1, 1), nn.LeakyReLU(0.2)], w
        for cout, stride in ((w, 2), (2 * w, 1), (2 * w, 2), (4 * w, 1), (4 * w, 2), (8 * w, 1)):
            layers += [sn(cin, cout, stride), nn.LeakyReLU(0.2)]
            cin = cout
        layers.append(nn.Conv2d(cin, 1, 3, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def relativistic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, real_is_real: bool) -> torch.Tensor:
    """ESRGAN's relativistic average GAN loss: real_is_real=True for D, False for G (the roles swap)."""
    bce = F.binary_cross_entropy_with_logits
    d_real = real_logits - fake_logits.mean()
    d_fake = fake_logits - real_logits.mean()
    t = 1.0 if real_is_real else 0.0
    return (bce(d_real, torch.full_like(d_real, t)) + bce(d_fake, torch.full_like(d_fake, 1 - t))) / 2


# --------------------------------------------------------------------------- the family

class SRFamily:
    name = "sr"
    watch_loss = "l1"  # the loop's finite-divergence guard watches it (loop.LossSpikeGuard)
    uses_text = False
    defaults = {"lr": {"fast": 1e-3, "quality": 4e-4, "gan": 1e-4}, "lr_d": 1e-4, "betas": (0.9, 0.99)}

    @classmethod
    def build_dataset(cls, cfg):
        """HR training patches: every bundled photo but the held-out ones, plus `user_folder` (or cfg.data when
        it names a folder). Patch size = cfg.resolution (default 96)."""
        import os

        from wordcanvas.sr.data import SRPatches, SRTrainingPatches

        s = settings_from(SRSettings, cfg.model)
        folder = s.user_folder or (cfg.data if os.path.isdir(str(cfg.data)) else None)
        patches = SRPatches(scale=s.scale, patch=int(cfg.resolution or 96), degradations=tuple(s.degradations),
                            seed=cfg.seed, user_folder=folder, length=s.patches, photo_scale=tuple(s.photo_scale),
                            **cfg.data_options)
        return SRTrainingPatches(patches)

    def __init__(self, cfg, dataset, encoder, device: torch.device, dist):
        self.cfg, self.device, self.dist, self.dataset = cfg, device, dist, dataset
        self.s = s = settings_from(SRSettings, cfg.model)
        if s.loss not in ("l1", "mse", "gan"):
            raise ValueError(f"loss must be 'l1', 'mse' or 'gan', got {s.loss!r}")
        if s.preset not in ("fast", "quality"):
            raise ValueError(f"preset must be 'fast' or 'quality', got {s.preset!r}")
        if s.loss == "gan" and not s.init:
            raise ValueError("loss 'gan' fine-tunes a PSNR-trained network: give it with model.init=FOLDER")
        self.generator = sr_preset(s.preset, s.scale)
        if s.init:  # weights only; the preset must match (a resumed run then loads its checkpoint over this)
            start = load_sr_model(s.init)
            if (type(start) is not type(self.generator)
                    or replace(start.config, scale=s.scale) != self.generator.config):
                raise ValueError(f"{s.init} holds a {type(start).__name__} {start.config}, not the "
                                 f"'{s.preset}' x{s.scale} network (or another scale of it)")
            # another scale of the same network (EDSR starts x3/x4 from x2): every tensor of the same name and
            # shape is taken, the scale-specific rest (an upsampling stage, the sub-pixel layer) starts fresh
            mine = self.generator.state_dict()
            mine.update({k: v for k, v in start.state_dict().items() if k in mine and mine[k].shape == v.shape})
            self.generator.load_state_dict(mine)
        self.generator = self.generator.to(device, memory_format=torch.channels_last)
        self.teacher = self._load_teacher(s)
        self.generator_ema = copy.deepcopy(self.generator).eval().requires_grad_(False) if cfg.ema_kimg > 0 else None
        default_lr = self.defaults["lr"]["gan" if s.loss == "gan" else s.preset]
        betas = cfg.betas or self.defaults["betas"]
        self.opt = torch.optim.Adam(self.generator.parameters(), lr=cfg.lr or default_lr, betas=betas)
        self.discriminator = self.perceptual = self.opt_d = None
        if s.loss == "gan":
            self.perceptual = PerceptualLoss(s.perceptual_layers).to(device, memory_format=torch.channels_last)
            self.discriminator = PatchDiscriminator(s.disc_width).to(device, memory_format=torch.channels_last)
            self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=cfg.lr_d or self.defaults["lr_d"],
                                          betas=betas)

    def _load_teacher(self, s: SRSettings) -> nn.Module | None:
        """The frozen network to distil (not part of the checkpoint: a resumed run loads it again by name)."""
        if s.teacher is None:
            if s.teacher_ensemble:
                raise ValueError("model.teacher_ensemble distils a teacher's self-ensemble; set model.teacher too")
            return None
        if s.loss == "gan":
            raise ValueError("model.teacher distils into the PSNR stage (loss 'l1' or 'mse'); it cannot be combined with loss 'gan'")
        if not 0 < s.teacher_weight <= 1:
            raise ValueError(f"model.teacher_weight is the teacher's share of the target, in (0, 1]; got "
                             f"{s.teacher_weight}")
        from wordcanvas.sr.upscale import Upscaler

        teacher = Upscaler.from_name(s.teacher, s.scale).model if s.teacher != "bicubic" else None
        if teacher is None or int(teacher.scale) != s.scale:
            raise ValueError(f"model.teacher {s.teacher!r} is not a x{s.scale} network"
                             + (f" (it is x{teacher.scale})" if teacher is not None else ""))
        return teacher.to(self.device, memory_format=torch.channels_last).eval().requires_grad_(False)

    def _teach(self, lr: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The teacher's output on lr; with teacher_ensemble, on each patch turned by a random one of the 8
        symmetries of the square and turned back: what the student fits over many steps is then the teacher's
        self-ensemble (EDSR+), at the cost of one teacher pass."""
        if not self.s.teacher_ensemble:
            return self.teacher(lr)
        from wordcanvas.sr.upscale import square_symmetry

        turns = torch.randint(0, 8, (lr.shape[0],), generator=generator).tolist()
        turned = torch.stack([square_symmetry(x, g) for x, g in zip(lr, turns)])
        taught = self.teacher(turned.contiguous(memory_format=torch.channels_last))
        return torch.stack([square_symmetry(y, g, inverse=True) for y, g in zip(taught, turns)])

    # the loop's view of the family
    modules = property(lambda self: {"generator": self.generator,
                                     **({"generator_ema": self.generator_ema} if self.generator_ema is not None else {}),
                                     **({"discriminator": self.discriminator} if self.discriminator is not None else {})})
    optimizers = property(lambda self: {"generator": self.opt, **({"discriminator": self.opt_d} if self.opt_d else {})})
    ema_pairs = property(lambda self: [(self.generator, self.generator_ema)] if self.generator_ema is not None else [])
    inference_generator = property(lambda self: self.generator_ema if self.generator_ema is not None else self.generator)

    def export_meta(self) -> dict:
        s = self.s
        return {"family": self.name, "generator": "generator_ema" if self.generator_ema is not None else "generator",
                "encoder": None, "resolution": self.cfg.resolution, "model_type": self.generator.model_type,
                "preset": s.preset, "scale": s.scale, "loss": s.loss}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    # training
    def _set_lr(self, step: int) -> None:
        """The multi-step schedule as a factor on each group's lr, so the loop's own changes (its divergence guard
        lowers learning rates) compose with it; the factor is kept in the group (saved with the optimizer)."""
        factor = 0.5 ** sum(step >= int(m) for m in self.s.lr_halve_at)
        for opt in self.optimizers.values():
            for g in opt.param_groups:
                g["lr"] *= factor / g.get("schedule_factor", 1.0)
                g["schedule_factor"] = factor

    def step(self, batch: dict, step: int) -> dict[str, torch.Tensor]:
        from wordcanvas.sr.data import degrade_batch

        s = self.s
        self._set_lr(step)
        hr = batch["image"]
        generator = step_generator(self.cfg.seed, step, self.dist.rank, torch.device("cpu"))
        lr = degrade_batch(hr, s.scale, tuple(s.degradations), generator)
        hr, lr = (t.contiguous(memory_format=torch.channels_last) for t in (hr, lr))
        sr = self.generator(lr)
        l1 = F.l1_loss(sr, hr)
        stats = {"l1": l1.detach()}
        fit_hr = F.mse_loss(sr, hr) if s.loss == "mse" else l1  # the L1 terms double as logged stats
        if self.teacher is not None:
            with torch.no_grad():
                taught = self._teach(lr, generator).clamp(-1, 1)
            l1_teacher = F.l1_loss(sr, taught)
            stats["l1_teacher"] = l1_teacher.detach()
            fit_teacher = F.mse_loss(sr, taught) if s.loss == "mse" else l1_teacher
            loss = (1 - s.teacher_weight) * fit_hr + s.teacher_weight * fit_teacher
        elif s.loss in ("l1", "mse"):
            loss = fit_hr
        else:
            self.discriminator.requires_grad_(False)
            lp = self.perceptual(sr, hr)
            real_logits = self.discriminator(hr).detach()
            lg_adv = relativistic_loss(real_logits, self.discriminator(sr), real_is_real=False)
            loss = s.pixel_weight * l1 + s.perceptual_weight * lp + s.adv_weight * lg_adv
            stats.update(loss_perceptual=lp.detach(), loss_g_adv=lg_adv.detach())
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.dist.sync_grads([self.generator])
        self.opt.step()
        stats["loss"] = loss.detach()
        if s.loss == "gan":
            self.discriminator.requires_grad_(True)
            ld = relativistic_loss(self.discriminator(hr), self.discriminator(sr.detach()), real_is_real=True)
            self.opt_d.zero_grad(set_to_none=True)
            ld.backward()
            self.dist.sync_grads([self.discriminator])
            self.opt_d.step()
            stats["loss_d"] = ld.detach()
        with torch.no_grad():  # the gain over plain bicubic upsampling, in dB on RGB (a progress signal)
            mse = lambda a: (a.float().clamp(-1, 1) - hr).pow(2).mean().clamp_min(1e-12)  # noqa: E731
            stats["psnr_gain_db"] = 10 * torch.log10(mse(bicubic_upsample(lr, s.scale)) / mse(sr.detach()))
        return stats

    # sample grids: one row per held-out photo (a centre crop): LR (nearest), bicubic, network, HR
    @staticmethod
    def _photo(prompt):
        from wordcanvas.sr.data import PHOTOS, load_photo

        name = getattr(prompt, "text", str(prompt))
        return load_photo(name if name in PHOTOS else "astronaut")

    def _crop_size(self, prompts) -> int:
        """One square crop for the whole grid: twice the patch size, or the smallest photo's side if less
        (chelsea is 300 px high), a multiple of the scale."""
        size = min([2 * int(self.cfg.resolution or 96)] + [min(self._photo(p).shape[:2]) for p in prompts])
        return size // self.s.scale * self.s.scale

    @torch.no_grad()
    def _columns(self, prompt, size: int) -> list[torch.Tensor]:
        from wordcanvas.sr.data import downscale

        net = self.inference_generator
        was_training = net.training
        net.eval()
        img = self._photo(prompt)
        y, x = (img.shape[0] - size) // 2, (img.shape[1] - size) // 2
        hr = torch.from_numpy(img[y:y + size, x:x + size].copy()).permute(2, 0, 1).float()[None].to(self.device) / 127.5 - 1
        lr = downscale(hr, self.s.scale)
        cols = [F.interpolate(lr, scale_factor=self.s.scale, mode="nearest"),
                bicubic_upsample(lr, self.s.scale).clamp(-1, 1), net(lr).float().clamp(-1, 1), hr]
        net.train(was_training)
        return cols

    def generate(self, prompts, seed: int = 0) -> torch.Tensor:
        size = self._crop_size(prompts)
        return torch.cat([self._columns(p, size)[2] for p in prompts])

    def sample(self, prompts, n: int, seed: int = 0) -> torch.Tensor:
        rows, size = [], self._crop_size(prompts)
        for p in prompts:
            cols = self._columns(p, size)
            rows += (cols + [cols[2]] * n)[:n]
        return torch.cat(rows)
