"""How much of a generator's class accuracy blur alone can cost: the Fashion-MNIST probe on real
test images blurred by a Gaussian, beside a trained VAE's reconstructions of the same images.

    python benchmarks/probe_blur.py --out docs/vae_fashion-mnist
    python benchmarks/probe_blur.py --model runs/vae_quality/fashion-mnist/runs/ours --out docs/vae_fashion-mnist

The probe (trained on sharp real images) judges every generated sample in the evaluation protocol.
A likelihood-trained decoder draws the mean of what the latent leaves uncertain, so its images are
blurred. This script puts a number on that: the first --n test images, Gaussian-blurred at each
--sigmas (pixels of the 32 x 32 image; scipy.ndimage.gaussian_filter, edges repeated), are read by
the probe, with the mean squared error of each blur on the [0, 1] scale, so a blur can be matched
to a model's reconstruction MSE. With --model (a text-conditioned VAE run on Fashion-MNIST), its
reconstructions (posterior mean decoded under each image's own caption, the evaluation phrasing
drawn with seed 0) are read the same way.
Writes <out>/probe_blur.json and <out>/probe_blur.md.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from _common import command_line, machine_info, markdown_table, write_json

SIGMAS = "0,0.5,0.75,1,1.25,1.5"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10000, help="test images (the first n)")
    p.add_argument("--sigmas", default=SIGMAS, help="Gaussian blur standard deviations in pixels")
    p.add_argument("--model", help="a Fashion-MNIST text-conditioned VAE run or model folder: its reconstructions too")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    import numpy as np
    import torch
    from scipy.ndimage import gaussian_filter

    torch.set_num_threads(args.threads)
    from wordcanvas.data import load_dataset
    from wordcanvas.data.fashion_mnist import CLASS_NAMES
    from wordcanvas.metrics.probes import load_probe

    test = load_dataset("fashion-mnist", "test", seed=0)
    n = min(args.n, len(test))
    images = torch.stack([test.image(i) for i in range(n)])
    labels = torch.tensor([test.labels(i)["class"] for i in range(n)])
    probe = load_probe("fashion-mnist")
    coat, pullover = CLASS_NAMES.index("Coat"), CLASS_NAMES.index("Pullover")

    def row(name: str, seen: torch.Tensor) -> dict:
        read = probe.predict(seen.clamp(-1, 1))["class"]
        per_class = {CLASS_NAMES[k]: float((read[labels == k] == k).float().mean()) for k in range(len(CLASS_NAMES))}
        return {"images": name, "mse": float(((seen.clamp(-1, 1) - images) / 2).square().mean()),
                "accuracy": float((read == labels).float().mean()), "per_class": per_class,
                "coat_read_as_pullover": float((read[labels == coat] == pullover).float().mean())}

    rows = []
    for sigma in (float(s) for s in args.sigmas.split(",") if s.strip()):
        blurred = images if sigma == 0 else torch.from_numpy(
            gaussian_filter(images.numpy(), sigma=(0, 0, sigma, sigma), mode="nearest", truncate=4.0))
        rows.append({"sigma": sigma, **row("real" if sigma == 0 else f"real, blur sigma {sigma:g}", blurred)})
    if args.model:
        from wordcanvas.edit import Editor

        editor = Editor.from_pretrained(args.model, dataset="fashion-mnist")
        if editor.family != "vae":
            raise SystemExit(f"--model must be a VAE run; {args.model} is a {editor.family}")
        rng = np.random.default_rng(0)
        captions = [str(rng.choice(test.captions(i))) for i in range(n)]
        with torch.no_grad():
            recon = torch.cat([editor.reconstruct(images[i:i + 500], captions[i:i + 500])
                               for i in range(0, n, 500)])
        rows.append({"sigma": None, **row(f"VAE reconstructions ({Path(args.model).name})", recon)})

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "probe_blur.json", {"command": command_line(), "machine": machine_info(threads=args.threads),
                                         "n": n, "model": args.model, "rows": rows})
    cols = ([("images", "images", ""), ("MSE [0,1]", "mse", ">.4f"), ("probe accuracy", "accuracy", ">.3f")]
            + [(name, f"pc_{name}", ">.2f") for name in CLASS_NAMES]
            + [("coat read as pullover", "coat_read_as_pullover", ">.2f")])
    flat = [{**r, **{f"pc_{k}": v for k, v in r["per_class"].items()}} for r in rows]
    (out / "probe_blur.md").write_text(
        "# The Fashion-MNIST probe on blurred real images\n\n"
        f"Command: `{command_line()}`. The first {n} test images at 32 x 32; per-class columns are the share of "
        "each class the probe reads right.\n\n" + markdown_table(flat, cols) + "\n")
    print((out / "probe_blur.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
