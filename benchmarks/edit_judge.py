"""Which judgement should pick the automatic edit? A study on the candidates of `Editor.edit_ladder`.

    python benchmarks/edit_judge.py collect --gan src/wordcanvas/weights/t2i-toy-faces --n 504 \\
        --out runs/edit_judge/ladder.pt
    python benchmarks/edit_judge.py compare runs/edit_judge/ladder.pt --tuned-on 100 --out docs/edit_toy-faces/judge
    python benchmarks/edit_judge.py tune --minutes 12 --threads 1 --out runs/edit_judge/tuned
    python benchmarks/edit_judge.py rejudge runs/edit_judge/ladder.pt --judge runs/edit_judge/tuned \
        --out runs/edit_judge/ladder_tuned.pt    # needs a table collected with --keep-images

`collect` runs the edit benchmark's edits (benchmarks/edit.py: same plan, inversion and captions)
and, for every candidate (strength x local blend) of every edit, stores what the model itself can
see: the discriminator's contrastive cosines with the target and source captions, its conditional
and unconditional logits, the cosine between the candidate's and the source image's contrastive
image embeddings, LPIPS and pixel MSE to the source; and, to score them, the probes' verdicts
(success of the edit, number of other attributes kept). The probes never enter a rule.

`compare` evaluates selection rules on that table: each rule picks one candidate per edit from the
model's own signals, with its free parameter chosen on the first --tuned-on edits (the bar that
reaches success >= 0.85 there with the best preservation) and scored on all edits and on the rest.
Also the best possible pick (the least-LPIPS candidate the probes call a success), the ceiling of
any judge on this ladder.

`tune` fine-tunes a copy of the discriminator as a judge on real training renders, with hard
negatives: for each image, a caption and the same caption with one attribute changed (as an edit's
source and target differ), phrased alike, besides the batch's other captions; `rejudge` replaces a stored table's judge signals by
another judge's (on the stored uint8 candidates), so `compare` can score it.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from _common import ROOT, command_line, machine_info, markdown_table, write_json

STRENGTHS = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)
BLENDS = (1.0, 0.75, 0.5, 0.35, 0.2, None)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect")
    c.add_argument("--gan", required=True, help="toy-faces text GAN saved with its discriminator")
    c.add_argument("--n", type=int, default=504)
    c.add_argument("--gan-steps", dest="gan_steps", type=int, default=300)
    c.add_argument("--lpips-weight", dest="lpips_weight", type=float, default=0.3)
    c.add_argument("--offset-weight", dest="offset_weight", type=float, default=0.1)
    c.add_argument("--style-weight", dest="style_weight", type=float, default=0.001)
    c.add_argument("--batch", type=int, default=56)
    c.add_argument("--threads", type=int, default=os.cpu_count())
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--out", type=Path, default=ROOT / "runs" / "edit_judge" / "ladder.pt")
    c.add_argument("--keep-images", dest="keep_images", action="store_true",
                   help="also store every candidate and source image (uint8), so other judges can be scored offline")
    t = sub.add_parser("tune")
    t.add_argument("--gan", default=str(ROOT / "src" / "wordcanvas" / "weights" / "t2i-toy-faces"))
    t.add_argument("--images", type=int, default=8000, help="training renders (each with 3 caption pairs)")
    t.add_argument("--minutes", type=float, default=12)
    t.add_argument("--lr", type=float, default=1e-4)
    t.add_argument("--batch", type=int, default=64)
    t.add_argument("--threads", type=int, default=os.cpu_count())
    t.add_argument("--out", type=Path, default=ROOT / "runs" / "edit_judge" / "tuned")
    r = sub.add_parser("rejudge")
    r.add_argument("table", type=Path)
    r.add_argument("--gan", default=str(ROOT / "src" / "wordcanvas" / "weights" / "t2i-toy-faces"))
    r.add_argument("--judge", required=True, help="discriminator folder to judge with")
    r.add_argument("--threads", type=int, default=os.cpu_count())
    r.add_argument("--out", type=Path, required=True)
    m = sub.add_parser("compare")
    m.add_argument("table", type=Path)
    m.add_argument("--tuned-on", dest="tuned_on", type=int, default=100)
    m.add_argument("--success", type=float, default=0.85, help="success the tuning aims for")
    m.add_argument("--out", type=Path, default=ROOT / "docs" / "edit_toy-faces" / "judge")
    return p.parse_args(argv)


@torch.no_grad()
def judge_signals(editor, images: torch.Tensor, source_images: torch.Tensor, target: list[str], source: list[str]
                  ) -> dict[str, torch.Tensor]:
    """Everything the discriminator says of a batch of candidates, per image."""
    d, n = editor.judge, len(images)
    t, s = editor.text_embeddings(target, n).pooled, editor.text_embeddings(source, n).pooled
    features = d.features(images)
    uncond, logit_t = d.heads(features, t)
    logit_s = d.heads(features, s)[1]
    image_cos = (d.image_embedding(features) * d.image_embedding(d.features(source_images))).sum(1)
    return {"cos_target": d.similarity(features, t).diagonal(), "cos_source": d.similarity(features, s).diagonal(),
            "logit_target": logit_t, "logit_source": logit_s, "uncond": uncond, "image_cos": image_cos,
            "lpips": editor.lpips_distance(images, source_images),
            "mse": (images - source_images).pow(2).mean(dim=(1, 2, 3))}


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def verdicts(edits: list[dict], pred_src: dict, pred_out: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per edit: success, other attributes kept, other attributes counted (benchmarks/edit.py's rules)."""
    from edit import score

    ok, kept, counted = [], [], []
    for j, e in enumerate(edits):
        r = score([e], {k: v[j:j + 1] for k, v in pred_src.items()}, {k: v[j:j + 1] for k, v in pred_out.items()})
        ok.append(r["success"])
        kept.append(r["kept"])
        counted.append(r["counted"])
    return torch.tensor(ok, dtype=torch.bool), torch.tensor(kept), torch.tensor(counted)


def collect(args) -> int:
    from tqdm import tqdm

    from edit import plan_edits
    from wordcanvas.edit import Editor, blend_edit
    from wordcanvas.metrics.probes import load_probe

    torch.set_num_threads(args.threads)
    editor = Editor.from_pretrained(args.gan, dataset="toy-faces")
    probe = load_probe("toy-faces")
    faces, edits = plan_edits(args.n, args.seed, editor.resolution, "edited")
    settings = [(a, b) for a in STRENGTHS for b in BLENDS]
    rows: dict[str, list] = {}
    sources, outs = [], [[] for _ in settings]
    for lo in tqdm(range(0, len(edits), args.batch), desc="ladders"):
        chunk = edits[lo:lo + args.batch]
        x = torch.stack([faces.image(e["index"]) for e in chunk])
        source, target = [e["source_caption"] for e in chunk], [e["target_caption"] for e in chunk]
        latents = editor.latents(x, source, steps=args.gan_steps, seed=args.seed, lpips_weight=args.lpips_weight,
                                 offset_weight=args.offset_weight, style_weight=args.style_weight)
        per = {}
        for a in STRENGTHS:
            edited = editor.edit_latents(latents, target, source, a)
            where = editor.change_map(source, target, a, seed=args.seed)
            for b in BLENDS:
                y = edited if b is None else blend_edit(x, edited, where, b)
                outs[settings.index((a, b))].append(y)
                for k, v in judge_signals(editor, y, x, target, source).items():
                    per.setdefault(k, []).append(v)
        for k, v in per.items():
            rows.setdefault(k, []).append(torch.stack(v))  # (C, chunk)
        sources.append(x)
    x = torch.cat(sources)
    pred_src = probe.predict(x)
    success, kept = [], []
    for c in range(len(settings)):
        ok, keep, counted = verdicts(edits, pred_src, probe.predict(torch.cat(outs[c])))
        success.append(ok)
        kept.append(keep)
    table = {k: torch.cat(v, dim=1) for k, v in rows.items()}
    if args.keep_images:
        table["images"] = torch.stack([to_uint8(torch.cat(o)) for o in outs])  # (C, N, ...)
        table["sources"] = to_uint8(x)
        table["source_caption"] = [e["source_caption"] for e in edits]
        table["target_caption"] = [e["target_caption"] for e in edits]
    table.update({"success": torch.stack(success), "kept": torch.stack(kept), "counted": counted,
                  "settings": settings, "attr": [e["attr"] for e in edits], "command": command_line(),
                  "machine": machine_info(threads=args.threads)})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(table, args.out)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def swap_pair(attrs: dict[str, int], rng) -> tuple[str, str]:
    """A caption of attrs and the same caption with one attribute changed (a face the training split
    can render), phrased alike, naming the changed attribute and 0-3 others: an edit's source and
    target. (ToyFaces.contrast_captions gives such near misses alone, for GAN training.)"""
    import numpy as np

    from wordcanvas.data.grammar import ATTRIBUTES, caption
    from wordcanvas.data.toy_faces import change_attribute, heldout_combination, is_valid, mention_with

    names = list(ATTRIBUTES)
    while True:
        attr = names[rng.integers(len(names))]
        v = int(rng.integers(len(ATTRIBUTES[attr])))
        if v == attrs[attr]:
            continue
        new = change_attribute(attrs, attr, v, rng)
        if not is_valid(new) or heldout_combination(new) >= 0:
            continue
        must = mention_with(attrs, new, attr, rng)
        seed = int(rng.integers(2 ** 31))
        return tuple(caption(a, np.random.default_rng(seed), "train", must_mention=must, low=len(must),
                             high=len(must))[0] for a in (attrs, new))


def tune(args) -> int:
    """InfoNCE of each image against its caption, its swapped caption and the batch's others."""
    import copy
    import time

    import numpy as np
    import torch.nn.functional as F

    from wordcanvas.data.toy_faces import ToyFaces
    from wordcanvas.generate import TextToImage
    from wordcanvas.models.gan import Discriminator

    torch.set_num_threads(args.threads)
    t2i = TextToImage.from_pretrained(args.gan)
    judge = copy.deepcopy(Discriminator.from_pretrained(Path(args.gan) / "discriminator")).train()

    def renders(split, n, seed, start=0):  # (images, per image 3 x (a caption, the caption with one change))
        faces, rng = ToyFaces(split, judge.config.resolution, size=start + n, seed=0), np.random.default_rng(seed)
        return (torch.stack([faces.image(i) for i in range(start, start + n)]),
                [[swap_pair(faces.labels(i), rng) for _ in range(3)] for i in range(start, start + n)])

    x, pairs = renders("train", args.images, 1)
    val_x, val_pairs = renders("test", 600, 2, start=1008)  # renders after the edit benchmark's faces
    texts = sorted({c for ps in pairs + val_pairs for p in ps for c in p})
    with torch.no_grad():
        pooled = dict(zip(texts, torch.cat([t2i.encoder.encode(texts[i:i + 512]).pooled
                                            for i in range(0, len(texts), 512)])))
    emb = lambda cs: torch.stack([pooled[c] for c in cs])  # noqa: E731

    @torch.no_grad()
    def accuracy():  # held-out renders: own caption over the swapped one
        judge.eval()
        f = judge.features(val_x)
        gap = (judge.similarity(f, emb([p[0][0] for p in val_pairs])).diagonal()
               - judge.similarity(f, emb([p[0][1] for p in val_pairs])).diagonal())
        judge.train()
        return float((gap > 0).float().mean())

    log = {"accuracy_before": accuracy()}
    opt = torch.optim.Adam(judge.parameters(), lr=args.lr, betas=(0.5, 0.99))
    g, b, step, start = torch.Generator().manual_seed(0), args.batch, 0, time.time()
    while time.time() - start < args.minutes * 60:
        idx, k = torch.randint(len(x), (b,), generator=g).tolist(), torch.randint(3, (b,), generator=g).tolist()
        pos, neg = [pairs[i][j][0] for i, j in zip(idx, k)], [pairs[i][j][1] for i, j in zip(idx, k)]
        shift = torch.randint(-2, 3, (2,), generator=g).tolist()  # up to 2 px of translation
        f = judge.features(torch.roll(x[idx], shifts=shift, dims=(2, 3)))
        logits = judge.similarity(f, torch.cat([emb(pos), emb(neg)])) / 0.1  # (b, 2b)
        same = torch.tensor([[a == c for c in pos + neg] for a in pos])  # an identical caption is no negative
        same[range(b), range(b)] = False
        loss = F.cross_entropy(logits.masked_fill(same, float("-inf")), torch.arange(b))
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
    log.update({"steps": step, "accuracy_after": accuracy(), "command": command_line(),
                "machine": machine_info(threads=args.threads)})
    judge.eval().save_pretrained(args.out)
    write_json(Path(args.out) / "tuning.json", log)
    print(log, file=sys.stderr)
    return 0


@torch.no_grad()
def rejudge(args) -> int:
    from wordcanvas.generate import TextToImage
    from wordcanvas.models.gan import Discriminator

    torch.set_num_threads(args.threads)
    t = torch.load(args.table, weights_only=False)
    if "images" not in t:
        raise SystemExit(f"{args.table} holds no images: collect it with --keep-images")
    t2i, judge = TextToImage.from_pretrained(args.gan), Discriminator.from_pretrained(args.judge).eval()
    floats = lambda u8: u8.float() / 127.5 - 1  # noqa: E731
    target, source = (t2i.encoder.encode(t[k]).pooled for k in ("target_caption", "source_caption"))
    source_embedding = judge.image_embedding(judge.features(floats(t["sources"])))
    signals = {"cos_target": [], "cos_source": [], "image_cos": []}
    for candidates in t.pop("images"):
        f = judge.features(floats(candidates))
        signals["cos_target"].append(judge.similarity(f, target).diagonal())
        signals["cos_source"].append(judge.similarity(f, source).diagonal())
        signals["image_cos"].append((judge.image_embedding(f) * source_embedding).sum(1))
    t.update({k: torch.stack(v) for k, v in signals.items()})
    t.update({"command": f"{t['command']}; {command_line()}"})
    torch.save(t, args.out)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def standardize(v: torch.Tensor) -> torch.Tensor:
    """Per image, across its candidates: rank scaled to [0, 1], so judgements of different scales mix."""
    return v.argsort(0).argsort(0).float() / max(len(v) - 1, 1)


def outcome(table: dict, chosen: torch.Tensor, lo: int = 0, hi: int | None = None) -> tuple[float, float, float]:
    idx = torch.arange(len(chosen))[lo:hi]
    c = chosen[lo:hi]
    success = table["success"][c, idx].float().mean()
    kept = table["kept"][c, idx].sum() / table["counted"][lo:hi].sum()
    return float(success), float(kept), float(table["lpips"][c, idx].mean())


def rules(t: dict) -> dict:
    """name -> (match (C, N), change (C, N)): pick_least_change's inputs."""
    con = t["cos_target"] - t["cos_source"]
    logit = t["logit_target"] - t["logit_source"]
    both = (standardize(con) + standardize(logit)) / 2
    lp, seen = t["lpips"], 1 - t["image_cos"]
    return {"contrastive gap; LPIPS (previous rule)": (con, lp),
            "logit gap; LPIPS": (logit, lp),
            "rank mean of both gaps; LPIPS": (both, lp),
            "contrastive gap; LPIPS + judge distance (the editor's rule)": (con, lp + seen),
            "contrastive gap; LPIPS + 2 x judge distance": (con, lp + 2 * seen),
            "contrastive gap; judge distance alone": (con, seen),
            "rank mean of both gaps; LPIPS + judge distance": (both, lp + seen)}


def compare(args) -> int:
    from wordcanvas.edit import AUTO_BLENDS, AUTO_SHARE, AUTO_STRENGTHS, pick_least_change

    t = torch.load(args.table, weights_only=False)
    n, k = t["success"].shape[1], args.tuned_on
    shares = [i / 200 for i in range(201)]
    editor_ladder = [i for i, (a, b) in enumerate(t["settings"]) if a in AUTO_STRENGTHS and b in AUTO_BLENDS]
    res, rows = {}, []
    for ladder, keep in (("editor's (30)", editor_ladder), (f"wider ({len(t['settings'])})", None)):
        sub = dict(t)
        if keep is not None:
            sub.update({key: v[keep] for key, v in t.items() if isinstance(v, torch.Tensor) and v.ndim == 2})
        # the ceiling: the least-LPIPS candidate the probes call a success (else the least-LPIPS one)
        best = torch.where(sub["success"], sub["lpips"], sub["lpips"] + 10).argmin(0)
        s, p, l = outcome(sub, best)
        rows.append({"ladder": ladder, "rule": "perfect judge (the probes)", "success": s, "preservation": p,
                     "lpips": l, "late_success": outcome(sub, best, k)[0], "late_preservation": outcome(sub, best, k)[1]})
        for name, (match, change) in rules(sub).items():
            curve = {q: outcome(sub, pick_least_change(match, change, q)) for q in shares}
            early = {q: outcome(sub, pick_least_change(match, change, q), 0, k) for q in shares}
            # tuned: the best preservation on the first k edits among shares reaching the success aimed at
            q = max(shares, key=lambda q: (early[q][0] >= args.success, early[q][1] if early[q][0] >= args.success
                                           else early[q][0]))
            row = {"ladder": ladder, "rule": name}
            for label, share in (("tuned", q), ("default", AUTO_SHARE)):
                chosen = pick_least_change(match, change, share)
                s, p, l = outcome(sub, chosen)
                late = outcome(sub, chosen, k)
                row.update({f"{label}_share": share, f"{label}_success": s, f"{label}_preservation": p,
                            f"{label}_late_success": late[0], f"{label}_late_preservation": late[1]})
            row.update({"success": row["tuned_success"], "preservation": row["tuned_preservation"],
                        "late_success": row["tuned_late_success"], "late_preservation": row["tuned_late_preservation"],
                        "share": q, "lpips": outcome(sub, pick_least_change(match, change, q))[2]})
            # the best preservation any share gives at success >= the aim, on all edits (a frontier, not tuned)
            reach = [v for v in curve.values() if v[0] >= args.success]
            row["frontier_preservation"] = max(v[1] for v in reach) if reach else None
            rows.append(row)
            res[f"{ladder}: {name}"] = {**row, "curve": {f"{q:g}": [round(x, 4) for x in v]  # every 0.025
                                                         for i, (q, v) in enumerate(curve.items()) if i % 5 == 0}}
    # per edited attribute, the editor's rule at the default share: where the judge fails
    match, change = rules(t)["contrastive gap; LPIPS + judge distance (the editor's rule)"]
    match, change = match[editor_ladder], change[editor_ladder]
    sub = {key: v[editor_ladder] for key, v in t.items() if isinstance(v, torch.Tensor) and v.ndim == 2}
    chosen, attr_rows = pick_least_change(match, change, AUTO_SHARE), []
    for name in dict.fromkeys(t["attr"]):
        cols_j = [j for j, a in enumerate(t["attr"]) if a == name]
        ok = sub["success"][chosen[cols_j], cols_j]
        kept = sub["kept"][chosen[cols_j], cols_j].sum() / t["counted"][cols_j].sum()
        aucs = [float((match[s, j][:, None] > match[~s, j][None, :]).float().mean())
                for j in cols_j for s in [sub["success"][:, j]] if s.any() and not s.all()]
        attr_rows.append({"attr": name, "n": len(cols_j), "success": float(ok.float().mean()), "preservation": float(kept),
                          "any": float(sub["success"][:, cols_j].any(0).float().mean()),
                          "auc": sum(aucs) / len(aucs) if aucs else None})
    res["per_attribute"] = attr_rows
    attr_table = markdown_table(attr_rows, [
        ("edited attribute", "attr", ""), ("edits", "n", ""), (f"success (share {AUTO_SHARE})", "success", ">.3f"),
        ("preservation", "preservation", ">.3f"), ("some candidate succeeds", "any", ">.3f"),
        ("judge AUC for success within an edit", "auc", ">.3f")])
    print(attr_table)
    cols = [("ladder", "ladder", ""), ("rule", "rule", ""), ("share tuned on the first edits", "share", ">.3f"),
            ("success", "success", ">.3f"), ("preservation", "preservation", ">.3f"),
            (f"success, edits {k}+", "late_success", ">.3f"), (f"preservation, edits {k}+", "late_preservation", ">.3f"),
            ("LPIPS", "lpips", ">.3f"), (f"best preservation at success >= {args.success:g}", "frontier_preservation", ">.3f")]
    table = markdown_table(rows, cols)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "results.json", {"command": command_line(), "collected_by": t["command"],
                                           "machine": t["machine"], "n": n, "tuned_on": k, "aim": args.success,
                                           "rules": res})
    (args.out / "README.md").write_text("\n".join([
        "# Which judgement should pick the automatic edit", "",
        f"Collected by `{t['command']}`; compared by `{command_line()}`.", "",
        f"{n} edits (benchmarks/edit.py's plan, seed 0), every candidate of every edit judged by the model's "
        "discriminator and scored by the probes; each rule keeps, per edit, the candidate with the least change "
        "among those whose match reaches a share of that edit's range (wordcanvas.edit.pick_least_change). The "
        f"share is tuned on the first {k} edits (best preservation at success >= {args.success:g}); the last "
        "column is the best any share gives on all edits. Judge distance: 1 - cosine of candidate and source in "
        "the discriminator's contrastive image space.", "", table, "",
        "Per edited attribute (the editor's 30 candidates and rule at the default share); the AUC is, within "
        "each edit, the chance that a candidate the probes call a success has a higher judged match than one "
        "they call a failure, averaged over the edits that have both.", "", attr_table, ""]))
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    return {"collect": collect, "tune": tune, "rejudge": rejudge, "compare": compare}[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
