"""The load benchmark's core (benchmarks/server_load.py) at a small size against a real uvicorn server on a
free loopback port: every request answered, no 5xx, each kind answered with its own codes, and a burst
beyond the queue refused with 429 + Retry-After. No timing assertions."""
from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

import pytest
from t2i_fixtures import tiny_run
from test_server import LIMITS

pytest.importorskip("httpx")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import server_load  # noqa: E402

# A queue of 16 images and a 250 ms batching window that only a deadline closes (max_batch > queue): a burst
# of 12 requests x 8 images arriving together cannot all fit, whatever the machine's speed.
SERVER_LIMITS = {**asdict(LIMITS), "max_pending_images": 16}


@pytest.fixture(scope="module")
def load(tmp_path_factory):
    cfg = server_load.LoadConfig(clients=8, seconds=120, requests_per_client=len(server_load.MIX), burst_size=12,
                                 burst_every=0.3, bursts=2, timeout=60, seed=3)
    with server_load.run_server(tiny_run(tmp_path_factory), SERVER_LIMITS, threads=1, max_batch=64,
                                max_wait_ms=250) as (url, server):
        result = server_load.run_load(url, server.pid, SERVER_LIMITS, cfg, settle_s=0)
    return result, cfg


def test_every_request_is_answered_without_server_errors(load):
    result, cfg = load
    assert result["sent"] == result["answered"] == cfg.clients * len(server_load.MIX) + cfg.bursts * cfg.burst_size
    assert result["lost"] == 0 and not result["errors"]
    assert result["server_errors_5xx"] == 0
    assert result["bad_bodies"] == 0  # every 200 carried the images it was asked for


def test_each_kind_gets_its_own_answer(load):
    result, cfg = load
    kinds = result["kinds"]
    assert set(kinds) == set(server_load.EXPECTED)  # every kind was sent
    for kind, row in kinds.items():
        assert row["unexpected"] == 0, (kind, row["statuses"])
    # the over-limit requests: refused with exactly their code, every time
    for kind, code in [("bad_json", 422), ("unknown_model", 404), ("n_over_limit", 422), ("prompt_too_long", 422),
                       ("body_too_large", 413), ("upscale_not_image", 415), ("stylize_not_image", 415)]:
        assert kinds[kind]["statuses"] == {str(code): kinds[kind]["requests"]}, kind
    assert kinds["upscale"]["statuses"] == {"200": kinds["upscale"]["requests"]}
    assert kinds["generate_json"]["statuses"].get("200", 0) > 0 and kinds["generate_png"]["statuses"].get("200", 0) > 0


def test_a_burst_beyond_the_queue_is_shed_with_429(load):
    result, cfg = load
    burst = result["kinds"]["burst"]
    assert burst["requests"] == cfg.bursts * cfg.burst_size
    assert burst["statuses"].get("429", 0) > 0  # (how many fit depends on what the clients had queued)
    assert result["queue_full_429"]["requests"] >= burst["statuses"]["429"]
    assert result["queue_full_429"]["without_retry_after"] == 0


def test_memory_is_sampled_from_the_server_process(load):
    rss = load[0]["rss"]
    assert 0 < rss["before_mib"] <= rss["peak_mib"] and rss["after_mib"] > 0 and len(rss["samples"]) >= 1
