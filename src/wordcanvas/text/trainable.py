"""A small text encoder trained from scratch: the baseline that shows what a pretrained LM adds.

Word-level vocabulary built from the training captions, token + learned position embeddings,
a few pre-norm transformer layers. It is an nn.Module trained jointly with the generator
(`forward` keeps gradients) and a TextEncoder (`encode` runs in eval mode under no_grad).
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from wordcanvas.models.base import PretrainedModel
from wordcanvas.text.base import TextEmbedding, TextEncoder, ranked_vocabulary, validate_prompt

SPECIALS = ["[PAD]", "[UNK]", "[CLS]"]
PAD, UNK, CLS = 0, 1, 2
_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    """Lowercase, split on anything that is not a letter or digit."""
    return _WORD.findall(text.lower())


def build_vocab(captions: list[str], min_count: int = 2, max_size: int | None = None) -> list[str]:
    """Specials, then words seen at least `min_count` times, most frequent first (ties alphabetical).

    min_count > 1 leaves rare words out, so [UNK] is seen (and trained) on real captions.
    """
    return ranked_vocabulary((words(c) for c in captions), SPECIALS, min_count, max_size)


@dataclass
class TrainableEncoderConfig:
    vocab: list[str] = field(default_factory=lambda: list(SPECIALS))  # index = token id
    dim: int = 192          # token and pooled width
    depth: int = 3          # transformer layers
    heads: int = 4
    ff_mult: int = 4        # feed-forward width = ff_mult * dim
    max_tokens: int = 32    # [CLS] + up to max_tokens - 1 words
    dropout: float = 0.1
    pooling: str = "cls"    # "cls": final [CLS] state; "mean": mean over real tokens


class Block(nn.Module):
    """Pre-norm self-attention + GELU MLP."""

    def __init__(self, dim: int, heads: int, ff_mult: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ff = nn.Sequential(nn.Linear(dim, ff_mult * dim), nn.GELU(), nn.Dropout(dropout),
                                nn.Linear(ff_mult * dim, dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :],  # keys: real tokens only
                                              dropout_p=self.dropout if self.training else 0.0)
        x = x + F.dropout(self.proj(attn.transpose(1, 2).reshape(b, t, d)), self.dropout, self.training)
        return x + self.ff(self.norm2(x))


class TrainableEncoder(PretrainedModel, TextEncoder):
    config_class = TrainableEncoderConfig
    model_type = "wordcanvas-trainable-text-encoder"
    name = "trainable"
    kind = "from scratch"
    cacheable = False  # its weights change during training: never cache its embeddings

    def __init__(self, config: TrainableEncoderConfig):
        super().__init__(config)
        if config.dim % config.heads:
            raise ValueError(f"dim {config.dim} is not divisible by heads {config.heads}")
        if config.pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got '{config.pooling}'")
        if config.vocab[: len(SPECIALS)] != SPECIALS:
            raise ValueError(f"vocabulary must start with {SPECIALS}")
        self.dim, self.max_tokens = config.dim, config.max_tokens
        self.index = {w: i for i, w in enumerate(config.vocab)}
        self.token_emb = nn.Embedding(len(config.vocab), config.dim, padding_idx=PAD)
        self.pos_emb = nn.Parameter(torch.randn(config.max_tokens, config.dim) * 0.02)
        self.blocks = nn.ModuleList(Block(config.dim, config.heads, config.ff_mult, config.dropout)
                                    for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.dim)

    @classmethod
    def build(cls, captions: list[str], min_count: int = 2, max_vocab: int | None = None, seed: int = 0,
              **config) -> "TrainableEncoder":
        """Vocabulary from `captions`, then a freshly initialised model (initialisation seeded)."""
        vocab = build_vocab(captions, min_count, max_vocab)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return cls(TrainableEncoderConfig(vocab=vocab, **config))

    def token_ids(self, text: str) -> list[int]:
        return [CLS] + [self.index.get(w, UNK) for w in words(text)][: self.max_tokens - 1]

    @property
    def device(self) -> torch.device:
        return self.token_emb.weight.device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def identity(self) -> str:
        h = hashlib.sha256(json.dumps(asdict(self.config), sort_keys=True).encode())
        for k, v in sorted(self.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        return f"trainable|{h.hexdigest()[:16]}"

    def forward(self, texts: list[str]) -> TextEmbedding:
        """Differentiable encoding; tokens padded to max_tokens like `encode`."""
        if isinstance(texts, str):
            texts = [texts]
        rows = [self.token_ids(validate_prompt(t)) for t in texts]
        t = max(map(len, rows))
        ids = torch.full((len(rows), t), PAD, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
        ids = ids.to(self.device)
        mask = ids != PAD
        x = self.token_emb(ids) + self.pos_emb[:t]
        for block in self.blocks:
            x = block(x, mask)
        x = self.norm(x) * mask[..., None]
        pooled = x[:, 0] if self.config.pooling == "cls" else x.sum(1) / mask.sum(1, keepdim=True)
        pad = self.max_tokens - t
        return TextEmbedding(F.pad(x, (0, 0, 0, pad)), F.pad(mask, (0, pad), value=False), pooled)

    def _encode_batch(self, texts: list[str]) -> TextEmbedding:
        return self(texts)

    def encode(self, texts: list[str]) -> TextEmbedding:
        """Inference: eval mode (no dropout) and no_grad, then back to the previous mode."""
        was_training = self.training
        self.eval()
        try:
            return TextEncoder.encode(self, texts)
        finally:
            self.train(was_training)
