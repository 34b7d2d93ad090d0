"""FastAPI app over one run.

    lmforge serve runs/s1 --port 8000
    curl localhost:8000/v1/completions -d '{"prompt": "ROMEO:", "max_tokens": 50}' -H 'content-type: application/json'

Endpoints
    GET  /                     the web playground (language models and classifiers)
    GET  /v1/models            the served run
    POST /v1/completions       OpenAI-style text completion; "stream": true sends server-sent events
    POST /v1/classify          {"texts": [...]} -> label and probabilities (classifier runs)
    GET  /health
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from ..config import ConfigError
from ..run import read_model_config

PLAYGROUND = Path(__file__).with_name("playground.html")


class CompletionRequest(dict):
    """Fields of /v1/completions (OpenAI names; top_k, min_p, repetition_penalty, seed extra)."""

    FIELDS = {"prompt": "", "max_tokens": 64, "temperature": 1.0, "top_p": 1.0, "top_k": 0,
              "min_p": 0.0, "repetition_penalty": 1.0, "n": 1, "stop": None, "seed": None,
              "stream": False, "model": None}

    @classmethod
    def parse(cls, body: dict[str, Any]) -> "CompletionRequest":
        unknown = set(body) - set(cls.FIELDS)
        if unknown:
            raise ValueError(f"unknown field(s) {sorted(unknown)}; valid: {sorted(cls.FIELDS)}")
        req = cls({**cls.FIELDS, **body})
        if isinstance(req["prompt"], list):
            if len(req["prompt"]) != 1:
                raise ValueError("send one prompt per request (prompt as a string)")
            req["prompt"] = req["prompt"][0]
        if not isinstance(req["prompt"], str):
            raise ValueError("prompt must be a string")
        stop = req["stop"]
        req["stop"] = [stop] if isinstance(stop, str) else list(stop or [])
        return req

    def decode_options(self) -> dict[str, Any]:
        return {"max_new_tokens": int(self["max_tokens"]), "temperature": float(self["temperature"]),
                "top_p": float(self["top_p"]), "top_k": int(self["top_k"]),
                "min_p": float(self["min_p"]), "repetition_penalty": float(self["repetition_penalty"]),
                "stop": self["stop"], "seed": self["seed"]}


def create_app(run_dir: str | Path, device: str = "auto"):
    """Build the FastAPI app serving the run in `run_dir` (a language model or a classifier)."""
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

    run_dir = Path(run_dir)
    from ..tasks.registry import resolve, task_of_run

    head = read_model_config(run_dir).head
    spec = task_of_run(run_dir)
    if spec.serve == "classify":
        classifier, run = resolve(spec.load)(run_dir, device=device), None
    elif spec.serve == "completions":
        classifier, run = None, resolve(spec.load)(run_dir, device=device)
    else:
        raise ConfigError(f"{run_dir}: serving supports causal_lm and classifier runs, not {head!r}")
    name = run_dir.name
    lock = threading.Lock()  # one generation at a time: the model is not re-entrant on CPU
    app = FastAPI(title=f"lmforge: {name}")

    @app.get("/", response_class=HTMLResponse)
    def playground() -> str:
        return PLAYGROUND.read_text(encoding="utf-8").replace("{{RUN}}", name).replace("{{KIND}}", head)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "lmforge",
                                            "kind": head}]}

    @app.post("/v1/completions")
    def completions(body: dict[str, Any]):
        if run is None:
            raise HTTPException(400, f"{name} is a classifier; use /v1/classify")
        try:
            req = CompletionRequest.parse(body)
            options = req.decode_options()
            from ..generate import DecodeOptions

            DecodeOptions.from_kwargs(**options)  # validate before streaming starts
        except (ValueError, TypeError) as err:
            raise HTTPException(400, str(err)) from None
        cid, created = f"cmpl-{uuid.uuid4().hex[:16]}", int(time.time())
        if req["stream"]:
            def events():
                with lock:
                    for piece in run.stream(req["prompt"], **options):
                        chunk = {"id": cid, "object": "text_completion", "created": created,
                                 "model": name, "choices": [{"index": 0, "text": piece,
                                                             "finish_reason": None}]}
                        yield f"data: {json.dumps(chunk)}\n\n"
                yield "data: [DONE]\n\n"
            return StreamingResponse(events(), media_type="text/event-stream")
        choices = []
        with lock:
            for i in range(int(req["n"])):
                opts = dict(options)
                if opts["seed"] is not None:
                    opts["seed"] = int(opts["seed"]) + i
                gen = run.generate(req["prompt"], return_scores=True, **opts)
                choices.append({"index": i, "text": gen.text,
                                "finish_reason": "stop" if gen.finish_reason != "length" else "length",
                                "logprob": gen.logprob})
        n_prompt = len(run.tokenizer.encode(req["prompt"]))
        n_out = sum(len(run.tokenizer.encode(c["text"])) for c in choices)
        return JSONResponse({"id": cid, "object": "text_completion", "created": created,
                             "model": name, "choices": choices,
                             "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_out,
                                       "total_tokens": n_prompt + n_out}})

    @app.post("/v1/classify")
    def classify(body: dict[str, Any]):
        if classifier is None:
            raise HTTPException(400, f"{name} is a language model; use /v1/completions")
        texts = body.get("texts", body.get("text"))
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise HTTPException(400, "send {\"texts\": [\"...\", ...]}")
        with lock:
            return {"model": name, "predictions": classifier.predict(texts)}

    return app


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lmforge serve",
                                     description="Serve a run over HTTP with a web playground.")
    parser.add_argument("run")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    try:
        import uvicorn
    except ImportError:
        raise ConfigError("serving needs fastapi and uvicorn: pip install 'lmforge[serve]'") from None
    app = create_app(args.run, args.device)
    print(f"serving {args.run} on http://{args.host}:{args.port}/  (playground at /)")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
