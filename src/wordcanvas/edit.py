"""Text-guided editing, reconstruction and latent interpolation for trained models.

    editor = Editor.from_pretrained("runs/faces_vae")            # a VAE or text-GAN run / model folder
    edited = editor.edit(images, "a smiling woman with long hair", source="a woman with long hair")
    again = editor.reconstruct(images, "a woman with long hair")

VAE: encode the image with its caption, z = E[q(z | x, source)], decode z with the edited caption
(the latent keeps what the caption does not say: pose, lighting, clothing...).
GAN: invert the image into the generator's latent under the source caption (Adam on z with a pixel
+ LPIPS loss for a few hundred steps, from the best of several random starts), then regenerate
with the edited caption. With `offset_weight` the inversion also fits an offset to the caption's
pooled embedding (L2-penalised by that weight), which holds what neither z nor the caption can
(attributes the caption leaves out, the exact look); the edit then adds the same offset to the
target caption's embedding, so only the caption's change moves the image (an edit direction in
text-embedding space, as null-text inversion fits the conditioning rather than the noise alone).
With `style_weight` the inversion also fits per-layer offsets to every conditional layer's scale and
shift (`styled`; W+-like), kept in the edit: closer reconstructions, at the same caption change.
With `local_blend` the edit is put back onto the source image: the edited pixels where the caption
change acts (its mean effect over many latents, `change_map`), the source's own elsewhere.
With strength="auto" (a GAN exported with its discriminator) the run's own discriminator chooses,
per image, among a ladder of strengths and local blends (`edit_ladder`): the candidate that changes
the source least among those it judges to match the edited caption well enough
(`pick_least_change`), as a generate-then-rerank step with the model's own image-text judge. The
change is LPIPS plus the distance the judge itself sees (1 - cosine of the two images in its
contrastive image space): LPIPS alone misses a changed attribute that moves few pixels. Every
candidate carries AUTO_RESIDUAL of the detail the inversion lost (`with_residual`), which keeps more of
the source at equal success (docs/edit_toy-faces, "Residual detail transfer").
GAN editing defaults (GAN_EDIT_DEFAULTS): offset weight 0.1, style weight 0.001 (where the generator
has conditional affine layers), LPIPS weight 0.3, strength 1.5, the best trade-off measured on 504
toy-face edits (docs/edit_toy-faces); style_weight=None leaves the styles out, offset_weight=None
inverts z only.

Without a source caption the editor predicts one with the dataset's probe classifiers and caption
grammar (built-in datasets only: the dataset is read from the run's config.json or given).
Images are float NCHW in [-1, 1] at the model's resolution (`load_image` brings a file there).
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from wordcanvas.text.base import TextEmbedding

EDITABLE_FAMILIES = ("vae", "gan")
# GAN inversion and edit settings when the caller gives none (benchmarks/edit.py measured them)
GAN_EDIT_DEFAULTS = {"offset_weight": 0.1, "style_weight": 0.001, "lpips_weight": 0.3, "strength": 1.5}
# strength="auto": the candidates the judge chooses among, and how much of each image's range of
# judged match a candidate must reach, and the share of the inversion's residual each candidate
# carries (docs/edit_toy-faces, "Automatic strength" and "Residual detail transfer")
AUTO_STRENGTHS = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
AUTO_BLENDS = (1.0, 0.75, 0.5, 0.35, None)
AUTO_SHARE = 0.6
AUTO_RESIDUAL = 0.25


def pick_least_change(match: torch.Tensor, change: torch.Tensor, share: float = AUTO_SHARE) -> torch.Tensor:
    """For (candidates, images) tables of judged match to the target and change from the source,
    each image's candidate with the least change among those whose match reaches `share` of the way
    from that image's lowest match to its highest (0: the least change overall; 1: the best match).
    The bar is relative per image because the judge's scale differs between edits (a hat moves it
    more than lipstick)."""
    if not 0 <= share <= 1:
        raise ValueError(f"share must be in [0, 1], got {share}")
    if match.shape != change.shape or match.ndim != 2:
        raise ValueError(f"match {tuple(match.shape)} and change {tuple(change.shape)} must be one "
                         "(candidates, images) shape")
    low, high = match.amin(0), match.amax(0)
    good = match >= low + share * (high - low)
    return torch.where(good, change, torch.inf).argmin(0)


def check_residual(residual: float) -> float:
    """The share of the inversion's residual to add back (Editor.with_residual), refused outside [0, 1]."""
    if not 0.0 <= residual <= 1.0:  # also refuses NaN
        raise ValueError(f"residual must be in [0, 1], got {residual}")
    return residual


def blend_edit(images: torch.Tensor, edited: torch.Tensor, change: torch.Tensor, threshold: float = 0.35
               ) -> torch.Tensor:
    """Local blending: the edited image where the caption change acts, the source image elsewhere,
    so what the edit should leave alone keeps the source's own pixels rather than the model's
    redrawing of them (as Prompt-to-Prompt and Blended Diffusion keep the region an edit does not
    touch). `change` is Editor.change_map's (N, 1, H, W) map in [0, 1]; the mask is change /
    threshold clipped to [0, 1], so a higher threshold keeps more of the source."""
    if threshold <= 0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    if images.shape != edited.shape or change.shape != (len(images), 1, *images.shape[2:]):
        raise ValueError(f"shapes do not fit: images {tuple(images.shape)}, edited {tuple(edited.shape)}, "
                         f"change {tuple(change.shape)}")
    return torch.lerp(images, edited, (change / threshold).clamp(0, 1)).clamp(-1, 1)


def load_image(path: str | os.PathLike, channels: int, resolution: int) -> torch.Tensor:
    """An image file as (1, channels, resolution, resolution) in [-1, 1] (centre-cropped square,
    antialiased resize, grey <-> RGB as the model needs). Any image mode and EXIF rotation are
    handled; unreadable files and decompression bombs raise utils.images.ImageLoadError."""
    from wordcanvas.utils.images import open_image, to_rgb

    img = to_rgb(open_image(path))
    img = img.convert("L") if channels == 1 else img
    w, h = img.size
    side = min(w, h)
    img = img.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
    x = torch.from_numpy(np.asarray(img, dtype=np.float32)).reshape(side, side, -1).permute(2, 0, 1)[None] / 127.5 - 1
    if side != resolution:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)
    return x.clamp(-1, 1)


def run_dataset(folder: str | os.PathLike) -> str | None:
    """The dataset a model folder was trained on, from its run's config.json (final/ or a checkpoint)."""
    folder = Path(folder)
    for candidate in (folder / "config.json", folder.parent / "config.json", folder.parent.parent / "config.json"):
        if candidate.exists():
            data = json.loads(candidate.read_text())
            if "family" in data and "data" in data:  # a TrainConfig, not a model's config.json
                return data["data"]
    manifest = folder / "manifest.json"
    if manifest.exists():
        return json.loads(manifest.read_text()).get("config", {}).get("data")
    from wordcanvas.models.defaults import SHIPPED_MODELS, WEIGHTS_DIR

    for dataset, name in SHIPPED_MODELS.items():  # a shipped model is named after its dataset
        if folder.resolve() == (WEIGHTS_DIR / name).resolve():
            return dataset
    return None


def predict_captions(images: torch.Tensor, dataset: str, seed: int = 0) -> list[str]:
    """Captions for images of a built-in dataset, from its probe's predictions and caption grammar."""
    from wordcanvas.metrics.probes import load_probe

    try:
        probe = load_probe(dataset)
    except FileNotFoundError:
        raise ValueError(f"no probe to describe images of {dataset!r}: pass the source caption") from None
    pred = probe.predict(images)
    if dataset == "fashion-mnist":
        from wordcanvas.data.fashion_mnist import train_captions

        return [train_captions(int(k))[0] for k in pred["class"]]
    if dataset == "toy-faces":
        rng = np.random.default_rng(seed)
        return [face_caption({k: int(v[i]) for k, v in pred.items()}, rng) for i in range(len(images))]
    raise ValueError(f"cannot write captions for {dataset!r} images: pass the source caption")


def face_caption(attrs: dict[str, int], rng: np.random.Generator, also: tuple[str, ...] = ()) -> str:
    """A training-style caption stating gender, age, hair, every accessory / feature present, and
    the attributes named in `also` (whatever their value)."""
    from wordcanvas.data.grammar import BALD, caption, mentionable

    attrs = dict(attrs)
    if attrs.get("hair_style") == BALD:
        attrs["hair_color"], attrs["hat"] = -1, 0
    present = [k for k in ("hat", "eyeglasses", "smiling", "beard", "lipstick", "earrings") if attrs.get(k) == 1]
    wanted = dict.fromkeys(["gender", "age", "hair_color", "hair_style", *present, *also])
    must = [k for k in wanted if k in mentionable(attrs)]
    return caption(attrs, rng, "train", must_mention=must, low=len(must), high=len(must))[0]


def style_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The generator's conditional affine layers (models.layers.Affine: a per-channel scale and shift
    predicted from noise and text), in a fixed order: what per-layer style offsets move."""
    from wordcanvas.models.layers import Affine

    return [m for m in model.modules() if isinstance(m, Affine)]


@contextmanager
def styled(model: torch.nn.Module, styles: list[torch.Tensor] | None):
    """Within the block, each conditional affine layer's predicted (scale, shift) gets its offset from
    `styles` (one (B, 2 x channels) tensor per `style_layers` entry): a per-image, per-layer latent
    beside z, as StyleGAN inversion fits W+ rather than one w. Hooks, so any generator built from
    those layers takes part without a change to its forward."""
    if styles is None:
        yield
        return
    layers = style_layers(model)
    if len(styles) != len(layers):
        raise ValueError(f"{len(styles)} style offsets for a generator with {len(layers)} affine layers")
    handles = [layer.mlp.register_forward_hook(lambda _m, _in, out, offset=offset: out + offset)
               for layer, offset in zip(layers, styles)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class Editor:
    """Editing and reconstruction with a trained VAE or text-conditioned GAN (see module doc)."""

    def __init__(self, t2i, dataset: str | None = None, lpips_net: str = "alex"):
        family = t2i.family
        if family not in EDITABLE_FAMILIES:
            raise ValueError(f"editing needs a VAE or a text-conditioned GAN; this model is a {family!r}")
        self.t2i, self.family, self.dataset = t2i, family, dataset
        self.lpips_net = lpips_net
        self._lpips = self._judge = None

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device = "cpu", encoder=None,
                        dataset: str | None = None) -> "Editor":
        from wordcanvas.generate import TextToImage

        t2i = TextToImage.from_pretrained(path, device=device, encoder=encoder)
        return cls(t2i, dataset or run_dataset(t2i.meta["path"]))

    @property
    def model(self):
        return self.t2i.generator

    @property
    def channels(self) -> int:
        return self.model.config.channels

    @property
    def resolution(self) -> int:
        return self.model.config.resolution

    def text_embeddings(self, texts: str | list[str], n: int) -> TextEmbedding:
        """The model's embedding of one caption per image (a single caption is repeated n times)."""
        texts = [texts] * n if isinstance(texts, str) else list(texts)
        if len(texts) != n:
            raise ValueError(f"{n} images but {len(texts)} captions")
        e = self.t2i.embed(texts)  # cloned: cached embeddings may be inference-mode tensors, unusable in autograd
        return TextEmbedding(e.tokens.clone(), e.mask.clone(), e.pooled.clone())

    def _check(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1:] != (self.channels, self.resolution, self.resolution):
            raise ValueError(f"images must be (N, {self.channels}, {self.resolution}, {self.resolution}) in [-1, 1], "
                             f"got {tuple(images.shape)}; load files with wordcanvas.edit.load_image")
        return images.float().to(self.t2i.device)

    def source_captions(self, images: torch.Tensor, source: str | list[str] | None, seed: int = 0) -> list[str]:
        if source is not None:
            return [source] * len(images) if isinstance(source, str) else list(source)
        if self.dataset is None:
            raise ValueError("no source caption given, and the model's dataset is unknown, so none can be "
                             "predicted: pass the source caption (--source-caption)")
        return predict_captions(images.cpu(), self.dataset, seed)

    # --- VAE ------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, images: torch.Tensor, captions: str | list[str]) -> torch.Tensor:
        """VAE posterior means (N, z_dim) of images under their captions, in the prior's standard
        coordinates (the model's generator input), so decoding them under another caption moves the
        latent with the prior."""
        if self.family != "vae":
            raise ValueError("encode needs a VAE; a GAN is inverted with invert()")
        images = self._check(images)
        text = self.text_embeddings(captions, len(images))
        return self.model.to_noise(self.model.encode(images, text)[0], text)

    # --- GAN inversion -------------------------------------------------------------------------
    def lpips(self):
        if self._lpips is None:
            from wordcanvas.metrics.lpips import LPIPS

            self._lpips = LPIPS(self.lpips_net).to(self.t2i.device)
        return self._lpips

    def lpips_distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Per-image LPIPS; small images are upsampled to 64 px, as AlexNet's trunk needs room to see anything."""
        size = max(64, a.shape[-1])
        up = lambda x: x if x.shape[-1] == size else F.interpolate(x, size=(size, size), mode="bilinear",  # noqa: E731
                                                                   align_corners=False)
        return self.lpips()(up(a), up(b)).flatten()

    def _inversion_loss(self, fake: torch.Tensor, target: torch.Tensor, lpips_weight: float) -> torch.Tensor:
        """Per-image pixel MSE + lpips_weight * LPIPS."""
        loss = (fake - target).square().flatten(1).mean(1)
        if lpips_weight > 0:
            loss = loss + lpips_weight * self.lpips_distance(fake, target)
        return loss

    def invert(self, images: torch.Tensor, captions: str | list[str], steps: int = 300, lr: float = 0.05,
               lpips_weight: float = 1.0, candidates: int = 16, seed: int = 0, prior_weight: float = 1e-3,
               offset_weight: float | None = None, style_weight: float | None = None) -> torch.Tensor:
        """GAN latents (N, z_dim) whose images under `captions` match `images`: the best of `candidates`
        random starts, then Adam on z for `steps` steps (pixel MSE + LPIPS, a weak pull to the prior).
        With `offset_weight`, returns (latents, pooled-embedding offsets) fitted together (module doc);
        with `style_weight` as well, (latents, offsets, per-layer style offsets), the last L2-penalised
        by that weight (offsets to every conditional affine layer's scale and shift, `styled`)."""
        if self.family != "gan":
            raise ValueError("invert needs a GAN; a VAE encodes with encode()")
        layers = style_layers(self.model) if style_weight is not None else []
        if style_weight is not None:
            if offset_weight is None:
                raise ValueError("style_weight needs offset_weight (the styles ride on the fitted caption offset)")
            if style_weight < 0:
                raise ValueError(f"style_weight must be >= 0, got {style_weight}")
            if not layers:
                raise ValueError(f"per-layer style offsets need a generator with conditional affine layers; this "
                                 f"one is a {type(self.model).__name__}: leave style_weight unset")
        G, images = self.model, self._check(images)
        n, text = len(images), self.text_embeddings(captions, len(images))
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            starts = G.sample_noise(n * candidates, g, device="cpu").to(images.device).view(candidates, n, -1)
            losses = torch.stack([self._inversion_loss(G(z, text), images, lpips_weight) for z in starts])
            z = starts[losses.argmin(0), torch.arange(n)].clone()
        z.requires_grad_(True)
        groups = [{"params": [z], "lr": lr}]
        offset = None
        if offset_weight is not None:
            if offset_weight < 0:
                raise ValueError(f"offset_weight must be >= 0, got {offset_weight}")
            # the pooled embedding has unit scale (z: one per dimension): a smaller step for it
            offset = torch.zeros_like(text.pooled, requires_grad=True)
            groups.append({"params": [offset], "lr": lr * 0.1})
        styles = None
        if style_weight is not None:
            styles = [torch.zeros(n, layer.mlp[-1].out_features, device=images.device, requires_grad=True)
                      for layer in layers]
            groups.append({"params": styles, "lr": lr * 0.1})  # scale and shift are O(1), like the offset
        opt = torch.optim.Adam(groups)
        for _ in range(steps):
            loss = (self._inversion_loss(self._generate(z, self._shifted(text, offset), styles), images, lpips_weight)
                    + prior_weight * z.square().mean(1))
            if offset is not None:
                loss = loss + offset_weight * offset.square().sum(1)
            if styles is not None:
                loss = loss + style_weight * sum(s.square().sum(1) for s in styles)
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()  # per-image losses: each latent gets its own gradient
            opt.step()
        if offset is None:
            return z.detach()
        return (z.detach(), offset.detach()) if styles is None else (z.detach(), offset.detach(),
                                                                     [s.detach() for s in styles])

    def _generate(self, z: torch.Tensor, text: TextEmbedding, styles: list[torch.Tensor] | None) -> torch.Tensor:
        with styled(self.model, styles):
            return self.model(z, text)

    @staticmethod
    def _shifted(text: TextEmbedding, offset: torch.Tensor | None) -> TextEmbedding:
        return text if offset is None else TextEmbedding(text.tokens, text.mask, text.pooled + offset)

    # --- the public verbs ----------------------------------------------------------------------
    def latents(self, images: torch.Tensor, captions: list[str], steps: int = 300, seed: int = 0, **inversion
                ) -> torch.Tensor:
        """VAE: posterior means in noise coordinates; GAN: inverted latents (with `offset_weight`, a
        (latents, pooled-embedding offsets) pair; with `style_weight` too, a triple ending with the
        per-layer style offsets)."""
        if self.family == "vae":
            for key in ("offset_weight", "style_weight"):
                if inversion.get(key) is not None:
                    raise ValueError(f"{key} is a GAN-inversion setting; a VAE encodes its images")
            return self.encode(images, captions)
        for key in ("offset_weight", "lpips_weight"):
            if key not in inversion:  # an explicit None (offset) or value is the caller's choice
                inversion[key] = GAN_EDIT_DEFAULTS[key]
        if "style_weight" not in inversion:  # styles ride on the offset, and need affine layers to move
            wanted = inversion["offset_weight"] is not None and style_layers(self.model)
            inversion["style_weight"] = GAN_EDIT_DEFAULTS["style_weight"] if wanted else None
        return self.invert(images, captions, steps=steps, seed=seed, **inversion)

    def _regenerate(self, latents, captions: str | list[str], n: int, source: list[str] | None = None,
                    strength: float = 1.0) -> torch.Tensor:
        z, offset, styles = (*latents, None)[:3] if isinstance(latents, tuple) else (latents, None, None)
        text = self.text_embeddings(captions, n)
        if strength != 1.0:  # pooled: source + strength x (target - source); the tokens are the target's
            base = self.text_embeddings(source, n).pooled
            text = TextEmbedding(text.tokens, text.mask, base + strength * (text.pooled - base))
        with torch.no_grad():
            return self._generate(z, self._shifted(text, offset), styles).float()

    def reconstruct(self, images: torch.Tensor, captions: str | list[str] | None = None, steps: int = 300,
                    seed: int = 0, **inversion) -> torch.Tensor:
        """The model's version of the images under their captions (VAE: posterior mean decoded;
        GAN: inverted latent regenerated)."""
        captions = self.source_captions(self._check(images), captions, seed)
        return self._regenerate(self.latents(images, captions, steps, seed, **inversion), captions, len(images))

    def edit(self, images: torch.Tensor, target: str | list[str], source: str | list[str] | None = None,
             steps: int = 300, seed: int = 0, strength: float | str | None = None, local_blend: float | None = None,
             residual: float | None = None, **inversion) -> torch.Tensor:
        """Images changed to match `target` caption(s): latents under the source caption(s), decoded
        with the target. `strength` scales the caption change in pooled-embedding space (1: the
        target's embedding; above 1: the change pushed further; default 1.5 for a GAN, 1 for a VAE).
        `local_blend` (a threshold, e.g. 0.2; None: off) keeps the source's pixels wherever the
        caption change does not act (blend_edit, change_map). strength="auto" (a GAN saved with its
        discriminator): per image, the least change its discriminator judges a good enough match
        (edit_ladder, pick_least_change). `residual` (0 to 1; 0: off) adds back that share of what the
        inversion could not reproduce, source minus its reconstruction (`with_residual`); by default
        AUTO_RESIDUAL with strength="auto", else 0. Deterministic for given inputs and seed."""
        images = self._check(images)
        if residual is not None:
            check_residual(residual)  # refuse before the inversion, not after it
        if strength == "auto":
            self.judge  # noqa: B018 (refuse before the inversion if there is none)
        source = self.source_captions(images, source, seed)
        return self.edit_latents(self.latents(images, source, steps, seed, **inversion), target, source, strength,
                                 local_blend=local_blend, images=images, seed=seed, residual=residual)

    @property
    def judge(self):
        """The GAN's discriminator, loaded from the model folder: how well an image matches a caption."""
        if self._judge is None:
            from wordcanvas.models.gan import Discriminator

            folder = Path(self.t2i.meta.get("path", "")) / self.t2i.meta.get("discriminator", "discriminator")
            if self.family != "gan" or not (folder / "config.json").exists():
                raise ValueError("strength='auto' needs a text-conditioned GAN saved with its discriminator (runs "
                                 "exported by this version, or any of their checkpoints); give a number instead")
            self._judge = Discriminator.from_pretrained(folder, map_location=str(self.t2i.device))
            self._judge.eval().requires_grad_(False)
        return self._judge

    @torch.no_grad()
    def match(self, images: torch.Tensor, target: str | list[str], source: str | list[str]) -> torch.Tensor:
        """(N,) how much better the judge finds each image matches `target` than `source`: the cosine
        gap in its image-text contrastive head where it has one, else the gap of its conditional logits."""
        n = len(images)
        return self._match_texts(images, self.text_embeddings(target, n), self.text_embeddings(source, n))

    def _match_texts(self, images: torch.Tensor, target: TextEmbedding, source: TextEmbedding,
                     features: torch.Tensor | None = None) -> torch.Tensor:
        d = self.judge
        features = d.features(images) if features is None else features
        if d.config.contrastive_dim > 0:
            return d.similarity(features, target.pooled).diagonal() - d.similarity(features, source.pooled).diagonal()
        return d.heads(features, target.pooled, text=target)[1] - d.heads(features, source.pooled, text=source)[1]

    def _judged_distance(self, features: torch.Tensor, source_features: torch.Tensor) -> torch.Tensor:
        """(N,) 1 - cosine between candidate and source in the judge's contrastive image space (what
        the judge sees as changed: attributes more than pixels); zeros without a contrastive head."""
        d = self.judge
        if d.config.contrastive_dim <= 0:
            return features.new_zeros(len(features))
        return 1 - (d.image_embedding(features) * d.image_embedding(source_features)).sum(1)

    @torch.no_grad()
    def edit_ladder(self, latents, target: str | list[str], source: list[str], images: torch.Tensor,
                    strengths=AUTO_STRENGTHS, blends=AUTO_BLENDS, seed: int = 0, residual: float = 0.0) -> dict:
        """Every (strength, local blend) candidate edit of the inverted images: {"settings": [(strength,
        blend)], "images": (C, N, ...), "match": (C, N) judged match to the target (`match`), "lpips":
        (C, N) LPIPS to the source, "change": (C, N) LPIPS plus the judge's distance to the source
        (`_judged_distance`)}. `pick_least_change` chooses among them by match and change. `residual`: as
        in `with_residual`, applied to every candidate before its blend."""
        images = self._check(images)
        lost = self.inversion_residual(latents, source, images) if check_residual(residual) else None
        texts = self.text_embeddings(target, len(images)), self.text_embeddings(source, len(images))  # once for all
        source_features = self.judge.features(images)
        settings, outs, match, lpips, judged = [], [], [], [], []
        for strength in strengths:
            edited = self.edit_latents(latents, target, source, strength)
            if lost is not None:
                edited = (edited + residual * lost).clamp(-1, 1)
            where = self.change_map(source, target, strength, seed=seed) if any(b is not None for b in blends) else None
            for blend in blends:
                y = edited if blend is None else blend_edit(images, edited, where, blend)
                features = self.judge.features(y)
                settings.append((strength, blend))
                outs.append(y)
                match.append(self._match_texts(y, *texts, features=features))
                lpips.append(self.lpips_distance(y, images))
                judged.append(self._judged_distance(features, source_features))
        lpips = torch.stack(lpips)
        return {"settings": settings, "images": torch.stack(outs), "match": torch.stack(match), "lpips": lpips,
                "change": lpips + torch.stack(judged)}

    @staticmethod
    def pick(ladder: dict, share: float = AUTO_SHARE) -> tuple[torch.Tensor, list[tuple[float, float | None]]]:
        """The images `pick_least_change` chooses from an `edit_ladder`, and each one's (strength, blend)."""
        chosen = pick_least_change(ladder["match"], ladder["change"], share)
        images = ladder["images"][chosen, torch.arange(len(chosen))]
        return images, [ladder["settings"][i] for i in chosen.tolist()]

    def _strength(self, strength: float | None) -> float:
        """The caller's edit strength, or the family's default (GAN 1.5, VAE 1)."""
        if strength is not None:
            return strength
        return GAN_EDIT_DEFAULTS["strength"] if self.family == "gan" else 1.0

    def edit_latents(self, latents, target: str | list[str], source: list[str], strength: float | str | None = None,
                     local_blend: float | None = None, images: torch.Tensor | None = None, seed: int = 0,
                     residual: float | None = None) -> torch.Tensor:
        """The second half of `edit`, for latents from `latents(images, source)`: one inversion can
        serve several targets, strengths or blends (a local blend and strength="auto" need the source
        `images`)."""
        if residual is None:
            residual = AUTO_RESIDUAL if strength == "auto" else 0.0
        if strength == "auto":
            if local_blend is not None:
                raise ValueError("strength='auto' chooses the local blend itself; leave local_blend unset")
            if images is None:
                raise ValueError("strength='auto' needs the source images")
            return self.pick(self.edit_ladder(latents, target, source, images, seed=seed, residual=residual))[0]
        strength = self._strength(strength)
        z = latents[0] if isinstance(latents, tuple) else latents
        edited = self._regenerate(latents, target, len(z), source, strength)
        if residual:
            if images is None:
                raise ValueError("a residual needs the source images")
            edited = self.with_residual(edited, latents, source, images, residual)
        if local_blend is None:
            return edited
        if images is None:
            raise ValueError("a local blend needs the source images")
        return blend_edit(self._check(images), edited, self.change_map(source, target, strength, seed=seed),
                          local_blend)

    @torch.no_grad()
    def inversion_residual(self, latents, source: list[str], images: torch.Tensor) -> torch.Tensor:
        """Source images minus their reconstruction from `latents`: the detail the inversion lost."""
        z = latents[0] if isinstance(latents, tuple) else latents
        return self._check(images).to(z.device) - self._regenerate(latents, source, len(z))

    def with_residual(self, edited: torch.Tensor, latents, source: list[str], images: torch.Tensor,
                      residual: float = 1.0) -> torch.Tensor:
        """Detail transfer: edited + residual x (source - reconstruction), clamped. With residual 1 an edit
        that changes nothing returns the source exactly; the edit's own change rides on top (the residual
        idea of high-fidelity GAN inversion, without a learned alignment)."""
        check_residual(residual)
        return (edited + residual * self.inversion_residual(latents, source, images)).clamp(-1, 1)

    @torch.no_grad()
    def change_map(self, source: str | list[str], target: str | list[str], strength: float | None = None,
                   samples: int = 64, seed: int = 0) -> torch.Tensor:
        """Where a caption change acts, (N, 1, H, W) in [0, 1]: the mean signed change
        G(z, target) - G(z, source) over `samples` prior draws of z (the same draws for every pair),
        channel-mean absolute value, smoothed and divided by its maximum. Changes the caption causes
        whatever the latent (a hat's region) survive the mean; changes that differ from latent to
        latent (a background's random shift) cancel, as Prompt-to-Prompt localises a word by its
        attention rather than by one sample's difference."""
        from wordcanvas.utils.filters import gaussian_blur

        sources = [source] if isinstance(source, str) else list(source)
        targets = [target] * len(sources) if isinstance(target, str) else list(target)
        if len(targets) != len(sources):
            raise ValueError(f"{len(sources)} source captions but {len(targets)} targets")
        strength = self._strength(strength)
        z = self.model.sample_noise(samples, torch.Generator().manual_seed(seed), device="cpu").to(self.t2i.device)
        maps, done = [], {}
        for pair in zip(sources, targets):
            if pair not in done:
                s, t = self.text_embeddings(pair[0], samples), self.text_embeddings(pair[1], samples)
                t = TextEmbedding(t.tokens, t.mask, s.pooled + strength * (t.pooled - s.pooled))
                mean = (self.model(z, t).float() - self.model(z, s).float()).mean(0, keepdim=True)
                m = gaussian_blur(mean.abs().mean(1, keepdim=True), self.resolution / 64)
                done[pair] = m / m.amax().clamp_min(1e-8)
            maps.append(done[pair])
        return torch.cat(maps)

    @torch.no_grad()
    def interpolate(self, prompt_a: str, prompt_b: str, steps: int = 8, seed: int = 0,
                    images: tuple[torch.Tensor, torch.Tensor] | None = None,
                    temperature: float | None = None) -> torch.Tensor:
        """steps images going from (latent a, prompt a) to (latent b, prompt b): latents are two prior
        draws (seed, seed + 1) at the temperature, or the latents of two given images (a VAE encodes
        them, a GAN inverts them); the text embeddings are interpolated linearly alongside."""
        model = self.model
        if images is not None:
            with torch.enable_grad():
                za = self.latents(images[0], [prompt_a], seed=seed)[0]
                zb = self.latents(images[1], [prompt_b], seed=seed)[0]
        else:
            t = temperature if temperature is not None else self.t2i.meta.get("truncation")
            mode = self.t2i.meta.get("truncation_mode", "resample")
            za, zb = (model.sample_noise(1, torch.Generator().manual_seed(seed + k), t, mode, device="cpu")[0]
                      .to(self.t2i.device) for k in (0, 1))
        from wordcanvas.models.vae import interpolate_latents

        z = interpolate_latents(za, zb, steps)
        ea, eb = self.t2i.embed([prompt_a]), self.t2i.embed([prompt_b])
        both = TextEmbedding.cat([ea, eb])
        w = torch.linspace(0, 1, steps, device=z.device)
        text = TextEmbedding(torch.lerp(both.tokens[0:1], both.tokens[1:2], w[:, None, None]),
                             (both.mask[0:1] | both.mask[1:2]).expand(steps, -1),
                             torch.lerp(both.pooled[0:1], both.pooled[1:2], w[:, None]))
        return model(z, text).float()
