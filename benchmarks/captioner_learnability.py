"""Does a captioner learn what the matching discriminators miss (which digit is where)?

    python benchmarks/captioner_learnability.py --out docs/gan_captioned-mnist

near_miss_learnability.py trains the GAN's discriminator on real images by its matching head
alone and finds it learns neither swaps nor digit identity. This script trains a small captioner
(wordcanvas.models.captioner: CNN regions + Transformer decoder, word-level vocabulary) on the
same real training images, teacher-forced cross-entropy on a random caption of each image, and
scores it the way near_miss_probe.py scores a discriminator: on held-out test images, how often
the true caption has a lower negative log-likelihood than a near miss wrong in one fact.

Writes <out>/captioner_learnability.json and .md.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from _common import ROOT, command_line, machine_info, markdown_table, write_json
from near_miss_learnability import shifted
from near_miss_probe import test_items


RESULT_COLUMNS = [("caption", "caption", ""), ("near miss", "near miss", ""), ("n", "n", ">"),
                  ("true caption more likely (real test images)", "real", ">.3f")]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--layouts", type=int, default=30000, help="training layouts (of the 4,000 training digits)")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--shift", type=int, default=2, help="random translation of training images (pixels)")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--schedule", choices=("onecycle", "constant"), default="onecycle",
                   help="learning-rate schedule; constant is what the captioner gets inside a GAN run")
    p.add_argument("--n", type=int, default=500, help="test images per kind of caption")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--save", type=Path, default=None, help="also save the trained captioner to this folder")
    p.add_argument("--score", type=Path, default=None,
                   help="no training: score a saved captioner (e.g. a GAN checkpoint's captioner/ folder) "
                        "and write <out>/captioner_score.json and .md")
    p.add_argument("--generated", default=None, metavar="RUN[@STEP]",
                   help="with --score: also score on this GAN run's (EMA) images drawn for the true captions: "
                        "does the captioner read the generator's images as the generator meant them?")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "gan_captioned-mnist")
    args = p.parse_args(argv)
    if args.generated and not args.score:
        p.error("--generated needs --score (the captioner that reads the generated images)")
    return args


def score(captioner, tests: dict) -> dict:
    """{(kind, near miss): {"n", "real"}}: P(nll(true) < nll(near miss)) on the test images."""
    import torch

    rows = {}
    captioner.eval()
    with torch.no_grad():
        for kind, group in tests.items():
            images = torch.stack([image for image, _, _ in group])
            regions = captioner.encode_images(images)
            true = captioner.nll(images, [t for _, t, _ in group], regions)
            for near in sorted({k for _, _, wrong in group for k in wrong}):
                keep = [i for i, (_, _, wrong) in enumerate(group) if near in wrong]
                wrong = captioner.nll(images[keep], [group[i][2][near] for i in keep], regions[keep])
                rows[(kind, near)] = {"n": len(keep), "real": float((true[keep] < wrong).float().mean())}
    captioner.train()
    return rows


def main(argv=None):
    args = parse_args(argv)
    import torch

    from wordcanvas.data.captioned_mnist import CaptionedMNIST
    from wordcanvas.models.captioner import Captioner, CaptionerConfig, build_vocabulary

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.score:
        return score_saved(args)
    t0 = time.perf_counter()
    data = CaptionedMNIST("train", size=args.layouts)
    images = torch.stack([data.image(i) for i in range(len(data))])
    captions = [data.captions(i) for i in range(len(data))]
    vocabulary = build_vocabulary(c for options in captions for c in options)
    model = Captioner(CaptionerConfig(vocabulary=vocabulary, resolution=64, channels=1, width=args.width, dim=args.dim))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    sched = (torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=args.steps, pct_start=0.05)
             if args.schedule == "onecycle" else torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0))
    tests = test_items(args.n, args.seed)
    g = torch.Generator().manual_seed(args.seed)
    curve, t_train = [], time.perf_counter()
    for step in range(1, args.steps + 1):
        idx = torch.randint(len(images), (args.batch,), generator=g).tolist()
        pick = torch.randint(1 << 30, (args.batch,), generator=g).tolist()
        texts = [captions[i][p % len(captions[i])] for i, p in zip(idx, pick)]
        loss = model.nll(shifted(images[idx], args.shift, g), texts).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % max(1, args.steps // 6) == 0 or step == args.steps:
            rows = score(model, tests)
            curve.append({"step": step, "loss": round(loss.item(), 4),
                          **{f"{kind}: {near}": round(r["real"], 3) for (kind, near), r in rows.items()}})
            print(curve[-1], flush=True)
    seconds = time.perf_counter() - t_train
    if args.save:
        model.save_pretrained(args.save)
    rows = [{"caption": kind, "near miss": near, **r} for (kind, near), r in score(model, tests).items()]
    params = sum(p.numel() for p in model.parameters())
    results = {"command": command_line(), "machine": machine_info(threads=args.threads), "steps": args.steps,
               "batch": args.batch, "layouts": args.layouts, "width": args.width, "dim": args.dim, "shift": args.shift,
               "lr": args.lr, "schedule": args.schedule, "n": args.n, "seed": args.seed, "parameters": params, "train_seconds": round(seconds, 1),
               "seconds": round(time.perf_counter() - t0, 1), "curve": curve, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "captioner_learnability.json", results)
    m = results["machine"]
    lines = ["# Does a captioner tell a caption from its near misses?", "",
             f"A captioner ({params:,} parameters: CNN to an 8x8 grid of regions, {args.dim}-wide 2-layer "
             f"Transformer decoder, word-level vocabulary of {len(vocabulary)}) trained on {args.layouts} real "
             f"captioned-MNIST training layouts (images shifted by up to {args.shift} px; a random caption of each "
             f"image; {args.steps} steps of batch {args.batch}, AdamW, {args.schedule} lr {args.lr}, seed {args.seed}) in "
             f"{seconds:.0f} s, then scored on {args.n} held-out test images per kind as near_miss_probe.md scores a "
             f"discriminator: how often the true caption has the lower negative log-likelihood. "
             f"{m.get('cpu', '')}, torch threads {m.get('threads')}.", "",
             markdown_table(rows, RESULT_COLUMNS), "", "During training (test images):", "",
             markdown_table(curve, [(k, k, "") for k in curve[-1]]), "",
             f"Command: `{results['command']}`", ""]
    (args.out / "captioner_learnability.md").write_text("\n".join(lines))
    print(markdown_table(rows, RESULT_COLUMNS))


def generated_items(spec: str, tests: dict, seed: int) -> tuple[dict, int]:
    """The test items with each image replaced by the run's EMA generator's image for its true caption."""
    from near_miss_probe import draw, load_run
    from wordcanvas.text.registry import load_encoder

    generator, _, encoder_name, step = load_run(spec)
    encoder = load_encoder(encoder_name)
    out = {}
    for kind, group in tests.items():
        images = draw(generator, encoder, [caption for _, caption, _ in group], seed).clamp(-1, 1)
        out[kind] = [(image, t, wrong) for image, (_, t, wrong) in zip(images, group)]
    return out, step


def score_saved(args) -> None:
    from wordcanvas.models.captioner import Captioner

    model = Captioner.from_pretrained(args.score)
    tests = test_items(args.n, args.seed)
    rows = [{"caption": kind, "near miss": near, **r} for (kind, near), r in score(model, tests).items()]
    columns = RESULT_COLUMNS
    if args.generated:
        fakes, step = generated_items(args.generated, tests, args.seed)
        on_fakes = score(model, fakes)
        for row in rows:
            row["generated"] = on_fakes[(row["caption"], row["near miss"])]["real"]
        columns = [*RESULT_COLUMNS, (f"on the generator's images (step {step})", "generated", ">.3f")]
    results = {"command": command_line(), "machine": machine_info(threads=args.threads), "captioner": str(args.score),
               "generated": args.generated, "n": args.n, "seed": args.seed, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "captioner_score.json", results)
    lines = ["# A saved captioner: does it tell a caption from its near misses?", "",
             f"The captioner in `{args.score}` scored on {args.n} held-out test images per kind (seed {args.seed}): "
             "how often the true caption has the lower negative log-likelihood"
             + (f"; also on the images the generator of `{args.generated}` draws for the true captions "
                "(one noise vector each, seed as above)." if args.generated else "."), "",
             markdown_table(rows, columns), "", f"Command: `{results['command']}`", ""]
    (args.out / "captioner_score.md").write_text("\n".join(lines))
    print(markdown_table(rows, columns))


if __name__ == "__main__":
    main()
