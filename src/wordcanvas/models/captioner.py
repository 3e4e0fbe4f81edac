"""A small image captioner that scores how well an image fits a caption (MirrorGAN's re-description).

A matching head judges (image, caption) with one logit and learns from which caption was the
right one; on captioned MNIST such heads never learn to tell "a 3 on the left and a 7 on the
right" from its swap (docs/gan_captioned-mnist: near-miss probe). A captioner learns from every
word instead: to predict "7" after "a 3 on the left and a" it must have read which digit is on the
right. Its negative log-likelihood of a caption given an image is then a judge of agreement that
sees bindings, and a loss for a generator (the caption must be readable back from the image).

Words are split on letters and digits and looked up in a vocabulary built from the training
captions (AttnGAN/MirrorGAN's word-level vocabulary); image regions are an 8x8 grid of CNN features
with learned positions, read by a small Transformer decoder.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from wordcanvas.models.base import PretrainedModel
from wordcanvas.text.base import ranked_vocabulary

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]


def words(caption: str) -> list[str]:
    return re.findall(r"[a-z]+|[0-9]", caption.lower())


def build_vocabulary(captions, min_count: int = 1) -> list[str]:
    return ranked_vocabulary((words(c) for c in captions), SPECIALS, min_count)


@dataclass
class CaptionerConfig:
    vocabulary: list[str] = field(default_factory=lambda: list(SPECIALS))
    resolution: int = 64          # input size, a power of two >= 8
    channels: int = 1
    width: int = 32               # channels after the first convolution; doubles per halving, to 8x8
    dim: int = 128                # decoder width
    layers: int = 2               # decoder layers
    heads: int = 4
    max_words: int = 24           # longer captions are cut (the end-of-caption token is then dropped)

    def __post_init__(self):
        if self.vocabulary[:len(SPECIALS)] != SPECIALS:
            raise ValueError(f"the vocabulary must start with {SPECIALS}")
        if self.resolution < 8 or self.resolution & (self.resolution - 1):
            raise ValueError(f"resolution must be a power of two >= 8, got {self.resolution}")


class Captioner(PretrainedModel):
    config_class = CaptionerConfig
    model_type = "wordcanvas-captioner"
    region_grid = 8  # encode_images gives an 8x8 grid of regions at every resolution

    def __init__(self, config: CaptionerConfig):
        super().__init__(config)
        c = config
        layers, chans, size, halvings = [], c.channels, c.resolution, 0
        while size > 8:
            out = min(c.width * 2 ** halvings, 256)
            halvings += 1
            layers += [nn.Conv2d(chans, out, 4, 2, 1), nn.GroupNorm(8 if out % 8 == 0 else 1, out), nn.SiLU(),
                       nn.Conv2d(out, out, 3, 1, 1), nn.SiLU()]
            chans, size = out, size // 2
        if not layers:
            layers = [nn.Conv2d(chans, c.width, 3, 1, 1), nn.SiLU()]
            chans = c.width
        self.trunk = nn.Sequential(*layers)
        self.regions = nn.Conv2d(chans, c.dim, 1)
        self.region_positions = nn.Parameter(torch.randn(self.region_grid ** 2, c.dim))  # unit scale: where a region is counts from the start
        self.embed = nn.Embedding(len(c.vocabulary), c.dim, padding_idx=PAD)
        self.word_positions = nn.Parameter(torch.randn(c.max_words + 1, c.dim) * 0.02)
        block = nn.TransformerDecoderLayer(c.dim, c.heads, 2 * c.dim, dropout=0.0, batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(block, c.layers)
        self.norm = nn.LayerNorm(c.dim)
        self.out = nn.Linear(c.dim, len(c.vocabulary))
        self._index = {w: i for i, w in enumerate(c.vocabulary)}

    def tokenize(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets), both (B, L) long: inputs start with <bos>, targets end with <eos>, pad 0."""
        ids = [[self._index.get(w, UNK) for w in words(t)][:self.config.max_words] for t in captions]
        length = max(len(i) for i in ids) + 1
        inputs = torch.full((len(ids), length), PAD, dtype=torch.long)
        targets = torch.full((len(ids), length), PAD, dtype=torch.long)
        for row, seq in enumerate(ids):
            inputs[row, :len(seq) + 1] = torch.tensor([BOS] + seq)
            targets[row, :len(seq) + 1] = torch.tensor(seq + [EOS])
        return inputs, targets

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 64, dim) region states: the 8x8 grid of features with their positions."""
        x = self.regions(self.trunk(images))
        if x.shape[-1] != self.region_grid:
            x = F.adaptive_avg_pool2d(x, self.region_grid)
        return x.flatten(2).transpose(1, 2) + self.region_positions

    def logits(self, regions: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        length = inputs.shape[1]
        h = self.embed(inputs) + self.word_positions[:length]
        causal = torch.ones(length, length, dtype=torch.bool, device=inputs.device).triu(diagonal=1)
        h = self.decoder(h, regions, tgt_mask=causal, tgt_key_padding_mask=inputs == PAD)
        return self.out(self.norm(h))

    def nll(self, images: torch.Tensor | None, captions: list[str], regions: torch.Tensor | None = None,
            per_word: bool = False) -> torch.Tensor:
        """(B,) negative log-likelihood (nats, summed over words and the end token; per_word: their
        mean, so long and short captions weigh alike in a loss) of caption i given image i.
        regions: encode_images(images) when already computed (several captions per image), or region
        states from elsewhere (images then None)."""
        if images is None and regions is None:
            raise ValueError("nll needs images or their regions")
        inputs, targets = (t.to((images if regions is None else regions).device) for t in self.tokenize(captions))
        regions = self.encode_images(images) if regions is None else regions
        logits = self.logits(regions, inputs)
        nats = F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=PAD, reduction="none").sum(dim=1)
        return nats / (targets != PAD).sum(dim=1) if per_word else nats

    def forward(self, images: torch.Tensor, captions: list[str]) -> torch.Tensor:
        return self.nll(images, captions)
