"""Text-conditioned VAE quality under a fixed CPU budget, beside pythae's VAE (and optionally a GAN).

    python benchmarks/vae_quality.py --data fashion-mnist --minutes 15 --out docs/vae_fashion-mnist
    python benchmarks/vae_quality.py --data toy-faces --minutes 15 --gan-model runs/gan_quality/toy-faces/minilm
    python benchmarks/vae_quality.py --smoke                  # a few minutes: the whole path, tiny numbers

Ours: `wordcanvas.train.loop.train` with family "vae" (the settings below, --set to change them),
for --minutes on the --clock ("cpu" = process CPU time / threads, default).
Peer (Fashion-MNIST): pythae's `VAE` (pip `pythae`, its own loss and model code) with a plain
conv encoder / decoder whose width is chosen so its parameter count matches ours, trained on the
same images, batch and budget with Adam. It is unconditional (pythae's encoder and decoder see
images and latents only), so it has no class accuracy; its loss is pythae's "bce" by default.

Metrics on the first --n-test test images (images as 8-bit levels):
- negative ELBO in bits/dim (one posterior sample per image) and the importance-weighted bound
  (k = --iw-k >= 64 samples, on the first --n-iw images); both are honest bounds of a discrete
  likelihood over the 256 levels. Our likelihood is the model's own (discretised logistic by default).
  pythae's decoder gives a mean image only: for its bits/dim it gets a discretised Gaussian around
  that mean with one global scale, fitted by maximum likelihood on 2,000 training images (said
  beside the number);
- reconstruction MSE of the posterior mean's decoded image, per pixel on the [0, 1] scale;
- samples from the prior (at each of --temperatures, default 1) for the dataset's evaluation prompts
  under the project's protocol (`wordcanvas.metrics.evaluate.evaluate_generator`): FID against the
  test split with the real-vs-real floor, probe accuracy (class / attributes), R-precision, diversity.
Toy faces: the same metrics for ours; --gan-model evaluates a trained GAN run beside it.

Writes <out>/results.json and <out>/README.md (tables), <out>/<model>.png (samples).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

from _common import ROOT, command_line, machine_info, markdown_table, write_json

DATASETS = ("fashion-mnist", "toy-faces")
# Ours, per dataset (TrainConfig fields; model = VAESettings). 'beta_start' above 1 makes the decoder
# read the caption before the latent fills up (see train/vae_step.py).
OURS = {
    "fashion-mnist": {"batch": 64, "model": {"model": {"nf": 32, "z_dim": 32}, "beta_start": 20.0, "kl_warmup": 1500}},
    # 64 px RGB at the family's lr 1e-3 diverged within 1,100 steps (three runs); 3e-4 trains smoothly
    "toy-faces": {"batch": 32, "lr": 3e-4, "model": {"model": {"nf": 32, "z_dim": 64}, "beta_start": 20.0,
                                                    "kl_warmup": 1500}},
}
SMOKE = {"minutes": 0.4, "n_test": 200, "n_iw": 16, "n_eval": 200, "diversity_prompts": 10, "diversity_seeds": 3,
         "r_repeats": 1}
CLOCK_WORDS = {"wall": "wall-clock", "cpu": "dedicated-core (process CPU time / threads)"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", choices=DATASETS, default="fashion-mnist")
    p.add_argument("--encoder", default="minilm", help="text encoder of our VAE")
    p.add_argument("--minutes", type=float, help="training budget per model (default 15; smoke 0.4)")
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                   help="a TrainConfig setting for our VAE, dotted, JSON value: --set model.beta=2")
    p.add_argument("--peer", choices=("pythae", "kept", "none"), default="pythae",
                   help="the pythae VAE beside ours (Fashion-MNIST); 'kept' reuses its entry in <out>/results.json "
                        "from an earlier run of this script with the same data, budget, clock and threads")
    p.add_argument("--temperatures", default="1",
                   help="comma list of prior temperatures to evaluate our samples at (the first is the main row)")
    p.add_argument("--pythae-loss", dest="pythae_loss", choices=("bce", "mse"), default="bce")
    p.add_argument("--gan-model", dest="gan_model", help="a trained GAN run / model folder to evaluate beside ours")
    p.add_argument("--n-test", dest="n_test", type=int, help="test images for bits/dim and MSE (default 10000)")
    p.add_argument("--n-iw", dest="n_iw", type=int, help="test images for the importance-weighted bound (default 1000)")
    p.add_argument("--iw-k", dest="iw_k", type=int, default=64, help="importance samples (>= 64)")
    p.add_argument("--n-eval", dest="n_eval", type=int, help="generated images for FID / probes (default 10000)")
    p.add_argument("--diversity-prompts", dest="diversity_prompts", type=int)
    p.add_argument("--diversity-seeds", dest="diversity_seeds", type=int)
    p.add_argument("--r-repeats", dest="r_repeats", type=int)
    p.add_argument("--runs", help="training run folders (default runs/vae_quality/<data>)")
    p.add_argument("--out", help="result folder (default docs/vae_<data>; smoke: runs/vae_quality_smoke/<data>/report)")
    p.add_argument("--fresh", action="store_true", help="retrain even when a finished run exists")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    args = p.parse_args(argv)
    defaults = dict(minutes=15.0, n_test=10_000, n_iw=1000, n_eval=10_000, diversity_prompts=50, diversity_seeds=5,
                    r_repeats=3)
    if args.smoke:
        defaults.update(SMOKE)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.iw_k < 64 and not args.smoke:
        p.error("--iw-k must be at least 64")
    args.temperatures = [float(t) for t in args.temperatures.split(",") if t.strip()]
    if not args.temperatures or min(args.temperatures) <= 0:
        p.error("--temperatures must be positive numbers")
    root = ROOT / "runs" / ("vae_quality_smoke" if args.smoke else "vae_quality") / args.data
    args.runs = Path(args.runs or root / "runs")
    args.out = Path(args.out or (root / "report" if args.smoke else ROOT / "docs" / f"vae_{args.data}"))
    return args


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------

def test_batch(data: str, n: int, resolution: int | None = None):
    """The first n test images (8-bit levels on [-1, 1]) and one caption each."""
    import torch

    from wordcanvas.data import load_dataset
    from wordcanvas.models.vae import quantize

    ds = load_dataset(data, "test", resolution, 0, **({"size": n} if data == "toy-faces" else {}))
    n = min(n, len(ds))
    images = quantize(torch.stack([ds.image(i) for i in range(n)]))
    return images, [ds.captions(i)[0] for i in range(n)]


# ---------------------------------------------------------------------------------------------
# Ours
# ---------------------------------------------------------------------------------------------

def train_ours(args):
    from wordcanvas.train.config import TrainConfig, apply_settings
    from wordcanvas.train.loop import train

    run_dir = args.runs / "ours"
    data = TrainConfig().to_dict()
    data.update(family="vae", data=args.data, encoder=args.encoder, out=str(run_dir), minutes=args.minutes,
                budget_clock=args.clock, threads=args.threads, seed=args.seed, sample_every=0, ckpt_every=2000,
                log_every=50, progress=args.progress, **json.loads(json.dumps(OURS[args.data])))
    apply_settings(data, args.settings)
    if args.fresh and run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    final = run_dir / "final" / "model.json"
    if final.exists():
        print(f"{run_dir}: finished run found (use --fresh to retrain)", file=sys.stderr)
    else:
        train(TrainConfig.from_dict(data))
    return run_dir, json.loads(final.read_text())["step"]


def likelihood_metrics(model, encode_text, images, captions, n_iw: int, k: int, batch: int = 100) -> dict:
    """Bits/dim of -ELBO (one sample) on all images, of the k-sample IW bound on the first n_iw,
    and the reconstruction MSE (posterior mean, [0, 1] scale)."""
    import torch

    from wordcanvas.models.vae import importance_weighted_nll, negative_elbo

    dims = images[0].numel()
    g = torch.Generator().manual_seed(0)
    nelbo, iw, mse = [], [], []
    with torch.no_grad():
        for lo in range(0, len(images), batch):
            x, text = images[lo:lo + batch], encode_text(captions[lo:lo + batch])
            nelbo.append(negative_elbo(model, x, text, g))
            mean, _ = model.encode(x, text)
            mse.append(((model.decode(mean, text) - x) / 2).square().flatten(1).mean(1))  # the latent itself
            if lo < n_iw:
                m = min(batch, n_iw - lo)
                iw.append(importance_weighted_nll(model, x[:m], text[:m], k=k, generator=g))
    to_bpd = lambda t: float(torch.cat(t).mean()) / (dims * math.log(2))  # noqa: E731
    return {"nelbo_bpd": to_bpd(nelbo), "iw_bpd": to_bpd(iw), "iw_k": k, "n_iw": int(sum(len(t) for t in iw)),
            "recon_mse": float(torch.cat(mse).mean()), "n": len(images)}


# ---------------------------------------------------------------------------------------------
# pythae's VAE with a parameter-matched conv encoder / decoder
# ---------------------------------------------------------------------------------------------

def pythae_nets(width: int, z_dim: int, channels: int, resolution: int):
    import torch
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder
    from torch import nn

    n_down = int(math.log2(resolution // 4))
    widths = [width * 2 ** i for i in range(n_down)]

    class Encoder(BaseEncoder):
        def __init__(self):
            super().__init__()
            layers, c = [], channels
            for w in widths:
                layers += [nn.Conv2d(c, w, 4, 2, 1), nn.BatchNorm2d(w), nn.ReLU()]
                c = w
            self.conv = nn.Sequential(*layers, nn.Flatten())
            self.mu, self.logvar = nn.Linear(c * 16, z_dim), nn.Linear(c * 16, z_dim)

        def forward(self, x):
            h = self.conv(x)
            return ModelOutput(embedding=self.mu(h), log_covariance=self.logvar(h))

    class Decoder(BaseDecoder):
        def __init__(self, sigmoid: bool):
            super().__init__()
            self.fc = nn.Linear(z_dim, widths[-1] * 16)
            layers = []
            for a, b in zip(widths[::-1], widths[::-1][1:] + [widths[0]]):
                layers += [nn.ConvTranspose2d(a, b, 4, 2, 1), nn.BatchNorm2d(b), nn.ReLU()]
            layers += [nn.Conv2d(widths[0], channels, 3, 1, 1)] + ([nn.Sigmoid()] if sigmoid else [])
            self.deconv = nn.Sequential(*layers)

        def forward(self, z):
            return ModelOutput(reconstruction=self.deconv(self.fc(z).view(len(z), widths[-1], 4, 4)))

    return Encoder, Decoder, torch


def build_pythae(target_params: int, z_dim: int, channels: int, resolution: int, loss: str):
    from pythae.models import VAE, VAEConfig

    best = None
    for width in range(8, 257, 2):  # the width whose parameter count is closest to ours
        Encoder, Decoder, _ = pythae_nets(width, z_dim, channels, resolution)
        n = sum(p.numel() for m in (Encoder(), Decoder(loss == "bce")) for p in m.parameters())
        if best is None or abs(n - target_params) < abs(best[1] - target_params):
            best = (width, n)
        if n > target_params:
            break
    width = best[0]
    Encoder, Decoder, _ = pythae_nets(width, z_dim, channels, resolution)
    config = VAEConfig(input_dim=(channels, resolution, resolution), latent_dim=z_dim, reconstruction_loss=loss)
    return VAE(config, encoder=Encoder(), decoder=Decoder(loss == "bce")), width


def train_pythae(model, data: str, batch: int, minutes: float, clock: str, threads: int, seed: int, progress: bool):
    """Adam(1e-3) on pythae's own loss over shuffled training images, until the budget is spent."""
    import torch
    from tqdm import tqdm

    from wordcanvas.data import load_dataset
    from wordcanvas.train.loop import budget_clock

    ds = load_dataset(data, "train", None, seed)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    now = budget_clock(clock, threads)
    deadline, step, g = now() + minutes * 60, 0, torch.Generator().manual_seed(seed)
    model.train()
    bar = tqdm(desc="pythae VAE", unit="step", disable=not progress)
    while now() < deadline:
        idx = torch.randint(len(ds), (batch,), generator=g).tolist()
        x = (torch.stack([ds.image(i) for i in idx]) + 1) / 2  # pythae works on [0, 1]
        loss = model({"data": x}, epoch=1, dataset_size=len(ds)).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        bar.update(1)
    bar.close()
    model.eval()
    return step


class PythaeAsVAE:
    """pythae's VAE behind our TextVAE evaluation interface: its decoder mean with a discretised
    Gaussian of one global scale (fitted on training images); captions ignored."""

    def __init__(self, model, log_scale: float = math.log(0.1)):
        self.model, self.log_scale = model, log_scale

    def encode(self, images, text=None):
        out = self.model.encoder((images + 1) / 2)
        return out.embedding, out.log_covariance

    def __call__(self, z, text=None):
        return (self.model.decoder(z).reconstruction * 2 - 1).clamp(-1, 1)

    def decode_params(self, z, text=None):
        return self(z)

    def log_likelihood(self, images, params):
        import torch

        from wordcanvas.models.vae import discretized_log_prob

        return discretized_log_prob(images, params, torch.full_like(params, self.log_scale), "gaussian").flatten(1).sum(1)

    def fit_scale(self, images) -> float:
        """Maximum-likelihood global log-scale (golden-section search) for images (8-bit levels)."""
        import torch

        with torch.no_grad():
            mean, _ = self.encode(images)
            recon = self(mean)

        def nll(log_scale):
            self.log_scale = log_scale
            return -float(self.log_likelihood(images, recon).mean())

        lo, hi = math.log(1e-3), math.log(1.0)
        for _ in range(40):
            a, b = hi - (hi - lo) / 1.618, lo + (hi - lo) / 1.618
            if nll(a) < nll(b):
                hi = b
            else:
                lo = a
        self.log_scale = (lo + hi) / 2
        return self.log_scale


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------

def evaluate_samples(generate, args) -> tuple[dict, object]:
    from wordcanvas.metrics.evaluate import evaluate_generator

    r = evaluate_generator(generate, args.data, n=args.n_eval, diversity_prompts=args.diversity_prompts,
                           diversity_seeds=args.diversity_seeds, r_repeats=args.r_repeats, progress=args.progress)
    return r, r.pop("_samples", None)


def summary_row(name: str, entry: dict) -> dict:
    s, lk = entry.get("samples", {}), entry.get("likelihood", {})
    per = s.get("probe", {}).get("per_attribute", {})
    return {"model": name, "params": entry.get("params"), "steps": entry.get("steps"),
            "nelbo_bpd": lk.get("nelbo_bpd"), "iw_bpd": lk.get("iw_bpd"), "recon_mse": lk.get("recon_mse"),
            "fid": s.get("fid"), "floor": s.get("floor", {}).get("fid"),
            "class_acc": (per["class"]["accuracy"] if "class" in per else per_attribute_mean(s))
            if entry.get("conditional", True) else None,
            "all_correct": s.get("probe", {}).get("all_correct") if entry.get("conditional", True) else None,
            "rprec": s.get("r_precision", {}).get("r_precision") if entry.get("conditional", True) else None}


def write_report(results: dict, out: Path) -> None:
    rows = [summary_row(n, e) for n, e in results["models"].items()]
    cols = [("model", "model", ""), ("parameters", "params", ">d"), ("steps", "steps", ">d"),
            ("-ELBO bits/dim", "nelbo_bpd", ">.4f"), (f"IW bits/dim (k={results['settings']['iw_k']})", "iw_bpd", ">.4f"),
            ("recon MSE [0,1]", "recon_mse", ">.4f"), ("FID", "fid", ">.2f"), ("FID floor", "floor", ">.2f"),
            ("class accuracy" if results["settings"]["data"] == "fashion-mnist" else "probe per-attribute mean",
             "class_acc", ">.3f"), ("all attributes right", "all_correct", ">.3f"), ("R-precision", "rprec", ">.3f")]
    s = results["settings"]
    lines = [f"# Text-conditioned VAE on {s['data']}", "",
             f"Budget {s['minutes']} min per model on the {CLOCK_WORDS[s['clock']]} clock, {s['threads']} threads. "
             f"Command: `{results['command']}`.", "", markdown_table(rows, cols), "",
             "Bits/dim are honest bounds for 8-bit images (discrete likelihoods over the 256 levels)."]
    if len(s.get("temperatures", [1.0])) > 1:
        lines[-1] += (" Rows 'ours, temperature T' are the same trained model, its prior samples drawn at temperature "
                      "T (noise scaled by T in the prior's standard coordinates); their likelihood columns are the "
                      "model's, so they are left blank.")
    if "pythae-vae" in results["models"] and "kept_from" in results["models"]["pythae-vae"]:
        lines[-1] += (" The pythae row was trained and scored by an earlier run of this script with the same data, "
                      f"budget, clock and threads: `{results['models']['pythae-vae']['kept_from']}`.")
    if "pythae-vae" in results["models"]:
        lines[-1] += (" pythae's VAE has no likelihood of its own for 8-bit levels: it is scored with a discretised "
                      "Gaussian around its decoder mean with a global scale fitted on 2,000 training images (log-scale "
                      f"{results['models']['pythae-vae']['fitted_log_scale']}). It is unconditional, so it has no "
                      "class accuracy; its FID is of unconditional samples.")
    lines.append("")
    if "targets" in results:
        lines += ["Targets: " + json.dumps(results["targets"]), ""]
    out.mkdir(parents=True, exist_ok=True)
    (out / "README.md").write_text("\n".join(lines))


def per_attribute_mean(samples: dict) -> float | None:
    per = samples.get("probe", {}).get("per_attribute", {})
    return sum(v["accuracy"] for v in per.values()) / len(per) if per else None


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from wordcanvas.generate import TextToImage
    from wordcanvas.utils.io import make_grid, tensor_to_pil

    results = {"command": command_line(), "machine": machine_info(threads=args.threads), "models": {},
               "settings": {"data": args.data, "minutes": args.minutes, "clock": args.clock, "threads": args.threads,
                            "n_test": args.n_test, "n_iw": args.n_iw, "iw_k": args.iw_k, "n_eval": args.n_eval,
                            "ours": OURS[args.data], "set": args.settings, "temperatures": args.temperatures}}
    args.out.mkdir(parents=True, exist_ok=True)

    def save_samples(name: str, samples) -> None:
        if samples is not None:
            tensor_to_pil(make_grid(samples[:64], nrow=8)).save(args.out / f"{name}.png")

    # ours
    t0 = time.time()
    run_dir, steps = train_ours(args)
    t2i = TextToImage.from_pretrained(run_dir)
    model = t2i.generator
    images, captions = test_batch(args.data, args.n_test, model.config.resolution)
    ours = {"params": sum(p.numel() for p in model.parameters()), "steps": steps, "run": str(run_dir.relative_to(ROOT))
            if run_dir.is_relative_to(ROOT) else str(run_dir), "train_wall_s": round(time.time() - t0, 1)}
    ours["likelihood"] = likelihood_metrics(model, t2i.embed, images, captions, args.n_iw, args.iw_k)
    kept_path = args.out / "results.json"  # read before our rows overwrite it
    previous = json.loads(kept_path.read_text()) if args.peer == "kept" and kept_path.exists() else {}
    for k, temperature in enumerate(args.temperatures):
        name = "ours" if k == 0 else f"ours, temperature {temperature:g}"
        entry = ours if k == 0 else {"params": ours["params"], "steps": steps, "of": "ours"}
        entry["temperature"] = temperature

        def fam_generate(texts, seed, temperature=temperature):  # one prior draw per image, as the loop's generate
            return t2i.generator(model.sample_noise(len(texts), torch.Generator().manual_seed(seed), temperature),
                                 t2i.embed(texts))

        entry["samples"], samples = evaluate_samples(fam_generate, args)
        save_samples("ours" if k == 0 else f"ours-t{temperature:g}", samples)
        results["models"][name] = entry
        write_json(args.out / "results.json", results)

    # pythae's VAE
    if args.peer == "kept" and args.data == "fashion-mnist":
        old = previous.get("settings", {})
        same = {k: old.get(k) for k in ("data", "minutes", "clock", "threads", "n_test", "n_iw", "iw_k", "n_eval")}
        want = {k: results["settings"][k] for k in same}
        if "pythae-vae" not in previous.get("models", {}) or same != want:
            raise SystemExit(f"--peer kept: {args.out / 'results.json'} holds no pythae entry of the same settings "
                             f"({same} vs {want}); use --peer pythae")
        results["models"]["pythae-vae"] = dict(previous["models"]["pythae-vae"], kept_from=previous["command"])
    if args.peer == "pythae" and args.data == "fashion-mnist":
        peer, width = build_pythae(ours["params"], model.config.z_dim, model.config.channels, model.config.resolution,
                                   args.pythae_loss)
        t0 = time.time()
        steps = train_pythae(peer, args.data, OURS[args.data]["batch"], args.minutes, args.clock, args.threads,
                             args.seed, args.progress)
        wrapped = PythaeAsVAE(peer)
        from wordcanvas.data import load_dataset
        from wordcanvas.models.vae import quantize

        train_ds = load_dataset(args.data, "train", None, 0)
        log_scale = wrapped.fit_scale(quantize(torch.stack([train_ds.image(i) for i in range(2000)])))
        entry = {"params": sum(p.numel() for p in peer.parameters()), "width": width, "steps": steps,
                 "loss": args.pythae_loss, "fitted_log_scale": round(log_scale, 4), "conditional": False,
                 "train_wall_s": round(time.time() - t0, 1)}
        entry["likelihood"] = likelihood_metrics(_PythaeEval(wrapped), lambda texts: _NoText(), images, captions,
                                                 args.n_iw, args.iw_k)

        def peer_generate(texts, seed):
            with torch.no_grad():
                return wrapped(torch.randn(len(texts), model.config.z_dim, generator=torch.Generator().manual_seed(seed)))

        entry["samples"], samples = evaluate_samples(peer_generate, args)
        save_samples("pythae-vae", samples)
        results["models"]["pythae-vae"] = entry
        write_json(args.out / "results.json", results)

    # a GAN beside it
    if args.gan_model:
        gan = TextToImage.from_pretrained(args.gan_model)
        gan_generate = lambda texts, seed: gan.generator(  # noqa: E731
            gan.generator.sample_noise(len(texts), torch.Generator().manual_seed(seed), gan.meta.get("truncation"),
                                       gan.meta.get("truncation_mode", "resample")), gan.embed(texts))
        entry = {"params": sum(p.numel() for p in gan.generator.parameters()), "model": str(args.gan_model)}
        entry["samples"], samples = evaluate_samples(gan_generate, args)
        save_samples("gan", samples)
        results["models"]["gan"] = entry

    for entry in results["models"].values():  # toy faces: no 'class' head; report the attribute mean instead
        if args.data != "fashion-mnist" and "samples" in entry:
            entry["samples"].setdefault("probe", {}).setdefault("per_attribute", {})
            entry["attribute_mean"] = per_attribute_mean(entry["samples"])
    if args.data == "fashion-mnist":
        o, pth = results["models"]["ours"], results["models"].get("pythae-vae")
        results["targets"] = {
            "class_accuracy_at_least_0.90": {
                f"temperature {e['temperature']:g}": e["samples"]["probe"]["per_attribute"]["class"]["accuracy"] >= 0.90
                for e in results["models"].values() if "temperature" in e},
            "bits_per_dim_no_worse_than_pythae": (None if pth is None else
                                                  o["likelihood"]["iw_bpd"] <= pth["likelihood"]["iw_bpd"])}
    write_json(args.out / "results.json", results)
    write_report(results, args.out)
    print(f"wrote {args.out / 'results.json'} and {args.out / 'README.md'}")
    return 0


class _NoText:
    """Stands in for captions where the model reads none (indexing gives itself)."""

    def __getitem__(self, index):
        return self


class _PythaeEval:
    """Adapts PythaeAsVAE to likelihood_metrics / importance_weighted_nll (text arguments ignored)."""

    def __init__(self, wrapped: PythaeAsVAE):
        self.w = wrapped

    def encode(self, images, text):
        return self.w.encode(images)

    def decode_params(self, z, text):
        return self.w(z)

    def log_likelihood(self, images, params):
        return self.w.log_likelihood(images, params)

    def __call__(self, z, text):
        return self.w(z)

    decode = __call__

    def elbo_terms(self, images, text, generator=None):
        from wordcanvas.models.vae import kl_standard_normal, reparameterize

        mean, logvar = self.encode(images, text)
        z = reparameterize(mean, logvar, generator)
        return {"log_px": self.log_likelihood(images, self.w(z)), "kl": kl_standard_normal(mean, logvar)}


if __name__ == "__main__":
    raise SystemExit(main())
