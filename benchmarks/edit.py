"""Text-guided editing on toy faces: the VAE (encode, decode with the edited caption) against GAN
inversion (Adam on z with pixel + LPIPS, regenerate with the edited caption).

    python benchmarks/edit.py --vae runs/vae_quality/toy-faces/runs/ours \\
        --gan runs/gan_quality/toy-faces/minilm --n 600 --out docs/edit_toy-faces
    python benchmarks/edit.py --smoke        # trains two tiny models for a few steps: the whole path

Edits: held-out renders (the test split, never trained on; from index --start, so a rule chosen
on the first faces can be checked on others), one edit per image, the edited
attribute cycling through every attribute; the new value is drawn among the values that keep
the face consistent and outside the held-out combinations (no bearded women, no bald women...).
The source caption states the true value of the edited attribute with gender and age (--mention
edited, like the training captions; the latent keeps the rest) or every attribute present
(--mention all); the target caption is the same description, phrased alike, with the one
attribute changed.

Scores, by the shipped toy-faces probe (trained on real renders, never a training loss):
- success: the probe reads the new value of the edited attribute on the edited image;
- preservation: the share of the other attributes whose probe reading on the edited image equals
  its reading on the source image (hair colour skipped when bald on either side);
- LPIPS (AlexNet) between the edited and the source image, and for reference the probe's
  accuracy on the source images themselves.
Writes <out>/results.json, <out>/README.md and <out>/examples.png (source | VAE | GAN rows).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

from _common import ROOT, command_line, machine_info, markdown_table, write_json

SMOKE = {"n": 12, "gan_steps": 5, "batch": 12}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vae", help="trained toy-faces VAE (run or model folder)")
    p.add_argument("--gan", help="trained toy-faces text GAN (run or model folder)")
    p.add_argument("--n", type=int, help="number of edits (default 600)")
    p.add_argument("--gan-steps", dest="gan_steps", type=int, help="GAN inversion steps (default 300)")
    p.add_argument("--lpips-weight", dest="lpips_weight", type=float, default=1.0, help="GAN inversion")
    p.add_argument("--gan-offset-weights", dest="gan_offset_weights", default="",
                   help="comma list: also run GAN inversion that fits a pooled-embedding offset with this L2 weight "
                        "(one method 'gan+offset(w)' per value; wordcanvas.edit module doc)")
    p.add_argument("--gan-style-weights", dest="gan_style_weights", default="",
                   help="comma list: also run GAN inversion that fits, besides the offset (the first "
                        "--gan-offset-weights value), per-layer style offsets with this L2 weight "
                        "(method 'gan+offset(o)+style(w)'; wordcanvas.edit.styled)")
    p.add_argument("--strengths", default="1",
                   help="comma list of edit strengths (Editor.edit): each value adds a row per GAN method (and local blend)")
    p.add_argument("--vae-strengths", dest="vae_strengths", default="1",
                   help="comma list of edit strengths for the VAE (its library default is 1)")
    p.add_argument("--local-blends", dest="local_blends", default="none",
                   help="comma list of local-blend thresholds (Editor.edit's local_blend; 'none' = off): each adds "
                        "a row per method and strength, from the same inversion")
    p.add_argument("--auto-shares", dest="auto_shares", default="",
                   help="comma list: also a row 'auto (share q)' per GAN method and value, the editor's "
                        "strength='auto' (its discriminator picks strength and local blend per image) with that bar")
    p.add_argument("--residuals", default="0",
                   help="comma list of detail-transfer shares (Editor.with_residual; 0 = off): every row for each")
    p.add_argument("--start", type=int, default=0,
                   help="edit the held-out renders from this index on (e.g. 504: faces no earlier run tuned on)")
    p.add_argument("--tuned-on", dest="tuned_on", type=int, default=0,
                   help="the first N edits chose settings: also score each row on the edits after them")
    p.add_argument("--no-offset-only", dest="offset_only", action="store_false",
                   help="with --gan-style-weights: skip the offset-only inversion")
    p.add_argument("--no-plain-gan", dest="plain_gan", action="store_false",
                   help="with --gan-offset-weights: skip the z-only inversion")
    p.add_argument("--mention", choices=("edited", "all"), default="edited",
                   help="captions state the edited attribute with gender and age (like training captions, 2-5 "
                        "facts; the latent keeps the rest) or every attribute present")
    p.add_argument("--batch", type=int, help="images per editing call (default 50)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="result folder (default docs/edit_toy-faces; smoke: runs/edit_smoke/report)")
    p.add_argument("--smoke", action="store_true", help="train two tiny models briefly, run a dozen edits")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    args = p.parse_args(argv)
    defaults = {"n": 600, "gan_steps": 300, "batch": 50}
    if args.smoke:
        defaults.update(SMOKE)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.out = Path(args.out or (ROOT / "runs" / "edit_smoke" / "report" if args.smoke else ROOT / "docs" / "edit_toy-faces"))
    if not args.smoke and not (args.vae or args.gan):
        p.error("give --vae and/or --gan (or --smoke)")
    if args.gan_style_weights.strip() and not args.gan_offset_weights.strip():
        p.error("--gan-style-weights needs --gan-offset-weights (the styles are fitted with the first offset weight)")
    return args


def smoke_models(root: Path, threads: int) -> tuple[Path, Path]:
    """A tiny VAE and GAN on 32 px toy faces with the trainable encoder (seconds of training: only
    the path is checked, the numbers mean nothing)."""
    from wordcanvas.train.config import TrainConfig
    from wordcanvas.train.loop import train

    common = dict(data="toy-faces", encoder="trainable", resolution=32, steps=20, batch=8, threads=threads,
                  sample_every=0, ckpt_every=0, progress=False, data_options={"size": 256}, sample_prompts=2,
                  sample_per_prompt=2)
    vae = root / "vae"
    gan = root / "gan"
    if not (vae / "final").exists():
        train(TrainConfig(family="vae", out=str(vae), model={"model": {"nf": 8, "max_channels": 32, "z_dim": 16}},
                          **common))
    if not (gan / "final").exists():
        train(TrainConfig(family="gan", out=str(gan), model={"generator": {"ngf": 8, "max_channels": 32,
                                                                             "attn_resolutions": []},
                                                               "discriminator": {"ndf": 8, "max_channels": 32}},
                          **common))
    return vae, gan


def edit_captions(src: dict, new: dict, attr: str, mention: str, seed: int) -> tuple[str, str]:
    """Source and target captions phrased alike (same random stream), naming the same attributes."""
    import numpy as np

    from wordcanvas.data.grammar import caption, mentionable
    from wordcanvas.edit import face_caption

    if mention == "all":
        return tuple(face_caption(a, np.random.default_rng(seed), also=(attr,)) for a in (src, new))
    must = [k for k in dict.fromkeys([attr, "gender", "age"]) if k in mentionable(src) and k in mentionable(new)]
    return tuple(caption(a, np.random.default_rng(seed), "train", must_mention=must, low=len(must), high=len(must))[0]
                 for a in (src, new))


def plan_edits(n: int, seed: int, resolution: int, mention: str = "edited", start: int = 0):
    """n (image index, source attrs, edited attr, target attrs, source caption, target caption),
    on the held-out renders start, ..., start + n - 1."""
    import numpy as np

    from wordcanvas.data.grammar import ATTRIBUTES
    from wordcanvas.data.toy_faces import ToyFaces, change_attribute, heldout_combination, is_valid

    faces = ToyFaces("test", resolution, size=max(start + n, 1), seed=0)
    names = list(ATTRIBUTES)
    rng = np.random.default_rng(seed)
    edits, k = [], 0
    for i in range(start, start + n):
        src = faces.labels(i)
        for tries in range(len(names)):
            attr = names[(k + tries) % len(names)]
            options = [v for v in rng.permutation(len(ATTRIBUTES[attr])).tolist() if v != src[attr]]
            new = None
            for v in options:
                cand = change_attribute(src, attr, v, rng)
                if is_valid(cand) and heldout_combination(cand) < 0:  # no combination training never showed
                    new = cand
                    break
            if new is not None:
                break
        k = names.index(attr) + 1
        src_text, tgt_text = edit_captions(src, new, attr, mention, int(rng.integers(2 ** 31)))
        edits.append({"index": i, "attr": attr, "source": src, "target": new, "source_caption": src_text,
                      "target_caption": tgt_text})
    return faces, edits


def score(edits: list[dict], pred_src: dict, pred_out: dict) -> dict:
    """Success, preservation (see module doc) overall and per edited attribute."""
    from collections import defaultdict

    per, kept = defaultdict(lambda: [0, 0]), defaultdict(lambda: [0, 0])
    ok_total, keep, keep_n = 0, 0, 0
    for j, e in enumerate(edits):
        attr, want = e["attr"], e["target"][e["attr"]]
        ok = int(pred_out[attr][j]) == want
        ok_total += ok
        per[attr][0] += ok
        per[attr][1] += 1
        for name in pred_src:
            if name == attr or (name == "hair_color" and (e["source"]["hair_style"] == 0 or e["target"]["hair_style"] == 0)):
                continue
            if attr == "hair_style" and name in ("hair_color", "hat"):
                continue  # changed with it when going bald or growing hair
            same = int(pred_out[name][j]) == int(pred_src[name][j])
            keep += same
            keep_n += 1
            kept[name][0] += same
            kept[name][1] += 1
    return {"success": ok_total / len(edits), "preservation": keep / max(keep_n, 1), "n": len(edits),
            "kept": keep, "counted": keep_n,
            "per_attribute_success": {k: v[0] / v[1] for k, v in sorted(per.items())},
            "per_attribute_preservation": {k: v[0] / v[1] for k, v in sorted(kept.items())}}


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    from tqdm import tqdm

    torch.set_num_threads(args.threads)
    from wordcanvas.edit import Editor, blend_edit
    from wordcanvas.metrics.lpips import LPIPS
    from wordcanvas.metrics.probes import load_probe
    from wordcanvas.utils.io import make_grid, tensor_to_pil

    if args.smoke:
        args.vae, args.gan = (str(p) for p in smoke_models(ROOT / "runs" / "edit_smoke", args.threads))
    probe, lpips = load_probe("toy-faces"), LPIPS("alex")
    methods = {name: (Editor.from_pretrained(path, dataset="toy-faces"), {} if name == "vae" else {"offset_weight": None, "style_weight": None})
               for name, path in (("vae", args.vae), ("gan", args.gan)) if path}  # "gan": the latent alone
    offset_weights = [float(w) for w in args.gan_offset_weights.split(",") if w.strip()]
    if args.gan and offset_weights:
        gan_editor = methods["gan"][0]
        for w in offset_weights:
            methods[f"gan+offset({w:g})"] = (gan_editor, {"offset_weight": w, "style_weight": None})
        for w in (float(w) for w in args.gan_style_weights.split(",") if w.strip()):
            methods[f"gan+offset({offset_weights[0]:g})+style({w:g})"] = (
                gan_editor, {"offset_weight": offset_weights[0], "style_weight": w})
        if not args.plain_gan:
            del methods["gan"]
        if not args.offset_only and args.gan_style_weights.strip():
            for w in offset_weights:
                del methods[f"gan+offset({w:g})"]
    strengths = [float(a) for a in args.strengths.split(",") if a.strip()]
    blends = {"" if b == "none" else f"local blend {float(b):g}": None if b == "none" else float(b)
              for b in (t.strip() for t in args.local_blends.split(",")) if b}
    vae_strengths = [float(a) for a in args.vae_strengths.split(",") if a.strip()]
    shares = [float(q) for q in args.auto_shares.split(",") if q.strip()]
    residuals = [float(r) for r in args.residuals.split(",") if r.strip()]
    results = {"command": command_line(), "machine": machine_info(threads=args.threads),
               "settings": {"n": args.n, "gan_steps": args.gan_steps, "lpips_weight": args.lpips_weight,
                            "mention": args.mention, "start": args.start, "gan_offset_weights": offset_weights,
                            "gan_style_weights": args.gan_style_weights,
                            "strengths": strengths, "vae_strengths": vae_strengths, "local_blends": list(blends.values()),
                            "auto_shares": shares, "residuals": residuals, "tuned_on": args.tuned_on,
                            "seed": args.seed, "models": {"vae": args.vae, "gan": args.gan}}, "methods": {}}
    examples = []
    for base, (editor, extra) in methods.items():
        # one inversion per image serves every strength and blend: only the regeneration differs
        variants = {}
        for r in residuals:
            tail = [f"residual {r:g}"] if r else []
            for a in (strengths if base != "vae" else vae_strengths):
                for label, blend in blends.items():
                    variants[", ".join([base] + ([f"strength {a:g}"] if a != 1 else []) + ([label] if label else [])
                                       + tail)] = (a, blend, r)
            if base != "vae":
                variants.update({", ".join([f"{base}, auto (share {q:g})"] + tail): ("auto", q, r) for q in shares})
        chosen = {name: [] for name, (a, _, _) in variants.items() if a == "auto"}
        faces, edits = plan_edits(args.n, args.seed, editor.resolution, args.mention, args.start)
        inversion_s, regen_s = 0.0, dict.fromkeys(variants, 0.0)
        outs, sources = {name: [] for name in variants}, []
        for lo in tqdm(range(0, len(edits), args.batch), desc=f"edit {base}", disable=not args.progress):
            chunk = edits[lo:lo + args.batch]
            x = torch.stack([faces.image(e["index"]) for e in chunk])
            source, target = [e["source_caption"] for e in chunk], [e["target_caption"] for e in chunk]
            weights = {} if base == "vae" else {"lpips_weight": args.lpips_weight}
            t0 = time.time()
            latents = editor.latents(x, source, steps=args.gan_steps, seed=args.seed, **weights, **extra)
            inversion_s += time.time() - t0
            edited, changes, ladders = {}, {}, {}
            for name, (a, blend, r) in variants.items():
                t0 = time.time()
                if a == "auto":  # Editor.edit_latents(strength="auto"), its candidates shared by the shares
                    if r not in ladders:
                        ladders[r] = editor.edit_ladder(latents, target, source, x, seed=args.seed, residual=r)
                        for other in chosen:  # every share row would pay for the candidates alone
                            if variants[other][2] == r:
                                regen_s[other] += time.time() - t0
                        t0 = time.time()
                    y, settings = editor.pick(ladders[r], blend)
                    chosen[name] += settings
                    outs[name].append(y.cpu())
                    regen_s[name] += time.time() - t0
                    continue
                if (a, r) not in edited:  # Editor.edit_latents with local_blend, its two halves shared by the rows
                    edited[a, r] = editor.edit_latents(latents, target, source, a, images=x, residual=r)
                if blend is not None and a not in changes:
                    changes[a] = editor.change_map(source, target, a, seed=args.seed)
                y = edited[a, r] if blend is None else blend_edit(x.to(edited[a, r].device), edited[a, r], changes[a],
                                                                  blend)
                outs[name].append(y.cpu())
                regen_s[name] += time.time() - t0
            sources.append(x)
        x = torch.cat(sources)
        pred_src = probe.predict(x)
        truth = {k: torch.tensor([e["source"][k] for e in edits]) for k in pred_src}
        probe_on_sources = float(sum((pred_src[k] == truth[k]).float().mean() for k in truth) / len(truth))
        for name in variants:
            y = torch.cat(outs[name])
            pred_out = probe.predict(y)
            r = score(edits, pred_src, pred_out)
            if args.tuned_on:
                later = lambda pred: {k: v[args.tuned_on:] for k, v in pred.items()}  # noqa: E731
                r["after_tuning"] = {k: v for k, v in score(edits[args.tuned_on:], later(pred_src),
                                                            later(pred_out)).items() if not isinstance(v, dict)}
            if name in chosen:
                r["chosen"] = {f"strength {a:g}, blend {b}": c for (a, b), c in sorted(
                    Counter(chosen[name]).items(), key=lambda kv: -kv[1])}
            with torch.no_grad():
                r["lpips_to_source"] = float(torch.cat([lpips(a, b) for a, b in zip(y.split(64), x.split(64))]).mean())
            r["probe_on_sources"] = probe_on_sources
            r["seconds"] = round(inversion_s + regen_s[name], 1)  # what this method alone would take
            results["methods"][name] = r
            examples.append((name, x[:8], y[:8]))
        write_json(args.out / "results.json", results)

    rows = [{"method": n, **{k: v for k, v in r.items() if not isinstance(v, dict)}} for n, r in results["methods"].items()]
    cols = [("method", "method", ""), ("edits", "n", ">d"), ("success", "success", ">.3f"),
            ("preservation", "preservation", ">.3f"), ("LPIPS to source", "lpips_to_source", ">.3f"),
            ("seconds", "seconds", ">.1f")]
    if args.tuned_on:
        for row, r in zip(rows, results["methods"].values()):
            row.update({"late_success": r["after_tuning"]["success"], "late_preservation": r["after_tuning"]["preservation"]})
        cols[4:4] = [(f"success, edits {args.tuned_on}+", "late_success", ">.3f"),
                     (f"preservation, edits {args.tuned_on}+", "late_preservation", ">.3f")]
    attrs = sorted({a for r in results["methods"].values() for a in r["per_attribute_success"]})
    per_rows = [{"attribute": a, **{n: r["per_attribute_success"].get(a) for n, r in results["methods"].items()}}
                for a in attrs]
    per_cols = [("attribute", "attribute", "")] + [(f"{n} success", n, ">.3f") for n in results["methods"]]
    kept_rows = [{"attribute": a, **{n: r["per_attribute_preservation"].get(a) for n, r in results["methods"].items()}}
                 for a in sorted({a for r in results["methods"].values() for a in r["per_attribute_preservation"]})]
    kept_cols = [("attribute (not edited)", "attribute", "")] + [(f"{n} kept", n, ">.3f") for n in results["methods"]]
    text = ["# Text-guided editing on toy faces (held-out renders)", "", f"Command: `{results['command']}`.", "",
            markdown_table(rows, cols), "", markdown_table(per_rows, per_cols), "",
            markdown_table(kept_rows, kept_cols), "",
            "Success: the probe reads the edited attribute's new value. Preservation: other attributes' probe "
            "readings unchanged from the source image. Targets: success >= 0.85, preservation >= 0.90 "
            "(better method). gan+offset(w): the inversion also fits an offset to the source caption's pooled "
            "embedding (L2 weight w) and adds it to the target caption's. +style(w): the inversion also fits "
            "offsets to every layer's conditional scale and shift (L2 weight w), kept in the edit. local blend t: "
            "the source's pixels kept where the caption change does not act (wordcanvas.edit.blend_edit, threshold t). "
            "auto (share q): per image, the candidate edit (strengths x local blends, wordcanvas.edit.AUTO_STRENGTHS, "
            "AUTO_BLENDS) with the least LPIPS to the source among those whose match to the target, judged by the "
            "model's own discriminator, reaches q of that image's range (wordcanvas.edit.pick_least_change). "
            "residual r: r x (source - its reconstruction) added to every candidate (wordcanvas.edit.Editor."
            "with_residual).", ""]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "README.md").write_text("\n".join(text))
    if examples:
        grid = torch.cat([examples[0][1]] + [e[2] for e in examples])
        tensor_to_pil(make_grid(grid, nrow=len(examples[0][1]))).save(args.out / "examples.png")
    print(f"wrote {args.out / 'results.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
