"""The HTTP server, in process (TestClient: no sockets, no network)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from lmforge.cli import main  # noqa: E402
from lmforge.run import load_run  # noqa: E402
from lmforge.serve.app import create_app  # noqa: E402

TINY = ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.max_len=32",
        "train.batch_size=4", "train.max_steps=5", "train.eval_every=5", "train.eval_batches=1",
        "train.progress=false", "train.sample_tokens=0"]


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    corpus = tmp / "c.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog.\n" * 50)
    assert main(["pretrain", "--data", str(corpus), "--out", str(tmp / "run"),
                 f"data.cache_dir={tmp / 'cache'}", *TINY]) == 0
    return tmp / "run"


def test_completion_matches_run_generate(lm_run):
    client = TestClient(create_app(lm_run, device="cpu"))
    body = {"prompt": "the ", "max_tokens": 12, "temperature": 0.7, "seed": 3}
    res = client.post("/v1/completions", json=body)
    assert res.status_code == 200
    data = res.json()
    expected = load_run(lm_run, device="cpu").generate("the ", max_new_tokens=12, temperature=0.7, seed=3)
    assert data["choices"][0]["text"] == expected
    assert data["usage"]["prompt_tokens"] == 4


def test_streaming_sends_the_same_text(lm_run):
    client = TestClient(create_app(lm_run, device="cpu"))
    body = {"prompt": "the ", "max_tokens": 12, "temperature": 0}
    full = client.post("/v1/completions", json=body).json()["choices"][0]["text"]
    with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as res:
        lines = [line for line in res.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    pieces = [json.loads(line[6:])["choices"][0]["text"] for line in lines[:-1]]
    assert "".join(pieces) == full


def test_bad_requests_are_400_with_a_reason(lm_run):
    client = TestClient(create_app(lm_run, device="cpu"))
    res = client.post("/v1/completions", json={"prompt": "a", "top_p": 1.5})
    assert res.status_code == 400 and "top_p" in res.json()["detail"]
    res = client.post("/v1/completions", json={"prompt": "a", "temprature": 1})
    assert res.status_code == 400 and "temprature" in res.json()["detail"]
    assert client.post("/v1/classify", json={"texts": ["a"]}).status_code == 400


def test_playground_and_models(lm_run):
    client = TestClient(create_app(lm_run, device="cpu"))
    page = client.get("/")
    assert page.status_code == 200 and "lmforge playground" in page.text and "{{" not in page.text
    assert client.get("/v1/models").json()["data"][0]["id"] == "run"
