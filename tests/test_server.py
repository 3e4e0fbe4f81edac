"""The HTTP API: generate (JSON / PNG / multipart style), micro-batching, upload endpoints, limits, page."""
from __future__ import annotations

import asyncio
import base64
import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from t2i_fixtures import tiny_run

pytest.importorskip("httpx")
import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from wordcanvas.pipeline import TextToImagePipeline  # noqa: E402
from wordcanvas.server.app import Limits, create_app  # noqa: E402
from wordcanvas.utils.io import to_uint8  # noqa: E402


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    torch.set_num_threads(1)
    return TextToImagePipeline.from_pretrained(tiny_run(tmp_path_factory))


LIMITS = Limits(max_prompt_chars=100, max_n=4, max_images=8, max_output_pixels=64 * 64, max_upload_bytes=50_000,
                max_upload_pixels=300 * 300, edit_steps=3)


@pytest.fixture(scope="module")
def client(pipe):
    with TestClient(create_app({"squares": pipe}, limits=LIMITS)) as c:
        yield c


def png(size=(40, 30), colour=(200, 30, 30), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, format="PNG")
    return buf.getvalue()


def decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_generate_json_returns_the_pipeline_images(client, pipe):
    r = client.post("/v1/generate", json={"prompt": "a red square", "n": 3, "seed": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["model"], body["seed"], body["width"], body["height"]) == ("squares", 5, 16, 16)
    assert [(im["prompt"], im["seed"]) for im in body["images"]] == [("a red square", s) for s in (5, 6, 7)]
    expected = to_uint8(pipe(["a red square"], n=3, seed=5))
    for im, ref in zip(body["images"], expected):
        pil = decode(im["png"])
        assert pil.text["seed"] == str(im["seed"]) and pil.text["prompt"] == "a red square"
        np.testing.assert_array_equal(np.asarray(pil), ref)
    # omitted seed: a random one, reported, and reusable
    body = client.post("/v1/generate", json={"prompts": ["a blue box"]}).json()
    again = client.post("/v1/generate", json={"prompts": ["a blue box"], "seed": body["seed"]}).json()
    assert again["images"][0]["png"] == body["images"][0]["png"]


def test_generate_png_grid_upscaled(client, pipe):
    r = client.post("/v1/generate", json={"prompts": ["a red square", "a green square"], "n": 2, "seed": 0,
                                          "upscale": 2, "upscaler": "bicubic", "format": "png"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.headers["x-seed"] == "0"
    grid = Image.open(io.BytesIO(r.content))
    assert grid.size == (2 * 34 + 2, 2 * 34 + 2)  # 2 x 2 tiles of 32 px with 2 px padding
    tile = np.asarray(grid)[2 + 34:2 + 34 + 32, 2:2 + 32]  # row 2 (green), column 1 (seed 0)
    base = pipe(["a green square"], n=1, seed=0)
    ref = to_uint8(F.interpolate(base, scale_factor=2, mode="bicubic", align_corners=False).clamp(-1, 1))[0]
    assert np.abs(tile.astype(int) - ref.astype(int)).max() <= 1


def test_style_by_name_and_by_upload(client):
    by_name = client.post("/v1/generate", json={"prompt": "a red square", "seed": 1, "style": "waves"})
    assert by_name.status_code == 200, by_name.text
    upload = png((48, 48), (20, 200, 40))
    multipart = client.post("/v1/generate", data={"prompt": "a red square", "seed": "1", "n": "2"},
                            files={"style_image": ("style.png", upload, "image/png")})
    assert multipart.status_code == 200, multipart.text
    assert [im["seed"] for im in multipart.json()["images"]] == [1, 2]
    as_json = client.post("/v1/generate", json={"prompt": "a red square", "seed": 1, "n": 2,
                                                "style_image": "data:image/png;base64," + base64.b64encode(upload).decode()})
    assert as_json.json()["images"][0]["png"] == multipart.json()["images"][0]["png"]
    plain = client.post("/v1/generate", json={"prompt": "a red square", "seed": 1}).json()
    assert plain["images"][0]["png"] != multipart.json()["images"][0]["png"]
    assert np.asarray(decode(multipart.json()["images"][0]["png"])).reshape(-1, 3).mean(0)[1] > \
        np.asarray(decode(plain["images"][0]["png"])).reshape(-1, 3).mean(0)[1]  # greener after a green style


def test_concurrent_requests_share_one_generator_pass(pipe):
    app = create_app({"squares": pipe}, limits=LIMITS, max_batch=7, max_wait_ms=5000)  # closes when 7 images wait
    batcher = app.state.batchers["squares"]
    sizes = []
    run_batch = batcher.run_batch
    batcher.run_batch = lambda jobs: (sizes.append(sum(j.size for j in jobs)), run_batch(jobs))[1]
    requests = [{"prompt": p, "n": n, "seed": s} for p, n, s in
                [("a red square", 1, 0), ("a green square", 2, 5), ("a blue square", 1, 9), ("a red square", 3, 1)]]

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            return await asyncio.gather(*(c.post("/v1/generate", json=r) for r in requests))

    responses = asyncio.run(go())
    assert sizes == [7]  # all four requests (7 images) in one call
    for req, r in zip(requests, responses):
        assert r.status_code == 200
        got = np.stack([np.asarray(decode(im["png"])) for im in r.json()["images"]])
        ref = to_uint8(pipe([req["prompt"]], n=req["n"], seed=req["seed"]))
        assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1  # batch-size float noise at most


@pytest.mark.parametrize("body, status, words", [
    ({"prompt": "x" * 101}, 422, "limit is 100"),
    ({"prompt": "   "}, 422, "empty"),
    ({"prompt": "a", "n": 5}, 422, "limit is 4"),
    ({"prompts": ["a"] * 3, "n": 3}, 422, "limit is 8"),
    ({"prompt": "a", "n": 0}, 422, "greater than or equal"),
    ({"prompt": "a", "model": "nope"}, 404, "unknown model 'nope'"),
    ({"prompt": "a", "upscale": 3}, 422, "upscale"),
    ({"prompt": "a", "style": "cubism"}, 422, "unknown style"),
    ({"prompt": "a", "upscale": 2, "upscaler": "/etc"}, 422, "unknown upscaler"),
    ({"prompt": "a", "colour": 1}, 422, "extra"),
    ({}, 422, "give a prompt"),
    ({"prompt": "a", "style_image": "not base64!"}, 422, "base64"),
    ([1, 2], 422, "JSON object"),
])
def test_generate_limits_answer_with_clear_4xx(client, body, status, words):
    r = client.post("/v1/generate", json=body)
    assert r.status_code == status, r.text
    assert words.lower() in r.text.lower()


def test_output_size_limit(pipe):
    ok = {"prompt": "a", "upscale": 4, "upscaler": "bicubic"}  # 16 px x 4 = 64 px
    with TestClient(create_app({"squares": pipe}, limits=Limits(max_output_pixels=64 * 64))) as c:
        assert c.post("/v1/generate", json=ok).status_code == 200
    with TestClient(create_app({"squares": pipe}, limits=Limits(max_output_pixels=63 * 63))) as c:
        r = c.post("/v1/generate", json=ok)
        assert r.status_code == 422 and "64x64 pixels" in r.text


def test_malformed_and_oversized_bodies(client):
    r = client.post("/v1/generate", content=b'{"prompt": "a", ', headers={"content-type": "application/json"})
    assert r.status_code == 422 and "malformed JSON" in r.text
    r = client.post("/v1/generate", content=b"x" * 200_000, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "limit" in r.text  # refused by Content-Length

    def chunks():  # no Content-Length: the body is counted as it streams
        for _ in range(40):
            yield b"x" * 5_000

    r = client.post("/v1/generate", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_upload_endpoints(client):
    r = client.post("/v1/upscale", data={"scale": "2", "method": "bicubic"},
                    files={"image": ("a.png", png((20, 10)), "image/png")})
    assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size == (40, 20)
    r = client.post("/v1/stylize", data={"style_name": "strokes", "alpha": "0.5"},
                    files={"image": ("a.png", png((40, 32)), "image/png")})
    assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size == (40, 32)
    r = client.post("/v1/stylize", files={"image": ("a.png", png((40, 32)), "image/png"),
                                          "style": ("s.png", png((30, 30), (0, 0, 255)), "image/png")})
    assert r.status_code == 200


@pytest.mark.parametrize("files, data, status, words", [
    ({"image": ("a.txt", b"hello, not an image", "text/plain")}, {}, 415, "not an image"),
    ({"image": ("a.png", png()[:60], "image/png")}, {}, 422, "corrupt"),
    ({"image": ("a.png", png((400, 300)), "image/png")}, {}, 413, "pixels"),
    ({"image": ("a.bin", b"\0" * 60_000, "image/png")}, {}, 413, "bytes"),
    ({"image": ("a.png", png((40, 40)), "image/png")}, {}, 413, "the limit is 4,096"),  # x4 of 40 px > 64x64
    ({"image": ("a.png", png((8, 8)), "image/png")}, {"scale": "3"}, 422, "scale"),
    ({}, {"scale": "2"}, 422, "upload an image"),
])
def test_upload_limits(client, files, data, status, words):
    r = client.post("/v1/upscale", files=files or None, data=data)
    assert r.status_code == status, r.text
    assert words.lower() in r.text.lower()


def test_edit_endpoint(client):
    files = {"image": ("a.png", png((24, 24), (220, 20, 20)), "image/png")}
    r = client.post("/v1/edit", data={"text": "a blue square", "source": "a red square", "seed": "0"}, files=files)
    try:
        import wordcanvas.edit  # noqa: F401
    except ImportError:
        assert r.status_code == 501 and "not available" in r.text
        return
    assert r.status_code == 200, r.text
    assert Image.open(io.BytesIO(r.content)).size == (16, 16)
    r = client.post("/v1/edit", data={"text": ""}, files=files)
    assert r.status_code == 422
    # a local blend with the upload's own caption as the target gives the upload back (resized to the model's size)
    # and so does all of the lost detail added back (residual 1); out-of-range values are refused by name
    for field, keep, bads in (("local_blend", "0.2", ("0", "nan", "2", "much")),
                              ("residual", "1", ("-0.1", "1.5", "nan", "much"))):
        r = client.post("/v1/edit", data={"text": "a red square", "source": "a red square", field: keep}, files=files)
        assert r.status_code == 200, (field, r.text)
        assert set(Image.open(io.BytesIO(r.content)).convert("RGB").getdata()) == {(220, 20, 20)}
        for bad in bads:
            r = client.post("/v1/edit", data={"text": "a blue square", "source": "a red square", field: bad},
                            files=files)
            assert r.status_code == 422 and field in r.text, (field, bad, r.text)
    # the run's discriminator picks strength and blend
    r = client.post("/v1/edit", data={"text": "a blue square", "source": "a red square", "strength": "auto"},
                    files=files)
    assert r.status_code == 200, r.text
    assert Image.open(io.BytesIO(r.content)).size == (16, 16)
    for bad in ("0", "strong", "9"):
        r = client.post("/v1/edit", data={"text": "a blue square", "source": "a red square", "strength": bad},
                        files=files)
        assert r.status_code == 422 and "strength" in r.text, (bad, r.text)
    r = client.post("/v1/edit", data={"text": "a blue square", "strength": "auto", "local_blend": "0.2"}, files=files)
    assert r.status_code == 422 and "chooses the local blend itself" in r.text


def test_models_health_page_and_schema(client):
    models = client.get("/v1/models").json()
    assert models["default"] == "squares" and models["models"][0]["resolution"] == 16
    assert "waves" in models["styles"] and models["limits"]["max_n"] == 4
    assert client.get("/healthz").json()["status"] == "ok"
    page = client.get("/")
    assert page.status_code == 200 and 'id="prompt"' in page.text and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200 and client.get("/static/style.css").status_code == 200
    schema = client.get("/openapi.json").json()
    for path in ("/v1/generate", "/v1/edit", "/v1/upscale", "/v1/stylize", "/v1/models", "/healthz"):
        assert path in schema["paths"]
    body = schema["paths"]["/v1/generate"]["post"]["requestBody"]["content"]
    assert "prompt" in body["application/json"]["schema"]["properties"] and "multipart/form-data" in body


def test_serve_command_builds_the_app_it_runs(pipe, monkeypatch):
    import uvicorn

    from wordcanvas.cli import main

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    folder = pipe.t2i.meta["path"]
    assert main(["serve", "--model", f"squares={folder}", "--model", folder, "--port", "8123", "--threads", "1"]) == 0
    assert (seen["host"], seen["port"]) == ("127.0.0.1", 8123)
    with TestClient(seen["app"]) as c:
        models = c.get("/v1/models").json()
        assert [m["name"] for m in models["models"]] == ["squares", "tiny-t2i-run"] and models["default"] == "squares"
        assert c.post("/v1/generate", json={"prompt": "a red square", "model": "tiny-t2i-run"}).status_code == 200


def test_a_full_queue_answers_429(pipe):
    with TestClient(create_app({"squares": pipe}, limits=Limits(max_pending_images=0))) as c:
        r = c.post("/v1/generate", json={"prompt": "a red square"})
        assert r.status_code == 429 and r.headers["retry-after"] == "1" and "busy" in r.text
