"""The AdaIN decoder as a model family of the training loop (family "style").

A step: content crops (the loop's batch) and style crops (drawn from a fixed bank by the step's
generator) go through the frozen VGG16; the decoder is trained either to
  - reconstruct the content from its relu4_1 features (pixel MSE; the first `recon_steps` steps, a
    cheap warm-up that teaches the decoder to invert VGG before styles come in), or
  - turn t = AdaIN(content relu4_1, style relu4_1) into an image whose relu4_1 features are t
    (content loss) and whose channel means/stds at relu1_2, relu2_2, relu3_3, relu4_3 match the
    style's (style loss, weight `style_weight`), as in Huang & Belongie 2017; optionally plus an
    identity term (`identity_weight`): the undecorated content features must decode to the content.
The style bank's VGG statistics are computed once per crop and cached (they are fixed).
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from wordcanvas.models.style import (StyleConfig, StyleEncoder, StyleTransferModel, adain, channel_stats,
                                     content_loss, meanstd_style_loss)
from wordcanvas.train.gan_step import settings_from, step_generator


@dataclass
class StyleSettings:
    decoder: dict = field(default_factory=lambda: {"width": 0.5, "skips": ["relu3_1", "relu2_1"]})  # StyleConfig
    style_weight: float = 6.0               # weight of the mean/std style loss against the content loss
    recon_steps: int = 100                  # warm-up steps of plain pixel reconstruction (no style)
    identity_weight: float = 50.0           # after warm-up: weight of pixel MSE(decoder(content features), content),
                                            # which keeps alpha=0 a faithful reconstruction
    crops_per_style: int = 6                # fixed crops cut from each style image for the bank
    style_folder: str | None = None         # a folder of your own style images instead of the built-in ones
    init: str | None = None                 # decoder to start from: a model folder or training run ("shipped" = the
                                            # bundled one), e.g. to fine-tune it with another style weight


class StyleFamily:
    name = "style"
    uses_text = False
    defaults = {"lr": 5e-4, "betas": (0.9, 0.999)}

    @classmethod
    def build_dataset(cls, cfg):
        """Content crops: the training photos (or cfg.data when it is a folder) plus toy faces."""
        from wordcanvas.style.data import ContentCrops

        folder = cfg.data if os.path.isdir(str(cfg.data)) else None
        return ContentCrops(resolution=int(cfg.resolution or 128), seed=cfg.seed, folder=folder, **cfg.data_options)

    def __init__(self, cfg, dataset, encoder, device: torch.device, dist):
        from wordcanvas.style.data import style_bank, training_style_names

        self.cfg, self.device, self.dist, self.dataset = cfg, device, dist, dataset
        self.s = s = settings_from(StyleSettings, cfg.model)
        self.model_config = StyleConfig(**s.decoder)
        # channels-last convolutions run ~1.4x faster on CPU (oneDNN) and no slower on CUDA
        self.decoder = StyleTransferModel(self.model_config)
        if s.init:  # weights only (a resumed run then loads its checkpoint over these)
            from wordcanvas.style.transfer import DEFAULT_MODEL, resolve_model_folder

            start = StyleTransferModel.from_pretrained(resolve_model_folder(DEFAULT_MODEL if s.init == "shipped" else s.init))
            if start.config != self.model_config:
                raise ValueError(f"{s.init} holds a decoder {start.config}, not the configured {self.model_config}")
            self.decoder.load_state_dict(start.state_dict())
        self.decoder = self.decoder.to(device, memory_format=torch.channels_last)
        self.decoder_ema = copy.deepcopy(self.decoder).eval().requires_grad_(False) if cfg.ema_kimg > 0 else None
        mc = self.model_config
        self.encoder = StyleEncoder(tuple(dict.fromkeys((*mc.feature_layers, *mc.style_layers)))).to(
            device, memory_format=torch.channels_last)
        self.opt = torch.optim.Adam(self.decoder.parameters(), lr=cfg.lr or self.defaults["lr"],
                                    betas=cfg.betas or self.defaults["betas"])
        self.bank, self.bank_names = style_bank(training_style_names(), cfg.resolution, s.crops_per_style,
                                                cfg.seed, folder=s.style_folder)
        self._stats: dict[int, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}

    # the loop's view of the family
    modules = property(lambda self: {"decoder": self.decoder, **({"decoder_ema": self.decoder_ema}
                                                                  if self.decoder_ema is not None else {})})
    optimizers = property(lambda self: {"decoder": self.opt})
    ema_pairs = property(lambda self: [(self.decoder, self.decoder_ema)] if self.decoder_ema is not None else [])
    inference_generator = property(lambda self: self.decoder_ema if self.decoder_ema is not None else self.decoder)

    def export_meta(self) -> dict:
        return {"family": self.name, "generator": "decoder_ema" if self.decoder_ema is not None else "decoder",
                "encoder": None, "resolution": self.cfg.resolution, "model_type": StyleTransferModel.model_type}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    # style statistics
    def bank_images(self, idx: torch.Tensor) -> torch.Tensor:
        images = self.bank[idx.cpu()].to(self.device).float() / 127.5 - 1
        return images.contiguous(memory_format=torch.channels_last)

    @torch.no_grad()
    def style_stats(self, idx: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Channel (mean, std) of bank crops at the encoder layer and the style layers, cached per crop."""
        missing = sorted({int(i) for i in idx} - set(self._stats))
        if missing:
            feats = self.encoder(self.bank_images(torch.tensor(missing)))
            for j, k in enumerate(missing):
                self._stats[k] = {n: tuple(t[j:j + 1] for t in channel_stats(f)) for n, f in feats.items()}
        names = self._stats[int(idx[0])].keys()
        return {n: tuple(torch.cat([self._stats[int(i)][n][m] for i in idx]) for m in (0, 1)) for n in names}

    # training
    def step(self, batch: dict, step: int) -> dict[str, torch.Tensor]:
        s, mc, layer = self.s, self.model_config, self.model_config.encoder_layer
        content = batch["image"].contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            fc = self.encoder(content, mc.feature_layers)
        if step < s.recon_steps:
            loss = F.mse_loss(self.decoder(fc), content)
            stats = {"loss": loss.detach(), "loss_recon": loss.detach()}
        else:
            g = step_generator(self.cfg.seed, step, self.dist.rank, torch.device("cpu"))
            targets = self.style_stats(torch.randint(len(self.bank), (content.shape[0],), generator=g))
            t = {n: adain(f, *targets[n]) for n, f in fc.items()}
            feats = self.encoder(self.decoder(t), (layer, *mc.style_layers))
            lc = content_loss(feats[layer], t[layer])
            ls = meanstd_style_loss(feats, {n: targets[n] for n in mc.style_layers})
            loss = lc + s.style_weight * ls
            stats = {"loss_content": lc.detach(), "loss_style": ls.detach()}
            if s.identity_weight > 0:
                li = F.mse_loss(self.decoder(fc), content)
                loss = loss + s.identity_weight * li
                stats["loss_identity"] = li.detach()
            stats["loss"] = loss.detach()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.dist.sync_grads([self.decoder])
        self.opt.step()
        return stats

    # sample grids: row = a content crop named by the prompt, columns = fixed style crops
    def _content_for(self, text: str) -> torch.Tensor:
        ds = self.dataset
        if text.startswith("toy-face-") and getattr(ds, "_faces", None) is not None:
            img = ds._faces.image(int(text.rsplit("-", 1)[1]))
        else:
            img = ds.photos.get(text, next(iter(ds.photos.values())))
        return F.interpolate(img[None], size=(self.cfg.resolution,) * 2, mode="bilinear", antialias=True,
                             align_corners=False).clamp(-1, 1).to(self.device)

    @torch.no_grad()
    def stylize(self, content: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        dec = self.inference_generator
        was_training = dec.training
        dec.eval()
        targets = self.style_stats(idx)
        t = {n: adain(f, *targets[n]) for n, f in self.encoder(content, self.model_config.feature_layers).items()}
        out = dec(t).clamp(-1, 1)
        dec.train(was_training)
        return out

    def generate(self, prompts, seed: int = 0) -> torch.Tensor:
        texts = [getattr(p, "text", str(p)) for p in prompts]
        content = torch.cat([self._content_for(t) for t in texts])
        return self.stylize(content, torch.full((len(texts),), seed % len(self.bank)))

    def sample(self, prompts, n: int, seed: int = 0) -> torch.Tensor:
        picks = torch.linspace(0, len(self.bank) - 1, n).long()  # n crops spread over the style sources
        rows = []
        for p in prompts:
            c = self._content_for(getattr(p, "text", str(p)))
            rows.append(self.stylize(c.expand(n, -1, -1, -1), picks))
        return torch.cat(rows)
