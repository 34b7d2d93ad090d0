"""The official `openai` package against a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import re
import time

import httpx
import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")

from lmforge.run import load_run
from lmforge.serve.app import Settings, create_app


@pytest.fixture(scope="module")
def base_url(lm_run, live_server):
    with live_server(create_app(lm_run, "cpu", Settings(api_key="sekrit"))) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url):
    return openai.OpenAI(base_url=base_url + "/v1", api_key="sekrit", max_retries=0, timeout=30)


def test_completion_equals_run_generate(client, lm_run):
    res = client.completions.create(model="run", prompt="the ", max_tokens=12, temperature=0.7,
                                    seed=3)
    expected = load_run(lm_run, device="cpu").generate("the ", max_new_tokens=12,
                                                       temperature=0.7, seed=3)
    assert res.choices[0].text == expected
    assert res.usage.prompt_tokens == 4 and res.usage.completion_tokens <= 12
    assert res.choices[0].finish_reason in ("stop", "length")


def test_streaming_equals_non_streaming_and_ends_with_usage(client):
    kwargs = {"model": "run", "prompt": ["the ", "fox"], "max_tokens": 10, "temperature": 0, "n": 2}
    full = client.completions.create(**kwargs)
    texts, finish, usage = {}, {}, None
    for chunk in client.completions.create(**kwargs, stream=True,
                                           stream_options={"include_usage": True}):
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            texts[c.index] = texts.get(c.index, "") + c.text
            if c.finish_reason:
                finish[c.index] = c.finish_reason
    assert len(full.choices) == 4  # 2 prompts x n=2, indexed prompt * n + j
    assert texts == {c.index: c.text for c in full.choices}
    assert finish == {c.index: c.finish_reason for c in full.choices}
    assert usage.completion_tokens == full.usage.completion_tokens


def test_chat_streams_and_stops_at_the_end_of_turn(client):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "fox?"}]
    res = client.chat.completions.create(model="run", messages=messages, max_tokens=40,
                                         temperature=0, logprobs=True, top_logprobs=2)
    reply = res.choices[0].message
    assert reply.role == "assistant" and "<|im_end|>" not in reply.content
    assert len(res.choices[0].logprobs.content[0].top_logprobs) == 2
    pieces = []
    stream = client.chat.completions.create(model="run", messages=messages, max_tokens=40,
                                            temperature=0, stream=True)
    for chunk in stream:
        pieces.append(chunk.choices[0].delta.content or "")
        last = chunk.choices[0].finish_reason
    assert "".join(pieces) == reply.content and last == res.choices[0].finish_reason


def test_breaking_out_of_a_stream_then_the_next_request_works(client, lm_run, base_url):
    for _ in range(3):
        stream = client.completions.create(model="run", prompt="a", max_tokens=150, stream=True,
                                           extra_body={"min_p": 0.0})
        for i, _chunk in enumerate(stream):
            if i == 2:
                break
        stream.close()  # the client hangs up mid-stream
    deadline = time.monotonic() + 10
    while httpx.get(base_url + "/health").json()["batch"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert httpx.get(base_url + "/health").json() == {"status": "ok", "queue": 0, "batch": 0}
    metrics = httpx.get(base_url + "/metrics").text
    cancelled = float(re.search(r"^lmforge_cancelled_sequences_total (\S+)$", metrics, re.MULTILINE)[1])
    assert cancelled >= 1  # (a row may also end at <eos> before the client hangs up)
    res = client.completions.create(model="run", prompt="the ", max_tokens=5, temperature=0)
    assert res.choices[0].text == load_run(lm_run, device="cpu").generate(
        "the ", max_new_tokens=5, temperature=0)


def test_errors_reach_the_sdk_with_their_field(client, base_url):
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model="run", prompt="a", max_tokens=-1)
    assert err.value.body["param"] == "max_tokens" and "max_tokens" in err.value.message
    with pytest.raises(openai.NotFoundError) as err:
        client.completions.create(model="gpt-4", prompt="a")
    assert err.value.body["code"] == "model_not_found"
    anonymous = openai.OpenAI(base_url=base_url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        anonymous.models.list()
    models = client.models.list().data
    assert [m.id for m in models] == ["run"] and models[0].created > 0
    assert client.models.retrieve("run").id == "run"
