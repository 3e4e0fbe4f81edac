"""R-precision (Xu et al. 2018, AttnGAN) with an image-text dual encoder trained on the dataset's real pairs.

No pretrained image-text model (CLIP and kin) is available offline, so each built-in dataset ships
its own small dual encoder:

- image tower: the convolutional trunk of that dataset's probe (copied in and frozen: it already
  sees class, attributes and digit places), then a trained 2-layer MLP to the shared space;
- text tower: the FROZEN pooled embedding of one text encoder (MiniLM by default), then a trained
  2-layer MLP. The dual encoder is tied to that encoder: its name and dimension are in the config,
  and the pooled vectors of two fixed sentences are stored with the weights and compared at use,
  so a different or altered encoder is refused;
- loss: symmetric InfoNCE with a learned temperature. Captions in a batch that are also TRUE of
  an image (a caption mentions only some attributes) count as positives, not negatives.

R-precision (R = 1): for each image, its true caption and 99 mismatched captions from a pool of
the dataset's prompts are ranked by cosine similarity; a hit is the true caption strictly above
all 99. Mismatched means the caption cannot be true of any image the true caption describes: a
contradicting mentioned label (another class, another hair colour, ...) or, for captioned MNIST,
no scene that both allow. Different text alone is not enough ("a tee" and "a top" match). The
draw of mismatched captions is repeated; mean and std over repeats are reported.
"""
from __future__ import annotations

import json
import math
import os
import random
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from wordcanvas.data.base import Prompt
from wordcanvas.models.base import PretrainedModel
from wordcanvas.metrics.probes import (ConvTrunk, allowed_scenes, cell_targets, fit_input, load_probe,
                                       load_versioned, scene, shipped_dir, to_float)

DUAL_VERSION = "1"
FINGERPRINT_TEXTS = ("a photo of a red hat", "the digit 7 at the bottom left")
FINGERPRINT_TOLERANCE = 1e-3  # max abs difference of the fingerprint vectors (fp32 encoders agree to ~1e-6)


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------

@dataclass
class DualEncoderConfig:
    dataset: str = "fashion-mnist"                         # registry name of the dataset
    resolution: int = 32                                   # image input size (others are resized)
    channels: int = 1                                      # image input channels (grey <-> RGB converted)
    widths: list[int] = field(default_factory=lambda: [32, 64, 128])  # image trunk (the probe's)
    grid: int = 2
    hidden: int = 256                                      # MLP width of both towers
    embed_dim: int = 64                                    # shared space
    text_encoder: str = "minilm"                           # frozen text encoder it was trained with
    text_dim: int = 384
    text_identity: str = ""                                # that encoder's identity() at training time (record)
    init_temperature: float = 0.07
    version: str = DUAL_VERSION


class DualEncoder(PretrainedModel):
    config_class = DualEncoderConfig
    model_type = "dual_encoder"

    def __init__(self, config: DualEncoderConfig):
        super().__init__(config)
        self.trunk = ConvTrunk(config.channels, list(config.widths), config.grid)
        self.image_head = nn.Sequential(nn.Linear(self.trunk.out_dim, config.hidden), nn.GELU(),
                                        nn.Linear(config.hidden, config.embed_dim))
        self.text_head = nn.Sequential(nn.Linear(config.text_dim, config.hidden), nn.GELU(),
                                       nn.Linear(config.hidden, config.embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / config.init_temperature)))
        self.register_buffer("fingerprint", torch.zeros(len(FINGERPRINT_TEXTS), config.text_dim))
        # The frozen text encoder, attached at use; kept out of nn.Module bookkeeping (never saved).
        self.__dict__["encoder"] = None

    # -- towers ---------------------------------------------------------------------------
    def trunk_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.trunk(fit_input(images, self.config.channels, self.config.resolution))

    def project_images(self, trunk_features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_head(trunk_features), dim=-1)

    def project_texts(self, pooled: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_head(pooled.float()), dim=-1)

    # -- the interface r_precision uses ----------------------------------------------------
    @torch.inference_mode()
    def embed_images(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        self.eval()
        return torch.cat([self.project_images(self.trunk_features(b)) for b in images.split(batch_size)])

    @torch.inference_mode()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        return self.project_texts(pooled_embeddings(self.text_encoder(), texts))

    # -- text encoder binding ----------------------------------------------------------------
    def attach_encoder(self, encoder) -> "DualEncoder":
        """Bind the frozen text encoder; refuse one whose outputs differ from the one trained with."""
        if getattr(encoder, "dim", None) != self.config.text_dim:
            raise ValueError(f"dual encoder expects {self.config.text_dim}-d text embeddings from "
                             f"'{self.config.text_encoder}', got {getattr(encoder, 'dim', None)}-d "
                             f"from '{encoder.name}'")
        got = pooled_embeddings(encoder, list(FINGERPRINT_TEXTS), cache=False)
        if self.fingerprint.abs().sum() > 0:
            diff = float((got - self.fingerprint).abs().max())
            if diff > FINGERPRINT_TOLERANCE:
                raise ValueError(f"text encoder '{encoder.name}' is not the one this dual encoder was trained with "
                                 f"('{self.config.text_encoder}'): fingerprint differs by {diff:.3g}")
        self.__dict__["encoder"] = encoder
        return self

    def text_encoder(self):
        if self.encoder is None:
            from wordcanvas.text import load_encoder

            self.attach_encoder(load_encoder(self.config.text_encoder))
        return self.encoder


def load_dual_encoder(dataset_name: str, folder: str | os.PathLike | None = None, encoder=None) -> DualEncoder:
    """The shipped dual encoder of a dataset (or one saved in `folder`); its text encoder loads on first use."""
    folder = Path(folder) if folder is not None else shipped_dir("dual", dataset_name)
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"no dual encoder for {dataset_name!r} at {folder}; train one with "
                                "benchmarks/train_probes.py")
    dual = load_versioned(DualEncoder, folder)
    if encoder is not None:
        dual.attach_encoder(encoder)
    return dual


def portable_identity(encoder) -> str:
    """The encoder's identity without install-specific parts (paths), fit to ship in a config."""
    return "|".join(part for part in encoder.identity().split("|") if "/" not in part and "\\" not in part)


def text_encoder(name: str = "minilm"):
    from wordcanvas.text import load_encoder

    return load_encoder(name)


# ---------------------------------------------------------------------------------------------
# Pooled text embeddings with a small disk cache (only the pooled vector: R-precision needs no tokens)
# ---------------------------------------------------------------------------------------------

_MEMORY: dict[tuple[str, str], torch.Tensor] = {}  # (encoder identity, text) -> pooled vector
_LOADED: set[str] = set()                            # identities whose disk file has been read


def _pooled_cache_path(encoder) -> Path:
    import hashlib

    from wordcanvas.assets import cache_dir

    tag = hashlib.sha256(encoder.identity().encode()).hexdigest()[:16]
    return cache_dir() / "pooled" / f"{encoder.name}-{tag}.safetensors"


def _load_disk(encoder) -> None:
    path = _pooled_cache_path(encoder)
    if encoder.identity() in _LOADED or not path.exists():
        return
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        texts = json.loads(f.metadata()["texts"])
        vectors = f.get_tensor("pooled")
    for t, v in zip(texts, vectors):
        _MEMORY[(encoder.identity(), t)] = v
    _LOADED.add(encoder.identity())


def _save_disk(encoder) -> None:
    from safetensors.torch import save

    from wordcanvas.utils.io import atomic_write_bytes

    ident = encoder.identity()
    items = [(t, v) for (i, t), v in _MEMORY.items() if i == ident]
    if not items:
        return
    texts, vectors = zip(*items)
    blob = save({"pooled": torch.stack(list(vectors)).contiguous()}, metadata={"texts": json.dumps(list(texts))})
    atomic_write_bytes(_pooled_cache_path(encoder), blob)


def pooled_embeddings(encoder, texts: list[str], batch_size: int = 128, cache: bool = True,
                      progress: bool = False) -> torch.Tensor:
    """(len(texts), D) pooled vectors of a frozen encoder; each distinct text is encoded once and kept on disk."""
    if not cache:
        return encoder.encode(list(texts)).pooled.float().cpu()
    ident = encoder.identity()
    _load_disk(encoder)
    missing = sorted({t for t in texts if (ident, t) not in _MEMORY})
    for k, i in enumerate(tqdm(range(0, len(missing), batch_size), desc=f"encode ({encoder.name})", unit="batch",
                               disable=not progress or not missing, leave=False)):
        chunk = missing[i:i + batch_size]
        for t, v in zip(chunk, encoder.encode(chunk).pooled.float().cpu()):
            _MEMORY[(ident, t)] = v.clone()
        if k % 50 == 49:  # long runs keep their work if interrupted
            _save_disk(encoder)
    if missing:
        _save_disk(encoder)
    return torch.stack([_MEMORY[(ident, t)] for t in texts]) if texts else torch.zeros(0, encoder.dim)


# ---------------------------------------------------------------------------------------------
# Which captions are true of which images
# ---------------------------------------------------------------------------------------------

def scheme_of(dataset_name: str) -> str:
    return "cells" if dataset_name == "captioned-mnist" else "labels"


class Matcher:
    """Truth and mismatch tests between label dicts, vectorised over a pool of prompts.

    labels scheme: a caption is true of an image when every label it mentions (>= 0) equals the
    image's; two captions are mismatched when some label both mention differs.
    cells scheme (captioned MNIST): true when the image's scene is one the caption allows;
    mismatched when no scene is allowed by both.
    """

    def __init__(self, scheme: str, names: list[str]):
        self.scheme, self.names = scheme, list(names)

    def matrix(self, labels: list[dict[str, int]]) -> np.ndarray:
        return np.array([[l.get(k, -1) for k in self.names] for l in labels], dtype=np.int64).reshape(len(labels), -1)

    def mismatched(self, labels: dict[str, int], pool: list[dict[str, int]],
                   pool_matrix: np.ndarray | None = None) -> np.ndarray:
        """Bool (len(pool),): which pool captions contradict `labels`."""
        if self.scheme == "cells":
            mine = _scenes(_key(labels))
            return np.array([not (mine & _scenes(_key(p))) for p in pool], dtype=bool)
        p = self.matrix(pool) if pool_matrix is None else pool_matrix
        q = self.matrix([labels])[0]
        return ((p != q) & (p >= 0) & (q >= 0)).any(axis=1)

    def truth(self, image_labels: list[dict[str, int]], caption_labels: list[dict[str, int]]) -> torch.Tensor:
        """Bool (N_images, N_captions): caption j is true of image i (images carry all their labels)."""
        if self.scheme == "cells":
            scenes = [scene(cell_targets(l)) for l in image_labels]
            allowed = [_scenes(_key(c)) for c in caption_labels]
            return torch.tensor([[s in a for a in allowed] for s in scenes], dtype=torch.bool)
        img, cap = torch.from_numpy(self.matrix(image_labels)), torch.from_numpy(self.matrix(caption_labels))
        return ((cap[None] < 0) | (cap[None] == img[:, None])).all(-1)


def _key(labels: dict[str, int]) -> tuple:
    return tuple(sorted((k, int(v)) for k, v in labels.items()))


@lru_cache(maxsize=100_000)
def _scenes(key: tuple) -> frozenset:
    return allowed_scenes(dict(key))


def matcher_for(dataset_name: str, label_names: list[str]) -> Matcher:
    return Matcher(scheme_of(dataset_name), label_names)


# ---------------------------------------------------------------------------------------------
# R-precision
# ---------------------------------------------------------------------------------------------

class ImageTextScorer(Protocol):
    def embed_images(self, images: torch.Tensor) -> torch.Tensor: ...
    def embed_texts(self, texts: list[str]) -> torch.Tensor: ...


def r_precision(dual: ImageTextScorer, images: torch.Tensor | None, captions: list[Prompt],
                candidates_pool: list[Prompt], r: int = 1, n_candidates: int = 100, seed: int = 0,
                repeats: int = 3, scheme: str = "labels", label_names: list[str] | None = None,
                image_embeddings: torch.Tensor | None = None) -> dict:
    """R-precision of images against their captions (see module doc).

    images[i] was made from (or is described by) captions[i]. For each image, n_candidates - 1
    mismatched captions are drawn from candidates_pool (distinct text, contradicting labels); a hit
    is the true caption ranked within the top r by cosine similarity (strictly above the rest for
    r = 1). Pass image_embeddings instead of images when they were computed batch by batch.
    Returns mean and std over `repeats` independent draws.
    """
    n = len(captions)
    if image_embeddings is None:
        image_embeddings = dual.embed_images(images)
    if len(image_embeddings) != n:
        raise ValueError(f"{len(image_embeddings)} images but {n} captions")
    names = label_names or sorted({k for p in [*captions, *candidates_pool] for k in p.labels})
    matcher = Matcher(scheme, names)
    pool_labels = [p.labels for p in candidates_pool]
    pool_matrix = matcher.matrix(pool_labels)
    pool_texts = np.array([p.text for p in candidates_pool], dtype=object)
    texts = sorted({p.text for p in captions} | set(pool_texts.tolist()))
    index = {t: i for i, t in enumerate(texts)}
    text_emb = dual.embed_texts(texts).float().cpu().numpy()
    img_emb = image_embeddings.float().cpu().numpy()
    sims_true = (img_emb * text_emb[[index[p.text] for p in captions]]).sum(-1)
    pool_rows = np.array([index[t] for t in pool_texts])

    allowed_cache: dict[tuple, np.ndarray] = {}
    allowed = []
    for p in captions:
        key = (_key(p.labels), p.text)
        if key not in allowed_cache:
            ok = matcher.mismatched(p.labels, pool_labels, pool_matrix) & (pool_texts != p.text)
            allowed_cache[key] = np.flatnonzero(ok)
        allowed.append(allowed_cache[key])
    need = n_candidates - 1
    short = sum(len(a) < need for a in allowed)
    if any(len(a) == 0 for a in allowed):
        raise ValueError("the candidate pool has no mismatched caption for some prompts; use a larger pool")

    rates = []
    for rep in range(repeats):
        rng = np.random.default_rng([seed, rep])
        picks = np.zeros((0, need), int) if not n else np.stack(
            [rng.choice(a, size=need, replace=len(a) < need) for a in allowed])
        rows = pool_rows[picks]  # (n, need) rows of text_emb
        hits = 0
        for lo in range(0, n, 512):
            others = np.einsum("ne,nke->nk", img_emb[lo:lo + 512], text_emb[rows[lo:lo + 512]])
            rank = (others >= sims_true[lo:lo + 512, None]).sum(1)  # captions at least as close as the true one
            hits += int((rank < r).sum())
        rates.append(hits / n if n else float("nan"))
    return {"r_precision": float(np.mean(rates)), "r_precision_std": float(np.std(rates)), "repeats": repeats,
            "r": r, "n": n, "n_candidates": n_candidates, "pool": len(candidates_pool),
            "prompts_with_small_pool": int(short), "chance": min(1.0, r / n_candidates)}


def candidate_pool(dataset, n: int = 1000, seed: int = 12345, heldout: bool = False) -> list[Prompt]:
    """Mismatched-caption pool: the dataset's evaluation prompts under a seed the evaluated prompts do not use."""
    return dataset.eval_prompts(n, seed=seed, heldout=heldout)


# ---------------------------------------------------------------------------------------------
# Captions of real images, with the labels each caption implies
# ---------------------------------------------------------------------------------------------

def caption_with_labels(dataset_name: str, labels: dict[str, int], rng: random.Random,
                        heldout: bool = False) -> Prompt:
    """A caption of an image with these (full) labels, in the dataset's training (or held-out) phrasing,
    with exactly the labels the caption implies."""
    if dataset_name == "fashion-mnist":
        from wordcanvas.data.fashion_mnist import heldout_captions, train_captions

        k = labels["class"]
        return Prompt(rng.choice((heldout_captions if heldout else train_captions)(k)), {"class": k})
    if dataset_name == "toy-faces":
        from wordcanvas.data.grammar import caption

        phrasing = "heldout" if heldout else "train"
        text, mentioned = caption(labels, np.random.default_rng(rng.getrandbits(63)), phrasing)
        return Prompt(text, mentioned)
    if dataset_name == "captioned-mnist":
        from wordcanvas.data import captioned_mnist as cm

        a, ca, b, cb = labels["digit1"], labels["pos1"], labels["digit2"], labels["pos2"]
        if b < 0:
            t = rng.choice(cm.HELDOUT_SINGLE_TEMPLATES if heldout else cm.SINGLE_TEMPLATES)
            return Prompt(cm.single_caption(t, a, ca, heldout), {"digit1": a, "pos1": ca, "digit2": -1, "pos2": -1})
        if rng.random() < 0.5:  # either order of mention
            a, ca, b, cb = b, cb, a, ca
        t = rng.choice(cm.HELDOUT_PAIR_TEMPLATES if heldout else cm.PAIR_TEMPLATES)
        text = cm.pair_caption(t, a, ca, b, cb, heldout)
        if "{wb}" in t:
            return Prompt(text, {"digit1": a, "pos1": ca, "digit2": b, "pos2": cb})
        return Prompt(text, {"digit1": a, "digit2": b, "relation": cm.relation(ca, cb)})
    raise ValueError(f"no caption grammar known for dataset {dataset_name!r}")


def real_r_precision(dual: DualEncoder, dataset, images_u8: torch.Tensor, labels: list[dict[str, int]],
                     encoder=None, seed: int = 0, repeats: int = 3, pool_size: int = 1000,
                     heldout: bool = False) -> dict:
    """R-precision of real images against captions written for them (the ceiling reported beside generated values)."""
    if encoder is not None:
        dual.attach_encoder(encoder)
    name = dual.config.dataset
    rng = random.Random(seed)
    captions = [caption_with_labels(name, l, rng, heldout) for l in labels]
    pool = candidate_pool(dataset, pool_size, heldout=heldout)
    pooled_embeddings(dual.text_encoder(), sorted({p.text for p in captions + pool}), progress=True)
    out = r_precision(dual, to_float(images_u8), captions, pool, seed=seed, repeats=repeats, scheme=scheme_of(name),
                      label_names=list(dataset.label_spec.classes))
    return out


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------

DUAL_TRAIN: dict[str, dict] = {  # dataset -> training settings
    "fashion-mnist": dict(captions=12_000, steps=1500, batch_size=256, lr=2e-3),
    "toy-faces": dict(captions=40_000, steps=6000, batch_size=256, lr=2e-3),  # many attribute subsets to read
    "captioned-mnist": dict(captions=16_000, steps=2500, batch_size=256, lr=2e-3, hidden=128),  # < 2 MB shipped
}


def train_dual_encoder(dataset_name: str, dataset, images_u8: torch.Tensor, labels: list[dict[str, int]], encoder,
                       captions: int = 12_000, steps: int = 2000, batch_size: int = 256, lr: float = 2e-3,
                       seed: int = 0, embed_dim: int = 64, hidden: int = 256, weight_decay: float = 1e-4,
                       heldout_share: float = 0.5) -> tuple[DualEncoder, dict]:
    """Train the two MLP heads on frozen probe-trunk features and frozen pooled text embeddings.

    heldout_share of the captions use the dataset's held-out phrasing: the dual encoder is a judge
    and must read every phrasing evaluation uses (generators never see those phrasings; the
    judge is never part of their training).
    """
    probe = load_probe(dataset_name)
    pc = probe.config
    config = DualEncoderConfig(dataset=dataset_name, resolution=pc.resolution, channels=pc.channels,
                               widths=list(pc.widths), grid=pc.grid, hidden=hidden, embed_dim=embed_dim,
                               text_encoder=encoder.name, text_dim=encoder.dim,
                               text_identity=portable_identity(encoder))
    torch.manual_seed(seed)
    dual = DualEncoder(config)
    dual.trunk.load_state_dict(probe.trunk.state_dict())
    dual.trunk.requires_grad_(False).eval()
    dual.fingerprint.copy_(pooled_embeddings(encoder, list(FINGERPRINT_TEXTS), cache=False))
    dual.__dict__["encoder"] = encoder

    # One caption per sampled image (its implied labels kept), encoded once; images repeat (with
    # other captions) when more captions than images are asked for.
    rng = random.Random(seed)
    pick = rng.sample(range(len(images_u8)), min(captions, len(images_u8)))
    pick += rng.choices(range(len(images_u8)), k=captions - len(pick))
    image_labels = [labels[i] for i in pick]
    caps = [caption_with_labels(dataset_name, l, rng, heldout=rng.random() < heldout_share) for l in image_labels]
    text_feats = pooled_embeddings(encoder, [c.text for c in caps], progress=True)
    with torch.inference_mode():
        img_feats = torch.cat([dual.trunk_features(to_float(b)) for b in
                               tqdm(images_u8[pick].split(512), desc="trunk features", leave=False)])
    img_feats = img_feats.clone()
    matcher = matcher_for(dataset_name, list(dataset.label_spec.classes))

    params = [p for n, p in dual.named_parameters() if not n.startswith("trunk.")]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(seed)
    losses = []
    dual.image_head.train(), dual.text_head.train()
    for step in tqdm(range(steps), desc=f"dual {dataset_name}", unit="step", leave=False):
        idx = torch.randperm(len(pick), generator=g)[:batch_size]
        positive = matcher.truth([image_labels[i] for i in idx], [caps[i].labels for i in idx]).float()
        zi, zt = dual.project_images(img_feats[idx]), dual.project_texts(text_feats[idx])
        logits = dual.logit_scale.clamp(max=math.log(100)).exp() * zi @ zt.T
        loss = 0.5 * (multi_positive_nce(logits, positive) + multi_positive_nce(logits.T, positive.T))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    dual.eval()
    info = {"seed": seed, "captions": len(caps), "unique_captions": len({c.text for c in caps}),
            "heldout_phrasing_share": heldout_share, "steps": steps, "weight_decay": weight_decay,
            "batch_size": batch_size, "lr": lr, "final_loss": float(np.mean(losses[-100:])),
            "temperature": float(1 / dual.logit_scale.detach().exp()),
            "image_trunk": f"probe trunk (frozen), probe sha256 {probe.weights_sha256}"}
    return dual, info


def multi_positive_nce(logits: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """-log (sum of softmax mass on the positives), averaged over rows (InfoNCE when each row has one positive)."""
    log_p = logits.log_softmax(dim=1)
    return -(torch.logsumexp(log_p.masked_fill(positive == 0, float("-inf")), dim=1)).mean()


__all__ = ["DualEncoder", "DualEncoderConfig", "load_dual_encoder", "r_precision", "real_r_precision",
           "candidate_pool", "caption_with_labels", "train_dual_encoder", "pooled_embeddings", "Matcher"]
