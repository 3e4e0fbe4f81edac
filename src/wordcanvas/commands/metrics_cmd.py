"""`wordcanvas evaluate`: the fixed evaluation protocol (metrics/evaluate.py) from the command line.

    wordcanvas evaluate --real-vs-real fashion-mnist --n 10000 --out floor.json
    wordcanvas evaluate --model runs/faces --data toy-faces --n 10000 --heldout --out faces.json
"""
from __future__ import annotations

import argparse
import json
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--real-vs-real", metavar="DATASET",
                      help="floor: FID/KID/precision-recall of real train vs real test images of a built-in dataset")
    what.add_argument("--model", metavar="DIR", help="a trained text-to-image model folder to evaluate")
    p.add_argument("--data", metavar="DATASET", help="dataset whose prompts, probes and real images judge --model")
    p.add_argument("--n", type=int, default=10_000, help="images per set (default 10000)")
    p.add_argument("--heldout", action="store_true", help="phrase prompts with held-out paraphrases")
    p.add_argument("--split", default="test", help="'test', or 'heldout' for toy-faces' held-out combinations")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=100, help="prompts per generator call")
    p.add_argument("--truncation", type=float,
                   help="sample --model at this truncation (GAN: noise resampled beyond it; VAE: prior temperature); "
                        "default: the model's own setting")
    p.add_argument("--backend", default="auto",
                   help="Inception backend: auto, onnxruntime, torchscript-frozen or torchscript")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--out", metavar="JSON", help="write the result as JSON (a sample grid PNG goes beside it)")
    p.add_argument("--md", metavar="MD", help="also write a markdown table")
    p.add_argument("--no-progress", action="store_true")


def image_seed(call_seed: int, index: int) -> int:
    """Noise seed of image `index` in a generator call made with `call_seed` (distinct per image)."""
    return (call_seed * 100_003 + index) % 2**62


def generator_fn(model_dir: str, device: str = "cpu", truncation: float | None = None):
    """generate_fn(prompts, seed) -> NCHW [-1, 1] for a saved text-to-image model, one noise draw per image
    (at `truncation`, else the model's own setting).

    TextToImage(prompts, seed=s) gives every prompt of a call the same noise vector; the protocol
    needs independent noise per image, so each image is drawn by its own call (the prompts'
    embeddings are computed in one batch first and reused from the model's cache).
    """
    import inspect

    import torch

    try:
        from wordcanvas.generate import TextToImage
    except ImportError as e:
        raise ValueError(f"this installation cannot load generators ({e})") from None
    t2i = TextToImage.from_pretrained(model_dir, device=device)
    per_image_seeds = "seeds" in inspect.signature(t2i.__call__).parameters
    chosen = {} if truncation is None else {"truncation": truncation}

    def generate(prompts: list[str], seed: int) -> torch.Tensor:
        seeds = [image_seed(seed, i) for i in range(len(prompts))]
        if per_image_seeds:
            return t2i(prompts, seeds=seeds, **chosen)
        if getattr(t2i, "encoder", None) is not None and len(prompts) <= getattr(t2i, "cache_size", 0):
            t2i.embed(list(prompts))  # one batched encoder call; the calls below hit the cache
        return torch.cat([t2i([p], n=1, seed=s, **chosen) for p, s in zip(prompts, seeds)])

    return generate


def run(args: argparse.Namespace) -> int:
    import torch

    from wordcanvas.metrics.evaluate import evaluate_generator, evaluate_real_vs_real, to_markdown, write_result
    from wordcanvas.metrics.inception import InceptionFeatures

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.n < 4:
        raise ValueError("--n must be at least 4 (precision/recall use 3 nearest neighbours)")
    extractor = InceptionFeatures(device=args.device, backend=args.backend)
    progress = not args.no_progress
    if args.real_vs_real:
        result = evaluate_real_vs_real(args.real_vs_real, n=args.n, seed=args.seed, extractor=extractor,
                                       progress=progress)
    else:
        if not args.data:
            raise ValueError("--model needs --data DATASET (whose prompts, probes and real images judge it)")
        if args.truncation is not None and args.truncation <= 0:
            raise ValueError(f"--truncation must be positive, got {args.truncation}")
        generate = generator_fn(args.model, args.device, args.truncation)
        result = evaluate_generator(generate, args.data, n=args.n, heldout=args.heldout, split=args.split,
                                    seed=args.seed, batch_size=args.batch_size, extractor=extractor,
                                    progress=progress)
        result["model"] = args.model
        if args.truncation is not None:
            result["truncation"] = args.truncation
    write_result(result, args.out, args.md)
    clean = {k: v for k, v in result.items() if not k.startswith("_")}
    print(to_markdown(clean))
    if not args.out:
        json.dump(clean, sys.stdout, indent=2)
        print()
    return 0


VERBS: dict = {
    "evaluate": (add_arguments, run, "FID/KID/PR beside the real-vs-real floor, probe scores, R-precision, diversity"),
}
