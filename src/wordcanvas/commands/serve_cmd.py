"""CLI verbs `serve` (HTTP API + web page) and `export` (ONNX)."""
from __future__ import annotations

import argparse


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model", action="append", metavar="[NAME=]MODEL",
                   help="a shipped model name or a run / model folder, optionally named; repeat to serve several "
                        "(the first is the default; default: the shipped toy-faces model)")
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                   help="run the generator in torch or ONNX Runtime (exported on first use)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--max-batch", dest="max_batch", type=int, default=64, help="images per generator pass")
    p.add_argument("--max-wait-ms", dest="max_wait_ms", type=float, default=4.0,
                   help="how long a request waits for others to share its generator pass")
    p.add_argument("--log-level", dest="log_level", default="info")


def parse_models(values: list[str] | None) -> dict[str, str | None]:
    """['faces=runs/a', 'runs/b'] -> {'faces': 'runs/a', '': 'runs/b'} ('' = name it after its folder)."""
    if not values:
        return {"": None}
    models = {}
    for i, value in enumerate(values):
        name, sep, path = value.partition("=")
        if not sep:
            name, path = "", value
        models[name or f"\0{i}"] = path
    return models


def run_serve(args: argparse.Namespace) -> int:
    import torch
    import uvicorn

    from wordcanvas.pipeline import TextToImagePipeline
    from wordcanvas.server.app import create_app

    if args.threads:
        torch.set_num_threads(args.threads)
    pipes = {}
    for name, model in parse_models(args.model).items():
        pipe = TextToImagePipeline.from_pretrained(model, device=args.device, backend=args.backend,
                                                   max_batch=args.max_batch)
        pipes[pipe.name if name.startswith("\0") or not name else name] = pipe
    app = create_app(pipes, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms)
    print(f"wordcanvas: serving {', '.join(pipes)} on http://{args.host}:{args.port}/ (API docs at /docs)")
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="a shipped model name or a run / model folder (default: the shipped toy-faces)")
    p.add_argument("--format", choices=("onnx",), default="onnx")
    p.add_argument("--out", help="output folder (default: the model folder's onnx/, which the onnx backend finds)")
    p.add_argument("--upscale", type=int, choices=(0, 2, 4), default=4,
                   help="also export the network upscaler for this scale (0: none)")
    p.add_argument("--upscaler", default="auto", help="auto | fast | quality | quality-gan | realesrgan | srmd | a folder")
    p.add_argument("--opset", type=int, default=17)


def run_export(args: argparse.Namespace) -> int:
    from wordcanvas.export import export_onnx

    manifest = export_onnx(args.model, args.out, upscale=args.upscale or None, upscaler=args.upscaler,
                           opset=args.opset)
    gen = manifest["generator"]
    print(f"{manifest['folder']}/{gen['file']}: inputs {', '.join(gen['inputs'])}; "
          f"max |onnx - torch| = {gen['max_abs_diff']:.1e}")
    for name, part in manifest["upscalers"].items():
        if part.get("file"):
            print(f"{manifest['folder']}/{part['file']}: upscaler {name}; max |onnx - torch| = {part['max_abs_diff']:.1e}")
        else:
            print(f"upscaler {name}: {part['note']}")
    return 0


VERBS: dict = {
    "serve": (add_serve_arguments, run_serve, "serve the HTTP API and the web page"),
    "export": (add_export_arguments, run_export, "export a model's generator (and upscaler) to ONNX"),
}
