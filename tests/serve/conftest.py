"""Shared fixtures: a tiny trained GPT run with a ChatML chat template, and a real uvicorn
server on 127.0.0.1 (a free port) serving it from a background thread."""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager

import pytest

from lmforge.cli import main

CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + "
          "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|im_start|>assistant\\n' }}{% endif %}")
TINY = ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.max_len=256",
        "train.batch_size=4", "train.max_steps=5", "train.eval_every=5", "train.eval_batches=1",
        "train.progress=false", "train.sample_tokens=0"]


@pytest.fixture(scope="session")
def lm_run(tmp_path_factory):
    """A char-level GPT (5 training steps) whose run holds a ChatML tokenizer_config.json."""
    tmp = tmp_path_factory.mktemp("serve")
    corpus = tmp / "c.txt"
    corpus.write_text(("<|im_start|>user\nthe quick brown fox?<|im_end|>\n<|im_start|>assistant\n"
                       "jumps over the lazy dog.<|im_end|>\n") * 40)
    assert main(["pretrain", "--data", str(corpus), "--out", str(tmp / "run"),
                 f"data.cache_dir={tmp / 'cache'}", *TINY]) == 0
    (tmp / "run" / "tokenizer_config.json").write_text(json.dumps(
        {"chat_template": CHATML, "eos_token": "<eos>", "bos_token": None}))
    return tmp / "run"


@pytest.fixture(scope="session")
def live_server():
    """A context manager: `with live_server(app) as url:` serves app on a free port."""
    return serve_in_thread


@contextmanager
def serve_in_thread(app):
    """Serve `app` with uvicorn on 127.0.0.1; yields the base URL."""
    import uvicorn

    from lmforge.serve.cli import bind

    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="session")
def slow_and_endless():
    """`slow_and_endless(app, delay_s)`: see `make_slow_and_endless`."""
    return make_slow_and_endless


def make_slow_and_endless(app, delay_s: float):
    """Test instrumentation: each decoding step sleeps `delay_s` and <eos> is never chosen,
    so every request runs to max_tokens, slowly enough to act while it streams."""
    served = app.state.lm
    engine, eos = served.scheduler.engine, served.tokenizer.eos_id
    step, admit = engine.step, engine.admit

    def no_eos(logits):
        logits[:, eos] = float("-inf")
        return logits

    engine.step = lambda tokens: (time.sleep(delay_s), no_eos(step(tokens)))[1]
    engine.admit = lambda prompts, n: no_eos(admit(prompts, n))
    return app
