"""The HTTP API in process (TestClient): OpenAI-shaped errors naming the field, ignored
fields, limits (413, 429), auth, CORS, metrics, the page, and the serve command's checks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from lmforge.cli import main
from lmforge.run import load_run
from lmforge.serve.app import Settings, create_app

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def client(lm_run):
    with TestClient(create_app(lm_run, "cpu", Settings(max_queue=3, max_body_bytes=4096,
                                                       max_tokens=100, cors=["http://x.test"]))) as c:
        yield c


def assert_error(res, status, param=None, words=()):
    assert res.status_code == status, res.text
    err = res.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert err["param"] == param
    for w in words:
        assert w in err["message"]
    return err


@pytest.mark.parametrize("body,status,param,words", [
    (b"{not json", 400, None, ["JSON"]),
    (b"[1, 2]", 400, None, ["object"]),
    (b'{"prompt": "a", "max_tokens": "x"}', 400, "max_tokens", ["integer"]),
    (b'{"prompt": "a", "max_tokens": 101}', 400, "max_tokens", ["100"]),
    (b'{"prompt": "a", "n": 0}', 400, "n", [">= 1"]),
    (b'{"prompt": "a", "temperature": -1}', 400, "temperature", []),
    (b'{"prompt": "a", "top_p": 1.5}', 400, "top_p", []),
    (b'{"prompt": "a", "stop": [1]}', 400, "stop", []),
    (b'{"prompt": [[]]}', 400, "prompt", []),
    (b'{"prompt": [99999]}', 400, "prompt", ["token ids"]),
    (b'{"max_tokens": 3}', 400, "prompt", ["required"]),
    (b'{"prompt": "a", "presence_penalty": 9}', 400, "presence_penalty", []),
    (b'{"prompt": "a", "stream_options": 3}', 400, "stream_options", []),
    (b'{"prompt": "a", "seed": 99999999999999999999999}', 400, "seed", []),
])
def test_bad_completion_fields_are_400_naming_the_field(client, body, status, param, words):
    res = client.post("/v1/completions", content=body, headers={"content-type": "application/json"})
    assert_error(res, status, param, words)


def test_chat_field_errors(client):
    assert_error(client.post("/v1/chat/completions", json={"messages": []}), 400, "messages")
    assert_error(client.post("/v1/chat/completions", json={"messages": [{"role": "wizard"}]}),
                 400, "messages[0].role")
    bad_part = {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}
    assert_error(client.post("/v1/chat/completions", json=bad_part), 400, "messages[0].content")
    long = {"messages": [{"role": "user", "content": "x" * 500}]}
    assert_error(client.post("/v1/chat/completions", json=long), 400, "messages", ["prompt"])


def test_standard_and_unknown_fields_are_accepted(client, lm_run):
    body = {"prompt": "the ", "max_tokens": 6, "temperature": 0, "logprobs": 2, "echo": True,
            "presence_penalty": 0.5, "frequency_penalty": 0, "user": "u1", "best_of": 1,
            "logit_bias": {}, "some_future_field": {"x": 1},
            "stream_options": {"include_usage": True}}
    res = client.post("/v1/completions", json=body)
    assert res.status_code == 200, res.text
    choice = res.json()["choices"][0]
    expected = load_run(lm_run, device="cpu").generate("the ", max_new_tokens=6, temperature=0)
    assert choice["text"] == "the " + expected  # echo
    lp = choice["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"])
    assert all(len(top) <= 2 for top in lp["top_logprobs"]) and lp["text_offset"][0] == 4
    ids = client.post("/v1/completions", json={"prompt": [[7, 8], [9]], "max_tokens": 2}).json()
    assert [c["index"] for c in ids["choices"]] == [0, 1]


def test_routes_methods_size_and_queue(client):
    assert_error(client.get("/v1/nothing"), 404)
    assert_error(client.get("/v1/completions"), 405)
    assert_error(client.get("/v1/models/other"), 404, "model")
    assert_error(client.post("/v1/completions", json={"prompt": "a" * 5000}), 413)
    assert client.post("/v1/completions", json={"prompt": "a", "n": 4}).status_code == 429
    assert_error(client.post("/v1/classify", json={"input": ["a"]}), 400, "model")
    assert client.get("/v1/models").json()["data"][0]["created"] > 0


def test_cors_metrics_page(client):
    res = client.options("/v1/completions", headers={"origin": "http://x.test",
                                                     "access-control-request-method": "POST"})
    assert res.headers["access-control-allow-origin"] == "http://x.test"
    client.post("/v1/completions", json={"prompt": "a", "max_tokens": 2})
    metrics = client.get("/metrics").text
    for name in ("lmforge_requests_total", "lmforge_completion_tokens_total", "lmforge_queue_depth",
                 "lmforge_time_to_first_token_seconds_bucket", "lmforge_tokens_per_second"):
        assert name in metrics
    page = client.get("/").text
    assert 'name="viewport"' in page and "{{" not in page
    assert client.get("/static/chat.js").status_code == 200


def test_api_key_guards_v1_only(lm_run):
    with TestClient(create_app(lm_run, "cpu", Settings(api_key="k1"))) as c:
        assert_error(c.get("/v1/models"), 401)
        assert_error(c.get("/v1/models", headers={"authorization": "Bearer nope"}), 401)
        assert c.get("/v1/models", headers={"authorization": "Bearer k1"}).status_code == 200
        assert c.get("/health").status_code == 200


@pytest.mark.parametrize("args,words", [(["--port", "99999"], "--port 99999"),
                                        (["--host", "999.1.1.1"], "--host 999.1.1.1")])
def test_serve_refuses_bad_addresses_in_one_line(lm_run, capsys, args, words):
    assert main(["serve", str(lm_run), *args]) == 1
    err = capsys.readouterr()
    assert words in err.err and "serving on" not in err.out and "Traceback" not in err.err


@pytest.mark.slow  # a fresh server process (Python, torch, the run): 5-10 s on 2 busy cores
def test_sigterm_drains_the_open_stream_and_exits(lm_run):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "lmforge", "serve", str(lm_run), "--port", "0",
                             "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert "serving" in line, proc.stderr.read()
        url = line.split(" on ")[1].split()[0].rstrip("/")
        body = {"prompt": "a", "max_tokens": 150, "stream": True, "temperature": 0.0,
                "stop": None}
        with httpx.stream("POST", url + "/v1/completions", json=body, timeout=30) as res:
            lines = res.iter_lines()
            assert next(lines).startswith("data: ")
            proc.send_signal(signal.SIGTERM)  # mid-stream: the stream still completes
            rest = [ln for ln in lines if ln]
        assert rest[-1] == "data: [DONE]"
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_chunked_body_is_capped_while_read(client):
    def chunks():  # no Content-Length: the cap counts bytes as they arrive
        yield b'{"prompt": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'
    assert_error(client.post("/v1/completions", content=chunks()), 413)


def test_api_key_from_the_environment(monkeypatch):
    from lmforge.serve.app import api_key_from_env
    from lmforge.serve.cli import parse_origins

    monkeypatch.setenv("LMFORGE_API_KEY", "from-env")
    assert api_key_from_env(None) == "from-env" and api_key_from_env("given") == "given"
    monkeypatch.delenv("LMFORGE_API_KEY")
    assert api_key_from_env(None) is None
    assert parse_origins("http://a.test, http://b.test,") == ["http://a.test", "http://b.test"]
