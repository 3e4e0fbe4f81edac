"""Inference speed of the public pipeline and the HTTP server on CPU (torch and ONNX Runtime).

    python benchmarks/serve_speed.py                 # ~3 minutes on 2 quiet cores
    python benchmarks/serve_speed.py --quick         # fewer calls, a 5 s server run (~1 minute)
    python benchmarks/serve_speed.py --model runs/faces/final

- Pipeline, batch 1 (median, p90 over --calls calls): text encoding of a new prompt (MiniLM, no cache),
  the generator for a cached prompt (prompt -> 64 px image), the x4 upscale alone, and end to end:
  cached prompt -> 64 px, new prompt -> 64 px, cached prompt -> upscaled 256 px.
- Pipeline, batch 64: images/s of one call for 64 images (cached prompt), at 64 px and upscaled to 256 px.
  Each for backend "torch" and "onnx" (the generator and the SR network in ONNX Runtime).
- Server: `wordcanvas serve` semantics (create_app + uvicorn) in a subprocess on loopback; 8 concurrent
  clients (httpx.AsyncClient in another subprocess) send POST /v1/generate (n images, JSON with base64 PNGs)
  for --seconds; throughput, p50/p99 latency and errors.

Models: --model (a run / model folder or a shipped name) if given, else a freshly initialised generator
of the default architecture (GeneratorConfig: 64 px RGB, ngf 32, cross-attention at 16 px) with MiniLM:
speed does not depend on the weights. The x4 upscaler: the shipped "fast" network when installed, else a
freshly initialised FastSR of the default architecture (same cost as the trained one); bicubic rows beside.
Writes <out>/serve_speed.json and .md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import (ROOT, command_line, load_average, machine_info, markdown_table, summarize_ms, wait_for_quiet,
                     write_json)

TARGETS = {"cached_64_ms": 10.0, "uncached_64_ms": 30.0, "upscaled_256_ms": 50.0, "server_img_s": 200.0}
PROMPT = "a middle-aged woman wearing a hat"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="run / model folder or shipped name (default: fresh default-architecture GAN)")
    p.add_argument("--threads", type=int, default=2, help="torch / ONNX Runtime threads")
    p.add_argument("--calls", type=int, default=200, help="batch-1 calls per row")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--n", default="1,8", help="images per server request (comma list: one server run each)")
    p.add_argument("--seconds", type=float, default=15, help="timed server run")
    p.add_argument("--server-threads", dest="server_threads", type=int, default=None,
                   help="torch threads in the server process (default: --threads)")
    p.add_argument("--backends", default="torch,onnx")
    p.add_argument("--quick", action="store_true", help="50 calls per row, a 5 s server run")
    p.add_argument("--max-load", dest="max_load", type=float, default=1.5)
    p.add_argument("--max-wait", dest="max_wait", type=float, default=600, help="seconds to wait for a quiet machine")
    p.add_argument("--out", default=str(ROOT / "docs"))
    args = p.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    args.n = [int(n) for n in args.n.split(",") if n.strip()]
    if args.quick:
        args.calls, args.seconds, args.max_wait = min(args.calls, 50), min(args.seconds, 5), min(args.max_wait, 60)
    args.server_threads = args.server_threads or args.threads
    return args


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------

def fresh_model(folder: Path) -> Path:
    """A model folder (model.json + generator/) of the default 64 px architecture with MiniLM."""
    import torch

    from wordcanvas.models.gan import Generator, GeneratorConfig
    from wordcanvas.utils.io import atomic_write_json

    torch.manual_seed(0)
    Generator(GeneratorConfig(resolution=64, channels=3, text_dim=384)).eval().save_pretrained(folder / "generator")
    atomic_write_json(folder / "model.json", {"family": "gan", "generator": "generator", "resolution": 64,
                                              "channels": 3, "encoder": {"name": "minilm"}, "truncation": None})
    return folder


def upscaler_choice(folder: Path) -> tuple[str, str]:
    """(upscaler name or folder, description) for the x4 rows."""
    from wordcanvas.pipeline import auto_upscaler

    if auto_upscaler(4) == "fast":
        return "fast", "shipped fast x4 network"
    import torch

    from wordcanvas.models.sr import FastSR, FastSRConfig

    torch.manual_seed(0)
    FastSR(FastSRConfig(scale=4)).save_pretrained(folder / "fastsr-x4")
    return str(folder / "fastsr-x4"), "FastSR x4, default architecture, untrained weights (same cost)"


# ---------------------------------------------------------------------------------------------
# Pipeline
# ---------------------------------------------------------------------------------------------

def measure_pipeline(pipe, upscaler: str, calls: int, fresh_prompts: list[str]) -> dict:
    import torch

    pipe.upscaler_name = upscaler
    pipe(PROMPT, seed=0)  # encodes the prompt once; warm-up
    for i in range(10):
        pipe(PROMPT, seed=i, upscale=4)
    encoder = pipe.t2i.encoder
    fresh = iter(fresh_prompts)
    rows = {
        "text_encoding_new_prompt": summarize_ms([timed(lambda: encoder.encode([next(fresh)])) for _ in range(calls)]),
        "cached_prompt_to_64px": summarize_ms([timed(lambda i=i: pipe(PROMPT, seed=i)) for i in range(calls)]),
        "new_prompt_to_64px": summarize_ms([timed(lambda: pipe(next(fresh), seed=0)) for _ in range(calls)]),
    }
    image = pipe(PROMPT, seed=0)
    rows["upscale_x4_only"] = summarize_ms([timed(lambda: pipe.upscale(image, 4)) for _ in range(calls)])
    rows["upscale_x4_bicubic_only"] = summarize_ms([timed(lambda: pipe.upscale(image, 4, "bicubic"))
                                                    for _ in range(calls)])
    rows["cached_prompt_to_256px"] = summarize_ms([timed(lambda i=i: pipe(PROMPT, seed=i, upscale=4))
                                                   for i in range(calls)])
    batch = {}
    for name, kwargs in (("64px", {}), ("256px", {"upscale": 4})):
        pipe(PROMPT, n=64, seed=0, **kwargs)  # warm-up at this size
        t = statistics.median(timed(lambda: pipe(PROMPT, n=64, seed=1, **kwargs)) for _ in range(3))
        batch[name] = round(64 / t, 1)
    return {"backend": pipe.backend, "threads": torch.get_num_threads(), "batch1": rows,
            "batch64_images_per_s": batch}


# ---------------------------------------------------------------------------------------------
# Server
# ---------------------------------------------------------------------------------------------

SERVER = """
import sys, torch, uvicorn
sys.path.insert(0, {src!r})
from wordcanvas.pipeline import TextToImagePipeline
from wordcanvas.server.app import create_app
torch.set_num_threads({threads})
pipe = TextToImagePipeline.from_pretrained({model!r}, backend={backend!r})
uvicorn.run(create_app({{"bench": pipe}}), host="127.0.0.1", port={port}, log_level="warning")
"""

CLIENTS = """
import asyncio, json, sys, time, httpx
URL, CLIENTS, N, SECONDS, WARMUP = {url!r}, {clients}, {n}, {seconds}, 2.0
PROMPTS = ["a woman wearing a hat", "a smiling man with a beard", "an old man with grey hair", "a young woman"]

async def client(k, http, stop, record):
    i = 0
    while time.perf_counter() < stop:
        t = time.perf_counter()
        try:
            r = await http.post(URL, json={{"prompt": PROMPTS[k % len(PROMPTS)], "n": N, "seed": 1000 * k + i}})
            ok = r.status_code == 200 and len(r.json()["images"]) == N
        except Exception:
            ok = False
        record(t, time.perf_counter(), ok)
        i += 1

async def main():
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(limits=limits, timeout=60) as http:
        start = time.perf_counter()
        begin, stop, rows = start + WARMUP, start + WARMUP + SECONDS, []
        def record(t0, t1, ok):
            if t0 >= begin:
                rows.append((t0, t1, ok))
        await asyncio.gather(*(client(k, http, stop, record) for k in range(CLIENTS)))
    lat = sorted(1000 * (t1 - t0) for t0, t1, ok in rows if ok)
    span = max(t1 for _, t1, _ in rows) - begin
    pick = lambda q: lat[min(len(lat) - 1, int(round(q * (len(lat) - 1))))] if lat else None
    print(json.dumps({{"requests": len(rows), "errors": sum(not ok for *_, ok in rows), "seconds": round(span, 2),
                      "images_per_s": round(N * len(lat) / span, 1), "requests_per_s": round(len(lat) / span, 1),
                      "p50_ms": pick(0.5), "p90_ms": pick(0.9), "p99_ms": pick(0.99)}}))

asyncio.run(main())
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure_server(model: str, backend: str, args) -> list[dict]:
    """One server process; one timed client run per request size in args.n."""
    import httpx

    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.server_threads)}
    server = subprocess.Popen([sys.executable, "-c", SERVER.format(src=str(ROOT / "src"), threads=args.server_threads,
                                                                   model=model, backend=backend, port=port)], env=env)
    try:
        for _ in range(600):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise RuntimeError("the server did not come up")
        rows, before = [], {"batches": 0, "jobs": 0}
        for n in args.n:
            out = subprocess.run([sys.executable, "-c", CLIENTS.format(url=f"http://127.0.0.1:{port}/v1/generate",
                                                                       clients=args.clients, n=n, seconds=args.seconds)],
                                 capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            result = json.loads(out.stdout.strip().splitlines()[-1])
            stats = next(iter(httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()["batches"].values()))
            calls, jobs = stats["batches"] - before["batches"], stats["jobs"] - before["jobs"]  # warm-up included
            result["mean_images_per_generator_call"] = round(jobs * n / max(1, calls), 2)
            before = stats
            rows.append({"backend": backend, "clients": args.clients, "n": n, "server_threads": args.server_threads,
                         **result})
    finally:
        server.terminate()
        server.wait(timeout=30)
    return rows


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

ROW_NAMES = {"text_encoding_new_prompt": "text encoding, new prompt (MiniLM)",
             "cached_prompt_to_64px": "cached prompt -> 64 px (end to end)",
             "new_prompt_to_64px": "new prompt -> 64 px (end to end)",
             "upscale_x4_only": "x4 upscale only (network), 64 -> 256 px",
             "upscale_x4_bicubic_only": "x4 upscale only (bicubic), 64 -> 256 px",
             "cached_prompt_to_256px": "cached prompt -> upscaled 256 px (end to end)"}


def targets(result: dict) -> list[dict]:
    rows = []
    for p in result["pipeline"]:
        b = p["batch1"]
        for key, what, value in (("cached_64_ms", "cached prompt -> 64 px, median", b["cached_prompt_to_64px"]["median_ms"]),
                                 ("uncached_64_ms", "new MiniLM prompt -> 64 px, median", b["new_prompt_to_64px"]["median_ms"]),
                                 ("upscaled_256_ms", "cached prompt -> upscaled 256 px, median",
                                  b["cached_prompt_to_256px"]["median_ms"])):
            rows.append({"backend": p["backend"], "what": what, "value": value, "target": f"< {TARGETS[key]:g} ms",
                         "met": value < TARGETS[key]})
    for s in result["server"]:
        met = s["images_per_s"] >= TARGETS["server_img_s"] and s["errors"] == 0
        rows.append({"backend": s["backend"], "what": f"server, {s['clients']} clients, n = {s['n']}, 64 px, img/s (errors)",
                     "value": f"{s['images_per_s']} ({s['errors']})", "target": f">= {TARGETS['server_img_s']:g}, no errors",
                     "met": met})
    return rows


def write_markdown(result: dict, path: Path) -> None:
    m = result["machine"]
    lines = ["# Inference and server speed on CPU", "",
             f"Machine: {m['cpu']}, {m['cpu_count']} cores; torch {m['torch']}, onnxruntime {m.get('onnxruntime')}; "
             f"{result['settings']['threads']} threads (torch and ONNX Runtime). Load average (1 min): "
             f"{result['load_average']['start']} at start, {result['load_average'].get('end')} at the end "
             f"(the machine may be shared: read the numbers as upper bounds). fp32; no GPU.", "",
             f"Model: {result['model']}. Upscaler: {result['upscaler']}.", ""]
    if result["load_average"]["start"] > result["wait"]["max_load"]:
        lines += [f"**Measured on a busy machine (1-minute load {result['load_average']['start']} on "
                  f"{m['cpu_count']} cores, other jobs running): every number below is inflated and the targets "
                  "cannot be judged from it; rerun on a quiet machine.**", ""]
    lines += [
             "## Pipeline, batch 1", "",
             "`TextToImagePipeline(prompt, seed=i)`, one image per call; 'cached prompt': its embedding is in the "
             "pipeline's cache; 'new prompt': each call a prompt never seen (so the encoder runs). "
             f"{result['settings']['calls']} calls per row (median, p90 in ms).", ""]
    backends = [p["backend"] for p in result["pipeline"]]
    rows = [{"what": ROW_NAMES[k], **{f"{p['backend']}_med": p["batch1"][k]["median_ms"] for p in result["pipeline"]},
             **{f"{p['backend']}_p90": p["batch1"][k]["p90_ms"] for p in result["pipeline"]}} for k in ROW_NAMES]
    cols = [("step", "what", "")]
    for b in backends:
        cols += [(f"{b} median ms", f"{b}_med", ">.3g"), (f"{b} p90 ms", f"{b}_p90", ">.3g")]
    lines += [markdown_table(rows, cols), "",
              "Text encoding stays in torch for both backends (embeddings are cached per prompt).", "",
              "## Pipeline, batch 64", "",
              "One call for 64 images of a cached prompt (median of 3 calls after a warm-up).", "",
              markdown_table([{"backend": p["backend"], **p["batch64_images_per_s"]} for p in result["pipeline"]],
                             [("backend", "backend", ""), ("images/s at 64 px", "64px", ">.4g"),
                              ("images/s upscaled to 256 px", "256px", ">.4g")]), ""]
    if result["server"]:
        s0 = result["server"][0]
        lines += ["## Server", "",
                  f"`create_app` + uvicorn in one process ({s0['server_threads']} torch threads), on loopback; "
                  f"{s0['clients']} concurrent clients (httpx.AsyncClient, one process) send POST /v1/generate with "
                  f"n images each (64 px, JSON with base64 PNGs) for {result['settings']['seconds']} s after a 2 s "
                  "warm-up. Clients and server share the same cores. 'images per generator call': what the "
                  "micro-batcher gathered from concurrent requests.", "",
                  markdown_table(result["server"], [
                      ("backend", "backend", ""), ("n", "n", ">d"), ("requests", "requests", ">d"),
                      ("errors", "errors", ">d"),
                      ("images/s", "images_per_s", ">.4g"), ("p50 ms", "p50_ms", ">.3g"), ("p90 ms", "p90_ms", ">.3g"),
                      ("p99 ms", "p99_ms", ">.3g"),
                      ("images per generator call", "mean_images_per_generator_call", ">.3g")]), ""]
    lines += ["## Targets", "", markdown_table(targets(result), [
        ("backend", "backend", ""), ("what", "what", ""), ("measured", "value", ">.3g"), ("target", "target", ""),
        ("met", lambda r: "yes" if r["met"] else "**no**", "")]), "",
        f"Command: `{result['command']}` (took {result['seconds'] / 60:.1f} min)."]
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch

    from wordcanvas.pipeline import TextToImagePipeline
    from wordcanvas.text.registry import BENCH_PROMPTS

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    tmp = Path(tempfile.mkdtemp(prefix="serve-speed-"))
    os.environ.setdefault("WORDCANVAS_CACHE", str(tmp / "cache"))  # ONNX exports of the fresh model go here
    model = args.model or str(fresh_model(tmp / "model"))
    upscaler, upscaler_note = upscaler_choice(tmp)
    wait = wait_for_quiet(args.max_load, args.max_wait)
    start = time.time()
    result = {"command": command_line(), "wait": wait, "load_average": {"start": load_average()},
              "settings": {k: getattr(args, k) for k in ("threads", "calls", "clients", "n", "seconds", "quick")},
              "machine": machine_info(threads=args.threads),
              "model": args.model or "fresh GeneratorConfig() generator (64 px RGB, random weights) + MiniLM",
              "upscaler": upscaler_note, "pipeline": [], "server": []}
    fresh_prompts = [f"{p} number {i}" for i in range(20) for p in BENCH_PROMPTS]  # never repeated

    def save() -> None:
        result["load_average"]["end"] = load_average()
        result["seconds"] = round(time.time() - start, 1)
        result["targets"] = targets(result)
        write_json(out / "serve_speed.json", result)
        write_markdown(result, out / "serve_speed.md")

    for backend in args.backends:
        pipe = TextToImagePipeline.from_pretrained(model, backend=backend)
        row = measure_pipeline(pipe, upscaler, args.calls, fresh_prompts[len(result["pipeline"]) * 2 * args.calls:])
        row["load_average"] = load_average()
        result["pipeline"].append(row)
        print(f"pipeline {backend}: " + ", ".join(f"{k} {v['median_ms']:.2f} ms" for k, v in row["batch1"].items())
              + f"; batch 64: {row['batch64_images_per_s']} img/s", file=sys.stderr, flush=True)
        save()
    for backend in args.backends:
        for row in measure_server(model, backend, args):
            row["load_average"] = load_average()
            result["server"].append(row)
            print(f"server {backend} n={row['n']}: {row['images_per_s']} img/s, p50 {row['p50_ms']:.1f} ms, "
                  f"p99 {row['p99_ms']:.1f} ms, {row['errors']} errors", file=sys.stderr, flush=True)
        save()
    save()
    print((out / "serve_speed.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
