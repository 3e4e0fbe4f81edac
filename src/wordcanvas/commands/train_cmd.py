"""CLI verbs `train` and `generate` (see commands/__init__.py)."""
from __future__ import annotations

import argparse
import json

FAMILY_NAMES = ("gan", "dcgan", "style", "sr", "vae")

# CLI flag -> TrainConfig field (flags left out keep the config file's / saved run's value)
FLAG_FIELDS = {"data": "data", "encoder": "encoder", "res": "resolution", "out": "out", "steps": "steps",
               "minutes": "minutes", "batch": "batch", "lr": "lr", "lr_d": "lr_d", "seed": "seed",
               "threads": "threads", "device": "device", "workers": "workers", "log_every": "log_every",
               "sample_every": "sample_every", "ckpt_every": "ckpt_every", "eval_every": "eval_every",
               "keep_last": "keep_last"}


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("family", choices=FAMILY_NAMES, help="gan: text-conditioned GAN; dcgan: class-conditioned baseline; "
                   "style: the AdaIN style-transfer decoder; sr: a super-resolution network; "
                   "vae: the text-conditioned VAE")
    p.add_argument("--data", help="dataset name (fashion-mnist, captioned-mnist, toy-faces, celeba:PATH) or a caption folder")
    p.add_argument("--encoder", help="text encoder: minilm, smollm2, trainable, or a folder")
    p.add_argument("--res", type=int, help="image size (default: the dataset's)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, help="total optimisation steps (across resumes)")
    length.add_argument("--minutes", type=float, help="wall-clock budget of this invocation")
    p.add_argument("--config", help="JSON file of TrainConfig settings (CLI flags override it)")
    p.add_argument("--batch", type=int, help="batch per process")
    p.add_argument("--lr", type=float, help="generator learning rate (default: the family's)")
    p.add_argument("--lr-d", dest="lr_d", type=float, help="discriminator learning rate")
    p.add_argument("--seed", type=int)
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--workers", type=int, help="data-loading processes")
    p.add_argument("--log-every", dest="log_every", type=int)
    p.add_argument("--sample-every", dest="sample_every", type=int)
    p.add_argument("--ckpt-every", dest="ckpt_every", type=int)
    p.add_argument("--eval-every", dest="eval_every", type=int, help="steps between quick FID evaluations (0 = off)")
    p.add_argument("--eval-samples", dest="eval_samples", type=int, default=500, help="images per quick FID")
    p.add_argument("--keep-last", dest="keep_last", type=int)
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                   help="any setting, dotted for nested ones, value as JSON: --set model.generator.ngf=48")
    p.add_argument("--resume", action="store_true", help="continue the run in --out (an existing run resumes anyway)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument("--out", required=True, help="run folder")


def build_config(args: argparse.Namespace):
    """Settings in order of precedence: CLI flags > --config file > the run folder's config.json > defaults."""
    from pathlib import Path

    from wordcanvas.train.config import TrainConfig, apply_settings

    data = TrainConfig().to_dict()
    saved = Path(args.out) / "config.json"
    if saved.exists():  # resuming: start from what the run was started with
        data.update(json.loads(saved.read_text()))
    if args.config:
        extra = json.loads(Path(args.config).read_text())
        if not isinstance(extra, dict):
            raise ValueError(f"{args.config} must hold a JSON object of settings")
        data.update(extra)
    data["family"] = args.family
    for flag, name in FLAG_FIELDS.items():
        value = getattr(args, flag, None)
        if value is not None:
            data[name] = value
    if args.steps is not None or args.minutes is not None:  # a length on the command line replaces the saved one
        data["steps"], data["minutes"] = args.steps, args.minutes
    apply_settings(data, args.settings)
    data["resume"] = bool(args.resume)
    data["progress"] = bool(args.progress)
    return TrainConfig.from_dict(data)


def quick_fid_evaluator(cfg, n: int, chunk: int = 50):
    """FID of n generated images against n training images (Inception pool features); small n
    makes it biased upwards, so it tracks progress within a run rather than across papers. With
    several processes (the loop calls it on every rank) the chunks are shared out between them."""
    import numpy as np
    import torch

    from wordcanvas.data import load_dataset
    from wordcanvas.data.base import Prompt
    from wordcanvas.metrics.distribution import fid_from_features
    from wordcanvas.metrics.evaluate import map_sharded
    from wordcanvas.metrics.inception import InceptionFeatures

    extractor = InceptionFeatures()
    dataset = load_dataset(cfg.data, "train", cfg.resolution, cfg.seed, **cfg.data_options)
    g = torch.Generator().manual_seed(cfg.seed)
    idx = torch.randperm(len(dataset), generator=g)[:n].tolist()
    starts = range(0, len(idx), chunk)
    real = np.concatenate(map_sharded(lambda c: extractor.extract(
        torch.stack([dataset[i]["image"] for i in idx[starts[c]:starts[c] + chunk]]), progress=False), len(starts)))
    prompts = [Prompt(dataset[i]["caption"], dataset.labels(i)) for i in idx]

    def evaluate(generate) -> dict:
        fake = map_sharded(lambda c: extractor.extract(
            generate(prompts[starts[c]:starts[c] + chunk], seed=cfg.seed + starts[c]).cpu(), progress=False), len(starts))
        return {"fid": fid_from_features(real, np.concatenate(fake))}

    return evaluate


def run_train(args: argparse.Namespace) -> int:
    from wordcanvas.train.loop import train

    cfg = build_config(args)
    evaluator = quick_fid_evaluator(cfg, args.eval_samples) if cfg.eval_every else None
    train(cfg, evaluator=evaluator)
    return 0


def add_generate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompts", nargs="+", help="one or more text prompts")
    p.add_argument("--model", help="run folder, its final/ folder, a checkpoint folder, or a shipped model name "
                   "(toy-faces, fashion-mnist; default: toy-faces)")
    p.add_argument("-n", type=int, default=1, help="images per prompt")
    p.add_argument("--seed", type=int, default=0, help="image j of each prompt uses seed + j")
    p.add_argument("--truncation", type=float, help="noise truncation (e.g. 0.8): less variety, more typical images")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int)
    p.add_argument("--upscale", type=int, choices=(1, 2, 4), default=1, help="upscale the images x2 or x4")
    p.add_argument("--upscaler", default="auto", help="auto (the shipped fast network when installed, else "
                   "bicubic), fast, quality, quality-gan, realesrgan, srmd, bicubic, or a model folder")
    p.add_argument("--style", help="an image file to take the style from, or a built-in style "
                   "(strokes, glass, marble, waves, dots, shards); applied before upscaling")
    p.add_argument("--style-alpha", dest="style_alpha", type=float, default=1.0, help="style strength in [0, 1]")
    p.add_argument("--out", required=True, help="grid.png (one row per prompt) or a folder for one PNG per image")


def run_generate(args: argparse.Namespace) -> int:
    import torch

    from wordcanvas.generate import save_images
    from wordcanvas.pipeline import TextToImagePipeline

    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = TextToImagePipeline.from_pretrained(args.model, device=args.device, upscaler=args.upscaler)
    images = pipe(args.prompts, n=args.n, seed=args.seed, truncation=args.truncation, style=args.style,
                  upscale=args.upscale, style_alpha=args.style_alpha)
    paths = save_images(images, args.prompts, args.n, args.seed, args.out,
                        meta={"model": str(args.model or pipe.name), "truncation": args.truncation,
                              "style": args.style, "upscale": args.upscale if args.upscale > 1 else None})
    print(paths[0] if len(paths) == 1 else f"{len(paths)} images in {args.out}")
    return 0


VERBS: dict = {
    "train": (add_train_arguments, run_train, "train a model: the text-conditioned GAN, the DCGAN baseline, the style decoder"),
    "generate": (add_generate_arguments, run_generate, "draw images for prompts with a trained model"),
}
