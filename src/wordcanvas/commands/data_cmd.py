"""`wordcanvas data <sub-command>`: look at and prepare datasets.

Sub-commands live in DATA_COMMANDS (name -> (add_arguments, run, help)), like the verbs.
"""
from __future__ import annotations

import argparse


def _add_preview(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="fashion-mnist, captioned-mnist, toy-faces, celeba:PATH or a caption folder")
    p.add_argument("--split", default="train", help="dataset split (default: train)")
    p.add_argument("--n", type=int, default=32, help="number of samples (default: 32)")
    p.add_argument("--cols", type=int, default=8, help="samples per row (default: 8)")
    p.add_argument("--res", type=int, default=None, help="resolution (default: the dataset's own)")
    p.add_argument("--seed", type=int, default=0, help="which samples and captions (default: 0)")
    p.add_argument("--out", required=True, help="PNG file to write")


def _run_preview(args: argparse.Namespace) -> int:
    import io

    from wordcanvas.data import load_dataset
    from wordcanvas.data.preview import preview_grid
    from wordcanvas.utils.io import atomic_write_bytes

    if args.n < 1:
        raise ValueError("--n must be at least 1")
    dataset = load_dataset(args.name, split=args.split, resolution=args.res, seed=args.seed)
    title = f"{args.name} [{args.split}] {len(dataset)} samples at {dataset.resolution}px"
    grid = preview_grid(dataset, n=args.n, cols=args.cols, seed=args.seed, title=title)
    buffer = io.BytesIO()
    grid.save(buffer, format="PNG")
    atomic_write_bytes(args.out, buffer.getvalue())
    print(f"wrote {args.out} ({min(args.n, len(dataset))} samples of {len(dataset)})")
    return 0


def _add_pack(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="a caption folder, or any dataset name (fashion-mnist, toy-faces, celeba:PATH, ...)")
    p.add_argument("--out", required=True, help="folder for the .tar shards (must hold none yet)")
    p.add_argument("--split", default="all", help="dataset split (default: all; named datasets: train or test)")
    p.add_argument("--res", type=int, default=None, help="resolution of the stored images (default: the dataset's)")
    p.add_argument("--per-shard", type=int, default=1000, help="samples per shard (default: 1000)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default: 0)")


def _run_pack(args: argparse.Namespace) -> int:
    from wordcanvas.data import dataset_kind, load_dataset
    from wordcanvas.data.webdataset import pack_shards

    if args.per_shard < 1:
        raise ValueError("--per-shard must be at least 1")
    split = args.split
    if split == "all" and dataset_kind(args.name) not in ("folder", "shards"):
        split = "train"  # named datasets have no 'all' split
    dataset = load_dataset(args.name, split=split, resolution=args.res, seed=args.seed)
    shards = pack_shards(dataset, args.out, per_shard=args.per_shard)
    print(f"wrote {len(dataset)} samples into {len(shards)} shard(s) in {args.out}; "
          f"train with --data {args.out}")
    return 0


DATA_COMMANDS: dict = {
    "preview": (_add_preview, _run_preview, "write a PNG grid of samples with their captions"),
    "pack": (_add_pack, _run_pack, "write a dataset into WebDataset .tar shards (image, captions, labels)"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", required=True, metavar="{" + ",".join(DATA_COMMANDS) + "}")
    for name, (add, run, help_text) in DATA_COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add(p)
        p.set_defaults(_data_run=run)


def run(args: argparse.Namespace) -> int:
    return args._data_run(args)


VERBS: dict = {"data": (add_arguments, run, "dataset tools: preview (a captioned sample grid), pack (tar shards)")}
