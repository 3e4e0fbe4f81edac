"""Encoders by name, and how to measure one (load time, speed, paraphrase quality)."""
from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from wordcanvas.text.base import TextEncoder
from wordcanvas.text.hf import HUB_ID, HFEncoder, MiniLMEncoder, SmolLM2Encoder, smollm2_converted_folder
from wordcanvas.text.trainable import TrainableEncoder


def _trainable(device: str, captions: list[str] | None) -> TextEncoder:
    if not captions:
        raise ValueError("the 'trainable' encoder builds its vocabulary from training captions: pass captions, "
                         "or the folder a trained one was saved to")
    return TrainableEncoder.build(captions).to(device)


ENCODERS: dict[str, Callable[[str, list[str] | None], TextEncoder]] = {
    "smollm2": lambda device, captions: SmolLM2Encoder(device=device),
    "minilm": lambda device, captions: MiniLMEncoder(device=device),
    "trainable": _trainable,
}
ENCODER_NAMES = tuple(ENCODERS)
ENCODER_KINDS = {"smollm2": SmolLM2Encoder.kind, "minilm": MiniLMEncoder.kind, "trainable": TrainableEncoder.kind}


def load_encoder(name_or_path: str, device: str = "cpu", captions: list[str] | None = None) -> TextEncoder:
    """A name from ENCODER_NAMES, a local folder (wordcanvas trainable encoder or Hugging Face model) or a hub id."""
    if name_or_path in ENCODERS:
        return ENCODERS[name_or_path](device, captions)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        config = path / "config.json"
        if config.exists() and json.loads(config.read_text()).get("model_type") == TrainableEncoder.model_type:
            return TrainableEncoder.from_pretrained(path, map_location=device)
        return HFEncoder(path, device=device)
    if HUB_ID.match(name_or_path) and not path.exists():
        return HFEncoder(name_or_path, device=device)
    raise ValueError(f"unknown text encoder '{name_or_path}': use one of {', '.join(ENCODER_NAMES)}, "
                     "a local model folder, or a Hugging Face hub id (org/name)")


# -- paraphrase quality --------------------------------------------------------------------------
# (caption, paraphrase) pairs in the style of the project's face / clothing / digit captions.
# The first set chose SmolLM2's read-out; the second, written separately, checks that choice.
PARAPHRASES_DEV = [
    ("a middle-aged woman wearing a hat", "a lady in her forties with a hat on"),
    ("a young man with a beard and glasses", "a bearded guy in his twenties wearing spectacles"),
    ("a smiling woman with blond hair", "a blonde lady who is smiling"),
    ("an old man with grey hair", "an elderly gentleman whose hair has turned grey"),
    ("a bald man with a mustache", "a man with no hair and a moustache"),
    ("a child with curly red hair", "a kid with ginger curls"),
    ("a woman wearing heavy makeup and lipstick", "a lady with lots of cosmetics and painted lips"),
    ("a man wearing a necktie", "a guy in a tie"),
    ("a pair of trousers", "some long pants"),
    ("a sneaker", "an athletic shoe for running"),
    ("an ankle boot", "a short boot that covers the ankle"),
    ("a handbag", "a bag you carry in your hand"),
    ("a t-shirt", "a short-sleeved tee"),
    ("a long dress", "a full-length gown"),
    ("a warm winter coat", "a heavy jacket for cold weather"),
    ("a sandal", "an open shoe with straps"),
    ("a woollen pullover", "a knitted sweater"),
    ("the digit seven in the top left corner", "a 7 placed at the upper left"),
]
PARAPHRASES_HELDOUT = [
    ("a woman with long black hair", "a lady whose dark hair is long"),
    ("a man wearing sunglasses", "a guy with shades on"),
    ("a young girl with pigtails", "a little girl whose hair is in two braids"),
    ("a man with a shaved head", "a guy who is completely bald"),
    ("a frowning old woman", "an elderly lady looking unhappy"),
    ("a person wearing earrings", "someone with jewellery in their ears"),
    ("a teenager with freckles", "an adolescent with spots on the nose"),
    ("a grey hooded sweatshirt", "a gray hoodie"),
    ("a pair of high heels", "elegant shoes with tall heels"),
    ("a leather shoulder bag", "a purse made of leather worn on the shoulder"),
    ("a striped shirt with buttons", "a button-up shirt with stripes"),
    ("a pair of blue jeans", "denim trousers"),
    ("the digit three at the bottom right", "a 3 in the lower right corner"),
    ("a small digit five in the centre", "a tiny 5 in the middle"),
]
BENCH_PROMPTS = [t for pairs in (PARAPHRASES_DEV, PARAPHRASES_HELDOUT) for pair in pairs for t in pair]  # 64


def paraphrase_scores(encoder: TextEncoder, pairs: list[tuple[str, str]]) -> dict[str, float]:
    """How often a caption's paraphrase is closer (cosine of pooled) than the other captions' paraphrases.

    triplet_acc: fraction of (i, j != i) with cos(a_i, p_i) > cos(a_i, p_j); top1: fraction of
    captions whose nearest paraphrase is their own; pos / neg: mean cosines of the two kinds.
    """
    emb = encoder.encode([a for a, _ in pairs] + [p for _, p in pairs]).pooled.float().cpu()
    emb = torch.nn.functional.normalize(emb, dim=-1)
    n = len(pairs)
    sim = emb[:n] @ emb[n:].T
    pos = sim.diag()
    off = ~torch.eye(n, dtype=torch.bool)
    return {"triplet_acc": float((pos[:, None] > sim)[off].float().mean()),
            "top1": float((sim.argmax(1) == torch.arange(n)).float().mean()),
            "pos": float(pos.mean()), "neg": float(sim[off].mean())}


# -- measuring -----------------------------------------------------------------------------------
def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def measure_encoder(name: str, cold: bool = False, n_single: int = 20, repeats: int = 3) -> dict:
    """Load time, parameters, speed and paraphrase quality of a named encoder, on this machine.

    load_s: a normal load (the cached copy for smollm2; from_pretrained of a saved folder for
    trainable). first_load_s: the one-time cost (GGUF conversion for smollm2, measured only when
    `cold` or when this call did the conversion; vocabulary + init for trainable).
    ms_per_prompt_b1: median over n_single prompts encoded one at a time;
    ms_per_prompt_b64: best of `repeats` batches of 64 prompts, divided by 64.
    """
    if name not in ENCODERS:
        raise ValueError(f"unknown text encoder '{name}': use one of {', '.join(ENCODER_NAMES)}")
    from wordcanvas.text.hf import _transformers

    _transformers()  # import cost is not load cost
    first = None
    if name == "smollm2":
        if cold:
            with tempfile.TemporaryDirectory() as tmp:
                _, first = _timed(lambda: SmolLM2Encoder(folder=Path(tmp) / "smollm2"))
        else:
            converting = not (smollm2_converted_folder() / "config.json").exists()
            _, t = _timed(lambda: SmolLM2Encoder())
            first = t if converting else None
        encoder, load = _timed(lambda: SmolLM2Encoder())
    elif name == "minilm":
        encoder, load = _timed(lambda: MiniLMEncoder())
    else:
        encoder, first = _timed(lambda: TrainableEncoder.build(BENCH_PROMPTS, min_count=1))
        with tempfile.TemporaryDirectory() as tmp:
            encoder.save_pretrained(tmp)
            encoder, load = _timed(lambda: TrainableEncoder.from_pretrained(tmp))

    prompts = BENCH_PROMPTS
    encoder.encode(prompts[:2])  # warm-up
    single = [_timed(lambda: encoder.encode([p]))[1] for p in prompts[:n_single]]
    batch = min(_timed(lambda: encoder.encode(prompts[:64]))[1] for _ in range(repeats))
    quality = paraphrase_scores(encoder, PARAPHRASES_HELDOUT)
    return {
        "name": name, "kind": ENCODER_KINDS[name], "parameters": encoder.num_parameters(), "dim": encoder.dim,
        "first_load_s": first, "load_s": load,
        "ms_per_prompt_b1": 1000 * statistics.median(single), "ms_per_prompt_b64": 1000 * batch / len(prompts[:64]),
        "paraphrase_triplet_acc": quality["triplet_acc"], "paraphrase_top1": quality["top1"],
        "threads": torch.get_num_threads(),
    }


def machine_info() -> dict:
    import platform

    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version()}


def format_table(rows: list[dict]) -> str:
    """Markdown table of measure_encoder rows."""
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    lines = ["| encoder | kind | parameters | dim | threads | first load s | load s | ms/prompt batch 1 "
             "| ms/prompt batch 64 | paraphrase triplet acc | paraphrase top-1 |", "|" + "---|" * 11]
    for r in rows:
        lines.append(f"| {r['name']} | {r['kind']} | {r['parameters'] / 1e6:.1f}M | {r['dim']} | {r['threads']} | "
                     f"{fmt(r['first_load_s'], '.1f')} | {fmt(r['load_s'], '.2f')} | {r['ms_per_prompt_b1']:.1f} | "
                     f"{r['ms_per_prompt_b64']:.2f} | {r['paraphrase_triplet_acc']:.3f} | {r['paraphrase_top1']:.3f} |")
    return "\n".join(lines)
