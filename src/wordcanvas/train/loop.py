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
    step(batch, step) -> dict[str, tensor] one optimisation step (gradients synced via dist.sync_grads)
    generate(prompts, seed) -> images      one image per prompt (str or data.base.Prompt)
    sample(prompts, n, seed) -> images     n images per prompt, prompt-major
    export_meta() -> dict                  how `wordcanvas generate` rebuilds the model
    state_dict() / load_state_dict(d)      any extra state (tensors and plain containers only)

Exact resume: the data order is a seeded permutation per epoch, addressed by step, captions are
drawn per (seed, epoch, index), and every random draw of a step comes from a generator seeded
by (seed, step, rank), so k steps + resume + (N - k) steps equals N steps bit for bit on CPU.
"""
from __future__ import annotations

import json
import math
import os
import random
import signal
import sys
import threading
import time
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
from wordcanvas.utils.io import atomic_write_json

Evaluator = Callable[[Callable], dict]

# Model families by the name in TrainConfig.family (a new family adds its class here).
FAMILIES: dict[str, type] = {"gan": GANFamily, "dcgan": DCGANFamily, "style": StyleFamily}


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
        if self.world == 1:
            return bool(flag)
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item() > 0)

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


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
    """Items addressed by (epoch, index): sets the dataset's epoch (caption draws) even inside workers."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, i = key
        if getattr(self.dataset, "epoch", None) != epoch and hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        return self.dataset[i]


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


def _check_same_run(run_dir: Path, cfg: TrainConfig) -> None:
    path = run_dir / "config.json"
    if not path.exists():
        return
    saved = json.loads(path.read_text())
    mine = cfg.to_dict()
    diff = [k for k in IDENTITY_KEYS if k in saved and json.dumps(saved[k], sort_keys=True) != json.dumps(mine[k], sort_keys=True)]
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


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    images_seen: int
    stopped_early: bool
    family: object


def _save_checkpoint(run_dir: Path, fam, cfg: TrainConfig, step: int, images_seen: int, train_time: float,
                     best: dict | None, order: StepBatches, folder: Path | None = None) -> Path:
    # The data position and all per-step randomness (noise, augmentation) follow from (seed, step);
    # the data position is recorded for people, and lr values live in the optimizers' param groups.
    epoch, index = divmod(step, order.steps_per_epoch)
    state = {"step": step, "images_seen": images_seen, "train_time_s": float(train_time),
             "data_position": {"epoch": epoch, "batch_in_epoch": index, "steps_per_epoch": order.steps_per_epoch},
             "optimizers": {k: o.state_dict() for k, o in fam.optimizers.items()},
             "rng": ckpt.rng_state(), "family": fam.state_dict(), "best": best or {}}
    meta = {"model": fam.export_meta(), "config": cfg.to_dict(), "images_seen": images_seen,
            "best": best or {}}
    if folder is not None:
        return ckpt.write_checkpoint(folder, fam.modules, state, {**meta, "step": step})
    return ckpt.save_checkpoint(run_dir / "checkpoints", step, fam.modules, state, meta, cfg.keep_last)


def export_final(run_dir: Path, fam, step: int) -> Path:
    """run_dir/final: the inference generator, a trained encoder if any, and model.json."""
    meta = {**fam.export_meta(), "generator": "generator", "step": step}
    modules = {"generator": fam.inference_generator}
    if "encoder" in fam.modules:
        modules["encoder"] = fam.modules["encoder"]

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
    found = ckpt.latest_good_checkpoint(ckpt_root) if ckpt_root.is_dir() else None
    if cfg.resume and found is None:
        raise FileNotFoundError(f"nothing to resume: {ckpt_root} holds no complete checkpoint")
    if found is not None:
        _check_same_run(run_dir, cfg)

    if family_cls.uses_text and encoder is None:
        encoder = load_text_encoder(cfg.encoder, device, dataset_captions(dataset), cfg.progress and dist.main)
    torch.manual_seed(cfg.seed)  # identical initialisation on every rank
    np.random.seed(cfg.seed % 2 ** 32)
    random.seed(cfg.seed)
    fam = family_cls(cfg, dataset, encoder, device, dist)

    start_step, images_seen, train_time, best = 0, 0, 0.0, {}
    if found is not None:
        folder, _ = found
        for name, module in fam.modules.items():
            ckpt.load_module(module, folder / name)
        state = ckpt.load_training_state(folder)
        for name, opt in fam.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        fam.load_state_dict(state.get("family", {}))
        ckpt.set_rng_state(state["rng"])
        start_step, images_seen = int(state["step"]), int(state["images_seen"])
        train_time, best = float(state.get("train_time_s", 0.0)), dict(state.get("best", {}))
        if dist.main:
            print(f"resuming {run_dir} from {folder.name} (step {start_step})", file=sys.stderr)
    if dist.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / "config.json", cfg.to_dict())

    global_batch = cfg.batch * dist.world
    order = StepBatches(len(dataset), cfg.batch, cfg.seed, dist.rank, dist.world)
    end_step = cfg.steps
    loader = DataLoader(_EpochView(dataset), batch_sampler=_Batches(order, start_step, end_step),
                        collate_fn=_collate, num_workers=cfg.workers, pin_memory=device.type == "cuda",
                        generator=torch.Generator().manual_seed(cfg.seed))  # not the global RNG
    prompts = sample_prompts(dataset, cfg.sample_prompts, cfg.seed) if dist.main else []

    def write_samples(step: int) -> None:
        images = fam.sample(prompts, cfg.sample_per_prompt, seed=cfg.seed)
        save_sample_grid(images.cpu(), [p.text for p in prompts], cfg.sample_per_prompt,
                         run_dir / "samples" / f"step-{step:06d}.png", meta={"step": step, "seed": cfg.seed})
        plot_log(run_dir / "log.jsonl", run_dir / "losses.png", "train")

    def run_eval(step: int) -> None:
        nonlocal best
        metrics = {k: float(v) for k, v in evaluator(fam.generate).items()}
        log.write({"kind": "eval", "step": step, **metrics})
        plot_log(run_dir / "log.jsonl", run_dir / "metrics.png", "eval")
        value = metrics.get(cfg.best_metric)
        if value is None or not math.isfinite(value):
            return
        better = (not best or (value < best["value"] if cfg.best_mode == "min" else value > best["value"]))
        if better:
            best = {"metric": cfg.best_metric, "value": value, "step": step}
            _save_checkpoint(run_dir, fam, cfg, step, images_seen, train_time, best, order, folder=ckpt_root / ckpt.BEST)

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
        for batch in loader:
            # data
            if first:
                first = False
                if batch["image"].shape[-1] != cfg.resolution:
                    raise ValueError(f"dataset images are {tuple(batch['image'].shape[1:])}, expected size {cfg.resolution}")
            batch = _to_device(batch, device)
            # step
            t_step = time.time()
            stats = fam.step(batch, step)
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
                means = {k: float(v) / counts[k] for k, v in sums.items()}
                if not all(math.isfinite(v) for v in means.values()):
                    raise FloatingPointError(f"losses became non-finite by step {step} ({means}); resume from the "
                                             "last checkpoint with a lower learning rate or a stronger regulariser")
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
            if dist.main and evaluator is not None and cfg.eval_every and step % cfg.eval_every == 0:
                run_eval(step)
            # checkpoint
            if dist.main and cfg.ckpt_every and step % cfg.ckpt_every == 0:
                _save_checkpoint(run_dir, fam, cfg, step, images_seen, train_time, best, order)
                saved_at = step
            # stop (every rank agrees, so they leave at the same step)
            out_of_time = deadline is not None and budget_now() >= deadline
            if dist.any(stop.requested or out_of_time):
                stopped = stop.requested
                break
    bar.close()

    # ---- teardown
    if dist.main:
        if saved_at != step:
            _save_checkpoint(run_dir, fam, cfg, step, images_seen, train_time, best, order)
        if evaluator is not None and cfg.eval_every and step % cfg.eval_every != 0 and step > start_step:
            run_eval(step)
        write_samples(step)
        export_final(run_dir, fam, step)
        print(f"{run_dir}: step {step}, {images_seen / 1000:.1f} kimg; model in {run_dir / 'final'}", file=sys.stderr)
    dist.barrier()
    if dist.owns_group:
        torch.distributed.destroy_process_group()
    return TrainResult(run_dir, step, images_seen, stopped, fam)
