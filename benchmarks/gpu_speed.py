"""Inference speed of the shipped networks on an accelerator (or the CPU): GAN generator and SR upscalers.

    python benchmarks/gpu_speed.py --device cuda --out docs

Times the networks alone, with the inputs already on the device: the text-to-image generator of
`t2i-toy-faces` (64 x 64 faces; the caption embedding is a fixed random tensor of the encoder's
shape, so text encoding is not counted) and the x4 upscalers `fast` and `quality` on a 128 x 128
input (-> 512 x 512). Each case: warm-up calls, then `--repeats` timed calls, each synchronised
(CUDA events on a GPU, the wall clock on the CPU); median and p90 in milliseconds, and images per
second = batch / median. The upscalers run as bare networks (no tiling, no copies to the host, which
`Upscaler.upscale` adds). fp32 and, on CUDA, bf16 autocast. Results: gpu_speed.json / gpu_speed.md.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from _common import command_line, summarize_ms, write_json

from wordcanvas.generate import load_generator
from wordcanvas.sr import Upscaler
from wordcanvas.text.base import TextEmbedding

WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "wordcanvas" / "weights"


def timed(fn, device: torch.device, repeats: int, warmup: int = 5) -> list[float]:
    """Seconds per call of fn(), each call synchronised."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            out.append(start.elapsed_time(end) / 1000)
        else:
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return out


def generator_case(device: torch.device, batch: int):
    gen = load_generator(WEIGHTS / "t2i-toy-faces" / "generator", device).eval()
    c = gen.config
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(batch, 16, c.text_dim, generator=g).to(device)
    text = TextEmbedding(tokens, torch.ones(batch, 16, dtype=torch.bool, device=device), tokens.mean(1))
    z = gen.sample_noise(batch, torch.Generator().manual_seed(1), device="cpu").to(device)
    return (lambda: gen(z, text)), sum(p.numel() for p in gen.parameters()), f"{c.resolution} x {c.resolution}"


def upscaler_case(name: str, device: torch.device, batch: int):
    net = Upscaler.from_name(name, 4, device=str(device)).model  # the network alone: no tiling, no host copies
    x = torch.rand(batch, 3, 128, 128, generator=torch.Generator().manual_seed(0)).to(device) * 2 - 1
    return (lambda: net(x)), sum(p.numel() for p in net.parameters()), "128 x 128 -> 512 x 512"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (CPU timings)")
    ap.add_argument("--out", default="docs")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    precisions = ["fp32", "bf16"] if device.type == "cuda" else ["fp32"]
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        for what, make in (("gan-generator t2i-toy-faces", generator_case),
                           ("sr fast x4", lambda d, b: upscaler_case("fast", d, b)),
                           ("sr quality x4", lambda d, b: upscaler_case("quality", d, b))):
            fn, params, shape = make(device, batch)
            for precision in precisions:
                def call():
                    with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16,
                                                                enabled=precision == "bf16"):
                        fn()
                t = summarize_ms(timed(call, device, args.repeats))
                rows.append({"network": what, "shape": shape, "params": params, "batch": batch,
                             "precision": precision, "median_ms": t["median_ms"], "p90_ms": t["p90_ms"],
                             "images_per_s": round(batch / t["median_ms"] * 1000, 1), "calls": t["calls"]})
                print(json.dumps(rows[-1]), flush=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    meta = {"device": name, "torch": torch.__version__, "threads": args.threads, "date": time.strftime("%Y-%m-%d"),
            "command": command_line()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "gpu_speed.json", {"meta": meta, "rows": rows})
    lines = [f"# Inference speed on {name}", "",
             f"`{meta['command']}` ({meta['date']}, torch {meta['torch']}). Networks alone, inputs already on the "
             "device, text encoding not counted; median and p90 of synchronised calls after 5 warm-up calls.", "",
             "| network | output | params | batch | precision | median ms | p90 ms | images/s |",
             "|---|---|---:|---:|---|---:|---:|---:|"]
    lines += [f"| {r['network']} | {r['shape']} | {r['params']:,} | {r['batch']} | {r['precision']} | "
              f"{r['median_ms']:.2f} | {r['p90_ms']:.2f} | {r['images_per_s']:,.0f} |" for r in rows]
    (out / "gpu_speed.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
