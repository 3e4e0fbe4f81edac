"""The one text-encoder interface: every encoder turns a list of strings into a TextEmbedding."""
from __future__ import annotations

import unicodedata
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass

import torch


@dataclass
class TextEmbedding:
    """Per-token states, their mask, and one pooled vector per text.

    tokens: (B, T, D) float; mask: (B, T) bool, True on real tokens; pooled: (B, D) float.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor

    def to(self, device: torch.device | str) -> "TextEmbedding":
        return TextEmbedding(self.tokens.to(device), self.mask.to(device), self.pooled.to(device))

    def __len__(self) -> int:
        return self.pooled.shape[0]

    def __getitem__(self, index) -> "TextEmbedding":
        return TextEmbedding(self.tokens[index], self.mask[index], self.pooled[index])

    @staticmethod
    def cat(parts: list["TextEmbedding"], max_tokens: int | None = None) -> "TextEmbedding":
        """Concatenate along the batch, right-padding token states to a common length."""
        t = max_tokens or max(p.tokens.shape[1] for p in parts)
        toks, masks = [], []
        for p in parts:
            pad = t - p.tokens.shape[1]
            toks.append(torch.nn.functional.pad(p.tokens[:, :t], (0, 0, 0, max(pad, 0))))
            masks.append(torch.nn.functional.pad(p.mask[:, :t], (0, max(pad, 0)), value=False))
        return TextEmbedding(torch.cat(toks), torch.cat(masks), torch.cat([p.pooled for p in parts]))


class TextEncoder(ABC):
    """Frozen (or trainable) text encoder.

    Subclasses set `name` (stable identity used in cache keys), `dim` (embedding size) and
    `max_tokens`, and implement `_encode_batch`.
    """

    name: str
    dim: int
    max_tokens: int = 64
    batch_size: int = 64

    @abstractmethod
    def _encode_batch(self, texts: list[str]) -> TextEmbedding: ...

    def identity(self) -> str:
        """Cache key part: changes whenever the encoder's outputs could change."""
        return self.name

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def to(self, device) -> "TextEncoder":
        return self

    @torch.no_grad()
    def encode(self, texts: list[str]) -> TextEmbedding:
        """Encode in batches; padded to this encoder's max_tokens so batches concatenate."""
        if isinstance(texts, str):
            texts = [texts]
        texts = [validate_prompt(t) for t in texts]
        parts = [self._encode_batch(texts[i : i + self.batch_size]) for i in range(0, len(texts), self.batch_size)]
        return TextEmbedding.cat(parts, self.max_tokens)


MAX_PROMPT_CHARS = 2000
KEEP_FORMAT_CHARS = {"\u200d"}  # zero-width joiner: part of emoji sequences; other format characters go


def validate_prompt(text: str | bytes) -> str:
    """Normalise a prompt or refuse it with a clear ValueError.

    UTF-8 bytes are decoded (invalid bytes refused); text is NFC-normalised; control, format,
    surrogate and other unprintable characters become spaces; runs of whitespace collapse. Empty,
    invisible or over-long prompts (more than MAX_PROMPT_CHARS after cleaning) are refused. Emoji
    and every script are kept.
    """
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"prompt is not valid UTF-8: byte {bytes(text)[e.start]:#04x} at position {e.start}") from None
    if not isinstance(text, str):
        raise TypeError(f"prompt must be a string, got {type(text).__name__}")
    if len(text) > 20 * MAX_PROMPT_CHARS:  # refuse huge inputs before doing any work on them
        raise ValueError(f"prompt has {len(text)} characters; the limit is {MAX_PROMPT_CHARS}")
    cleaned = "".join(ch if ch.isprintable() or ch in KEEP_FORMAT_CHARS else " " for ch in text)
    cleaned = " ".join(unicodedata.normalize("NFC", cleaned).split())
    if not cleaned:
        raise ValueError("prompt is empty (or only whitespace/control characters)")
    if not any(unicodedata.category(ch)[0] in "LNSP" for ch in cleaned):
        raise ValueError("prompt has no visible characters")
    if len(cleaned) > MAX_PROMPT_CHARS:
        raise ValueError(f"prompt has {len(cleaned)} characters; the limit is {MAX_PROMPT_CHARS}")
    return cleaned


def ranked_vocabulary(token_lists, specials: list[str], min_count: int = 1, max_size: int | None = None) -> list[str]:
    """A word-level vocabulary: the specials, then every word seen at least min_count times, most
    frequent first (ties by spelling, so the same captions always give the same token ids)."""
    counts = Counter(w for tokens in token_lists for w in tokens)
    kept = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
    return list(specials) + kept[:max_size]
