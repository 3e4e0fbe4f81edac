"""Can a GAN run's captioner steer its generator to draw a pair's digits in the named order?

    python benchmarks/captioner_steer.py --run runs/gan_quality/<run>/minilm@6497 --out docs/gan_captioned-mnist/captioner_steer

In captioned-MNIST runs with the re-description term (`model.captioner`), the captioner ranks a real
image's true caption above its digit swap almost always, yet on the generator's own images at
chance (captioner_learnability.py --generated). Is the captioner's gradient too weak beside the
adversarial terms, or does it not say how to reorder the digits at all? This script takes a run's
EMA generator and its captioner at one checkpoint, freezes the captioner, and trains the generator
on the captioner's per-word negative log-likelihood alone (no discriminator), on training captions
of two digits, for --steps steps. Before and after, the generator's images for the benchmark's
2,000 evaluation prompts are scored by the independent probe (the one gan_quality.py uses), so an
image that only fools the captioner does not count; and the captioner's own ranking of the true
caption over its swap on the generated images is reported beside it. `--loss rank` trains on a
ranking form instead (softplus of the true caption's nats minus a near miss's), `--loss both` on
their sum.

Writes <out>/captioner_steer.json and .md.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from _common import ROOT, command_line, machine_info, markdown_table, write_json

ATTRIBUTES = ("digit1", "digit2", "placed1", "placed2", "relation")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, metavar="RUN@STEP", help="a captioner run's model folder and step")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-4, help="the generator's Adam learning rate")
    p.add_argument("--loss", choices=("nll", "rank", "both"), default="nll",
                   help="nll: the captioner's per-word negative log-likelihood of the caption (the GAN's term); "
                        "rank: softplus of the true caption's nats minus a near miss's (the dataset's "
                        "contrast_captions: digits swapped, one moved...), so only the words that tell them "
                        "apart pull; both: their sum")
    p.add_argument("--n-eval", dest="n_eval", type=int, default=2000, help="evaluation prompts (test split)")
    p.add_argument("--n-swaps", dest="n_swaps", type=int, default=500, help="two-digit test captions for the swap ranking")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "gan_captioned-mnist" / "captioner_steer")
    return p.parse_args(argv)


def measure(generator, encoder, captioner, probe, prompts, swaps, seed: int) -> dict:
    """Probe accuracies on the evaluation prompts and the captioner's swap ranking on generated pairs."""
    import torch

    from gan_quality import weighted_accuracy
    from near_miss_probe import draw
    from wordcanvas.metrics.probes import probe_scores

    images = draw(generator, encoder, [p.text for p in prompts], seed).clamp(-1, 1)
    scores = probe_scores(probe, images, prompts)
    per = scores["per_attribute"]
    pair_images = draw(generator, encoder, [true for true, _ in swaps], seed).clamp(-1, 1)
    with torch.no_grad():
        true_nll = captioner.nll(pair_images, [true for true, _ in swaps])
        swap_nll = captioner.nll(pair_images, [swap for _, swap in swaps])
    return {**{a: round(float(per[a]["accuracy"]), 3) for a in ATTRIBUTES},
            "all_correct": round(float(scores["all_correct"]), 3),
            **{f"all_correct: {kind}": round(float(v["all_correct"]), 3) for kind, v in scores["all_correct_by_kind"].items()},
            "digits": round(weighted_accuracy(per, ["digit1", "digit2"]), 3),
            "placed": round(weighted_accuracy(per, ["placed1", "placed2"]), 3),
            "swaps_on_generated": round(float((true_nll < swap_nll).float().mean()), 3)}


def main(argv=None) -> int:
    args = parse_args(argv)
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from near_miss_probe import load_run, run_checkpoint, test_items
    from wordcanvas.data.captioned_mnist import CaptionedMNIST
    from wordcanvas.metrics.probes import load_probe
    from wordcanvas.models.captioner import Captioner
    from wordcanvas.text.registry import load_encoder

    t0 = time.perf_counter()
    generator, _, encoder_name, step = load_run(args.run)
    captioner = Captioner.from_pretrained(run_checkpoint(args.run)[1] / "captioner").eval()
    captioner.requires_grad_(False)
    encoder = load_encoder(encoder_name)
    probe = load_probe("captioned-mnist")
    prompts = CaptionedMNIST("test").eval_prompts(args.n_eval, seed=args.seed)
    swaps = [(true, wrong["swapped"]) for _, true, wrong in test_items(args.n_swaps, args.seed)["two digits"]]
    train = CaptionedMNIST("train")
    rng = np.random.default_rng(args.seed)
    pairs = [i for i in range(len(train)) if train.labels(i)["digit2"] >= 0]

    rows = [{"generator": f"step {step} (as trained)", "steps": 0, **measure(generator, encoder, captioner, probe,
                                                                             prompts, swaps, args.seed)}]
    print(rows[-1], flush=True)
    opt = torch.optim.Adam(generator.parameters(), lr=args.lr, betas=(0.5, 0.999))
    noise = torch.Generator().manual_seed(args.seed)
    losses = []
    t_train = time.perf_counter()
    for i in range(1, args.steps + 1):
        picked = rng.choice(pairs, size=args.batch)
        captions = [str(rng.choice(train.captions(int(j)))) for j in picked]
        z = generator.sample_noise(args.batch, noise)
        # eval mode: BatchNorm keeps the EMA generator's standing statistics; only the weights move
        images = generator(z, encoder.encode(captions)).float()
        regions = captioner.encode_images(images)
        loss = 0.0
        if args.loss in ("nll", "both"):
            loss = loss + captioner.nll(images, captions, regions, per_word=True).mean()
        if args.loss in ("rank", "both"):
            near = [str(rng.choice(train.contrast_captions(int(j)))) for j in picked]
            loss = loss + torch.nn.functional.softplus(captioner.nll(images, captions, regions)
                                                       - captioner.nll(images, near, regions)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if i % max(1, args.steps // 3) == 0 or i == args.steps:
            rows.append({"generator": f"+{i} steps on the captioner alone", "steps": i,
                         "loss": round(float(np.mean(losses[-50:])), 3),
                         **measure(generator, encoder, captioner, probe, prompts, swaps, args.seed)})
            print(rows[-1], flush=True)
    seconds = time.perf_counter() - t_train
    results = {"command": command_line(), "machine": machine_info(threads=args.threads), "run": args.run,
               "steps": args.steps, "batch": args.batch, "lr": args.lr, "loss": args.loss, "n_eval": args.n_eval,
               "n_swaps": len(swaps), "seed": args.seed, "train_seconds": round(seconds, 1),
               "seconds": round(time.perf_counter() - t0, 1), "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "captioner_steer.json", results)
    loss_name = {"nll": "captioner loss (nats/word)", "rank": "ranking loss", "both": "nats/word + ranking loss"}[args.loss]
    columns = [("generator", "generator", ""), (loss_name, "loss", ""),
               ("digit1", "digit1", ">.3f"), ("digit2", "digit2", ">.3f"), ("placed1", "placed1", ">.3f"),
               ("placed2", "placed2", ">.3f"), ("relation", "relation", ">.3f"), ("all-correct", "all_correct", ">.3f"),
               *((f"all-correct, {kind}", f"all_correct: {kind}", ">.3f")
                 for kind in ("one digit", "two digits in named cells", "two digits in a relation")),
               ("weighted digits", "digits", ">.3f"), ("weighted placed", "placed", ">.3f"),
               ("captioner: true over swap, generated pairs", "swaps_on_generated", ">.3f")]
    m = results["machine"]
    objective = {"nll": "its captioner's per-word negative log-likelihood",
                 "rank": "its captioner's ranking of the true caption over a near miss (softplus of the nats' difference)",
                 "both": "its captioner's per-word negative log-likelihood plus its ranking of the true caption over a "
                         "near miss"}[args.loss]
    trained = (f"trained further on {objective} only (captioner frozen, no "
               f"discriminator; training captions of two digits, batch {args.batch}, Adam lr {args.lr}, seed "
               f"{args.seed}; {seconds:.0f} s)" if args.steps else "as trained (--steps 0: no further training)")
    lines = ["# Can the captioner alone steer the generator?", "",
             f"The EMA generator of `{args.run}` {trained}. Probe columns: the benchmark's {args.n_eval} evaluation "
             f"prompts, scored by the independent probe; last column: the captioner on the generator's images for "
             f"{len(swaps)} two-digit test captions. {m.get('cpu', '')}, torch threads {m.get('threads')}.", "",
             markdown_table(rows, columns), "", f"Command: `{results['command']}`", ""]
    (args.out / "captioner_steer.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
