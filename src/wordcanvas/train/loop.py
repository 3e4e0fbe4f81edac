"""The one training loop, shared by every model family.

`train(cfg)` is a plain function with named phases: setup -> resume -> loop (data -> step -> ema
-> log -> sample -> eval -> checkpoint) -> teardown. What differs between model families lives
in a small family object (train/gan_step.py for the GANs), constructed as
`Family(cfg, dataset, encoder, device, dist)` (optionally with a classmethod build_dataset(cfg)
when it brings its own data) and offering:

    modules: dict[str, nn.Module]          saved in every checkpoint (save_pretrained)
    optimizers: dict[str, Optimizer]       saved in training_state.pt
    ema_pairs: list[(live, ema)]           updated here after each step
    uses_text: bool                        whether a text encoder is needed
    wants_near_misses: int (optional)      near-miss captions each item carries ("contrast", data.base.item)
    step(batch, step) -> dict[str, tensor] one optimisation step (gradients synced via dist.sync_grads)
    generate(prompts, seed) -> images      one image per prompt (str or data.base.Prompt)
    sample(prompts, n, seed) -> images     n images per prompt, prompt-major
    export_meta() -> dict                  how `wordcanvas generate` rebuilds the model
    state_dict() / load_state_dict(d)      any extra state (tensors and plain containers only)

Exact resume: the data order is a seeded permutation per epoch, addressed by step, captions are
drawn per (seed, epoch, index), and every random draw of a step comes from a generator seeded
by (seed, step), so k steps + resume + (N - k) steps equals N steps bit for bit on CPU.

Processes (torchrun; gloo on CPU, nccl on CUDA): rank r of w takes rows [r*b, (r+1)*b) of the
global batch that one process with batch w*b would take, the GAN and VAE families draw their
per-sample randomness for the global batch and keep their slice, and gradients are averaged, so
w processes x batch b train like one process x batch w*b up to float summation order (batch
statistics aside: the DCGAN's BatchNorm, the mode-seeking pairs, VAE free bits). Only rank 0 writes
checkpoints, logs and samples; logged losses are means over all ranks; the evaluator runs on every
rank (so it may shard its work: metrics.evaluate.evaluate_generator does). A run resumes on another
number of processes when the global batch stays the same (batch x processes).

Faults: a run killed at any moment resumes from the newest checkpoint that verifies (at most one
checkpoint interval lost; a torn one is skipped with a warning; leftovers of killed writers are
cleaned; log records past the checkpoint are trimmed). SIGTERM / SIGINT finish the step and save.
The run folder is probe-written, and its free space checked, before training starts; a failed
checkpoint write (disk full) raises CheckpointWriteError and leaves the previous one intact.
Divergence guard: every step's losses are checked (one reduction), weights before each
checkpoint; a non-finite value rolls the run back to the last good checkpoint (or the start)
with the learning rates x nan_lr_factor, at most max_rollbacks times (nan_policy "raise": stop).
Divergence can also stay finite (a likelihood model's loss jumping a thousandfold): a family that
names a `watch_loss` (VAE: the negative ELBO; SR: L1; not the GANs, whose adversarial losses swing
by design) has it compared with its running mean, and spike_patience steps in a row above
spike_factor x that mean count as divergence too (LossSpikeGuard).
"""
from __future__ import annotations

import copy
import errno
import json
import math
import os
import random
import shutil
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from wordcanvas.data.base import Prompt
from wordcanvas.train import checkpoint as ckpt
from wordcanvas.train.config import IDENTITY_KEYS, TrainConfig
from wordcanvas.train.gan_step import DCGANFamily, GANFamily, is_trainable
from wordcanvas.train.logging import JsonlLog, plot_log, save_sample_grid
from wordcanvas.train.style_step import StyleFamily
from wordcanvas.train.sr_step import SRFamily
from wordcanvas.train.vae_step import VAEFamily
from wordcanvas.utils.io import atomic_write_bytes, atomic_write_json

Evaluator = Callable[[Callable], dict]

# Model families by the name in TrainConfig.family (a new family adds its class here).
FAMILIES: dict[str, type] = {"gan": GANFamily, "dcgan": DCGANFamily, "style": StyleFamily, "sr": SRFamily,
                             "vae": VAEFamily}


# --- devices and processes ---------------------------------------------------------------------

def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' was requested but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


@dataclass
class Dist:
    """This process's place in a (possibly single-process) run. Gradients are averaged by hand
    after each backward (as in stylegan2-ada-pytorch) rather than through DistributedDataParallel:
    a GAN alternates phases that freeze one network, which DDP's reducer does not expect."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sync_grads(self, modules: list[nn.Module]) -> None:
        if self.world == 1:
            return
        params = [p for m in modules for p in m.parameters() if p.requires_grad]
        if not params:
            return
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params])
        torch.distributed.all_reduce(flat)
        flat /= self.world
        for p, g in zip(params, flat.split([p.numel() for p in params])):
            p.grad = g.view_as(p).clone()

    def any(self, flag: bool) -> bool:
        """True on every rank when the flag is set on any rank."""
        if self.world == 1:
            return bool(flag)
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item() > 0)

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """The mean of each value over all ranks (every rank passes the same keys)."""
        if self.world == 1 or not values:
            return values
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return dict(zip(keys, (t / self.world).tolist()))


def init_dist(device_name: str) -> Dist:
    """Reads torchrun's WORLD_SIZE / RANK / LOCAL_RANK; gloo on CPU, nccl on CUDA."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    owns = False
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
        owns = True
    return Dist(rank, world, local_rank, device, owns)


# --- data order --------------------------------------------------------------------------------

class StepBatches:
    """Batch indices as a pure function of the step: epoch e is a permutation seeded by (seed, e);
    step s takes global batch s mod steps-per-epoch; rank r takes its slice of that batch."""

    def __init__(self, n: int, batch: int, seed: int, rank: int = 0, world: int = 1):
        self.n, self.batch, self.seed, self.rank, self.world = n, batch, seed, rank, world
        self.steps_per_epoch = n // (batch * world)
        if self.steps_per_epoch == 0:
            raise ValueError(f"the dataset has {n} items, fewer than one global batch ({batch} x {world})")
        self._perm: tuple[int, torch.Tensor] | None = None

    def indices(self, step: int) -> tuple[int, list[int]]:
        epoch, i = divmod(step, self.steps_per_epoch)
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._perm = (epoch, torch.randperm(self.n, generator=g))
        start = (i * self.world + self.rank) * self.batch
        return epoch, self._perm[1][start:start + self.batch].tolist()

    def iterate(self, start: int, stop: int | None):
        step = start
        while stop is None or step < stop:
            epoch, idx = self.indices(step)
            yield [(epoch, j) for j in idx]
            step += 1


class _Batches:
    def __init__(self, order: StepBatches, start: int, stop: int | None):
        self.order, self.start, self.stop = order, start, stop

    def __iter__(self):
        return self.order.iterate(self.start, self.stop)


class _EpochView(Dataset):
    """Items addressed by (epoch, index): sets the dataset's epoch (caption draws) even inside workers;
    with near_misses = k > 0, each item also carries k near-miss captions (one string for k = 1)."""

    def __init__(self, dataset, near_misses: int = 0):
        self.dataset, self.near_misses = dataset, near_misses

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, i = key
        if getattr(self.dataset, "epoch", None) != epoch and hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        return self.dataset.item(i, near_miss=self.near_misses) if self.near_misses else self.dataset[i]


def _collate(items: list[dict]) -> dict:
    from wordcanvas.data.loader import collate

    return collate(items)


def _to_device(batch: dict, device: torch.device) -> dict:
    nb = device.type == "cuda"
    out = dict(batch)
    out["image"] = batch["image"].to(device, non_blocking=nb)
    out["labels"] = {k: v.to(device, non_blocking=nb) for k, v in batch.get("labels", {}).items()}
    return out


# --- EMA ---------------------------------------------------------------------------------------

def ema_beta(ema_kimg: float, ema_rampup: float | None, images_seen: int, batch: int) -> float:
    """stylegan2-ada's EMA decay: half-life ema_kimg thousand images, early on capped at
    ema_rampup x images seen (so the average does not remember the random initialisation)."""
    ema_nimg = ema_kimg * 1000
    if ema_rampup is not None:
        ema_nimg = min(ema_nimg, images_seen * ema_rampup)
    return 0.5 ** (batch / max(ema_nimg, 1e-8))


@torch.no_grad()
def update_ema(ema: nn.Module, live: nn.Module, beta: float) -> None:
    """ema = beta * ema + (1 - beta) * live for parameters; buffers are copied."""
    for p_ema, p in zip(ema.parameters(), live.parameters()):
        p_ema.copy_(p.detach().lerp(p_ema, beta))
    for b_ema, b in zip(ema.buffers(), live.buffers()):
        b_ema.copy_(b)


# --- helpers -----------------------------------------------------------------------------------

class _StopFlag:
    """SIGTERM / SIGINT ask the loop to finish the current step, checkpoint and exit; a second
    signal interrupts at once."""

    def __init__(self):
        self.requested, self.previous = False, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(f"\nsignal {signum}: finishing this step, then saving a checkpoint", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def sample_prompts(dataset, n: int, seed: int) -> list[Prompt]:
    """The fixed prompts of the sample grid: the dataset's evaluation prompts, else some captions."""
    try:
        prompts = list(dataset.eval_prompts(n, seed=seed))[:n]
        if prompts:
            return prompts
    except NotImplementedError:
        pass
    rng = random.Random(seed)
    idx = sorted(rng.sample(range(len(dataset)), min(n, len(dataset))))
    return [Prompt(dataset.captions(i)[0], dataset.labels(i)) for i in idx]


PREFILL_LIMIT = 10_000  # pre-encode at most this many distinct captions; beyond, the cache fills as batches come


def load_text_encoder(name: str, device: torch.device, captions: list[str] | None = None, progress: bool = True):
    """A text encoder by name or folder. Frozen ones go behind the embedding cache (each caption is
    encoded once), pre-filled with the training captions when there are few enough; trainable ones
    build their vocabulary from the captions."""
    from wordcanvas.text.cache import CachedEncoder
    from wordcanvas.text.registry import load_encoder

    encoder = load_encoder(name, str(device), captions=captions)
    if is_trainable(encoder) or not getattr(encoder, "cacheable", True):
        return encoder
    encoder = CachedEncoder(encoder)
    if captions and len(captions) <= PREFILL_LIMIT:
        from tqdm import tqdm

        chunk = 256
        for i in tqdm(range(0, len(captions), chunk), desc="caption embeddings", unit="chunk", disable=not progress,
                      leave=False):
            encoder.encode(captions[i:i + chunk])
    return encoder


def dataset_captions(dataset, max_items: int = 20_000) -> list[str]:
    """The distinct captions of the dataset, or of max_items evenly spaced items of a larger one
    (enough for a vocabulary; a frozen encoder's cache fills with the rest during training)."""
    n = len(dataset)
    seen: dict[str, None] = {}
    for i in range(0, n, max(1, -(-n // max_items))):
        for c in dataset.captions(i):
            seen.setdefault(c, None)
    return list(seen)


def _check_same_run(run_dir: Path, cfg: TrainConfig, world: int = 1, manifest: dict | None = None) -> None:
    """A resumed run keeps the identity settings. The per-process batch may change when the global batch
    (batch x processes; the checkpoint's manifest records its world) stays: a resume on another
    number of processes that trains exactly as before."""
    path = run_dir / "config.json"
    if not path.exists():
        return
    saved = json.loads(path.read_text())
    mine = cfg.to_dict()
    diff = [k for k in IDENTITY_KEYS if k in saved and json.dumps(saved[k], sort_keys=True) != json.dumps(mine[k], sort_keys=True)]
    if "batch" in diff and manifest is not None:
        saved_batch = (manifest.get("config") or {}).get("batch", saved["batch"])
        saved_world = int(manifest.get("world", 1))
        if saved_batch * saved_world == cfg.batch * world:
            diff.remove("batch")
        else:
            saved["batch"] = f"{saved_batch} x {saved_world} processes"
            mine["batch"] = f"{cfg.batch} x {world} processes"
    if diff:
        detail = ", ".join(f"{k}: {saved[k]!r} -> {mine[k]!r}" for k in diff)
        raise ValueError(f"{run_dir} holds a run with different settings ({detail}); "
                         "use another --out folder or the same settings to resume")


def budget_clock(kind: str, threads: int) -> Callable[[], float]:
    """Seconds for the training budget: the wall clock, or this process's CPU time divided by its
    threads, which counts only the compute the run received (on a shared machine, a fair budget)."""
    if kind == "cpu":
        return lambda: time.process_time() / max(threads, 1)
    return time.time


class RunFolderError(OSError):
    """The run folder cannot take the run's files (unwritable, or too little free space)."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, I/O error); the previous one is untouched."""


class DivergenceWarning(RuntimeWarning):
    """Training produced non-finite numbers and was rolled back to the last good checkpoint."""


def check_run_folder(run_dir: Path, need_bytes: int = 0) -> None:
    """Create run_dir and probe-write into it, so an unwritable folder or a full disk stops the run
    before any training time is spent; need_bytes asks for that much free space as well."""
    probe = run_dir / f".write-probe-{os.getpid()}"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(b"\0" * 65536)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise RunFolderError(f"cannot write to the run folder {run_dir}: {e.strerror or e}; "
                             "choose another --out folder or free some space") from e
    finally:
        try:
            probe.unlink(missing_ok=True)
        except OSError:
            pass
    free = shutil.disk_usage(run_dir).free
    if free < need_bytes:
        raise RunFolderError(f"the run folder {run_dir} has {free / 2**20:.1f} MiB free; checkpoints of this model "
                             f"need about {need_bytes / 2**20:.1f} MiB; free some space or choose another --out folder")


def checkpoint_bytes(fam) -> int:
    """Rough size of one checkpoint: the modules' tensors plus about twice the trained parameters
    (Adam's two moments)."""
    weights = sum(t.numel() * t.element_size() for m in fam.modules.values()
                  for t in list(m.parameters()) + list(m.buffers()))
    trained = sum(p.numel() * p.element_size() for o in fam.optimizers.values()
                  for g in o.param_groups for p in g["params"])
    return weights + 2 * trained


def losses_finite(stats: dict[str, torch.Tensor]) -> bool:
    """One reduction over the step's statistics: a NaN or inf anywhere makes the sum non-finite."""
    if not stats:
        return True
    return bool(torch.stack([v.detach().float().sum() for v in stats.values()]).sum().isfinite())


class LossSpikeGuard:
    """Finite divergence of a loss that should fall or hold: `patience` steps in a row above `factor` x
    its running mean (an EMA, decay 0.99, bias-corrected; judged after `warmup` steps). Spiking values
    stay out of the mean, so a long spike is still measured against the healthy level. Its state
    travels in the checkpoint's divergence record, so a resumed run judges as an uninterrupted one."""

    decay = 0.99

    def __init__(self, factor: float, patience: int, warmup: int, state: dict | None = None):
        self.factor, self.patience, self.warmup = factor, patience, warmup
        self.load(state)

    def load(self, state: dict | None) -> None:
        state = state or {}
        self.ema, self.n, self.run = float(state.get("ema", 0.0)), int(state.get("n", 0)), 0

    def state(self) -> dict:
        return {"ema": self.ema, "n": self.n}

    def mean(self) -> float:
        return self.ema / (1 - self.decay ** self.n) if self.n else float("nan")

    def spiking(self, value: float) -> bool:
        """Feed one step's value; True when the spike has lasted `patience` steps."""
        mean = self.mean()
        if self.n >= self.warmup and mean > 0 and value > self.factor * mean:
            self.run += 1
            return self.run >= self.patience
        self.run = 0
        self.ema = self.decay * self.ema + (1 - self.decay) * value
        self.n += 1
        return False


def weights_finite(fam) -> bool:
    return all(bool(t.isfinite().all()) for m in fam.modules.values() for t in m.parameters())


def _snapshot(fam, step: int, images_seen: int, train_time: float, best: dict, divergence: dict) -> dict:
    """An in-memory restore point for a divergence before the first checkpoint exists."""
    return {"modules": {n: {k: v.detach().clone() for k, v in m.state_dict().items()} for n, m in fam.modules.items()},
            "state": copy.deepcopy({"step": step, "images_seen": images_seen, "train_time_s": train_time,
                                    "optimizers": {k: o.state_dict() for k, o in fam.optimizers.items()},
                                    "rng": ckpt.rng_state(), "family": fam.state_dict(), "best": best,
                                    "divergence": divergence})}


def _restore(fam, modules: Path | dict, state: dict) -> None:
    """Put the family back into a saved state: weights (from a checkpoint folder or a snapshot),
    optimizers, family state and every RNG."""
    for name, module in fam.modules.items():
        if isinstance(modules, dict):
            module.load_state_dict(modules[name])
        else:
            ckpt.load_module(module, modules / name)
    for name, opt in fam.optimizers.items():
        opt.load_state_dict(state["optimizers"][name])
    fam.load_state_dict(state.get("family", {}))
    ckpt.set_rng_state(state["rng"])


def _trim_log(path: Path, step: int) -> None:
    """On resume, drop records of steps after the checkpoint (they will be run again) and a line
    cut short by a crash, so the log reads as one run."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and int(record.get("step", 0)) <= step:
            kept.append(line + "\n")
    atomic_write_bytes(path, "".join(kept).encode())


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    images_seen: int
    stopped_early: bool
    family: object


def _save_checkpoint(run_dir: Path, fam, cfg: TrainConfig, step: int, images_seen: int, train_time: float,
                     best: dict | None, order: StepBatches, folder: Path | None = None,
                     divergence: dict | None = None) -> Path:
    # The data position and all per-step randomness (noise, augmentation) follow from (seed, step);
    # the data position is recorded for people, and lr values live in the optimizers' param groups.
    epoch, index = divmod(step, order.steps_per_epoch)
    state = {"step": step, "images_seen": images_seen, "train_time_s": float(train_time),
             "data_position": {"epoch": epoch, "batch_in_epoch": index, "steps_per_epoch": order.steps_per_epoch},
             "optimizers": {k: o.state_dict() for k, o in fam.optimizers.items()},
             "rng": ckpt.rng_state(), "family": fam.state_dict(), "best": best or {},
             "divergence": dict(divergence or {})}
    meta = {"model": fam.export_meta(), "config": cfg.to_dict(), "images_seen": images_seen,
            "best": best or {},
            "world": getattr(getattr(fam, "dist", None), "world", 1)}  # a resume may change it, not the global batch
    try:
        if folder is not None:
            return ckpt.write_checkpoint(folder, fam.modules, state, {**meta, "step": step})
        return ckpt.save_checkpoint(run_dir / "checkpoints", step, fam.modules, state, meta, cfg.keep_last,
                                    cfg.keep_steps)
    except OSError as e:
        previous = ckpt.step_folders(run_dir / "checkpoints")
        kept = f"the previous checkpoint {previous[0]} is untouched" if previous else "no earlier checkpoint exists"
        full = " (the disk is full)" if e.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        error = CheckpointWriteError(f"could not write the checkpoint of step {step}{full}: {e.strerror or e}; "
                                     f"{kept}; fix the folder and run the same command again to resume")
        error.errno = e.errno
        raise error from e


def export_final(run_dir: Path, fam, step: int) -> Path:
    """run_dir/final: the inference generator, a trained encoder if any, the discriminator where
    the family names one in its meta (editing uses it as a judge), and model.json."""
    meta = {**fam.export_meta(), "generator": "generator", "step": step}
    modules = {"generator": fam.inference_generator}
    if "encoder" in fam.modules:
        modules["encoder"] = fam.modules["encoder"]
    if meta.get("discriminator"):
        modules[meta["discriminator"]] = fam.modules["discriminator"]

    def fill(tmp: Path) -> None:
        for name, module in modules.items():
            ckpt.save_module(module, tmp / name)
        atomic_write_json(tmp / "model.json", meta)

    dest = run_dir / "final"
    ckpt.write_folder_atomically(dest, fill)
    return dest


# --- the loop ----------------------------------------------------------------------------------

def train(cfg: TrainConfig, *, dataset=None, encoder=None, evaluator: Evaluator | None = None,
          family: type | None = None) -> TrainResult:
    """Train one model as configured; `dataset`, `encoder` and `family` override what the config
    names (for custom data and tests); `evaluator(generate_fn) -> dict` runs every eval_every steps."""
    # ---- setup
    if cfg.steps is None and cfg.minutes is None:
        raise ValueError("give a training length: steps or minutes")
    dist = init_dist(cfg.device)
    device = dist.device
    if device.type == "cuda":  # every batch has one shape: let cuDNN time its kernels once and keep the fastest
        torch.backends.cudnn.benchmark = True
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    family_cls = family or FAMILIES.get(cfg.family)
    if family_cls is None:
        raise ValueError(f"unknown model family {cfg.family!r}; choose from {sorted(FAMILIES)}")
    if dataset is None and hasattr(family_cls, "build_dataset"):  # a family with data of its own (style)
        dataset = family_cls.build_dataset(cfg)
    elif dataset is None:
        from wordcanvas.data import load_dataset

        dataset = load_dataset(cfg.data, "train", cfg.resolution, cfg.seed, **cfg.data_options)
    cfg = cfg.replace(resolution=int(cfg.resolution or dataset.resolution))
    run_dir = Path(cfg.out)
    ckpt_root = run_dir / "checkpoints"
    log = JsonlLog(run_dir / "log.jsonl", enabled=dist.main)

    # ---- resume: find the newest checkpoint that verifies before building anything heavy
    if dist.main:  # what a killed writer left behind
        ckpt.clean_temporaries(ckpt_root)
        ckpt.clean_temporaries(run_dir)
    dist.barrier()
    found = ckpt.latest_good_checkpoint(ckpt_root) if ckpt_root.is_dir() else None
    if cfg.resume and found is None:
        raise FileNotFoundError(f"nothing to resume: {ckpt_root} holds no complete checkpoint")
    if found is not None:
        _check_same_run(run_dir, cfg, dist.world, found[1])
    if dist.main:
        check_run_folder(run_dir)  # before the slow parts: an unwritable folder fails in seconds

    if family_cls.uses_text and encoder is None:
        encoder = load_text_encoder(cfg.encoder, device, dataset_captions(dataset), cfg.progress and dist.main)
    torch.manual_seed(cfg.seed)  # identical initialisation on every rank
    np.random.seed(cfg.seed % 2 ** 32)
    random.seed(cfg.seed)
    fam = family_cls(cfg, dataset, encoder, device, dist)

    start_step, images_seen, train_time, best = 0, 0, 0.0, {}
    divergence = {"rollbacks": 0, "lr_scale": 1.0}  # divergence-guard history, kept in checkpoints
    if found is not None:
        folder, _ = found
        state = ckpt.load_training_state(folder)
        _restore(fam, folder, state)
        start_step, images_seen = int(state["step"]), int(state["images_seen"])
        train_time, best = float(state.get("train_time_s", 0.0)), dict(state.get("best", {}))
        divergence.update(state.get("divergence", {}))
        if dist.main:
            print(f"resuming {run_dir} from {folder.name} (step {start_step})", file=sys.stderr)
    if dist.main:
        _trim_log(run_dir / "log.jsonl", start_step)
    watch = getattr(fam, "watch_loss", None) if cfg.spike_factor else None
    spikes = LossSpikeGuard(cfg.spike_factor, cfg.spike_patience, cfg.spike_warmup,
                            divergence.get("loss_watch")) if watch else None

    def divergence_record() -> dict:
        """What a checkpoint keeps of the divergence guards (the spike guard's state is read only here)."""
        return {**divergence, "loss_watch": spikes.state()} if spikes is not None else divergence

    # Restore point for a divergence before the first checkpoint of this run (afterwards: on disk).
    snapshot = (_snapshot(fam, start_step, images_seen, train_time, best, divergence_record())
                if found is None and cfg.nan_policy == "rollback" else None)
    if dist.main:
        check_run_folder(run_dir, need_bytes=2 * checkpoint_bytes(fam))  # the next checkpoint and the final export
        atomic_write_json(run_dir / "config.json", cfg.to_dict())

    global_batch = cfg.batch * dist.world
    order = StepBatches(len(dataset), cfg.batch, cfg.seed, dist.rank, dist.world)
    end_step = cfg.steps

    def make_loader(start: int) -> DataLoader:
        # near misses only from datasets that write them (the family refuses a batch without them)
        near_misses = int(getattr(fam, "wants_near_misses", 0)) if hasattr(dataset, "item") else 0
        return DataLoader(_EpochView(dataset, near_misses), batch_sampler=_Batches(order, start, end_step),
                          collate_fn=_collate, num_workers=cfg.workers, pin_memory=device.type == "cuda",
                          generator=torch.Generator().manual_seed(cfg.seed))  # not the global RNG

    prompts = sample_prompts(dataset, cfg.sample_prompts, cfg.seed) if dist.main else []

    prepared_at = None

    def prepare_inference(step: int) -> None:
        """Let the family settle its inference weights (GAN: the EMA generator's standing BatchNorm
        statistics) once per step, before they are sampled, evaluated, saved or exported."""
        nonlocal prepared_at
        if prepared_at != step and hasattr(fam, "prepare_inference"):
            fam.prepare_inference(step)
        prepared_at = step

    def write_samples(step: int) -> None:
        prepare_inference(step)
        images = fam.sample(prompts, cfg.sample_per_prompt, seed=cfg.seed)
        save_sample_grid(images.cpu(), [p.text for p in prompts], cfg.sample_per_prompt,
                         run_dir / "samples" / f"step-{step:06d}.png", meta={"step": step, "seed": cfg.seed})
        plot_log(run_dir / "log.jsonl", run_dir / "losses.png", "train")

    def run_eval(step: int) -> None:
        """On every rank (an evaluator may shard its work over the processes, as
        metrics.evaluate.evaluate_generator does); rank 0 writes the log and the best checkpoint."""
        nonlocal best
        prepare_inference(step)
        metrics = {k: float(v) for k, v in evaluator(fam.generate).items()}
        log.write({"kind": "eval", "step": step, **metrics})
        if dist.main:
            plot_log(run_dir / "log.jsonl", run_dir / "metrics.png", "eval")
        value = metrics.get(cfg.best_metric)
        if value is None or not math.isfinite(value):
            return
        better = (not best or (value < best["value"] if cfg.best_mode == "min" else value > best["value"]))
        if better:
            best = {"metric": cfg.best_metric, "value": value, "step": step}
            if dist.main:
                _save_checkpoint(run_dir, fam, cfg, step, images_seen, train_time, best, order,
                                 folder=ckpt_root / ckpt.BEST, divergence=divergence_record())

    def roll_back(reason: str, at_step: int) -> int:
        """Divergence guard: restore the last good state (checkpoint, or the start), lower every
        learning rate by nan_lr_factor, and return the step to continue from."""
        nonlocal images_seen, train_time, best, prepared_at
        advice = "resume from the last checkpoint with a lower learning rate or a stronger regulariser"
        if cfg.nan_policy == "raise":
            raise FloatingPointError(f"training diverged: {reason} (nan_policy 'raise'); {advice}")
        if divergence["rollbacks"] >= cfg.max_rollbacks:
            raise FloatingPointError(f"training diverged: {reason}, after {divergence['rollbacks']} rollback(s) "
                                     f"(max_rollbacks {cfg.max_rollbacks}); {advice}")
        if snapshot is not None:
            modules, state = snapshot["modules"], copy.deepcopy(snapshot["state"])  # optimizers alias loaded state
            where = f"the start of this run (step {state['step']})"
        else:
            good = ckpt.latest_good_checkpoint(ckpt_root)
            if good is None:
                raise FloatingPointError(f"training diverged: {reason}, and {ckpt_root} holds no good checkpoint")
            modules, state, where = good[0], ckpt.load_training_state(good[0]), good[0].name
        _restore(fam, modules, state)
        scale = divergence["lr_scale"] * cfg.nan_lr_factor
        saved_scale = float(state.get("divergence", {}).get("lr_scale", 1.0))
        for opt in fam.optimizers.values():
            for group in opt.param_groups:
                group["lr"] *= scale / saved_scale
        divergence.update(rollbacks=divergence["rollbacks"] + 1, lr_scale=scale)
        if spikes is not None:
            spikes.load(state.get("divergence", {}).get("loss_watch"))
        images_seen, train_time = int(state["images_seen"]), float(state.get("train_time_s", 0.0))
        best = dict(state.get("best", {}))
        prepared_at = None
        if dist.main:
            message = (f"training diverged ({reason}); rolled back to {where} with the learning rates x{scale:g} "
                       f"(rollback {divergence['rollbacks']} of at most {cfg.max_rollbacks})")
            print(message, file=sys.stderr, flush=True)
            log.write({"kind": "rollback", "step": at_step, "to_step": int(state["step"]), "reason": reason,
                       "lr_scale": scale, "rollbacks": divergence["rollbacks"]})
            warnings.warn(message, DivergenceWarning, stacklevel=3)
        return int(state["step"])

    # ---- loop
    from tqdm import tqdm

    step, saved_at, stopped = start_step, start_step if found is not None else -1, False
    budget_now = budget_clock(cfg.budget_clock, torch.get_num_threads())
    deadline = budget_now() + cfg.minutes * 60 if cfg.minutes is not None else None
    bar = tqdm(total=end_step, initial=start_step, unit="step", dynamic_ncols=True,
               disable=not (cfg.progress and dist.main), desc=f"{fam.name} {run_dir.name}")
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    t_interval, img_interval = time.time(), 0
    first = True
    with _StopFlag() as stop:
        while True:
            diverged = None  # why the run must roll back, when it must
            for batch in make_loader(step):
                # data
                if first:
                    first = False
                    if batch["image"].shape[-1] != cfg.resolution:
                        raise ValueError(f"dataset images are {tuple(batch['image'].shape[1:])}, expected size {cfg.resolution}")
                batch = _to_device(batch, device)
                # step
                t_step = time.time()
                stats = fam.step(batch, step)
                # divergence guard: one cheap check per step, agreed by every rank before anything is kept
                finite = losses_finite(stats)
                spiking = False
                if finite and spikes is not None and watch in stats:
                    spiking = spikes.spiking(float(stats[watch]))
                if dist.any(not finite or spiking):
                    if not finite:
                        diverged = f"non-finite loss at step {step + 1}"
                    elif spiking:
                        diverged = (f"{watch} {float(stats[watch]):.4g} above {cfg.spike_factor:g} x its running "
                                    f"mean {spikes.mean():.4g} for {cfg.spike_patience} steps, at step {step + 1}")
                    else:
                        diverged = f"divergence on another process at step {step + 1}"
                    break
                # ema
                for live, ema in fam.ema_pairs:
                    update_ema(ema, live, ema_beta(cfg.ema_kimg, cfg.ema_rampup, images_seen, global_batch))
                step += 1
                images_seen += global_batch
                train_time += time.time() - t_step
                for k, v in stats.items():  # some stats come only on some steps (lazy regularisation)
                    sums[k] = sums.get(k, 0.0) + v.float()
                    counts[k] = counts.get(k, 0) + 1
                img_interval += global_batch
                bar.update(1)
                # log
                if step % cfg.log_every == 0 or (end_step is not None and step == end_step):
                    now = time.time()
                    means = dist.mean({k: float(v) / counts[k] for k, v in sums.items()})
                    rate = img_interval / max(now - t_interval, 1e-9)
                    log.write({"kind": "train", "step": step, "kimg": images_seen / 1000, "time": round(train_time, 2),
                               "images_per_s": round(rate, 2), **means})
                    bar.set_postfix({**{k: f"{v:.3f}" for k, v in means.items() if k.startswith("loss")},
                                     "img/s": f"{rate:.0f}"})
                    sums, counts, t_interval, img_interval = {}, {}, now, 0
                # sample
                if dist.main and cfg.sample_every and step % cfg.sample_every == 0:
                    write_samples(step)
                # eval
                if evaluator is not None and cfg.eval_every and step % cfg.eval_every == 0:
                    run_eval(step)
                # checkpoint (weights are checked first: a checkpoint is always a good restore point)
                if cfg.ckpt_every and step % cfg.ckpt_every == 0:
                    if dist.any(not weights_finite(fam)):
                        diverged = f"non-finite weights at step {step}"
                        break
                    if dist.main:
                        prepare_inference(step)
                        _save_checkpoint(run_dir, fam, cfg, step, images_seen, train_time, best, order,
                                         divergence=divergence_record())
                    saved_at, snapshot = step, None
                # stop (every rank agrees, so they leave at the same step)
                out_of_time = deadline is not None and budget_now() >= deadline
                if dist.any(stop.requested or out_of_time):
                    stopped = stop.requested
                    break
            if diverged is None and saved_at != step and dist.any(not weights_finite(fam)):
                diverged = f"non-finite weights at step {step}"
            if diverged is None:
                break
            from_snapshot = snapshot is not None
            step = roll_back(diverged, step)
            saved_at = -1 if from_snapshot else step
            sums, counts, t_interval, img_interval = {}, {}, time.time(), 0
            bar.n = step
            bar.refresh()
    bar.close()

    # ---- teardown
    if dist.main and saved_at != step:
        prepare_inference(step)
        _save_checkpoint(run_dir, fam, cfg, step, images_seen, train_time, best, order, divergence=divergence_record())
    if evaluator is not None and cfg.eval_every and step % cfg.eval_every != 0 and step > start_step:
        run_eval(step)
    if dist.main:
        write_samples(step)  # prepares the inference weights for the export too
        export_final(run_dir, fam, step)
        print(f"{run_dir}: step {step}, {images_seen / 1000:.1f} kimg; model in {run_dir / 'final'}", file=sys.stderr)
    dist.barrier()
    if dist.owns_group:
        torch.distributed.destroy_process_group()
    return TrainResult(run_dir, step, images_seen, stopped, fam)
