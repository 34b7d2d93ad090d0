"""Serve a run over HTTP: an OpenAI-compatible API with continuous batching, and a chat page.

    app.py        the FastAPI app: middleware (API key, body cap, metrics), pages, handlers
    routes.py     /v1/models, /v1/completions, /v1/chat/completions, /v1/classify
    schemas.py    request fields and OpenAI-shaped errors
    scheduler.py  the thread that owns the model; queue, cancellation, per-row sampling
    engines.py    continuous batching over the KV cache (or one state per row)
    metrics.py    Prometheus metrics
    cli.py        `lmforge serve`
    static/       the chat page (HTML, JS, CSS; no build step)
"""
