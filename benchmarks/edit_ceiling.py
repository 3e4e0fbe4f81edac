"""How much of a toy face survives GAN inversion with no edit at all: the ceiling of edit preservation.

    python benchmarks/edit_ceiling.py --gan src/wordcanvas/weights/t2i-toy-faces --n 48 --out docs/edit_toy-faces

The first --n edits of benchmarks/edit.py (same held-out renders and source captions, seed 0) are
reconstructed, i.e. inverted under their source caption and regenerated under the same caption,
with each inversion setting below; the shipped toy-faces probe reads every attribute on the
source and on the reconstruction, and the share it reads alike is reported, overall and per
attribute. An edit cannot keep more of the face than this.
Writes <out>/ceiling.json and <out>/ceiling.md; rows of an earlier run there (same --n) that this
run does not redo are kept, each with the command that made it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from _common import command_line, machine_info, markdown_table, write_json

SETTINGS = {  # name -> Editor.reconstruct keywords
    "z only, 100 steps, LPIPS 1": {"steps": 100, "lpips_weight": 1.0, "offset_weight": None, "style_weight": None},
    "z + offset 0.1, 100 steps, LPIPS 1": {"steps": 100, "lpips_weight": 1.0, "offset_weight": 0.1, "style_weight": None},
    "z + offset 0.1, 300 steps, LPIPS 1": {"steps": 300, "lpips_weight": 1.0, "offset_weight": 0.1, "style_weight": None},
    "z + offset 0.1, 300 steps, LPIPS 0.3": {"steps": 300, "lpips_weight": 0.3, "offset_weight": 0.1, "style_weight": None},
    "z + offset 0.1 + styles 0.01, 300 steps, LPIPS 0.3": {"steps": 300, "lpips_weight": 0.3, "offset_weight": 0.1,
                                                           "style_weight": 0.01},
    "z + offset 0.1 + styles 0.1, 300 steps, LPIPS 0.3": {"steps": 300, "lpips_weight": 0.3, "offset_weight": 0.1,
                                                          "style_weight": 0.1},
    "z + offset 0.1 + styles 0.001, 300 steps, LPIPS 0.3 (default)": {"steps": 300, "lpips_weight": 0.3, "offset_weight": 0.1,
                                                            "style_weight": 0.001},
    "z + offset 0.1 + styles 0.01, 1000 steps, LPIPS 0.3": {"steps": 1000, "lpips_weight": 0.3, "offset_weight": 0.1,
                                                            "style_weight": 0.01},
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gan", required=True, help="a trained toy-faces text GAN (run or model folder)")
    p.add_argument("--n", type=int, default=48)
    p.add_argument("--only", default="", help="run only the settings whose name contains this text (default: all)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    wanted = [name for name in SETTINGS if args.only in name]
    if not wanted:
        p.error(f"--only: no setting contains {args.only!r}; the settings: {'; '.join(SETTINGS)}")

    import torch

    torch.set_num_threads(args.threads)
    from edit import plan_edits
    from wordcanvas.edit import Editor
    from wordcanvas.metrics.probes import load_probe

    editor = Editor.from_pretrained(args.gan, dataset="toy-faces")
    probe = load_probe("toy-faces")
    faces, edits = plan_edits(args.n, 0, editor.resolution, "edited")
    x = torch.stack([faces.image(e["index"]) for e in edits])
    captions = [e["source_caption"] for e in edits]
    read_source = probe.predict(x)
    results = {"command": command_line(), "machine": machine_info(threads=args.threads), "n": args.n, "rows": {}}
    for name, kw in ((w, SETTINGS[w]) for w in wanted):
        start = time.time()
        read = probe.predict(editor.reconstruct(x, captions, seed=0, **kw))
        per = {k: float((read[k] == read_source[k]).float().mean()) for k in read_source}
        results["rows"][name] = {"kept": sum(per.values()) / len(per), "per_attribute": per,
                                 "seconds": round(time.time() - start, 1), "settings": kw,
                                 "command": results["command"]}
        print(name, round(results["rows"][name]["kept"], 3), file=sys.stderr, flush=True)
    out = Path(args.out)
    earlier = out / "ceiling.json"
    if earlier.exists():  # rows not run now stay from the earlier run, each with its own command
        kept = json.loads(earlier.read_text())
        if kept.get("n") == args.n:
            for name, row in kept["rows"].items():
                row.setdefault("command", kept["command"])
            results["rows"] = {**kept["rows"], **results["rows"]}
    results["rows"] = {name: results["rows"][name] for name in SETTINGS if name in results["rows"]}  # table order
    write_json(earlier, results)
    write_report(out, results)
    print(f"wrote {out / 'ceiling.md'}", file=sys.stderr)
    return 0


def write_report(out: Path, results: dict) -> None:
    attrs = list(next(iter(results["rows"].values()))["per_attribute"])
    rows = [{"setting": n, "kept": r["kept"], **r["per_attribute"]} for n, r in results["rows"].items()]
    cols = [("inversion", "setting", ""), ("all attributes", "kept", ">.3f")] + [(a, a, ">.2f") for a in attrs]
    commands = sorted({r["command"] for r in results["rows"].values()})
    (out / "ceiling.md").write_text("\n".join([
        "# Reconstruction ceiling of GAN editing (toy faces)", "",
        "Commands (rows run at different times; each row's own in ceiling.json):", "",
        *[f"- `{c}`" for c in commands], "",
        f"Share of the probe's attribute readings that a reconstruction (inversion under the source caption, "
        f"regenerated under the same caption) keeps, on the first {results['n']} edits of benchmarks/edit.py:", "",
        markdown_table(rows, cols), ""]))


if __name__ == "__main__":
    raise SystemExit(main())
