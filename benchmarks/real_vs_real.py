"""Real-vs-real floors: FID / KID / precision-recall of real train images against real test images,
the value a generator's FID is read against (same protocol, same sample counts).

    python benchmarks/real_vs_real.py                 # n = 10000 per set, all built-in datasets
    python benchmarks/real_vs_real.py --n 2000        # quicker; the sample count is recorded

Writes docs/real_vs_real.json (merged per dataset and n) and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "real_vs_real.json"
DATASETS = ("fashion-mnist", "toy-faces", "captioned-mnist")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10_000, help="images per set")
    p.add_argument("--only", choices=DATASETS, action="append")
    p.add_argument("--backend", default="auto")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 2)))
    args = p.parse_args(argv)

    import torch

    from wordcanvas.metrics.evaluate import evaluate_real_vs_real
    from wordcanvas.metrics.inception import InceptionFeatures
    from wordcanvas.utils.io import atomic_write_json

    torch.set_num_threads(args.threads)
    extractor = InceptionFeatures(backend=args.backend, threads=args.threads)
    data = json.loads(DOCS.read_text()) if DOCS.exists() else {}
    rows = ["| dataset | n per set | resolution | FID | KID | precision | recall |", "|---|---|---|---|---|---|---|"]
    for name in args.only or DATASETS:
        r = evaluate_real_vs_real(name, n=args.n, extractor=extractor)
        r["threads"], r["python"], r["torch"] = args.threads, platform.python_version(), torch.__version__
        data.setdefault(name, {})[str(args.n)] = r
        atomic_write_json(DOCS, data)
        rows.append(f"| {name} | {args.n} | {r['resolution']} | {r['fid']:.3f} | {r['kid']:.5f} +- {r['kid_std']:.5f} "
                    f"| {r['precision']:.3f} | {r['recall']:.3f} |")
        print(rows[-1], flush=True)
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    raise SystemExit(main())
