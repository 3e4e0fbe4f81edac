"""Which Fashion-MNIST classes a trained text-to-image model draws as which, by the shipped probe.

    python benchmarks/class_confusion.py --model runs/vae_quality/fashion-mnist/runs/ours --out docs/vae_fashion-mnist

One image per evaluation prompt of the test split (the protocol's prompts, seed 0; --n of them),
generated in batches of 100 with seeds 0, 100, 200, ...; the probe (trained on real images) reads
each image's class. Rows: the class the prompt asked for; columns: the class the probe read. The
probe's own confusion on the real test images is written beside it, so a row that is weak on
real images too (shirt) is not blamed on the generator alone.
Writes <out>/confusion.json and <out>/confusion.md.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from _common import command_line, machine_info, markdown_table, write_json

from wordcanvas.data.fashion_mnist import CLASS_NAMES as CLASSES  # noqa: E402


def confusion(want: list[int], read: list[int]) -> list[list[int]]:
    matrix = [[0] * len(CLASSES) for _ in CLASSES]
    for w, r in zip(want, read):
        matrix[w][r] += 1
    return matrix


def table(matrix: list[list[int]]) -> str:
    rows = []
    for c, row in enumerate(matrix):
        total = max(sum(row), 1)
        rows.append({"asked": CLASSES[c], "right": row[c] / total,
                     **{f"c{k}": f"{v / total:.2f}" if v else "" for k, v in enumerate(row)}})
    cols = [("asked", "asked", ""), ("right", "right", ">.2f")] + [(name, f"c{k}", "") for k, name in enumerate(CLASSES)]
    return markdown_table(rows, cols)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a Fashion-MNIST text-to-image run or model folder")
    p.add_argument("--n", type=int, default=2000, help="evaluation prompts (one image each)")
    p.add_argument("--temperature", type=float, help="prior temperature / truncation (default: the model's own)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from wordcanvas.data import load_dataset
    from wordcanvas.generate import TextToImage
    from wordcanvas.metrics.probes import load_probe

    t2i = TextToImage.from_pretrained(args.model)
    test = load_dataset("fashion-mnist", "test", seed=0)
    prompts = test.eval_prompts(args.n, seed=0)
    probe = load_probe("fashion-mnist")
    images = torch.cat([t2i([q.text for q in prompts[i:i + 100]], n=1, seed=i, truncation=args.temperature)
                        for i in range(0, len(prompts), 100)])
    generated = confusion([q.labels["class"] for q in prompts], probe.predict(images)["class"].tolist())
    real_images = torch.stack([test.image(i) for i in range(args.n)])
    real = confusion([test.labels(i)["class"] for i in range(args.n)], probe.predict(real_images)["class"].tolist())
    accuracy = lambda m: sum(m[c][c] for c in range(len(m))) / max(sum(map(sum, m)), 1)  # noqa: E731
    result = {"command": command_line(), "machine": machine_info(threads=args.threads), "model": args.model,
              "n": args.n, "temperature": args.temperature, "classes": CLASSES,
              "generated": {"matrix": generated, "accuracy": accuracy(generated)},
              "real_test": {"matrix": real, "accuracy": accuracy(real)}}
    out = Path(args.out)
    write_json(out / "confusion.json", result)
    text = [f"# Class confusion of {args.model}", "", f"Command: `{result['command']}`.", "",
            f"Generated images (n = {args.n}, probe accuracy {result['generated']['accuracy']:.3f}); row = the class "
            "the prompt asked for, column = the class the probe read, as shares of the row:", "", table(generated), "",
            f"The probe on the first {args.n} real test images (accuracy {result['real_test']['accuracy']:.3f}):", "",
            table(real), ""]
    (out / "confusion.md").write_text("\n".join(text))
    print(f"wrote {out / 'confusion.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
