"""Small helpers shared by the benchmark scripts: machine description, load waiting, timing
summaries, markdown tables and result files."""
from __future__ import annotations

import os
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT / "src"))


def load_average() -> float:
    """1-minute load average (0.0 where the platform has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return 0.0


def machine_info(**extra) -> dict:
    """CPU, core count, torch threads and library versions (wordcanvas.text.registry.machine_info),
    plus onnxruntime's version, the 1-minute load average now, and anything passed in."""
    from wordcanvas.text.registry import machine_info as base

    info = base()
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    import torch

    info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    info["load_average_1min"] = load_average()
    info.update(extra)
    return info


def wait_for_quiet(max_load: float = 1.5, max_wait_s: float = 900, poll_s: float = 60,
                   log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True)) -> dict:
    """Wait (up to max_wait_s) until the 1-minute load average is at most max_load, so speed numbers
    are not taken while other jobs share the CPUs. Returns what happened (recorded with the results)."""
    start, first = time.time(), load_average()
    load = first
    while load > max_load and time.time() - start < max_wait_s:
        log(f"load average {load:.2f} > {max_load}: waiting {poll_s:.0f} s "
            f"({time.time() - start:.0f} / {max_wait_s:.0f} s)")
        time.sleep(poll_s)
        load = load_average()
    return {"max_load": max_load, "load_when_asked": first, "load_at_start": load,
            "waited_s": round(time.time() - start, 1), "quiet": load <= max_load}


def summarize_ms(seconds: Sequence[float]) -> dict:
    """Median, p90, mean and min of per-call times, in milliseconds."""
    ms = sorted(1000 * s for s in seconds)
    p90 = ms[min(len(ms) - 1, max(0, int(round(0.9 * (len(ms) - 1)))))]
    return {"calls": len(ms), "median_ms": round(statistics.median(ms), 3), "p90_ms": round(p90, 3),
            "mean_ms": round(statistics.fmean(ms), 3), "min_ms": round(ms[0], 3)}


def fmt(value, spec: str = ".3g") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def markdown_table(rows: list[dict], columns: list[tuple[str, str | Callable[[dict], object], str]]) -> str:
    """columns: (header, key or function of the row, format spec; a leading '>' right-aligns)."""
    heads, aligns = [], []
    for head, _, spec in columns:
        heads.append(head)
        aligns.append("---:" if spec.startswith(">") else "---")
    lines = ["| " + " | ".join(heads) + " |", "|" + "|".join(aligns) + "|"]
    for row in rows:
        cells = []
        for _, get, spec in columns:
            value = get(row) if callable(get) else row.get(get)
            cells.append(fmt(value, spec.lstrip(">") or ".3g"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_json(path: str | os.PathLike, data: dict) -> None:
    from wordcanvas.utils.io import atomic_write_json

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, data)


def command_line() -> str:
    """How this script was run, with the path relative to the checkout."""
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(ROOT)
    except ValueError:
        pass
    return shlex.join(["python", str(script), *sys.argv[1:]])  # quoted: the line can be pasted back
