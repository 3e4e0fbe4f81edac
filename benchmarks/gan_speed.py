"""Speed of the text-conditioned GAN on CPU: training, sampling and text encoding, per thread count.

    python benchmarks/gan_speed.py                      # 2 and 1 threads; ~10-15 minutes on 2 quiet cores
    python benchmarks/gan_speed.py --threads 2 --quick  # fewer calls, 32/64 px training only

- Training: images/s of the real optimisation step (GANFamily.step: D update with MA-GP every 4th
  step, G update, DiffAugment; then the EMA update) on batches of 32 real images with cached text
  embeddings (MiniLM behind the embedding cache, as training uses it), at 32 px (Fashion-MNIST,
  grey), 64 and 128 px (toy faces, RGB); timed over whole regulariser cycles after a warm-up of
  one cycle. Beside it: the trainable text encoder (trained jointly, so it runs every step) and the
  DCGAN baseline (named baseline for the ratios).
- Sampling: `wordcanvas.generate.TextToImage` (the public inference API) with freshly initialised
  generators of the default architecture (speed does not depend on the weights): batch-1 latency
  over >= 200 calls with a cached prompt (median, p90), the generator forward alone, and images/s
  for one call of n = 256 images.
- Text encoding, separately: MiniLM and SmolLM2 on new (uncached) prompts, batch 1 and batch 64.

Before measuring, the script waits (up to --max-wait s) for the 1-minute load average to drop to
--max-load, and records the load at start and end. Writes <out>/gan_speed.json and .md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from _common import (ROOT, command_line, fmt, load_average, machine_info, markdown_table, summarize_ms, wait_for_quiet,
                     write_json)

SECTIONS = ("sampling", "text", "training")
TARGET_MS = 10.0  # batch-1, 64 px, cached prompt: median latency target
PROMPT = "a photo of a sneaker"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", default="2,1", help="comma list of torch thread counts")
    p.add_argument("--calls", type=int, default=300, help="batch-1 sampling calls per row (>= 200)")
    p.add_argument("--batch", type=int, default=32, help="training batch")
    p.add_argument("--quick", action="store_true", help="fewer calls and steps, no 128 px / SmolLM2 rows")
    p.add_argument("--max-load", dest="max_load", type=float, default=1.5)
    p.add_argument("--max-wait", dest="max_wait", type=float, default=900, help="seconds to wait for a quiet machine")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help="comma list of sections to measure; the others are kept from an existing <out>/gan_speed.json")
    p.add_argument("--presets", default="",
                   help="comma list: measure only the training rows with these settings (plus the DCGAN rows, for the "
                        "ratios); the other rows are kept from an existing <out>/gan_speed.json")
    p.add_argument("--out", default=str(ROOT / "docs"))
    args = p.parse_args(argv)
    args.threads = [int(t) for t in args.threads.split(",") if t.strip()]
    args.sections = [x.strip() for x in args.sections.split(",") if x.strip()]
    args.presets = [x.strip() for x in args.presets.split(",") if x.strip()]
    if set(args.presets) - set(PRESETS):
        p.error(f"--presets: choose from {', '.join(PRESETS)}")
    if set(args.sections) - set(SECTIONS):
        p.error(f"--sections: choose from {', '.join(SECTIONS)}")
    if args.quick:
        args.calls = min(args.calls, 200)
    return args


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------

# Model settings (TrainConfig.model) measured besides the defaults: the ones the quality benchmarks
# train (docs/gan_fashion-mnist, docs/gan_toy-faces), so their --clock steps rates come from here.
PRESETS = {
    "default": {},
    "gan-cls": {"arch": "gan-cls", "discriminator": {"ndf": 32, "cond_head": "projection"}, "reg": "r1",
                "reg_weight": 0.1, "reg_every": 16, "augment": ""},
    "dfgan-16": {"generator": {"ngf": 16}, "discriminator": {"cond_head": "projection", "ndf": 16, "mbstd_group": 4},
                 "reg_every": 16},
    "gan-cls-64": {"arch": "gan-cls", "generator": {"ngf": 32},
                   "discriminator": {"ndf": 16, "cond_head": "projection", "mbstd_group": 4},
                   "reg": "r1", "reg_weight": 0.1, "reg_every": 16, "augment": ""},
}
# The Fashion-MNIST recipe with a costlier option each: the mode-seeking term (a second half batch
# through the generator; its cost does not depend on its weight) and minibatch standard deviation.
PRESETS["gan-cls-ms"] = {**PRESETS["gan-cls"], "mode_seeking": 1.0}
PRESETS["gan-cls-mbstd"] = {**PRESETS["gan-cls"], "discriminator": {**PRESETS["gan-cls"]["discriminator"], "mbstd_group": 4}}
PRESETS["gan-cls-64-ms"] = {**PRESETS["gan-cls-64"], "mode_seeking": 1.0}  # the toy-faces recipe with the term
PRESETS["gan-cls-64-con"] = {**PRESETS["gan-cls-64"], "contrastive": 1.0}  # ... with the contrastive terms
# The captioned-MNIST recipe before the captioner term (configs/gan_captioned-mnist.json now adds "mnist-regions"
# and model.captioner), then with the generator's cross-attention,
# then with the word-region contrastive terms as well (docs/gan_captioned-mnist).
PRESETS["mnist"] = {**PRESETS["gan-cls-64-con"], "discriminator": {**PRESETS["gan-cls-64"]["discriminator"],
                                                                   "cond_head": "concat"}, "hard_negatives": 0.5}
PRESETS["mnist-attn"] = {**PRESETS["mnist"], "generator": {"ngf": 32, "attn_resolutions": [8, 16]}}
PRESETS["mnist-attn-word"] = {**PRESETS["mnist-attn"], "word_contrastive": 1.0}
PRESETS["mnist-regions"] = {**PRESETS["mnist"],  # positional cross-attention in G, token-reading regions in D
                            "generator": {"ngf": 32, "attn_resolutions": [4, 8, 16], "attn_positions": True},
                            "discriminator": {**PRESETS["mnist"]["discriminator"], "cond_tokens": True}}
# The captioned-MNIST recipe as shipped (token pooling, the captioner term at weight 4, the region prior).
PRESETS["mnist-recipe"] = json.loads((ROOT / "configs" / "gan_captioned-mnist.json").read_text())["model"]
TRAIN_ROWS = [  # (family, encoder, dataset, resolution, preset)
    ("gan", "minilm", "fashion-mnist", 32, "default"),
    ("gan", "minilm", "fashion-mnist", 32, "gan-cls"),
    ("gan", "minilm", "fashion-mnist", 32, "gan-cls-ms"),
    ("gan", "minilm", "fashion-mnist", 32, "gan-cls-mbstd"),
    ("gan", "minilm", "toy-faces", 64, "default"),
    ("gan", "minilm", "toy-faces", 64, "dfgan-16"),
    ("gan", "minilm", "toy-faces", 64, "gan-cls-64"),
    ("gan", "minilm", "toy-faces", 64, "gan-cls-64-ms"),
    ("gan", "minilm", "toy-faces", 64, "gan-cls-64-con"),
    ("gan", "minilm", "toy-faces", 128, "default"),
    ("gan", "minilm", "captioned-mnist", 64, "mnist"),
    ("gan", "minilm", "captioned-mnist", 64, "mnist-attn"),
    ("gan", "minilm", "captioned-mnist", 64, "mnist-attn-word"),
    ("gan", "minilm", "captioned-mnist", 64, "mnist-regions"),
    ("gan", "minilm", "captioned-mnist", 64, "mnist-recipe"),
    ("gan", "trainable", "fashion-mnist", 32, "default"),
    ("dcgan", None, "fashion-mnist", 32, "default"),
    ("dcgan", None, "toy-faces", 64, "default"),
]


def measure_training(family: str, encoder_name: str | None, data: str, resolution: int, batch: int, cycles: int,
                     minilm, preset: str = "default") -> dict:
    import torch

    from wordcanvas.data import load_dataset
    from wordcanvas.data.loader import collate
    from wordcanvas.text.cache import CachedEncoder
    from wordcanvas.text.registry import load_encoder
    from wordcanvas.train.config import TrainConfig
    from wordcanvas.train.gan_step import GANSettings
    from wordcanvas.train.loop import FAMILIES, Dist, ema_beta, update_ema

    dataset = load_dataset(data, "train", resolution, seed=0)
    near_miss = PRESETS[preset].get("hard_negatives", 0) > 0  # the loader then brings near-miss captions too
    items = collate([dataset.item(i, near_miss=near_miss) for i in range(batch)])
    cfg = TrainConfig(family=family, data=data, encoder=encoder_name or "minilm", resolution=resolution, batch=batch,
                      device="cpu", progress=False, model=PRESETS[preset])
    encoder = None
    if family == "gan":
        if encoder_name == "trainable":
            captions = sorted({c for i in range(min(len(dataset), 2000)) for c in dataset.captions(i)})
            encoder = load_encoder("trainable", "cpu", captions=captions)
        else:
            encoder = CachedEncoder(minilm)
            encoder.encode(items["caption"] + items.get("contrast", []))  # cached, as after the loop's pre-fill
    torch.manual_seed(0)
    fam = FAMILIES[family](cfg, dataset, encoder, torch.device("cpu"), Dist())
    cycle = GANSettings(**PRESETS[preset]).reg_every if family == "gan" else 4  # whole regulariser cycles
    warmup, steps = cycle, cycle * cycles

    def one_step(step: int) -> None:
        fam.step(items, step)
        for live, ema in fam.ema_pairs:
            update_ema(ema, live, ema_beta(cfg.ema_kimg, cfg.ema_rampup, (step + 1) * batch, batch))

    for step in range(warmup):
        one_step(step)
    per_step = [timed(lambda s=step: one_step(s)) for step in range(warmup, warmup + steps)]
    total = sum(per_step)
    return {"family": family, "encoder": encoder_name, "preset": preset, "data": data, "resolution": resolution,
            "channels": dataset.channels, "batch": batch, "warmup_steps": warmup, "steps": steps,
            "images_per_s": round(batch * steps / total, 2), "ms_per_step_median": round(1000 * statistics.median(per_step), 1),
            "params_g": sum(p.numel() for p in fam.G.parameters()), "params_d": sum(p.numel() for p in fam.D.parameters()),
            "threads": torch.get_num_threads()}


# ---------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------

SAMPLE_ROWS = [("gan", 32, 1, "default"), ("gan", 64, 3, "default"), ("gan", 64, 1, "mnist-recipe"),
               ("dcgan", 32, 1, "default"), ("dcgan", 64, 3, "default")]  # (family, resolution, channels, preset)


def measure_sampling(family: str, resolution: int, channels: int, calls: int, minilm, big_batch: int = 256,
                     big_reps: int = 3, preset: str = "default") -> dict:
    import torch

    from wordcanvas.data.fashion_mnist import CLASS_NAMES
    from wordcanvas.generate import TextToImage
    from wordcanvas.models.gan import DCGANConfig, DCGANGenerator, Generator, GeneratorConfig
    from wordcanvas.train.gan_step import GANSettings

    torch.manual_seed(0)
    if family == "gan":
        generator = (Generator(GeneratorConfig(resolution=resolution, channels=channels, text_dim=minilm.dim))
                     if preset == "default"  # else the generator a recipe trains (architecture and settings)
                     else GANSettings(**PRESETS[preset]).build_generator(resolution, channels, minilm.dim).eval())
        t2i = TextToImage(generator, minilm, {"family": "gan"})
    else:
        generator = DCGANGenerator(DCGANConfig(resolution=resolution, channels=channels, num_classes=len(CLASS_NAMES)))
        t2i = TextToImage(generator, None, {"family": "dcgan", "classes": CLASS_NAMES})
    t2i(PROMPT)  # encodes the prompt once: every timed call below finds it in the cache
    for i in range(20):
        t2i(PROMPT, seed=i)
    latency = summarize_ms([timed(lambda i=i: t2i(PROMPT, seed=i)) for i in range(calls)])

    # The generator alone (noise and embedding ready): what the API adds on top of it.
    z = torch.randn(1, generator.config.z_dim)
    cond = t2i.embed([PROMPT]) if family == "gan" else torch.tensor([7])
    with torch.inference_mode():
        for _ in range(20):
            generator(z, cond)
        forward = summarize_ms([timed(lambda: generator(z, cond)) for _ in range(calls)])

    t2i(PROMPT, n=big_batch)  # warm-up at this size
    big = [timed(lambda: t2i(PROMPT, n=big_batch, seed=1)) for _ in range(big_reps)]
    return {"family": family, "preset": preset, "resolution": resolution, "channels": channels,
            "params": sum(p.numel() for p in generator.parameters()), "batch1": latency, "generator_forward": forward,
            "batch": big_batch, "batch_images_per_s": round(big_batch / statistics.median(big), 1),
            "threads": torch.get_num_threads()}


# ---------------------------------------------------------------------------------------------
# Text encoding
# ---------------------------------------------------------------------------------------------

def measure_text(encoder, prompts: list[str], reps: int = 3) -> dict:
    import torch

    encoder.encode(prompts[:2])  # warm-up
    single = summarize_ms([timed(lambda p=p: encoder.encode([p])) for p in prompts])
    batch = min(timed(lambda: encoder.encode(prompts[:64])) for _ in range(reps))
    return {"encoder": encoder.name, "dim": encoder.dim, "batch1": single,
            "batch64_prompts_per_s": round(len(prompts[:64]) / batch, 1), "threads": torch.get_num_threads()}


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

def write_markdown(result: dict, path: Path) -> None:
    m, load = result["machine"], result["load_average"]
    # ratios only within one run (load differs between runs): each row against the DCGAN of its own run
    base = {(r["threads"], r["resolution"], r.get("run")): r["images_per_s"] for r in result["training"]
            if r["family"] == "dcgan"}
    for r in result["training"]:
        b = base.get((r["threads"], r["resolution"], r.get("run")))
        r["x_dcgan"] = round(r["images_per_s"] / b, 3) if b else None
    train = markdown_table(result["training"], [
        ("model", lambda r: r["family"] + (f" + {r['encoder']}" if r["encoder"] else ""), ""),
        ("settings", lambda r: r.get("preset", "default") + (" (earlier run)" if r.get("kept") else ""), ""),
        ("threads", "threads", ">d"), ("px", "resolution", ">d"), ("ch", "channels", ">d"), ("batch", "batch", ">d"),
        ("timed steps", "steps", ">d"), ("ms / step (median)", "ms_per_step_median", ">.0f"),
        ("images / s", "images_per_s", ">.1f"), ("x DCGAN", "x_dcgan", ">.2f"),
        ("G params (M)", lambda r: r["params_g"] / 1e6, ">.2f"), ("D params (M)", lambda r: r["params_d"] / 1e6, ">.2f"),
        ("load after", "load_average", ">.2f")])
    sample = markdown_table(result["sampling"], [
        ("model", "family", ""), ("settings", lambda r: r.get("preset", "default"), ""), ("threads", "threads", ">d"),
        ("px", "resolution", ">d"), ("batch-1 median ms", lambda r: r["batch1"]["median_ms"], ">.2f"),
        ("batch-1 p90 ms", lambda r: r["batch1"]["p90_ms"], ">.2f"), ("calls", lambda r: r["batch1"]["calls"], ">d"),
        ("G forward only, median ms", lambda r: r["generator_forward"]["median_ms"], ">.2f"),
        (f"images / s at n = {result['sampling'][0]['batch'] if result['sampling'] else 256}", "batch_images_per_s", ">.0f"),
        ("G params (M)", lambda r: r["params"] / 1e6, ">.2f"), ("load after", "load_average", ">.2f")])
    text = markdown_table(result["text"], [
        ("encoder", "encoder", ""), ("threads", "threads", ">d"), ("dim", "dim", ">d"),
        ("batch-1 median ms", lambda r: r["batch1"]["median_ms"], ">.1f"), ("batch-1 p90 ms", lambda r: r["batch1"]["p90_ms"], ">.1f"),
        ("prompts", lambda r: r["batch1"]["calls"], ">d"), ("batch-64 prompts / s", "batch64_prompts_per_s", ">.0f"),
        ("load after", "load_average", ">.2f")])
    t = result["target"]
    lines = [
        "# GAN speed on CPU", "",
        f"Machine: {m['cpu']}, {m['cpu_count']} cores; torch {m['torch']}, Python {m['python']}. Thread counts are "
        f"`torch.set_num_threads`. Load average (1 min): {load['start']} at start, {load['end']} at the end"
        f"{'' if result['wait']['quiet'] else ' (the machine did not become quiet within the wait: rates are lower bounds)'}. "
        f"fp32 throughout; no GPU. 'load after': the 1-minute load average right after each row "
        "(this process included, so about the thread count on a quiet machine).", "",
        *[f"The {section} rows come from an earlier run (`{info['command']}`, load {info['load_average']['start']} "
          f"at start, {info['load_average'].get('end')} at the end).\n" for section, info in
          result.get("kept_from_earlier_run", {}).items()],
        "## Training", "",
        f"One optimisation step of the text-conditioned GAN (`GANFamily.step`: D on real / mismatched / fake, the "
        f"regulariser every reg_every-th step, then G) plus the EMA update, batch {result['settings']['batch']} of real "
        "images held in memory, MiniLM text embeddings from the embedding cache (as in training); the trainable encoder "
        "runs forward and backward every step. 'settings': the model settings (`PRESETS` in the script; default = "
        "DF-GAN arch, DiffAugment, MA-GP every 4th step). Timed over whole regulariser cycles after one warm-up cycle. 32 px: "
        "Fashion-MNIST (grey); 64 / 128 px: toy faces (RGB). x DCGAN: rate over the DCGAN baseline's at the same size "
        "and threads.", "", train, "",
        "## Sampling (text -> image)", "",
        "`TextToImage(prompt, seed=i)`, one image per call, the prompt's embedding cached (the first call encoded it); "
        "default generator architecture (GeneratorConfig defaults: ngf 32, cross-attention at 16 px), random weights; "
        "'mnist-recipe': the generator configs/gan_captioned-mnist.json trains (GAN-CLS with positional cross-attention, "
        "token pooling and the region prior). "
        "'G forward only' is the generator call alone with noise and embedding ready. The DCGAN maps the prompt to a "
        "class name instead of encoding it.", "", sample, "",
        f"Target: batch-1 at 64 px with a cached prompt below {TARGET_MS:g} ms median at {t['threads']} threads: "
        f"**{fmt(t['median_ms'], '.2f')} ms -> {'met' if t['met'] else 'NOT met'}**.", "",
        "## Text encoding (new prompts, no cache)", "",
        "Each of 64 distinct prompts encoded alone (median, p90), and all 64 in one batch (best of 3). A prompt seen "
        "before costs only a dictionary lookup in `TextToImage` (included in the sampling rows above).", "", text, "",
        f"Command: `{result['command']}` (took {result['seconds'] / 60:.1f} min).", ""]
    path.write_text("\n".join(lines))


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch

    from wordcanvas.text import MiniLMEncoder, SmolLM2Encoder
    from wordcanvas.text.registry import BENCH_PROMPTS

    out = Path(args.out)
    previous = json.loads((out / "gan_speed.json").read_text()) if (out / "gan_speed.json").exists() else {}
    wait = wait_for_quiet(args.max_load, args.max_wait)
    start = time.time()
    run_id = time.strftime("%Y-%m-%dT%H:%M:%S")
    result = {"command": command_line(), "settings": {"threads": args.threads, "calls": args.calls, "batch": args.batch,
                                                      "quick": args.quick, "prompt": PROMPT},
              "wait": wait, "load_average": {"start": load_average()}, "training": [], "sampling": [], "text": []}
    result["machine"] = machine_info(threads=args.threads)
    kept = [x for x in SECTIONS if x not in args.sections and previous.get(x)]
    for section in kept:  # measured by an earlier run: keep its rows and say so
        result[section] = previous[section]
        result.setdefault("kept_from_earlier_run", {})[section] = (
            previous.get("kept_from_earlier_run", {}).get(section)  # kept twice: say where it was measured
            or {"command": previous.get("command"), "load_average": previous.get("load_average")})
    minilm = MiniLMEncoder()
    encoders = {}
    if "text" in args.sections:
        encoders = {"minilm": minilm} if args.quick else {"minilm": minilm, "smollm2": SmolLM2Encoder()}

    def save() -> None:
        result["load_average"]["end"] = load_average()
        result["seconds"] = round(time.time() - start, 1)
        gan64 = [r for r in result["sampling"] if r["family"] == "gan" and r["resolution"] == 64
                 and r.get("preset", "default") == "default"]
        best = max(gan64, key=lambda r: r["threads"], default=None)  # the most threads measured
        result["target"] = {"what": f"gan batch-1 64 px median < {TARGET_MS} ms, cached prompt",
                            "threads": best["threads"] if best else None,
                            "median_ms": best["batch1"]["median_ms"] if best else None,
                            "met": bool(best and best["batch1"]["median_ms"] < TARGET_MS)}
        write_json(out / "gan_speed.json", result)
        write_markdown(result, out / "gan_speed.md")

    for threads in args.threads:
        torch.set_num_threads(threads)
        for family, res, channels, preset in SAMPLE_ROWS if "sampling" in args.sections else []:
            row = measure_sampling(family, res, channels, args.calls, minilm, big_reps=2 if args.quick else 3,
                                   preset=preset)
            row["load_average"] = load_average()
            result["sampling"].append(row)
            print(f"sampling {family} {res}px x{threads}: {row['batch1']['median_ms']:.2f} ms median, "
                  f"{row['batch_images_per_s']} img/s at n=256", file=sys.stderr, flush=True)
        save()
        for name, encoder in encoders.items() if "text" in args.sections else []:
            row = measure_text(encoder, BENCH_PROMPTS)
            row["load_average"] = load_average()
            result["text"].append(row)
            print(f"text {name} x{threads}: {row['batch1']['median_ms']:.1f} ms, {row['batch64_prompts_per_s']} prompts/s",
                  file=sys.stderr, flush=True)
        save()
        if args.presets and threads == args.threads[0]:  # rows not measured now stay from the earlier run,
            kept_rows = [dict(r, preset=r.get("preset", "default"), kept=True)  # with their run's DCGAN rows
                         for r in previous.get("training", [])
                         if r["threads"] not in args.threads or r.get("preset", "default") not in args.presets]
            runs = {r.get("run") for r in kept_rows if r["family"] != "dcgan"}
            result["training"] = [r for r in kept_rows if r["family"] != "dcgan" or r.get("run") in runs]
        for family, enc, data, res, preset in TRAIN_ROWS if "training" in args.sections else []:
            if (args.quick and res > 64) or (args.presets and family != "dcgan" and preset not in args.presets):
                continue
            cycles = 1 if (args.quick or res >= 128) else 2
            row = measure_training(family, enc, data, res, args.batch, cycles, minilm, preset)
            row["load_average"], row["run"] = load_average(), run_id
            result["training"].append(row)
            print(f"training {family} {enc or ''} {preset} {res}px x{threads}: {row['images_per_s']} img/s", file=sys.stderr,
                  flush=True)
            save()
    save()
    print((out / "gan_speed.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
