"""The OpenAI routes: /v1/models, /v1/completions, /v1/chat/completions, /v1/classify.

Handlers parse the body themselves (so malformed JSON is a 400 in OpenAI's shape, never
FastAPI's 422), queue one scheduler `Sequence` per choice, and either stream server-sent
events as deltas arrive or wait for every choice. A client that goes away cancels its
sequences: the stream's generator is closed (see `EventStream`), and a non-streaming
handler polls `request.is_disconnected()` while it waits.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from .scheduler import Delta, QueueFull, SchedulerClosed, Sequence
from .schemas import (
    APIError,
    GenerationRequest,
    bad,
    error_body,
    parse_chat,
    parse_classify,
    parse_completion,
)

router = APIRouter()
POLL_S = 0.25  # how often a waiting non-streaming request checks that its client is there


class EventStream(StreamingResponse):
    """Server-sent events of a job. However the response ends (finished, client gone, send
    failed before the first event), the generator is closed and the job's sequences are
    cancelled, so a vanished client never keeps its slots."""

    def __init__(self, job: Job, events: AsyncIterator[str]) -> None:
        super().__init__(events, media_type="text/event-stream",
                         headers={"cache-control": "no-cache", "x-accel-buffering": "no"})
        self.job = job

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()
            self.job.cancel()


def sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def read_json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as err:  # JSONDecodeError, bad UTF-8, deep nesting
        reason = "nested too deeply" if isinstance(err, RecursionError) else str(err)
        raise APIError(400, f"the request body is not valid JSON: {reason}", None,
                       "invalid_json") from None
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object", None, "invalid_json")
    return body


def check_model(lm: Any, body: dict[str, Any]) -> None:
    model = body.get("model")
    if model is not None and model != lm.name:
        raise APIError(404, f"the model {model!r} does not exist; this server serves "
                            f"{lm.name!r} (GET /v1/models)", "model", "model_not_found")


def model_entry(lm: Any) -> dict[str, Any]:
    return {"id": lm.name, "object": "model", "created": lm.created, "owned_by": "lmforge",
            "kind": lm.head, "context_length": lm.limits.context}


@router.get("/v1/models")
def list_models(request: Request) -> dict[str, Any]:
    return {"object": "list", "data": [model_entry(request.app.state.lm)]}


@router.get("/v1/models/{model_id:path}")
def get_model(model_id: str, request: Request) -> dict[str, Any]:
    lm = request.app.state.lm
    if model_id != lm.name:
        raise APIError(404, f"the model {model_id!r} does not exist", "model", "model_not_found")
    return model_entry(lm)


# --------------------------------------------------------------------------- generation


class Job:
    """The sequences of one request, and the inbox their deltas arrive in.

    The model thread appends (index, delta) to `inbox` and wakes the event loop at most once
    until the loop has drained it: under load, many tokens cost one wake-up. A non-streaming
    job is woken only when a choice finishes.
    """

    def __init__(self, lm: Any, req: GenerationRequest) -> None:
        self.loop, self.ready = asyncio.get_running_loop(), asyncio.Event()
        self.inbox: deque[tuple[int, Delta]] = deque()
        self._wake_pending = False
        self.lm, self.req, self.seqs = lm, req, []
        for p, prompt in enumerate(req.prompts):
            for j in range(req.n):
                opts = dataclasses.replace(req.options, stop=list(req.options.stop))
                if opts.seed is not None:
                    opts.seed += j  # sample j of a prompt: seed + j, as `lmforge generate`
                sink = functools.partial(self._arrive, p * req.n + j)
                self.seqs.append(Sequence(prompt, opts, sink, req.stop_ids, req.logprobs))
        try:
            lm.scheduler.submit(self.seqs)
        except QueueFull as err:
            lm.metrics.rejected.inc()
            raise APIError(429, str(err), None, "queue_full") from None
        except SchedulerClosed as err:
            raise APIError(503, str(err), None, "shutting_down") from None

    def _arrive(self, index: int, delta: Delta) -> None:  # model thread
        self.inbox.append((index, delta))
        if (self.req.stream or delta.finish_reason) and not self._wake_pending:
            self._wake_pending = True
            self.loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:  # event loop
        self._wake_pending = False
        self.ready.set()

    async def next_batch(self, timeout: float | None = None) -> list[tuple[int, Delta]]:
        """The deltas arrived so far (waits for some; [] after `timeout` seconds)."""
        if not self.inbox:
            try:
                await asyncio.wait_for(self.ready.wait(), timeout)
            except asyncio.TimeoutError:
                return []
        self.ready.clear()
        out = []
        while self.inbox:
            out.append(self.inbox.popleft())
        return out

    def cancel(self) -> None:
        for seq in self.seqs:
            seq.cancel()
        self.lm.scheduler.wake()

    def usage(self) -> dict[str, int]:
        prompt = sum(len(p) for p in self.req.prompts)
        done = sum(len(s.tokens) for s in self.seqs)
        return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}

    def token_text(self, token: int) -> str:
        return self.lm.tokenizer.decode([token])

    def top(self, delta: Delta) -> list[tuple[str, float]]:
        return [(self.token_text(t), lp) for t, lp in (delta.top_logprobs or [])]


def completion_logprobs(job: Job, deltas: list[Delta], offset: int) -> dict[str, Any]:
    """The legacy completions `logprobs` object of some deltas (end tokens left out)."""
    out: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for d in deltas:
        if d.token is None:
            continue
        text = job.token_text(d.token)
        out["tokens"].append(text)
        out["token_logprobs"].append(d.logprob)
        out["top_logprobs"].append(dict(job.top(d)) if job.req.logprobs else None)
        out["text_offset"].append(offset)
        offset += len(text)
    return out


def chat_logprobs(job: Job, deltas: list[Delta]) -> dict[str, Any]:
    content = []
    for d in deltas:
        if d.token is None:
            continue
        text = job.token_text(d.token)
        content.append({"token": text, "logprob": d.logprob, "bytes": list(text.encode()),
                        "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())}
                                         for t, lp in job.top(d)]})
    return {"content": content}


async def collect(job: Job, request: Request) -> list[list[Delta]]:
    """Wait for every choice to finish (cancelling them if the client disconnects)."""
    deltas: list[list[Delta]] = [[] for _ in job.seqs]
    left = len(job.seqs)
    while left:
        arrived = await job.next_batch(POLL_S)
        if not arrived and await request.is_disconnected():
            raise APIError(499, "the client disconnected")
        for index, delta in arrived:
            deltas[index].append(delta)
            if delta.finish_reason == "error":
                raise APIError(500 if "shutting" not in delta.text else 503, delta.text)
            left -= delta.finish_reason is not None
    return deltas


def merge(arrived: list[tuple[int, Delta]]) -> list[tuple[int, Delta]]:
    """Consecutive text deltas of one choice as one (fewer, larger chunks under load)."""
    out: list[tuple[int, Delta]] = []
    for index, d in arrived:
        if out and out[-1][0] == index and out[-1][1].finish_reason is None:
            last = out[-1][1]
            out[-1] = (index, Delta(last.text + d.text, d.token, None, None, d.finish_reason))
        else:
            out.append((index, d))
    return out


async def stream(job: Job, chunk: Any) -> AsyncIterator[str]:
    """SSE of deltas as they arrive: `chunk(index, delta)` builds each event (None = skip)."""
    try:
        left = len(job.seqs)
        while left:
            arrived = await job.next_batch()
            if job.req.logprobs is None:  # log-probs stay one token per chunk
                arrived = merge(arrived)
            events = []
            for index, delta in arrived:
                if delta.finish_reason == "error":
                    yield "".join(events) + sse(error_body(500, delta.text))
                    return
                event = chunk(index, delta)
                if event is not None:
                    events.append(sse(event))
                left -= delta.finish_reason is not None
            if events:
                yield "".join(events)
        if job.req.include_usage:
            yield sse({**chunk(None, None), "usage": job.usage()})
        yield "data: [DONE]\n\n"
    finally:
        job.cancel()  # no-op for finished rows; frees the slots of a vanished client


def header(kind: str, lm: Any) -> dict[str, Any]:
    prefix = "cmpl" if kind == "text_completion" else "chatcmpl"
    return {"id": f"{prefix}-{uuid.uuid4().hex[:24]}", "object": kind, "created": int(time.time()),
            "model": lm.name}


async def language_model_request(request: Request) -> tuple[Any, dict[str, Any]]:
    """The served language model and the request's JSON body; a classifier run is refused."""
    lm = request.app.state.lm
    body = await read_json(request)
    check_model(lm, body)
    if lm.scheduler is None or lm.head != "causal_lm":
        raise APIError(400, f"{lm.name} is a classifier; use POST /v1/classify", "model",
                       "wrong_endpoint")
    return lm, body


@router.post("/v1/completions")
async def completions(request: Request):
    lm, body = await language_model_request(request)
    req = parse_completion(body, lm.tokenizer, lm.limits)
    eos = lm.tokenizer.eos_id
    req.stop_ids = [eos] if eos is not None else []  # a completion ends at end-of-sequence
    job = Job(lm, req)
    head = header("text_completion", lm)
    offsets = [len(req.echo[i // req.n]) if req.echo else 0 for i in range(len(job.seqs))]
    if req.stream:
        echoed: set[int] = set()

        def chunk(index: int | None, d: Delta | None) -> dict[str, Any] | None:
            if index is None:
                return {**head, "choices": []}
            text = d.text
            if req.echo and index not in echoed:
                echoed.add(index)
                text = req.echo[index // req.n] + text
            if not text and d.finish_reason is None and req.logprobs is None:
                return None
            lp = completion_logprobs(job, [d], offsets[index]) if req.logprobs is not None else None
            offsets[index] += len(d.text)
            out = {**head, "choices": [{"index": index, "text": text, "logprobs": lp,
                                        "finish_reason": d.finish_reason}]}
            return {**out, "usage": None} if req.include_usage else out
        return EventStream(job, stream(job, chunk))
    try:
        results = await collect(job, request)
    finally:
        job.cancel()
    choices = []
    for index, deltas in enumerate(results):
        text = "".join(d.text for d in deltas)
        echo = req.echo[index // req.n] if req.echo else ""
        lp = completion_logprobs(job, deltas, len(echo)) if req.logprobs is not None else None
        choices.append({"index": index, "text": echo + text, "logprobs": lp,
                        "finish_reason": deltas[-1].finish_reason})
    return JSONResponse({**head, "choices": choices, "usage": job.usage()})


@router.post("/v1/chat/completions")
async def chat_completions(request: Request):
    lm, body = await language_model_request(request)
    if lm.template is None:
        raise APIError(400, f"{lm.name} has no chat template ({lm.template_error})", "messages",
                       "no_chat_template")
    req = parse_chat(body, lm.template, lm.tokenizer, lm.limits, lm.stop_ids, lm.stop_strings)
    job = Job(lm, req)
    head = header("chat.completion", lm)
    if req.stream:
        head["object"] = "chat.completion.chunk"
        started: set[int] = set()

        def chunk(index: int | None, d: Delta | None) -> dict[str, Any] | None:
            if index is None:
                return {**head, "choices": []}
            delta: dict[str, Any] = {}
            if index not in started:
                started.add(index)
                delta["role"] = "assistant"
            if d.text or "role" in delta:
                delta["content"] = d.text
            if not delta and d.finish_reason is None and req.logprobs is None:
                return None
            lp = chat_logprobs(job, [d]) if req.logprobs is not None else None
            out = {**head, "choices": [{"index": index, "delta": delta, "logprobs": lp,
                                        "finish_reason": d.finish_reason}]}
            return {**out, "usage": None} if req.include_usage else out
        return EventStream(job, stream(job, chunk))
    try:
        results = await collect(job, request)
    finally:
        job.cancel()
    choices = [{"index": i, "message": {"role": "assistant", "content": "".join(d.text for d in ds)},
                "logprobs": chat_logprobs(job, ds) if req.logprobs is not None else None,
                "finish_reason": ds[-1].finish_reason} for i, ds in enumerate(results)]
    return JSONResponse({**head, "choices": choices, "usage": job.usage()})


@router.post("/v1/classify")
async def classify(request: Request):
    lm = request.app.state.lm
    body = await read_json(request)
    check_model(lm, body)
    if lm.classifier is None:
        raise APIError(400, f"{lm.name} is a language model; use POST /v1/completions or "
                            f"/v1/chat/completions", "model", "wrong_endpoint")
    texts = parse_classify(body)
    if len(texts) > lm.limits.max_classify:
        raise bad("input", f"send at most {lm.limits.max_classify} texts per request, got {len(texts)}")
    try:
        future = lm.scheduler.call(lambda: lm.classifier.predict(texts))
    except SchedulerClosed as err:
        raise APIError(503, str(err), None, "shutting_down") from None
    predictions = await asyncio.wrap_future(future)
    return {"object": "list", "model": lm.name, "labels": list(lm.classifier.labels.names),
            "predictions": predictions}
