"""CLI verbs `reconstruct` and `edit` (a trained VAE, or a text-conditioned GAN by inversion)."""
from __future__ import annotations

import argparse


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", help="image file (cropped to a square and resized to the model's size)")
    p.add_argument("--model", required=True,
                   help="a shipped model name (toy-faces, fashion-mnist), a run folder, its final/ folder, or a checkpoint folder")
    p.add_argument("--out", required=True, help="output PNG")
    p.add_argument("--steps", type=int, default=300, help="GAN inversion steps (unused by a VAE)")
    p.add_argument("--lpips-weight", dest="lpips_weight", type=float,
                   help="GAN inversion: weight of LPIPS next to pixel MSE (default 0.3)")
    p.add_argument("--offset-weight", dest="offset_weight", type=float,
                   help="GAN inversion: weight of the L2 penalty on the fitted caption-embedding offset (default 0.1)")
    p.add_argument("--no-offset", dest="no_offset", action="store_true",
                   help="GAN inversion: fit the latent only, no caption-embedding offset (and no style offsets)")
    p.add_argument("--style-weight", dest="style_weight", type=float,
                   help="GAN inversion: L2 weight of the per-layer style offsets (each conditional layer's scale "
                        "and shift), fitted beside the caption offset for closer reconstructions (default 0.001)")
    p.add_argument("--no-styles", dest="no_styles", action="store_true",
                   help="GAN inversion: no per-layer style offsets (latent and caption offset only)")
    p.add_argument("--seed", type=int, default=0, help="GAN inversion starts / caption phrasing")
    p.add_argument("--dataset", help="dataset the model was trained on, for predicting a missing source caption "
                                     "(default: read from the run's config.json)")
    p.add_argument("--compare", action="store_true", help="write [input | result] side by side")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int)


def add_reconstruct_arguments(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--caption", help="the image's caption (default: predicted with the dataset's probes)")


def add_edit_arguments(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--text", required=True, help="the edited caption: what the image should show")
    p.add_argument("--source-caption", dest="source_caption",
                   help="what the image shows now (default: predicted with the dataset's probes)")
    p.add_argument("--strength", type=_strength,
                   help="scale of the caption change in embedding space (above 1: a stronger edit; default 1.5 "
                        "for a GAN, 1 for a VAE), or 'auto': a GAN's discriminator picks the strength and local "
                        "blend that change the image least while matching the text")
    p.add_argument("--local-blend", dest="local_blend", type=float, metavar="THRESHOLD",
                   help="keep the source image's pixels wherever the caption change does not act (its mean effect "
                        "over many latents, below THRESHOLD of its peak fades to the source; 0.2 is a good start)")
    p.add_argument("--residual", type=float, metavar="SHARE",
                   help="add back this share (0-1) of the detail the model could not reproduce (the image minus "
                        "its reconstruction): keeps more of the original; above 0.5 it starts to undo the edit "
                        "(default: 0.25 with --strength auto, else 0)")


def _strength(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None


def _setup(args):
    import torch

    from wordcanvas.edit import Editor, load_image

    if args.threads:
        torch.set_num_threads(args.threads)
    from wordcanvas.models.defaults import resolve_model

    editor = Editor.from_pretrained(resolve_model(args.model), device=args.device, dataset=args.dataset)
    image = load_image(args.image, editor.channels, editor.resolution).to(args.device)
    return editor, image


def _inversion(args) -> dict:
    """Only the settings given: the library's defaults (wordcanvas.edit.GAN_EDIT_DEFAULTS) fill the rest."""
    extra = {} if args.lpips_weight is None else {"lpips_weight": args.lpips_weight}
    if args.no_offset:
        extra["offset_weight"] = None
    elif args.offset_weight is not None:
        extra["offset_weight"] = args.offset_weight
    if args.no_styles:
        extra["style_weight"] = None
    elif args.style_weight is not None:
        extra["style_weight"] = args.style_weight
    return extra


def _save(args, image, result, info: dict) -> None:
    from pathlib import Path

    import torch

    from wordcanvas.train.logging import png_info
    from wordcanvas.utils.io import make_grid, tensor_to_pil

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    picture = make_grid(torch.cat([image, result]).cpu(), nrow=2) if args.compare else result[0].cpu()
    tensor_to_pil(picture).save(out, pnginfo=png_info({k: v for k, v in info.items() if v is not None}))
    print(out)


def run_reconstruct(args: argparse.Namespace) -> int:
    editor, image = _setup(args)
    caption = editor.source_captions(image, args.caption, args.seed)[0]
    result = editor.reconstruct(image, caption, steps=args.steps, seed=args.seed, **_inversion(args))
    _save(args, image, result, {"caption": caption, "model": str(args.model), "source": str(args.image)})
    return 0


def run_edit(args: argparse.Namespace) -> int:
    editor, image = _setup(args)
    source = editor.source_captions(image, args.source_caption, args.seed)[0]
    result = editor.edit(image, args.text, source, steps=args.steps, seed=args.seed, strength=args.strength,
                         local_blend=args.local_blend, residual=args.residual, **_inversion(args))
    _save(args, image, result, {"prompt": args.text, "source_caption": source, "model": str(args.model),
                                "source": str(args.image), "residual": args.residual})
    return 0


VERBS: dict = {
    "reconstruct": (add_reconstruct_arguments, run_reconstruct, "an image as a trained VAE (or inverted GAN) sees it"),
    "edit": (add_edit_arguments, run_edit, "change an image to match an edited caption (VAE or GAN inversion)"),
}
