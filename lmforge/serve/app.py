"""The FastAPI app over one run: OpenAI routes, the chat page, health and metrics.

    lmforge serve runs/s1 --port 8000
    curl localhost:8000/v1/completions -H 'content-type: application/json' \\
         -d '{"prompt": "ROMEO:", "max_tokens": 50}'

Endpoints (see docs/serve.md)
    GET  /                           the chat page (chat, completion and classifier views)
    GET  /v1/models, /v1/models/{id} the served run
    POST /v1/completions             OpenAI text completions ("stream": true for SSE)
    POST /v1/chat/completions        OpenAI chat, with the run's chat template
    POST /v1/classify                {"input": [...]} -> label names and probabilities
    GET  /health, /metrics           liveness; Prometheus text format

Requests pass `Guard` first (API key on /v1 routes, body-size cap, request counts); every
error leaves in OpenAI's shape {"error": {"message", "type", "param", "code"}}.
"""

from __future__ import annotations

import hmac
import json
import os
import warnings
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from ..config import ConfigError
from ..run import read_model_config
from .metrics import ServeMetrics
from .scheduler import Scheduler
from .schemas import APIError, Limits, error_body

STATIC = Path(__file__).with_name("static")
PAGES = {"chat.js": "text/javascript", "chat.css": "text/css"}
KNOWN_ROUTES = ("/v1/completions", "/v1/chat/completions", "/v1/classify", "/v1/models",
                "/health", "/metrics", "/")


@dataclass
class Settings:
    """Limits and access of one server (the `lmforge serve` options)."""

    api_key: str | None = None
    cors: list[str] = field(default_factory=list)
    max_batch: int = 16
    max_queue: int = 64
    max_body_bytes: int = 1 << 20
    max_prompt_tokens: int = 4096
    max_tokens: int = 1024


@dataclass
class Served:
    """Everything the routes need: the model behind its scheduler, tokenizer, template."""

    name: str
    head: str
    created: int
    limits: Limits
    metrics: ServeMetrics
    scheduler: Scheduler
    tokenizer: Any = None
    classifier: Any = None
    template: Any = None
    template_error: str = ""
    stop_ids: list[int] = field(default_factory=list)  # end of reply: eos, end-of-turn token
    stop_strings: list[str] = field(default_factory=list)  # end-of-turn markers not in the vocab


class BodyTooLarge(Exception):
    pass


class Guard:
    """Pure ASGI middleware (streams pass through untouched): API key on /v1 routes, the
    body-size cap (Content-Length, and counted while reading), request metrics."""

    def __init__(self, app, settings: Settings, metrics: ServeMetrics) -> None:
        self.app, self.settings, self.metrics = app, settings, metrics

    async def _reply(self, send, status: int, message: str, code: str, headers=()) -> None:
        raw = json.dumps(error_body(status, message, None, code)).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), *headers]})
        await send({"type": "http.response.body", "body": raw})

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        route = next((r for r in KNOWN_ROUTES if path == r or (r == "/v1/models" and
                                                                  path.startswith(r))), "other")
        status_seen = {}

        async def counting_send(message) -> None:
            if message["type"] == "http.response.start":
                status_seen["status"] = message["status"]
                self.metrics.requests.labels(route, str(message["status"])).inc()
            await send(message)

        key = self.settings.api_key
        if key and path.startswith("/v1") and scope["method"] != "OPTIONS":
            given = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            if not hmac.compare_digest(given.encode(), f"Bearer {key}".encode()):
                return await self._reply(counting_send, 401, "missing or wrong API key: send "
                                         "'Authorization: Bearer <key>'", "invalid_api_key",
                                         [(b"www-authenticate", b"Bearer")])
        limit = self.settings.max_body_bytes
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return await self._reply(counting_send, 413, f"the request body is larger than "
                                     f"{limit} bytes", "request_too_large")
        seen = 0

        async def capped_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge()
            return message

        try:
            await self.app(scope, capped_receive, counting_send)
        except BodyTooLarge:
            if "status" not in status_seen:
                await self._reply(counting_send, 413, f"the request body is larger than {limit} "
                                  f"bytes", "request_too_large")


def load_served(run_dir: Path, device: str, settings: Settings, metrics: ServeMetrics) -> Served:
    """Load the run behind a scheduler; read its chat template when it is a language model."""
    from ..tasks.registry import resolve, task_of_run

    head = read_model_config(run_dir).head
    spec = task_of_run(run_dir)
    created = int(run_dir.stat().st_mtime)
    if spec.serve == "classify":
        classifier = resolve(spec.load)(run_dir, device=device)
        return Served(run_dir.name, head, created, Limits(vocab_size=0), metrics,
                      Scheduler(None, None, metrics=metrics), classifier.tokenizer, classifier)
    if spec.serve != "completions":
        raise ConfigError(f"{run_dir}: serving supports language-model and classifier runs, not "
                          f"{spec.name} runs (model.head={head!r})")
    from ..generate import context_limit

    run = resolve(spec.load)(run_dir, device=device)
    context = context_limit(run.model)
    limits = Limits(max_prompt_tokens=settings.max_prompt_tokens, max_tokens=settings.max_tokens,
                    context=context, vocab_size=run.model.lm_head.weight.size(0))
    served = Served(run_dir.name, head, created, limits, metrics,
                    Scheduler(run.model, run.tokenizer, settings.max_batch, settings.max_queue,
                              metrics), run.tokenizer)
    try:
        from ..chat import ChatTemplate

        with warnings.catch_warnings():  # no template: ChatML, said once in the log below
            warnings.simplefilter("ignore")
            served.template = ChatTemplate.from_run(run_dir)
        stops = list(served.template.stop_strings)
    except Exception as err:  # noqa: BLE001 - completions still work without a template
        served.template_error, stops = str(err) or type(err).__name__, []
    ids = {s: run.tokenizer.token_to_id(s) for s in stops}
    served.stop_strings = [s for s, i in ids.items() if i is None]
    eos = run.tokenizer.eos_id
    served.stop_ids = sorted({i for i in ids.values() if i is not None} | ({eos} - {None}))
    return served


def create_app(run_dir: str | Path, device: str = "auto", settings: Settings | None = None):
    """Build the FastAPI app serving the run in `run_dir` (a language model or a classifier)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.middleware.cors import CORSMiddleware
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from starlette.exceptions import HTTPException

    from .routes import router

    settings = settings or Settings()
    run_dir = Path(run_dir)
    metrics = ServeMetrics()
    served = load_served(run_dir, device, settings, metrics)

    @asynccontextmanager
    async def lifespan(app):
        served.scheduler.start()
        yield
        served.scheduler.close()  # after uvicorn drained the open requests (SIGTERM)

    app = FastAPI(title=f"lmforge: {served.name}", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.state.lm = served
    app.include_router(router)

    @app.exception_handler(APIError)
    async def api_error(request: Request, err: APIError):
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, err: BodyTooLarge):
        return JSONResponse(error_body(413, f"the request body is larger than "
                                       f"{settings.max_body_bytes} bytes", None,
                                       "request_too_large"), status_code=413)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException):
        message = {404: f"no route {request.method} {request.url.path}",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(
            err.status_code, str(err.detail))
        code = {404: "unknown_url", 405: "method_not_allowed"}.get(err.status_code)
        return JSONResponse(error_body(err.status_code, message, None, code),
                            status_code=err.status_code, headers=getattr(err, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError):
        first = err.errors()[0] if err.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return JSONResponse(error_body(400, first.get("msg", "invalid request"), param),
                            status_code=400)

    @app.exception_handler(Exception)
    async def server_error(request: Request, err: Exception):
        return JSONResponse(error_body(500, f"internal error: {type(err).__name__}: {err}"),
                            status_code=500)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        page_html = (STATIC / "chat.html").read_text(encoding="utf-8")
        return page_html.replace("{{RUN}}", escape(served.name)).replace("{{KIND}}", served.head)

    @app.get("/static/{name}")
    def static(name: str):
        if name not in PAGES:
            raise APIError(404, f"no static file {name!r}", None, "unknown_url")
        return Response((STATIC / name).read_bytes(), media_type=PAGES[name])

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "queue": served.scheduler.queue_depth,
                "batch": len(served.scheduler.rows)}

    @app.get("/metrics")
    def prometheus():
        return Response(metrics.render(), media_type=metrics.content_type)

    app.add_middleware(Guard, settings=settings, metrics=metrics)
    if settings.cors:  # outermost: error replies carry the CORS headers too
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors, allow_methods=["*"],
                           allow_headers=["*"])
    return app


def api_key_from_env(given: str | None) -> str | None:
    """--api-key, else $LMFORGE_API_KEY, else None (no auth)."""
    return given or os.environ.get("LMFORGE_API_KEY") or None
