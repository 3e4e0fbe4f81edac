"""TrainConfig: everything a training run needs, as plain data (saved as run_dir/config.json)."""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TrainConfig:
    family: str = "gan"                   # model family: "gan" (text-conditioned) or "dcgan" (class-conditioned baseline)
    data: str = "fashion-mnist"           # dataset name or folder (wordcanvas.data.load_dataset)
    encoder: str = "minilm"               # text encoder name or folder (unused by class-conditioned families)
    resolution: int | None = None         # image size; None = the dataset's default
    out: str = "runs/gan"                 # run folder (config, log, samples, checkpoints, final model)
    steps: int | None = None              # total optimisation steps, counted across resumes
    minutes: float | None = None          # time budget of this invocation (stops at a step boundary)
    budget_clock: str = "wall"            # what `minutes` counts: "wall" clock, or "cpu" = process CPU time / threads
                                          # (dedicated-core minutes: a budget that other jobs on the machine cannot eat)
    batch: int = 32                       # per-process batch; global batch = batch x world size
    lr: float | None = None               # generator / main model learning rate; None = family default
    lr_d: float | None = None             # discriminator learning rate; None = family default
    betas: tuple[float, float] | None = None  # Adam betas; None = family default
    seed: int = 0                         # model init, data order, noise and augmentation all derive from it
    threads: int | None = None            # torch CPU threads; None = torch's default
    device: str = "auto"                  # "auto" (cuda when available, else cpu), "cpu", "cuda", "cuda:1"
    amp: bool = True                      # bf16 autocast on CUDA; never used on CPU
    ema_kimg: float = 10.0                # EMA half-life in thousands of images; 0 = no EMA copy
    ema_rampup: float | None = 0.05       # early on, half-life <= this fraction of the images seen
    workers: int = 0                      # data-loading processes (0 = in the training process)
    log_every: int = 10                   # steps between log.jsonl records / progress updates
    sample_every: int = 500               # steps between sample grids (and loss-plot updates); 0 = only at the end
    ckpt_every: int = 1000                # steps between checkpoints; 0 = only at the end
    eval_every: int = 0                   # steps between evaluations (needs an evaluator); 0 = never
    best_metric: str = "fid"              # evaluator key that selects checkpoints/best
    best_mode: str = "min"                # "min" or "max": which direction of best_metric is better
    keep_last: int = 3                    # step checkpoints kept (best is kept separately)
    keep_steps: tuple[int, ...] = ()      # step checkpoints never pruned, beside the last keep_last (e.g. the
                                          # steps a benchmark evaluates at, so they can be evaluated again)
    resume: bool = False                  # require a checkpoint to continue from (a run folder with checkpoints resumes anyway)
    sample_prompts: int = 12              # prompts in the sample grid (from the dataset's eval_prompts)
    sample_per_prompt: int = 4            # fixed noise vectors per prompt in the grid
    progress: bool = True                 # tqdm progress bar
    nan_policy: str = "rollback"          # non-finite loss or weights: "rollback" to the last good checkpoint
                                          # with a lower learning rate, or "raise" FloatingPointError at once
    nan_lr_factor: float = 0.5            # each rollback multiplies every learning rate by this
    max_rollbacks: int = 3                # rollbacks allowed over the whole run; one more divergence raises
    spike_factor: float = 10.0            # finite divergence: the family's watched loss above this x its running
                                          # mean for spike_patience steps in a row rolls back too (0 = off)
    spike_patience: int = 5               # consecutive spiking steps that count as divergence
    spike_warmup: int = 100               # steps of running mean before spikes are judged
    data_options: dict = field(default_factory=dict)  # extra keywords for the dataset constructor
    model: dict = field(default_factory=dict)         # family settings (e.g. train.gan_step.GANSettings fields)

    def __post_init__(self):
        if self.betas is not None:
            self.betas = tuple(float(b) for b in self.betas)
        if self.best_mode not in ("min", "max"):
            raise ValueError(f"best_mode must be 'min' or 'max', got {self.best_mode!r}")
        if self.budget_clock not in ("wall", "cpu"):
            raise ValueError(f"budget_clock must be 'wall' or 'cpu', got {self.budget_clock!r}")
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")
        self.keep_steps = tuple(sorted({int(s) for s in self.keep_steps}))
        if self.keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {self.keep_last}")
        if self.nan_policy not in ("rollback", "raise"):
            raise ValueError(f"nan_policy must be 'rollback' or 'raise', got {self.nan_policy!r}")
        if not 0 < self.nan_lr_factor <= 1:
            raise ValueError(f"nan_lr_factor must be in (0, 1], got {self.nan_lr_factor}")
        if self.max_rollbacks < 0:
            raise ValueError(f"max_rollbacks must be >= 0, got {self.max_rollbacks}")
        if self.spike_factor != 0 and self.spike_factor <= 1:
            raise ValueError(f"spike_factor must be 0 (off) or > 1, got {self.spike_factor}")
        if self.spike_patience < 1 or self.spike_warmup < 1:
            raise ValueError(f"spike_patience and spike_warmup must be >= 1, got {self.spike_patience}, "
                             f"{self.spike_warmup}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown training settings {unknown}; known: {sorted(names)}")
        return cls(**data)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


# Settings that define what is being trained: a resumed run must keep them.
IDENTITY_KEYS = ("family", "data", "encoder", "resolution", "batch", "seed", "model", "data_options")


def load_config(path: str | os.PathLike) -> TrainConfig:
    """A TrainConfig from a JSON file (a run's config.json, or a file of some settings)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object of settings")
    return TrainConfig.from_dict(data)


def set_dotted(data: dict, key: str, value: Any) -> None:
    """data["model"]["generator"]["ngf"] = value for key "model.generator.ngf"."""
    *parents, last = key.split(".")
    node = data
    for name in parents:
        node = node.setdefault(name, {})
        if not isinstance(node, dict):
            raise ValueError(f"cannot set {key!r}: {name!r} is not a group of settings")
    node[last] = value


def apply_settings(data: dict, items: list[str]) -> dict:
    """Apply `--set KEY=VALUE` items (VALUE as JSON, else a bare string) to a settings dict."""
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--set wants KEY=VALUE, got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw  # a bare string
        set_dotted(data, key.strip(), value)
    return data
