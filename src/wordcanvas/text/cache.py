"""On-disk embedding cache for frozen encoders, keyed by encoder identity and exact text.

Layout: <root>/<encoder name>-<sha256(identity)[:16]>/<k[:2]>/<k>.safetensors with k = sha256(text).
Each entry holds the real tokens only (T_real, D), the pooled vector (D,) and a checksum of both
in its metadata, so a truncated or altered file is detected, reported and re-encoded. Files
are written to a temporary name then renamed (never half-written); no fsync per entry, since
a damaged entry after a crash is caught by the checksum anyway. An LRU dict sits in front.
fp32 entries cost 2.3 KB per token for SmolLM2 and 1.5 KB for MiniLM (~28 / ~18 KB per caption).
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
from collections import OrderedDict
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from wordcanvas import assets
from wordcanvas.text.base import TextEmbedding, TextEncoder, validate_prompt
from wordcanvas.utils.io import atomic_write_bytes

log = logging.getLogger(__name__)

Entry = tuple[torch.Tensor, torch.Tensor]  # tokens (T_real, D), pooled (D,)


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _checksum(tokens: torch.Tensor, pooled: torch.Tensor) -> str:
    h = hashlib.sha256(f"{tuple(tokens.shape)}{tuple(pooled.shape)}{tokens.dtype}".encode())
    h.update(tokens.contiguous().numpy().tobytes())
    h.update(pooled.contiguous().numpy().tobytes())
    return h.hexdigest()


def cache_folder_name(encoder_name: str, identity: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", encoder_name)[:40] or "encoder"
    return f"{safe}-{hashlib.sha256(identity.encode()).hexdigest()[:16]}"


class EmbeddingCache:
    """Per-text (tokens, pooled) store for one encoder identity."""

    def __init__(self, folder: str | os.PathLike, identity: str = "", memory_entries: int = 20000):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        if identity and not (self.folder / "IDENTITY.txt").exists():
            (self.folder / "IDENTITY.txt").write_text(identity + "\n")  # for people browsing the cache
        self.memory: OrderedDict[str, Entry] = OrderedDict()
        self.memory_entries = memory_entries
        self.counts = {"hits": 0, "misses": 0, "memory_hits": 0, "disk_hits": 0, "corrupt": 0, "writes": 0}

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.safetensors"

    def _remember(self, key: str, entry: Entry) -> None:
        self.memory[key] = entry
        self.memory.move_to_end(key)
        while len(self.memory) > self.memory_entries:
            self.memory.popitem(last=False)

    def _read(self, key: str) -> Entry | None:
        path = self.path(key)
        if not path.exists():
            return None
        try:
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                expected = (f.metadata() or {}).get("checksum")
            tensors = load_file(str(path))
            tokens, pooled = tensors["tokens"], tensors["pooled"]
            if expected != _checksum(tokens, pooled):
                raise ValueError("checksum mismatch")
        except Exception as e:  # truncated, garbled or foreign file: re-encode it
            log.warning("embedding cache entry %s is corrupt (%s); re-encoding it", path, e)
            self.counts["corrupt"] += 1
            path.unlink(missing_ok=True)
            return None
        return tokens, pooled

    def get(self, text: str) -> Entry | None:
        key = text_key(text)
        if key in self.memory:
            self.memory.move_to_end(key)
            self.counts["hits"] += 1
            self.counts["memory_hits"] += 1
            return self.memory[key]
        entry = self._read(key)
        if entry is None:
            self.counts["misses"] += 1
            return None
        self.counts["hits"] += 1
        self.counts["disk_hits"] += 1
        self._remember(key, entry)
        return entry

    def put(self, text: str, tokens: torch.Tensor, pooled: torch.Tensor) -> Entry:
        # clone: a slice would keep the whole batch tensor alive in the memory cache
        tokens, pooled = tokens.detach().cpu().clone(), pooled.detach().cpu().clone()
        key = text_key(text)
        data = save({"tokens": tokens, "pooled": pooled}, metadata={"checksum": _checksum(tokens, pooled)})
        atomic_write_bytes(self.path(key), data, fsync=False)  # a lost entry is only recomputed
        self.counts["writes"] += 1
        self._remember(key, (tokens, pooled))
        return tokens, pooled

    def stats(self) -> dict[str, int]:
        return {**self.counts, "in_memory": len(self.memory)}


class CachedEncoder(TextEncoder):
    """A frozen encoder with an embedding cache in front; same name, dim, max_tokens and outputs.

    encode() looks every distinct text up (memory, then disk) and encodes all misses in one
    call to the wrapped encoder. stats() counts one hit or miss per distinct text per call.
    cache_root: parent folder of the per-encoder cache folders (default <cache_dir>/embeddings).
    """

    def __init__(self, encoder: TextEncoder, cache_root: str | os.PathLike | None = None, memory_entries: int = 20000):
        if not getattr(encoder, "cacheable", True):
            raise ValueError(f"encoder '{encoder.name}' changes while training; its embeddings must not be cached")
        self.encoder = encoder
        self.name, self.dim, self.max_tokens = encoder.name, encoder.dim, encoder.max_tokens
        self.batch_size = encoder.batch_size
        self.kind = getattr(encoder, "kind", "")
        root = Path(cache_root) if cache_root else assets.cache_dir() / "embeddings"
        identity = encoder.identity()
        self.cache = EmbeddingCache(root / cache_folder_name(encoder.name, identity), identity, memory_entries)

    def identity(self) -> str:
        return self.encoder.identity()

    @property
    def device(self) -> torch.device:
        return self.encoder.device

    def to(self, device) -> "CachedEncoder":
        self.encoder.to(device)
        return self

    def stats(self) -> dict[str, int]:
        return self.cache.stats()

    def _encode_batch(self, texts: list[str]) -> TextEmbedding:
        return self.encoder._encode_batch(texts)

    @torch.no_grad()
    def encode(self, texts: list[str]) -> TextEmbedding:
        if isinstance(texts, str):
            texts = [texts]
        texts = [validate_prompt(t) for t in texts]
        found: dict[str, Entry] = {}
        missing = []
        for text in dict.fromkeys(texts):
            entry = self.cache.get(text)
            if entry is None:
                missing.append(text)
            else:
                found[text] = entry
        if missing:
            fresh = self.encoder.encode(missing).to("cpu")
            for i, text in enumerate(missing):
                n = int(fresh.mask[i].sum())
                if not fresh.mask[i, :n].all():
                    raise ValueError(f"encoder '{self.name}' does not right-pad its tokens; it cannot be cached")
                found[text] = self.cache.put(text, fresh.tokens[i, :n], fresh.pooled[i])

        tokens = torch.zeros(len(texts), self.max_tokens, self.dim)
        mask = torch.zeros(len(texts), self.max_tokens, dtype=torch.bool)
        for i, text in enumerate(texts):
            t = found[text][0][: self.max_tokens]
            tokens[i, : len(t)] = t
            mask[i, : len(t)] = True
        pooled = torch.stack([found[text][1] for text in texts])
        return TextEmbedding(tokens, mask, pooled).to(self.device)
