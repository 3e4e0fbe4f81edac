"""The HTTP server under load: many concurrent clients, a fixed mix of valid and invalid requests.

    python benchmarks/server_load.py                          # 32 clients x 60 s (~1.5 minutes)
    python benchmarks/server_load.py --clients 8 --seconds 10 --out /tmp/load

A real server (`create_app` + uvicorn, one subprocess, loopback) serves a shipped model (default
"fashion-mnist", 32 px with MiniLM). --clients coroutines (httpx.AsyncClient, this process) each walk the
fixed MIX from their own offset, with seeded random parameters, until --seconds pass: valid generate (JSON
and PNG), a valid x2 upscale, malformed JSON, an unknown model, n above the limit, a prompt above the limit,
a body above the limit, a non-image upload to /v1/upscale and /v1/stylize. Every --burst-every seconds
--burst-size extra connections send max-size generate requests at once, more images than the server's
queue takes (max_pending_images), so it must refuse some with 429 + Retry-After, at once.

Measured: requests sent and responses received (a client-side error or timeout counts as lost), the status
histogram and p50/p90/p99 latency per request kind, how fast over-limit requests are refused, 5xx (must be
none), answers outside each kind's expected codes, and the server's resident memory (VmRSS of its process)
before the load, at its peak, at the end of the load and after it settles. Writes <out>/server_load.json and
.md. The clients share the CPU with the server: latencies are upper bounds on a shared machine.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from _common import ROOT, command_line, load_average, machine_info, markdown_table, write_json

PROMPTS = ["a t-shirt", "a pair of trousers", "a dark pullover", "a summer dress", "a long coat", "a sandal",
           "a white shirt", "a sneaker", "a leather bag", "an ankle boot"]

# kind -> (HTTP answers it may get, what it checks). Valid generate requests may be shed with 429 while a
# burst fills the queue; every refusal is a 4xx with a clear reason, never a 5xx.
EXPECTED: dict[str, tuple[set[int], str]] = {
    "generate_json": ({200, 429}, "valid generate, JSON with base64 PNGs (n 1-4)"),
    "generate_png": ({200, 429}, "valid generate, one PNG (n 1-4)"),
    "upscale": ({200}, "valid x2 upscale of a 24 px PNG"),
    "bad_json": ({422}, "malformed JSON body"),
    "unknown_model": ({404}, "generate with a model the server does not hold"),
    "n_over_limit": ({422}, "n = max_n + 1"),
    "prompt_too_long": ({422}, "prompt of max_prompt_chars + 1 characters"),
    "body_too_large": ({413}, "body one byte above the server's body limit"),
    "upscale_not_image": ({415}, "text file uploaded to /v1/upscale"),
    "stylize_not_image": ({415}, "text file uploaded to /v1/stylize"),
    "burst": ({200, 429}, "burst: max-size generate requests (max_images each), all at once"),
}
# The order each client walks (from offset k): a fixed mix, about half the requests valid.
MIX = ["generate_json", "bad_json", "generate_png", "unknown_model", "generate_json", "n_over_limit", "upscale",
       "prompt_too_long", "generate_json", "body_too_large", "generate_png", "upscale_not_image", "generate_json",
       "stylize_not_image"]
REFUSALS = {404, 413, 415, 422, 429}


@dataclass
class LoadConfig:
    clients: int = 32            # concurrent client connections walking MIX
    seconds: float = 60.0        # load duration (each client stops at the first request after it)
    requests_per_client: int | None = None  # or stop each client after this many requests (whichever first)
    burst_size: int = 24         # extra connections per burst, each asking for max_images images
    burst_every: float = 5.0     # seconds between bursts (the first after one interval)
    bursts: int | None = None    # exactly this many bursts, even after the clients finish (None: one every
                                 # burst_every seconds while the clients run)
    timeout: float = 60.0        # client-side timeout per request: hitting it counts the request as lost
    seed: int = 0


@dataclass
class Record:
    kind: str
    status: int | None           # None: no answer (connection error or client timeout)
    start: float
    seconds: float
    error: str | None = None
    body_ok: bool = True         # a 200 carried what was asked for (image count, PNG)
    retry_after: str | None = None  # the Retry-After header (a 429 must carry one)


# ---------------------------------------------------------------------------------------------
# Server
# ---------------------------------------------------------------------------------------------

SERVER = """
import json, sys, torch, uvicorn
sys.path.insert(0, {src!r})
from wordcanvas.pipeline import TextToImagePipeline
from wordcanvas.server.app import Limits, create_app
torch.set_num_threads({threads})
pipe = TextToImagePipeline.from_pretrained({model!r})
app = create_app({{"load": pipe}}, limits=Limits(**json.loads({limits!r})), max_batch={max_batch},
                 max_wait_ms={max_wait_ms})

@app.post("/_bench/malloc_trim", include_in_schema=False)  # benchmark only: hand freed heap back to the OS
def malloc_trim():
    import ctypes, gc
    gc.collect()
    try:
        return {{"trimmed": ctypes.CDLL("libc.so.6").malloc_trim(0)}}
    except (OSError, AttributeError):  # not glibc
        return {{"trimmed": None}}

uvicorn.run(app, host="127.0.0.1", port={port}, log_level="warning")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def run_server(model: str, limits: dict, threads: int = 1, max_batch: int = 64, max_wait_ms: float = 4.0,
               startup_s: float = 120.0):
    """A uvicorn server subprocess on a free loopback port; yields (base URL, process)."""
    import httpx

    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    code = SERVER.format(src=str(ROOT / "src"), threads=threads, model=str(model), limits=json.dumps(limits),
                         max_batch=max_batch, max_wait_ms=max_wait_ms, port=port)
    server = subprocess.Popen([sys.executable, "-c", code], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + startup_s
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"the server exited with code {server.returncode} before it answered")
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"the server did not answer within {startup_s:.0f} s")
            time.sleep(0.1)
        yield url, server
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def rss_mib(pid: int) -> float | None:
    """Resident memory of a process (Linux /proc; psutil elsewhere when installed)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    try:
        import psutil

        return round(psutil.Process(pid).memory_info().rss / 2**20, 1)
    except Exception:  # noqa: BLE001 (no way to read it here)
        return None


class RssSampler(threading.Thread):
    """Samples a process's RSS every `every` seconds in the background: [(t, MiB)]."""

    def __init__(self, pid: int, every: float = 0.5):
        super().__init__(daemon=True)
        self.pid, self.every, self.samples, self._halt = pid, every, [], threading.Event()

    def run(self):
        start = time.perf_counter()
        while not self._halt.is_set():
            mib = rss_mib(self.pid)
            if mib is not None:
                self.samples.append((round(time.perf_counter() - start, 2), mib))
            self._halt.wait(self.every)

    def stop(self) -> list[tuple[float, float]]:
        self._halt.set()
        self.join()
        return self.samples


# ---------------------------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------------------------

def png_bytes(side: int = 24, seed: int = 0) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def body_limit(limits: dict) -> int:
    """The server's request body limit for these limits (server/app.py: two uploads plus 64 KiB)."""
    return limits["max_upload_bytes"] * 2 + 64 * 1024


def make_request(kind: str, rng: random.Random, limits: dict) -> dict:
    """httpx.request keyword arguments (method, url, ...) for one request of `kind`."""
    gen = {"method": "POST", "url": "/v1/generate"}
    prompt = rng.choice(PROMPTS)
    if kind == "generate_json":
        return {**gen, "json": {"prompt": prompt, "n": rng.randint(1, 4), "seed": rng.randrange(2**31)}}
    if kind == "generate_png":
        return {**gen, "json": {"prompt": prompt, "n": rng.randint(1, 4), "seed": rng.randrange(2**31),
                                "format": "png"}}
    if kind == "upscale":
        return {"method": "POST", "url": "/v1/upscale", "data": {"scale": "2", "method": "auto"},
                "files": {"image": ("a.png", png_bytes(24, rng.randrange(1000)), "image/png")}}
    if kind == "bad_json":
        return {**gen, "content": b'{"prompt": "' + prompt.encode() + b'", "n": ', "headers": {"content-type":
                                                                                              "application/json"}}
    if kind == "unknown_model":
        return {**gen, "json": {"prompt": prompt, "model": "no-such-model"}}
    if kind == "n_over_limit":
        return {**gen, "json": {"prompt": prompt, "n": limits["max_n"] + 1}}
    if kind == "prompt_too_long":
        return {**gen, "json": {"prompt": "x" * (limits["max_prompt_chars"] + 1)}}
    if kind == "body_too_large":
        return {**gen, "content": b" " * (body_limit(limits) + 1), "headers": {"content-type": "application/json"}}
    if kind in ("upscale_not_image", "stylize_not_image"):
        url = "/v1/upscale" if kind == "upscale_not_image" else "/v1/stylize"
        data = {"scale": "2"} if kind == "upscale_not_image" else {"style_name": "waves"}
        return {"method": "POST", "url": url, "data": data,
                "files": {"image": ("notes.txt", b"these are words, not pixels\n" * 20, "text/plain")}}
    if kind == "burst":
        per_prompt = min(limits["max_n"], limits["max_images"])
        prompts = [rng.choice(PROMPTS) for _ in range(max(1, min(limits["max_prompts"],
                                                                 limits["max_images"] // per_prompt)))]
        return {**gen, "json": {"prompts": prompts, "n": per_prompt, "seed": rng.randrange(2**31)}}
    raise ValueError(f"unknown request kind '{kind}'")


def body_ok(kind: str, request: dict, response) -> bool:
    """A 200 answer carries what was asked: as many images as requested, or a PNG file."""
    if response.status_code != 200:
        return True
    if kind == "generate_json" or kind == "burst":
        body = request["json"]
        want = body["n"] * (len(body["prompts"]) if "prompts" in body else 1)
        return len(response.json().get("images", [])) == want
    return response.headers.get("content-type") == "image/png" and response.content[:8] == b"\x89PNG\r\n\x1a\n"


async def drive(url: str, limits: dict, cfg: LoadConfig) -> tuple[list[Record], dict]:
    """Run the load; returns every request's record and the counts of requests sent and answered."""
    import httpx

    records: list[Record] = []
    counts = {"sent": 0, "answered": 0}
    pool = httpx.Limits(max_connections=cfg.clients + cfg.burst_size, max_keepalive_connections=cfg.clients
                        + cfg.burst_size)
    async with httpx.AsyncClient(base_url=url, limits=pool, timeout=cfg.timeout) as http:
        start = time.perf_counter()
        stop = start + cfg.seconds
        clients_done = asyncio.Event()

        async def one(kind: str, rng: random.Random) -> None:
            request = make_request(kind, rng, limits)
            counts["sent"] += 1
            t = time.perf_counter()
            try:
                response = await http.request(**request)
                ok = body_ok(kind, request, response)
                counts["answered"] += 1
                records.append(Record(kind, response.status_code, t - start, time.perf_counter() - t, body_ok=ok,
                                      retry_after=response.headers.get("retry-after")))
            except Exception as e:  # noqa: BLE001 (a lost request: recorded, never raised)
                records.append(Record(kind, None, t - start, time.perf_counter() - t, f"{type(e).__name__}: {e}"))

        async def client(k: int) -> None:
            rng = random.Random(cfg.seed * 100_003 + k)
            i = 0
            while time.perf_counter() < stop and (cfg.requests_per_client is None or i < cfg.requests_per_client):
                await one(MIX[(k + i) % len(MIX)], rng)
                i += 1

        async def bursts() -> None:
            rng = random.Random(cfg.seed * 100_003 - 1)
            fired = 0
            while cfg.bursts is None or fired < cfg.bursts:
                if cfg.bursts is None:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(clients_done.wait(), cfg.burst_every)
                    if clients_done.is_set():
                        return
                else:
                    await asyncio.sleep(cfg.burst_every)
                await asyncio.gather(*(one("burst", rng) for _ in range(cfg.burst_size)))
                fired += 1

        burster = asyncio.create_task(bursts()) if cfg.burst_size > 0 else None
        await asyncio.gather(*(client(k) for k in range(cfg.clients)))
        clients_done.set()
        if burster is not None:
            await burster  # never cancelled: a request cut off here would count as lost
        counts["seconds"] = round(time.perf_counter() - start, 2)
    return records, counts


# ---------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in [0, 1]) of a list; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * (len(ordered) - 1)))))]


def latency(seconds: list[float]) -> dict:
    ms = [1000 * s for s in seconds]
    return {f"{name}_ms": (round(percentile(ms, q), 2) if ms else None)
            for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))}


def summarize(records: list[Record], counts: dict) -> dict:
    """Totals, per-kind status histograms and latencies, refusal speed."""
    kinds = {}
    for kind, (expected, what) in EXPECTED.items():
        rows = [r for r in records if r.kind == kind]
        if not rows:
            continue
        statuses: dict[str, int] = {}
        for r in rows:
            key = str(r.status) if r.status is not None else "lost"
            statuses[key] = statuses.get(key, 0) + 1
        kinds[kind] = {"what": what, "expected": sorted(expected), "requests": len(rows), "statuses": statuses,
                       "unexpected": sum(r.status is not None and r.status not in expected for r in rows),
                       "bad_bodies": sum(not r.body_ok for r in rows),
                       **latency([r.seconds for r in rows if r.status is not None])}
    refused = [r for r in records if r.status in REFUSALS]
    shed = [r for r in records if r.status == 429]
    valid = [r for r in records if r.kind in ("generate_json", "generate_png") and r.status == 200]
    return {
        "sent": counts["sent"], "answered": counts["answered"], "lost": counts["sent"] - counts["answered"],
        "errors": sorted({f"{r.kind}: {r.error}" for r in records if r.error})[:10],
        "server_errors_5xx": sum(r.status is not None and r.status >= 500 for r in records),
        "unexpected": sum(k["unexpected"] for k in kinds.values()),
        "bad_bodies": sum(k["bad_bodies"] for k in kinds.values()),
        "seconds": counts["seconds"], "requests_per_s": round(counts["answered"] / max(counts["seconds"], 1e-9), 1),
        "refusals": {"requests": len(refused), **latency([r.seconds for r in refused])},
        "queue_full_429": {"requests": len(shed), "without_retry_after": sum(not r.retry_after for r in shed),
                           **latency([r.seconds for r in shed])},
        "valid_generate_200": {"requests": len(valid), **latency([r.seconds for r in valid])},
        "kinds": kinds,
    }


def run_load(url: str, server_pid: int | None, limits: dict, cfg: LoadConfig, settle_s: float = 2.0) -> dict:
    """Warm up every valid path, then drive the load while sampling the server's RSS; returns the summary
    (see summarize) with `rss` (MiB: before, peak, end of load, after settling, before / after malloc_trim,
    samples) and the server's micro-batcher counters."""
    import httpx

    with httpx.Client(base_url=url, timeout=cfg.timeout) as http:  # lazily built networks load here, not in the load
        rng = random.Random(-1)
        for kind in ("generate_json", "generate_png", "upscale", "burst"):
            r = http.request(**make_request(kind, rng, limits))
            if r.status_code != 200:
                raise RuntimeError(f"warm-up {kind} answered {r.status_code}: {r.text[:300]}")

    def trimmed_rss() -> float | None:
        """RSS after malloc_trim: glibc keeps freed memory in its heaps (counted in RSS); trimmed, what is
        left is memory in use. None where the server cannot trim."""
        answer = httpx.post(url + "/_bench/malloc_trim", timeout=60)
        ok = server_pid and answer.status_code == 200 and answer.json()["trimmed"] is not None
        return rss_mib(server_pid) if ok else None

    rss = {"before_mib": rss_mib(server_pid) if server_pid else None}
    rss["before_malloc_trim_mib"] = trimmed_rss()
    sampler = RssSampler(server_pid) if server_pid else None
    if sampler:
        sampler.start()
    records, counts = asyncio.run(drive(url, limits, cfg))
    rss["end_of_load_mib"] = rss_mib(server_pid) if server_pid else None
    samples = sampler.stop() if sampler else []
    time.sleep(settle_s)
    rss["after_mib"] = rss_mib(server_pid) if server_pid else None
    rss["after_malloc_trim_mib"] = trimmed_rss()
    rss["peak_mib"] = max((m for _, m in samples), default=None)
    quarter = [m for t, m in samples if t <= cfg.seconds / 4]
    rss["first_quarter_peak_mib"] = max(quarter, default=None)  # growth after this = steady-state drift
    rss["samples"] = samples[::max(1, len(samples) // 120)]
    result = summarize(records, counts)
    result["rss"] = rss
    result["batches"] = next(iter(httpx.get(url + "/healthz", timeout=10).json()["batches"].values()))
    return result


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

def write_markdown(result: dict, path: Path) -> None:
    m, s, load = result["machine"], result["settings"], result["load"]
    rss = load["rss"]
    lines = ["# Server under load", "",
             f"Machine: {m['cpu']}, {m['cpu_count']} cores; torch {m['torch']}; the server runs with "
             f"{s['server_threads']} torch thread(s). Load average (1 min): {result['load_average']['start']} at "
             f"start, {result['load_average']['end']} at the end (a shared machine: latencies are upper bounds; "
             "the clients share the cores with the server).", "",
             f"Model: {result['model']}. `create_app` + uvicorn in a subprocess on loopback; micro-batches of at "
             f"most {s['max_batch']} images, {s['max_wait_ms']} ms window. Limits: "
             + ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in result["limits"].items())
             + ".", "",
             f"Load: {s['clients']} concurrent clients (httpx.AsyncClient, one process) for {s['seconds']} s, each "
             f"walking the fixed mix below from its own offset (seed {s['seed']}); every {s['burst_every']} s a "
             f"burst of {s['burst_size']} extra connections each asks for the most images a request may "
             f"({result['limits']['max_images']}), far more than the queue takes "
             f"({result['limits']['max_pending_images']} images). Client timeout {s['timeout']} s.", "",
             "## Verdict", "",
             markdown_table([
                 {"what": "requests sent / answered / lost", "value": f"{load['sent']} / {load['answered']} / "
                                                                      f"{load['lost']}"},
                 {"what": "5xx answers", "value": load["server_errors_5xx"]},
                 {"what": "answers outside a kind's expected codes", "value": load["unexpected"]},
                 {"what": "200 answers without the asked images", "value": load["bad_bodies"]},
                 {"what": "throughput (all kinds)", "value": f"{load['requests_per_s']} requests/s"},
                 {"what": "refusals (404/413/415/422/429): p50 / p99 / max ms",
                  "value": f"{load['refusals']['p50_ms']} / {load['refusals']['p99_ms']} / "
                           f"{load['refusals']['max_ms']} ({load['refusals']['requests']} refusals)"},
                 {"what": "queue full (429): p50 / p99 / max ms",
                  "value": f"{load['queue_full_429']['p50_ms']} / {load['queue_full_429']['p99_ms']} / "
                           f"{load['queue_full_429']['max_ms']} ({load['queue_full_429']['requests']} answers)"},
                 {"what": "valid generate (200): p50 / p99 / max ms",
                  "value": f"{load['valid_generate_200']['p50_ms']} / {load['valid_generate_200']['p99_ms']} / "
                           f"{load['valid_generate_200']['max_ms']} ({load['valid_generate_200']['requests']})"},
                 {"what": "server RSS MiB: before / peak / end of load / after 2 s",
                  "value": f"{rss['before_mib']} / {rss['peak_mib']} / {rss['end_of_load_mib']} / "
                           f"{rss['after_mib']}"},
                 {"what": "server RSS MiB: peak in the first quarter of the load (drift after it)",
                  "value": f"{rss['first_quarter_peak_mib']} "
                           f"({(rss['peak_mib'] or 0) - (rss['first_quarter_peak_mib'] or 0):+.1f})"},
                 {"what": "server memory in use MiB (RSS after malloc_trim): before / after the load",
                  "value": f"{rss['before_malloc_trim_mib']} / {rss['after_malloc_trim_mib']}"},
                 {"what": "generator passes / jobs / largest pass (images)",
                  "value": f"{load['batches']['batches']} / {load['batches']['jobs']} / {load['batches']['largest']}"},
             ], [("", "what", ""), ("measured", "value", "")]), "",
             "## Per request kind", "",
             markdown_table([{"kind": k, **v, "expected": ", ".join(map(str, v["expected"])),
                              "statuses": ", ".join(f"{c}: {n}" for c, n in sorted(v["statuses"].items()))}
                             for k, v in load["kinds"].items()],
                            [("kind", "kind", ""), ("request", "what", ""), ("expected", "expected", ""),
                             ("requests", "requests", ">d"), ("answers", "statuses", ""),
                             ("unexpected", "unexpected", ">d"), ("p50 ms", "p50_ms", ">.4g"),
                             ("p90 ms", "p90_ms", ">.4g"), ("p99 ms", "p99_ms", ">.4g"), ("max ms", "max_ms", ">.4g")]),
             "",
             "Server RSS during the load (MiB, every ~10 s): " + ", ".join(
                 f"{m:.0f}" for t, m in rss["samples"][::max(1, len(rss["samples"]) // 6)]) + ". RSS counts freed "
             "memory glibc keeps in its heaps; `malloc_trim(0)` in the server (a benchmark-only route) hands it back, "
             "so the trimmed figures are the memory in use: a leak would show as growth there.", "",
             "Valid generate requests may be shed with 429 (Retry-After: 1) while a burst has filled the queue; "
             "that is the overload answer, counted as expected.", "",
             f"Command: `{result['command']}` (took {result['seconds'] / 60:.1f} min)."]
    if load["errors"]:
        lines[-1:-1] = ["Client-side errors (first 10): " + "; ".join(load["errors"]), ""]
    path.write_text("\n".join(lines) + "\n")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="fashion-mnist", help="shipped model name or a run / model folder")
    p.add_argument("--clients", type=int, default=32, help="concurrent clients (1-256)")
    p.add_argument("--seconds", type=float, default=60.0, help="load duration (1-600 s)")
    p.add_argument("--burst-size", dest="burst_size", type=int, default=24)
    p.add_argument("--burst-every", dest="burst_every", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads in the server process")
    p.add_argument("--max-pending-images", dest="max_pending_images", type=int, default=256,
                   help="the server's queue limit (Limits.max_pending_images)")
    p.add_argument("--max-upload-bytes", dest="max_upload_bytes", type=int, default=2**20,
                   help="Limits.max_upload_bytes (the body limit is twice this + 64 KiB)")
    p.add_argument("--out", default=str(ROOT / "docs"))
    args = p.parse_args(argv)
    if not (1 <= args.clients <= 256 and 1 <= args.seconds <= 600):
        p.error("--clients must be in [1, 256] and --seconds in [1, 600]")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from wordcanvas.server.app import Limits

    limits = asdict(Limits(max_pending_images=args.max_pending_images, max_upload_bytes=args.max_upload_bytes))
    cfg = LoadConfig(clients=args.clients, seconds=args.seconds, burst_size=args.burst_size,
                     burst_every=args.burst_every, seed=args.seed)
    start, load_start = time.time(), load_average()
    with run_server(args.model, limits, threads=args.threads) as (url, server):
        load = run_load(url, server.pid, limits, cfg)
    result = {"command": command_line(), "machine": machine_info(threads=1),
              "model": f"shipped '{args.model}'" if "/" not in args.model else args.model,
              "settings": {**asdict(cfg), "server_threads": args.threads, "max_batch": 64, "max_wait_ms": 4.0},
              "limits": {k: v for k, v in limits.items() if k != "edit_steps"},
              "load_average": {"start": load_start, "end": load_average()},
              "seconds": round(time.time() - start, 1), "load": load}
    out = Path(args.out)
    write_json(out / "server_load.json", result)
    write_markdown(result, out / "server_load.md")
    print((out / "server_load.md").read_text())
    return 0 if load["lost"] == 0 and load["server_errors_5xx"] == 0 and load["unexpected"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
