"""HTTP API and web page (FastAPI).

    app = create_app({"faces": pipe})               # or create_app(["runs/faces"]), then uvicorn
    wordcanvas serve --model runs/faces --port 8000

POST /v1/generate   JSON (or multipart with a `style_image` file): prompt(s), n, seed, model, upscale,
                    style (built-in name) -> JSON with base64 PNGs, or one PNG with format="png"
POST /v1/edit       multipart: image + text (+ source, model, seed, local_blend, strength) -> the edited image
POST /v1/upscale    multipart: image (+ scale, method)
POST /v1/stylize    multipart: image + style image or style name (+ alpha, size)
GET  /v1/models, GET /healthz, GET / (the web page), GET /docs (OpenAPI)

Concurrent generate requests for one model are micro-batched into one generator pass
(server/batching.py). All torch work runs in one worker thread. Limits answer with a clear 4xx:
413 body / upload / pixels too large, 415 not an image, 422 invalid fields, 404 unknown model,
501 editing not available, 429 (with Retry-After) when the generate queue is full: overload is the
client's cue to back off, not a server fault.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import math
import secrets
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from wordcanvas.server.batching import MicroBatcher, QueueFull

STATIC_DIR = Path(__file__).resolve().parent / "static"
UPSCALER_NAMES = ("auto", "fast", "quality", "quality-gan", "realesrgan", "srmd", "bicubic")  # never a path from a request


@dataclass
class Limits:
    max_prompt_chars: int = 500               # per prompt, after whitespace clean-up
    max_prompts: int = 16                     # prompts per request
    max_n: int = 16                           # images per prompt
    max_images: int = 64                      # prompts x n per request
    max_output_pixels: int = 2048 * 2048      # any returned image
    max_upload_bytes: int = 8 * 2**20         # one uploaded file (the whole body may hold 64 KiB more)
    max_upload_pixels: int = 2048 * 2048      # decoded upload, checked from the header before decoding
    max_stylize_side: int = 1024              # stylize works at most at this longer side
    max_pending_images: int = 1024            # queued images per model before 429
    edit_steps: int = 200                     # GAN inversion steps for /v1/edit


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: 413 for a declared Content-Length above `max_body`; a body without one is
    counted as it streams and refused (BodyTooLarge, answered 413 by the app) once it passes the limit."""

    def __init__(self, app, max_body: int):
        self.app, self.max_body = app, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            response = JSONResponse({"detail": f"request body is {int(length):,} bytes; the limit is "
                                               f"{self.max_body:,}"}, 413)
            return await response(scope, receive, send)
        seen = 0

        async def counting_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body:
                raise BodyTooLarge()
            return message

        return await self.app(scope, counting_receive, send)


class GenerateRequest(BaseModel):
    """Body of POST /v1/generate. Give `prompt` or `prompts`."""

    model_config = ConfigDict(extra="forbid")
    prompt: str | None = Field(None, description="one prompt")
    prompts: list[str] | None = Field(None, description="several prompts (images are prompt-major)")
    n: int = Field(1, ge=1, description="images per prompt")
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="image j of a prompt uses seed + j; "
                             "omitted: a random seed (returned)")
    model: str | None = Field(None, description="a name from GET /v1/models (default: the first)")
    upscale: Literal[1, 2, 4] = 1
    upscaler: str = Field("auto", description=f"one of {', '.join(UPSCALER_NAMES)}")
    style: str | None = Field(None, description="a built-in style name (see GET /v1/models)")
    style_image: str | None = Field(None, description="a style image as base64 or a data: URL "
                                    "(multipart requests upload it as the file field style_image)")
    style_alpha: float = Field(1.0, ge=0, le=1, description="style strength")
    truncation: float | None = Field(None, gt=0, le=4, description="noise truncation (less variety)")
    format: Literal["json", "png"] = Field("json", description="json: base64 PNGs; png: one PNG (a grid "
                                           "with one row per prompt when several images)")


class GeneratedImage(BaseModel):
    prompt: str
    seed: int
    png: str = Field(description="the PNG file, base64; its text chunks hold prompt, seed and model")


class GenerateResponse(BaseModel):
    model: str
    seed: int = Field(description="seed of each prompt's first image")
    n: int
    width: int
    height: int
    elapsed_ms: float
    images: list[GeneratedImage] = Field(description="prompt-major: image i * n + j is prompt i, seed + j")


class ErrorResponse(BaseModel):
    detail: str | list[dict] = Field(description="what was wrong: a sentence, or FastAPI's list of field errors")


_ERRORS = {404: "unknown model", 413: "body, upload or pixels above the limit", 415: "an upload is not an image",
           422: "invalid fields, prompts or image", 429: "queue full: retry after Retry-After seconds",
           501: "editing not available"}


def error_responses(*codes: int) -> dict:
    """OpenAPI entries for the refusals an operation can answer with (all with an ErrorResponse body)."""
    out = {code: {"model": ErrorResponse, "description": _ERRORS[code]} for code in codes}
    if 429 in out:
        out[429]["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}
    return out


@dataclass
class _GenerateJob:
    prompts: list[str]
    seeds: list[int]
    truncation: float | None
    style: object
    style_alpha: float
    upscale: int
    upscaler: str

    @property
    def size(self) -> int:
        return len(self.prompts)


# --------------------------------------------------------------------------- helpers

def _error(status: int, message: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


def png_bytes(image: Image.Image, meta: dict | None = None) -> bytes:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for k, v in (meta or {}).items():
        info.add_text(str(k), v if isinstance(v, str) else json.dumps(v))
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info, compress_level=1)  # fast: these are small, fresh images
    return buf.getvalue()


def decode_image(data: bytes, limits: Limits, what: str = "image") -> Image.Image:
    """Uploaded bytes -> a decoded PIL image; 413 above the byte or pixel limit (checked before decoding),
    415 when not an image, 422 when corrupt."""
    if len(data) > limits.max_upload_bytes:
        raise _error(413, f"{what} is {len(data):,} bytes; the limit is {limits.max_upload_bytes:,}")
    if not data:
        raise _error(422, f"{what} is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own pixel limit decides
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > limits.max_upload_pixels:
                raise _error(413, f"{what} is {w}x{h} = {w * h:,} pixels; the limit is {limits.max_upload_pixels:,}")
            if w == 0 or h == 0:
                raise _error(422, f"{what} has zero size")
            img.load()
    except HTTPException:
        raise
    except UnidentifiedImageError:
        raise _error(415, f"{what} is not an image in a format this server reads (PNG, JPEG, WebP, ...)") from None
    except Image.DecompressionBombError:
        raise _error(413, f"{what} was refused as a decompression bomb") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise _error(422, f"{what} is a corrupt or truncated image ({type(e).__name__})") from None
    from PIL import ImageOps

    return ImageOps.exif_transpose(img)


def _b64_image(text: str, limits: Limits) -> Image.Image:
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _error(422, "style_image is not valid base64") from None
    return decode_image(data, limits, "style_image")


def _validation_error(e: ValidationError) -> RequestValidationError:
    return RequestValidationError([{**err, "loc": ("body", *err["loc"])}
                                   for err in e.errors(include_url=False, include_context=False)])


async def _form(request: Request):
    try:
        return await request.form(max_files=4, max_fields=32, max_part_size=1024 * 1024)
    except BodyTooLarge:
        raise
    except Exception as e:  # starlette's MultiPartException and friends: a malformed form
        raise _error(422, f"malformed multipart form: {e}") from None


async def _upload(form, field: str, limits: Limits, required: bool = True) -> Image.Image | None:
    item = form.get(field)
    if item is None or isinstance(item, str):
        if required:
            raise _error(422, f"upload an image file in the form field '{field}'")
        return None
    data = await item.read(limits.max_upload_bytes + 1)
    return decode_image(data, limits, f"'{field}' ({item.filename or 'upload'})")


def _form_value(form, field: str, cast, default, allowed=None, low=None, high=None):
    raw = form.get(field)
    if raw is None or raw == "":
        return default
    if not isinstance(raw, str):
        raise _error(422, f"form field '{field}' must be a value, not a file")
    try:
        value = cast(raw)
    except ValueError:
        raise _error(422, f"form field '{field}' must be a {cast.__name__}, got {raw!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise _error(422, f"form field '{field}' must be a finite number, got {raw!r}")
    if allowed is not None and value not in allowed:
        raise _error(422, f"form field '{field}' must be one of {', '.join(map(str, allowed))}, got {raw!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise _error(422, f"form field '{field}' must be in [{low}, {high}], got {raw!r}")
    return value


# --------------------------------------------------------------------------- the app

def _load_pipelines(models, backend: str) -> dict:
    from wordcanvas.pipeline import TextToImagePipeline

    if isinstance(models, dict):
        items = list(models.items())
    else:
        items = [(None, m) for m in (models if isinstance(models, (list, tuple)) else [models])]
    pipes = {}
    for name, model in items:
        pipe = model if isinstance(model, TextToImagePipeline) else TextToImagePipeline.from_pretrained(model,
                                                                                                        backend=backend)
        pipes[name or pipe.name] = pipe
    if not pipes:
        raise ValueError("the server needs at least one model")
    return pipes


def create_app(models, *, limits: Limits | None = None, backend: str = "torch", max_batch: int = 64,
               max_wait_ms: float = 4.0) -> FastAPI:
    """An app serving `models`: a pipeline, a model folder / shipped name, a list of them, or a dict
    name -> pipeline or folder (the first is the default)."""
    from wordcanvas.pipeline import BUILTIN_STYLES, UPSCALES
    from wordcanvas.text.base import validate_prompt

    limits = limits or Limits()
    pipes = _load_pipelines(models, backend)
    default_model = next(iter(pipes))
    torch_pool: list[ThreadPoolExecutor] = []  # the one thread for all torch work; a fresh one after a shutdown

    def torch_thread() -> ThreadPoolExecutor:
        if not torch_pool:  # first use, or the app started again after its lifespan ended (tests, reloads)
            torch_pool.append(ThreadPoolExecutor(max_workers=1, thread_name_prefix="wordcanvas-torch"))
            for b in batchers.values():
                b.executor = torch_pool[0]
        return torch_pool[0]

    def run_generation(pipe, jobs: list[_GenerateJob]) -> list:
        images = pipe.render([p for j in jobs for p in j.prompts], [s for j in jobs for s in j.seeds],
                             [j.truncation for j in jobs for _ in j.prompts])
        out, k = [], 0
        for job in jobs:
            part, k = images[k:k + job.size], k + job.size
            try:
                out.append(pipe.postprocess(part, style=job.style, upscale=job.upscale, style_alpha=job.style_alpha,
                                            upscaler=job.upscaler))
            except Exception as e:  # noqa: BLE001 (this job's own failure; the others still get their images)
                out.append(e)
        return out

    batchers = {name: MicroBatcher(lambda jobs, pipe=pipe: run_generation(pipe, jobs), max_size=max_batch,
                                   max_wait_ms=max_wait_ms, executor=None,
                                   max_pending=limits.max_pending_images)
                for name, pipe in pipes.items()}
    torch_thread()  # ready before any lifespan starts (apps called without one)

    async def on_torch_thread(fn, *args):
        return await asyncio.get_running_loop().run_in_executor(torch_thread(), fn, *args)

    async def lifespan(app):
        torch_thread()
        yield
        for b in batchers.values():
            await b.close()
        if torch_pool:
            torch_pool.pop().shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="wordcanvas", version="0.1.0", lifespan=lifespan,
                  description="Text to image with a language model and a text-conditioned GAN or VAE.")
    app.state.pipelines, app.state.batchers, app.state.limits = pipes, batchers, limits

    # ---- request size: refuse by Content-Length, or count the bytes of a streamed body
    max_body = limits.max_upload_bytes * 2 + 64 * 1024  # generate's JSON may carry a base64 style image

    app.add_middleware(BodyLimit, max_body=max_body)

    @app.exception_handler(Exception)
    async def _internal(request, exc):  # a JSON body the page can show, instead of plain text
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}: {exc}"}, 500)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request, exc):
        return JSONResponse({"detail": f"request body is above the limit of {max_body:,} bytes"}, 413)

    def pipeline_for(name: str | None):
        name = name or default_model
        if name not in pipes:
            raise _error(404, f"unknown model '{name}'; available: {', '.join(pipes)}")
        return name, pipes[name]

    def check_prompts(prompts: list[str]) -> list[str]:
        if not prompts:
            raise _error(422, "give a prompt ('prompt') or a list of prompts ('prompts')")
        if len(prompts) > limits.max_prompts:
            raise _error(422, f"{len(prompts)} prompts; the limit is {limits.max_prompts} per request")
        cleaned = []
        for p in prompts:
            if not isinstance(p, str):
                raise _error(422, "prompts must be strings")
            try:
                p = validate_prompt(p)
            except ValueError as e:
                raise _error(422, str(e)) from None
            if len(p) > limits.max_prompt_chars:
                raise _error(422, f"a prompt has {len(p)} characters; the limit is {limits.max_prompt_chars}")
            cleaned.append(p)
        return cleaned

    def check_output(side: int) -> None:
        if side * side > limits.max_output_pixels:
            raise _error(422, f"the result would be {side}x{side} pixels; the limit is {limits.max_output_pixels:,}")

    async def check_upscaler(name: str, scale: int, pipe):
        """The pipeline's Upscaler (built on the torch thread on first use); 422 when unknown or not installed."""
        if name not in UPSCALER_NAMES:
            raise _error(422, f"unknown upscaler '{name}'; choose from {', '.join(UPSCALER_NAMES)}")
        try:
            return await on_torch_thread(pipe.get_upscaler, scale, name)
        except (FileNotFoundError, ValueError) as e:
            raise _error(422, f"upscaler '{name}' x{scale} is not available: {e}") from None

    # ---- the page and facts
    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/healthz", summary="liveness and queue state")
    async def healthz():
        return {"status": "ok", "models": list(pipes),
                "pending_images": {n: b.pending for n, b in batchers.items()},
                "batches": {n: {"batches": b.batches, "jobs": b.jobs, "largest": b.largest} for n, b in batchers.items()}}

    @app.get("/v1/models", summary="the models this server holds, with their options")
    async def models():
        return {"default": default_model, "limits": asdict(limits), "styles": list(BUILTIN_STYLES),
                "upscalers": list(UPSCALER_NAMES), "models": [{**p.info(), "name": n} for n, p in pipes.items()]}

    # ---- generate
    generate_schema = GenerateRequest.model_json_schema()
    props = generate_schema["properties"]  # the limits of this server, so /docs and schema-driven clients know them
    props["prompt"]["anyOf"][0]["maxLength"] = limits.max_prompt_chars
    props["prompts"]["anyOf"][0].update(maxItems=limits.max_prompts, items={"type": "string",
                                                                            "maxLength": limits.max_prompt_chars})
    props["n"]["maximum"] = min(limits.max_n, limits.max_images)
    props["upscaler"]["enum"] = list(UPSCALER_NAMES)
    props["style"]["anyOf"][0]["enum"] = list(BUILTIN_STYLES)
    multipart_schema = {"type": "object", "properties": {
        **{k: v for k, v in generate_schema["properties"].items() if k != "style_image"},
        "style_image": {"type": "string", "format": "binary", "description": "style image file"}}}

    @app.post("/v1/generate", summary="images for prompts (micro-batched with concurrent requests)",
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": generate_schema},
                  "multipart/form-data": {"schema": multipart_schema}}}},
              responses={200: {"model": GenerateResponse, "content": {"image/png": {}},
                               "description": "JSON with base64 PNGs, or one PNG with format=png"},
                         **error_responses(404, 413, 415, 422, 429)})
    async def generate(request: Request):
        started = time.perf_counter()
        style_upload = None
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            form = await _form(request)
            fields = {k: (form.getlist(k) if k == "prompts" else v) for k, v in form.items()
                      if isinstance(v, str) and v != "" and k != "style_image"}
            style_upload = await _upload(form, "style_image", limits, required=False)
        else:
            try:
                fields = json.loads(await request.body() or b"null")
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise RequestValidationError([{"type": "json_invalid", "loc": ("body", e.pos if hasattr(e, "pos") else 0),
                                               "msg": f"malformed JSON: {e}", "input": None}]) from None
        if not isinstance(fields, dict):
            raise RequestValidationError([{"type": "model_type", "loc": ("body",), "input": None,
                                           "msg": "the body must be a JSON object (see /docs)"}])
        try:
            req = GenerateRequest.model_validate(fields)
        except ValidationError as e:
            raise _validation_error(e) from None
        prompts = check_prompts(([req.prompt] if req.prompt is not None else []) + (req.prompts or []))
        if req.n > limits.max_n:
            raise _error(422, f"n is {req.n}; the limit is {limits.max_n} images per prompt")
        if len(prompts) * req.n > limits.max_images:
            raise _error(422, f"{len(prompts)} prompts x n={req.n} = {len(prompts) * req.n} images; "
                              f"the limit is {limits.max_images} per request")
        name, pipe = pipeline_for(req.model)
        check_output(pipe.resolution * req.upscale)
        style = None
        if req.style is not None:
            if req.style not in BUILTIN_STYLES:
                raise _error(422, f"unknown style '{req.style}'; built-in styles: {', '.join(BUILTIN_STYLES)} "
                                  "(or upload a style image)")
            style = req.style
        if req.style_image is not None:
            style_upload = _b64_image(req.style_image, limits)
        if style_upload is not None:
            if style is not None:
                raise _error(422, "give either a built-in style or a style image, not both")
            style = style_upload.convert("RGB")
        if req.upscale > 1:
            await check_upscaler(req.upscaler, req.upscale, pipe)
        seed = req.seed if req.seed is not None else secrets.randbelow(2**31)
        if seed + req.n - 1 > 2**32 - 1:
            raise _error(422, "seed + n - 1 must stay below 2**32")
        job = _GenerateJob([p for p in prompts for _ in range(req.n)], [seed + j for _ in prompts for j in range(req.n)],
                           req.truncation, style, req.style_alpha, req.upscale, req.upscaler)
        try:
            images = await batchers[name].submit(job, size=job.size)
        except QueueFull as e:
            raise HTTPException(429, detail=f"busy: {e}", headers={"Retry-After": "1"}) from None
        except ValueError as e:  # e.g. a style image the style network cannot use
            raise _error(422, str(e)) from None
        elapsed = round(1000 * (time.perf_counter() - started), 2)
        meta = {"model": name, "upscale": req.upscale}
        if style is not None:
            meta["style"] = req.style or "upload"
        if req.format == "png":
            from wordcanvas.utils.io import make_grid, tensor_to_pil

            grid = images[0] if len(images) == 1 else make_grid(images, nrow=req.n)
            data = await run_in_threadpool(png_bytes, tensor_to_pil(grid), {"prompts": prompts, "seed": seed, **meta})
            return Response(data, media_type="image/png", headers={"X-Seed": str(seed), "X-Model": name,
                                                                   "X-Elapsed-Ms": str(elapsed)})

        def encode_all():
            from wordcanvas.utils.io import tensor_to_pil

            return [{"prompt": p, "seed": s, "png": base64.b64encode(
                png_bytes(tensor_to_pil(im), {"prompt": p, "seed": s, **meta})).decode("ascii")}
                for p, s, im in zip(job.prompts, job.seeds, images)]

        # a few small PNGs encode faster than a hop to the thread pool; bigger work leaves the event loop free
        small = images.shape[0] * images.shape[-1] * images.shape[-2] <= 4 * 64 * 64
        encoded = encode_all() if small else await run_in_threadpool(encode_all)
        return JSONResponse({"model": name, "seed": seed, "n": req.n, "width": images.shape[-1],
                             "height": images.shape[-2], "elapsed_ms": elapsed, "images": encoded})

    # ---- upload endpoints
    def png_response(image: Image.Image, **headers) -> Response:
        return Response(png_bytes(image), media_type="image/png", headers={k: str(v) for k, v in headers.items()})

    @app.post("/v1/upscale", summary="upscale an uploaded image (multipart: image, scale, method)",
              openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                  "type": "object", "required": ["image"], "properties": {
                      "image": {"type": "string", "format": "binary"},
                      "scale": {"type": "integer", "enum": [2, 4], "default": 4},
                      "method": {"type": "string", "enum": list(UPSCALER_NAMES), "default": "auto"}}}}}}},
              responses={200: {"content": {"image/png": {}}}, **error_responses(413, 415, 422)})
    async def upscale(request: Request):
        form = await _form(request)
        scale = _form_value(form, "scale", int, 4, allowed=[s for s in UPSCALES if s > 1])
        method = _form_value(form, "method", str, "auto", allowed=UPSCALER_NAMES)
        image = await _upload(form, "image", limits)
        w, h = image.size
        if w * scale * h * scale > limits.max_output_pixels:
            raise _error(413, f"x{scale} of a {w}x{h} image is {w * scale}x{h * scale} pixels; "
                              f"the limit is {limits.max_output_pixels:,}")
        up = await check_upscaler(method, scale, pipes[default_model])
        out = await on_torch_thread(up.upscale_pil, image)
        return await run_in_threadpool(png_response, out, **{"X-Upscaler": up.name})

    @app.post("/v1/stylize", summary="style transfer (multipart: image, style file or style_name, alpha, size)",
              openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                  "type": "object", "required": ["image"], "properties": {
                      "image": {"type": "string", "format": "binary"},
                      "style": {"type": "string", "format": "binary", "description": "style image file"},
                      "style_name": {"type": "string", "enum": list(BUILTIN_STYLES)},
                      "alpha": {"type": "number", "minimum": 0, "maximum": 1, "default": 1},
                      "size": {"type": "integer", "minimum": 16, "maximum": limits.max_stylize_side,
                               "description": "longer side of the result"}}}}}}},
              responses={200: {"content": {"image/png": {}}}, **error_responses(413, 415, 422)})
    async def stylize(request: Request):
        form = await _form(request)
        alpha = _form_value(form, "alpha", float, 1.0, low=0.0, high=1.0)
        style_name = _form_value(form, "style_name", str, None, allowed=list(BUILTIN_STYLES))
        image = await _upload(form, "image", limits)
        style = await _upload(form, "style", limits, required=False)
        if (style is None) == (style_name is None):
            raise _error(422, "give exactly one of: a style image file ('style') or a built-in 'style_name'")
        size = _form_value(form, "size", int, min(max(16, *image.size), limits.max_stylize_side), low=16,
                           high=limits.max_stylize_side)  # a tiny upload: a 16 px result, the least the network takes
        from wordcanvas.pipeline import builtin_style

        pipe = pipes[default_model]
        style_img = style.convert("RGB") if style is not None else builtin_style(style_name)
        try:
            out = await on_torch_thread(lambda: pipe.stylizer.stylize(image.convert("RGB"), [style_img], alpha=alpha,
                                                                     size=size))
        except ValueError as e:  # an image or style the network cannot use
            raise _error(422, str(e)) from None
        return await run_in_threadpool(png_response, out)

    @app.post("/v1/edit", summary="edit an uploaded image with text (multipart: image, text, source, model, seed, "
                                   "local_blend, strength, residual)",
              openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                  "type": "object", "required": ["image", "text"], "properties": {
                      "image": {"type": "string", "format": "binary"},
                      "text": {"type": "string", "description": "the caption the result should match"},
                      "source": {"type": "string", "description": "caption of the uploaded image (optional)"},
                      "model": {"type": "string"},
                      "seed": {"type": "integer", "minimum": 0, "maximum": 2**32 - 1, "default": 0},
                      "local_blend": {"type": "number", "minimum": 0.01, "maximum": 1.0,
                                      "description": "keep the upload's pixels where the caption change does not "
                                                     "act (threshold; 0.2 is a good start); off when absent"},
                      "strength": {"type": "string", "description": "how far to push the caption change: a number "
                                   "in (0, 5] or 'auto' (a GAN's discriminator picks strength and blend per image); "
                                   "the model's default when absent"},
                      "residual": {"type": "number", "minimum": 0.0, "maximum": 1.0,
                                   "description": "share of the detail the model could not reproduce (upload minus "
                                                  "its reconstruction) added back to the result; when absent "
                                                  "0.25 with strength 'auto', else 0"}}}}}}},
              responses={200: {"content": {"image/png": {}}}, **error_responses(404, 413, 415, 422, 501)})
    async def edit(request: Request):
        form = await _form(request)
        text = form.get("text")
        if not isinstance(text, str) or not text.strip():
            raise _error(422, "give the change as text in the form field 'text'")
        target = check_prompts([text])[0]
        source = form.get("source")
        source = check_prompts([source])[0] if isinstance(source, str) and source.strip() else None
        seed = _form_value(form, "seed", int, 0, low=0, high=2**32 - 1)
        local_blend = _form_value(form, "local_blend", float, None, low=0.01, high=1.0)
        strength = form.get("strength")
        if strength != "auto":
            strength = _form_value(form, "strength", float, None, low=0.01, high=5.0)
        residual = _form_value(form, "residual", float, None, low=0.0, high=1.0)
        if strength == "auto" and local_blend is not None:
            raise _error(422, "strength 'auto' chooses the local blend itself: leave local_blend out")
        model = form.get("model") if isinstance(form.get("model"), str) and form.get("model") else None
        name, pipe = pipeline_for(model)
        image = await _upload(form, "image", limits)
        editor = await on_torch_thread(_editor_for, pipe)
        out = await on_torch_thread(_run_edit, editor, pipe, image, target, source, seed, limits.edit_steps,
                                    local_blend, strength, residual)
        from wordcanvas.utils.io import tensor_to_pil

        return await run_in_threadpool(png_response, tensor_to_pil(out[0]), **{"X-Model": name})

    return app


# --------------------------------------------------------------------------- editing (wordcanvas.edit)

def _editor_for(pipe):
    """The pipeline's Editor, built once; 501 when this install or this model cannot edit."""
    editor = getattr(pipe, "_editor", None)
    if editor is not None:
        return editor
    try:
        from wordcanvas.edit import EDITABLE_FAMILIES, Editor, run_dataset
    except ImportError:
        raise _error(501, "image editing is not available in this installation (wordcanvas.edit is missing)") from None
    if pipe.t2i.family not in EDITABLE_FAMILIES:
        raise _error(501, f"model '{pipe.name}' ({pipe.t2i.family}) cannot edit images; "
                          f"editable families: {', '.join(EDITABLE_FAMILIES)}")
    pipe._editor = Editor(pipe.t2i, dataset=run_dataset(pipe.t2i.meta.get("path", ".")))
    return pipe._editor


def _run_edit(editor, pipe, image: Image.Image, target: str, source: str | None, seed: int, steps: int,
              local_blend: float | None = None, strength: float | str | None = None, residual: float | None = None):
    import numpy as np
    import torch
    import torch.nn.functional as F

    img = image.convert("L" if pipe.channels == 1 else "RGB")
    w, h = img.size
    side = min(w, h)
    img = img.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
    x = torch.from_numpy(np.asarray(img, dtype=np.float32)).reshape(side, side, -1).permute(2, 0, 1)[None] / 127.5 - 1
    if side != pipe.resolution:
        x = F.interpolate(x, size=(pipe.resolution,) * 2, mode="bilinear", antialias=True, align_corners=False)
    try:
        return editor.edit(x.clamp(-1, 1), target, source=source, seed=seed, steps=steps,
                           local_blend=local_blend, strength=strength, residual=residual).cpu()
    except ValueError as e:  # e.g. no source caption and no probe to describe the image
        raise _error(422, str(e)) from None
