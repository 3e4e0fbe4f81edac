"""Training throughput of the real training loop on an accelerator: the GAN at 64, 128 and 256 px, and SR.

    python benchmarks/gpu_train_speed.py --device cuda --runs runs/gpu_train --out docs
    python benchmarks/gpu_train_speed.py --summarize runs/gpu_train/gan64 runs/gpu_train/gan128 ... --out docs

Each case is one `wordcanvas train` command (the public CLI, so data loading, the EMA update and
logging are counted): the GAN on toy faces with the recipe of configs/gan_toy-faces.json and the
trainable text encoder (no pretrained weights needed), and the SR quality x4 network on the
bundled photos. Images per second come from the run's own log (one record per --log-every steps);
the first record holds the start-up (cuDNN autotuning, first batches) and is left out of the median.
`--summarize` only reads existing run folders. Results: gpu_train_speed.json / gpu_train_speed.md.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import command_line, write_json

CASES = {  # name -> wordcanvas train arguments
    "gan64": ["gan", "--config", "configs/gan_toy-faces.json", "--encoder", "trainable", "--res", "64", "--batch", "32",
              "--steps", "160"],
    "gan128": ["gan", "--config", "configs/gan_toy-faces.json", "--encoder", "trainable", "--res", "128", "--batch",
               "32", "--steps", "120"],
    "gan256": ["gan", "--config", "configs/gan_toy-faces.json", "--encoder", "trainable", "--res", "256", "--batch",
               "32", "--steps", "80"],
    "sr-quality-x4": ["sr", "--res", "128", "--batch", "64", "--steps", "120", "--set", "model.preset=quality",
                      "--set", "model.scale=4"],
}


def summarize(folder: Path) -> dict:
    cfg = json.loads((folder / "config.json").read_text())
    records = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    train = [r for r in records if r.get("kind") == "train" and "images_per_s" in r]
    if len(train) < 2:
        raise SystemExit(f"{folder}: fewer than two training log records")
    steady = [r["images_per_s"] for r in train[1:]]
    data = "photo folder" if Path(str(cfg["data"])).is_dir() or cfg["family"] == "sr" else cfg["data"]
    encoder = cfg.get("encoder") if cfg["family"] in ("gan", "vae") else None  # the others read no text
    return {"run": folder.name, "family": cfg["family"], "data": data, "encoder": encoder,
            "resolution": cfg["resolution"], "batch": cfg["batch"], "device": cfg["device"], "amp": cfg["amp"],
            "workers": cfg["workers"], "steps": train[-1]["step"], "log_records": len(steady),
            "images_per_s_median": round(statistics.median(steady), 1), "images_per_s_max": round(max(steady), 1),
            "step_seconds": train[-1]["time"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--workers", type=int, default=12)
    ap.add_argument("--runs", default="runs/gpu_train")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--summarize", nargs="*", help="only summarise these existing run folders")
    ap.add_argument("--device-name", dest="device_name", help="what to call the device in the table (default: asked "
                                                                "from torch when training here)")
    ap.add_argument("--out", default="docs")
    args = ap.parse_args()
    folders = [Path(f) for f in args.summarize] if args.summarize is not None else []
    name = args.device_name
    if args.summarize is None:
        import torch

        name = name or (torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "CPU")
        for case in args.cases.split(","):
            out = Path(args.runs) / case
            cmd = [sys.executable, "-m", "wordcanvas", "train", *CASES[case], "--device", args.device, "--workers",
                   str(args.workers), "--threads", "4", "--log-every", "20", "--sample-every", "0", "--ckpt-every",
                   "0", "--no-progress", "--out", str(out)]
            print(" ".join(cmd[1:]), flush=True)
            subprocess.run(cmd, check=True)
            folders.append(out)
    rows = [summarize(f) for f in folders]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"device": name or "?", "date": time.strftime("%Y-%m-%d"), "command": command_line()}
    write_json(out / "gpu_train_speed.json", {"meta": meta, "rows": rows})
    lines = [f"# Training throughput on {meta['device']}", "",
             "Images (or HR patches) per second of the real training loop (`wordcanvas train`; the GAN and VAE "
             "families in bf16 autocast on CUDA, the SR family in fp32 with cuDNN's default TF32 convolutions), "
             "median over its log records after the first; see benchmarks/gpu_train_speed.py.", "",
             "| run | family | data | encoder | px | batch | workers | steps | images/s (median) | images/s (max) |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['run']} | {r['family']} | {r['data']} | {r['encoder'] or '-'} | {r['resolution']} | {r['batch']} | "
              f"{r['workers']} | {r['steps']} | {r['images_per_s_median']:,.0f} | {r['images_per_s_max']:,.0f} |"
              for r in rows]
    (out / "gpu_train_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
