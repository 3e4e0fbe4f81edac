"""Fault soak: SIGKILL a real `wordcanvas train` run at random moments, resume it each time, and
compare the final weights with an uninterrupted run of the same command.

    python benchmarks/fault_soak.py                       # GAN on Fashion-MNIST, 6 kills
    python benchmarks/fault_soak.py --kills 10 --steps 600 --ckpt-every 50

Reports (docs/fault_soak.md + .json): kills injected, how many hit a checkpoint write, resumes,
steps lost per kill (last logged step - step resumed from; at most one checkpoint interval), and
whether the final checkpoint's weights and optimizer states equal the uninterrupted run's bit for bit.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, command_line, machine_info, markdown_table, write_json

MODEL = {"generator": {"ngf": 16, "max_channels": 64, "cond_dim": 32, "z_dim": 32, "attn_resolutions": [16]},
         "discriminator": {"ndf": 16, "max_channels": 64, "cond_dim": 32}}


def train_command(args, out: Path) -> list[str]:
    return [sys.executable, "-m", "wordcanvas", "train", "gan", "--data", args.data, "--encoder", args.encoder,
            "--steps", str(args.steps), "--batch", str(args.batch), "--threads", "1", "--log-every", "1",
            "--ckpt-every", str(args.ckpt_every), "--sample-every", "0", "--seed", str(args.seed),
            "--set", f"model={json.dumps(MODEL)}", "--set", "sample_prompts=4", "--no-progress", "--out", str(out)]


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}


def last_logged(run: Path) -> int:
    step = 0
    path = run / "log.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("kind") == "train":
                step = record["step"]
    return step


def final_tensors(run: Path, step: int) -> dict:
    """Every weight and optimizer tensor of the checkpoint of `step`."""
    import torch
    from safetensors.torch import load_file

    from wordcanvas.train import checkpoint as ckpt

    folder = run / "checkpoints" / ckpt.step_name(step)
    ckpt.verify_checkpoint(folder)
    out = {}
    for weights in sorted(folder.glob("*/model.safetensors")):
        out.update({f"{weights.parent.name}.{k}": v for k, v in load_file(weights).items()})
    state = ckpt.load_training_state(folder)
    for name, opt in state["optimizers"].items():
        for pid, st in opt["state"].items():
            out.update({f"opt.{name}.{pid}.{k}": v for k, v in st.items() if torch.is_tensor(v)})
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--encoder", default="trainable")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--ckpt-every", type=int, default=25)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--kills", type=int, default=6)
    p.add_argument("--max-delay", type=float, default=0.5, help="kill up to this many seconds after the target step")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default=None, help="folder for the two runs (default: a temporary folder)")
    p.add_argument("--out", default=str(ROOT / "docs" / "fault_soak"))
    args = p.parse_args()
    import torch

    from wordcanvas.train import checkpoint as ckpt

    work = Path(args.work or tempfile.mkdtemp(prefix="fault-soak-"))
    straight, soak = work / "straight", work / "soak"
    t0, straight_s = time.time(), None
    if (straight / "checkpoints" / ckpt.step_name(args.steps)).is_dir():
        print(f"reusing the finished uninterrupted run in {straight}")
    else:
        done = subprocess.run(train_command(args, straight), env=env(), capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"the uninterrupted run failed:\n{done.stderr[-3000:]}")
        straight_s = round(time.time() - t0, 1)

    rng = random.Random(args.seed)
    kills, high, t0 = [], 0, time.time()
    for k in range(args.kills):
        proc = subprocess.Popen(train_command(args, soak), env=env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        # Odd kills: a random step within the next 1.5 checkpoint intervals, then a random delay;
        # even kills: just as a checkpoint step is logged (its checkpoint is being written next).
        if k % 2 == 0:
            target = high + rng.randint(1, max(1, 3 * args.ckpt_every // 2))
            delay = rng.uniform(0, args.max_delay)
        else:
            target = (high // args.ckpt_every + 1) * args.ckpt_every
            delay = rng.uniform(0, 0.2)
        while proc.poll() is None and last_logged(soak) < target:
            time.sleep(0.002)
        time.sleep(delay)
        if proc.poll() is not None:
            print(f"kill {k + 1}: the run had already finished; stopping the soak here")
            break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        mid_write = any(p.name.startswith(".tmp-") for p in (soak / "checkpoints").glob(".*")) \
            if (soak / "checkpoints").is_dir() else False
        logged = last_logged(soak)
        good = ckpt.latest_good_checkpoint(soak / "checkpoints", warn=lambda m: None) \
            if (soak / "checkpoints").is_dir() else None
        resume_at = good[1]["step"] if good else 0
        broken = 0
        for folder in ckpt.step_folders(soak / "checkpoints"):
            try:
                ckpt.verify_checkpoint(folder)
            except Exception:  # noqa: BLE001 - counted and reported
                broken += 1
        kills.append({"kill": k + 1, "aimed_at_step": target, "last_logged_step": logged, "resumes_from": resume_at,
                      "steps_lost": logged - resume_at, "mid_checkpoint_write": mid_write,
                      "unverifiable_checkpoints": broken})
        print(kills[-1], flush=True)
        high = max(high, logged)
    done = subprocess.run(train_command(args, soak), env=env(), capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"the final resume failed:\n{done.stderr[-3000:]}")
    soak_s = time.time() - t0

    a, b = final_tensors(straight, args.steps), final_tensors(soak, args.steps)
    differing = [k for k in a if k not in b or not torch.equal(a[k], b[k])]
    max_diff = max((float((a[k].double() - b[k].double()).abs().max()) for k in a if k in b), default=0.0)
    log_steps = [json.loads(x)["step"] for x in (soak / "log.jsonl").read_text().splitlines()
                 if json.loads(x).get("kind") == "train"]
    summary = {"kills": len(kills), "resumes": len(kills),
               "kills_during_checkpoint_write": sum(k["mid_checkpoint_write"] for k in kills),
               "max_steps_lost": max((k["steps_lost"] for k in kills), default=0),
               "total_steps_lost": sum(k["steps_lost"] for k in kills),
               "checkpoint_interval": args.ckpt_every,
               "unverifiable_checkpoints_seen": sum(k["unverifiable_checkpoints"] for k in kills),
               "tensors_compared": len(a), "tensors_differing": len(differing), "max_abs_difference": max_diff,
               "final_equal": not differing and a.keys() == b.keys(),
               "log_is_one_clean_run": log_steps == list(range(1, args.steps + 1)),
               "uninterrupted_wall_s": straight_s, "soak_wall_s": round(soak_s, 1)}
    settings = {**vars(args), "out": os.path.relpath(args.out, ROOT)}  # no machine-specific paths in the record
    result = {"command": command_line(), "settings": settings, "machine": machine_info(), "summary": summary,
              "kills": kills}
    write_json(args.out + ".json", result)
    table = markdown_table(kills, [("kill", "kill", ""), ("aimed at step", "aimed_at_step", ""),
                                   ("last logged step", "last_logged_step", ""),
                                   ("resumed from", "resumes_from", ""), ("steps lost", "steps_lost", ""),
                                   ("during a checkpoint write", "mid_checkpoint_write", ""),
                                   ("unverifiable checkpoints", "unverifiable_checkpoints", "")])
    text = [
        "# Fault soak: SIGKILL during training, then resume",
        "",
        f"Command: `{command_line()}`",
        "",
        f"A `wordcanvas train gan` run on {args.data} ({args.encoder} encoder, batch {args.batch}, 1 thread, "
        f"{args.steps} steps, a checkpoint every {args.ckpt_every} steps) was killed with SIGKILL {len(kills)} times, "
        "and restarted with the same command each time (it resumes from the newest checkpoint that verifies). "
        f"Odd kills came 0-{args.max_delay:g} s after a random step within the next 1.5 checkpoint intervals; even "
        "kills 0-0.2 s after a checkpoint step was logged, while its checkpoint is being written. The same command "
        "was also run once without interruption.",
        "",
        "| measure | value |",
        "|---|---|",
        *[f"| {k.replace('_', ' ')} | {v} |" for k, v in summary.items()],
        "",
        table,
        "",
        f"Machine: {result['machine'].get('cpu', '?')}, load average {result['machine'].get('load_average_1min')} "
        "at the end.",
        "",
    ]
    Path(args.out + ".md").write_text("\n".join(text))
    print("\n".join(text))
    if args.work is None:  # keep only the report
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0 if summary["final_equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
