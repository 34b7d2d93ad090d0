"""Clients that go away free their slots: streaming and non-streaming, over real sockets."""

from __future__ import annotations

import re
import time

import httpx
import pytest

pytest.importorskip("uvicorn")

from lmforge.serve.app import Settings, create_app

STEP_DELAY_S = 0.02  # 200 tokens take >= 4 s: a request still running when its client leaves


@pytest.fixture(scope="module")
def url(lm_run, live_server, slow_and_endless):
    app = slow_and_endless(create_app(lm_run, "cpu", Settings(max_batch=1)), STEP_DELAY_S)
    with live_server(app) as base:
        yield base


def wait_empty(url: str, within: float) -> dict:
    deadline = time.monotonic() + within
    while True:
        health = httpx.get(url + "/health").json()
        if health["batch"] == 0 or time.monotonic() > deadline:
            return health
        time.sleep(0.05)


def cancelled(url: str) -> float:
    text = httpx.get(url + "/metrics").text
    return float(re.search(r"^lmforge_cancelled_sequences_total (\S+)$", text, re.MULTILINE)[1])


@pytest.mark.parametrize("stream", [False, True])
def test_a_vanished_client_frees_its_slot(url, stream):
    before = cancelled(url)
    body = {"prompt": "the ", "max_tokens": 200, "stream": stream}
    if stream:
        with httpx.stream("POST", url + "/v1/completions", json=body, timeout=10) as res:
            lines = res.iter_lines()
            assert next(lines).startswith("data: ")
    else:
        with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes the connection
            httpx.post(url + "/v1/completions", json=body, timeout=0.5)
    health = wait_empty(url, within=1.5)  # long before the 4 s the request would have run
    assert health == {"status": "ok", "queue": 0, "batch": 0}
    assert cancelled(url) == before + 1
    # --max-batch 1: the next request gets the freed slot at once
    t0 = time.monotonic()
    res = httpx.post(url + "/v1/completions", json={"prompt": "a", "max_tokens": 3}, timeout=10)
    assert res.status_code == 200 and res.json()["choices"][0]["finish_reason"] == "length"
    assert time.monotonic() - t0 < 2
