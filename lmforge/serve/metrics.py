"""Prometheus metrics of one server (`GET /metrics`, text exposition format).

Each app gets its own `CollectorRegistry`, so several servers (tests) never share counters.
The scheduler thread reports tokens and time to first token; the routes report requests.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServeMetrics:
    """Counters, gauges and histograms named lmforge_*; `render()` is the /metrics body."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, window_s: float = 10.0) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("lmforge_requests", "HTTP requests answered, by route and status",
                                ["route", "status"], registry=r)
        self.prompt_tokens = Counter("lmforge_prompt_tokens", "Prompt tokens prefilled", registry=r)
        self.completion_tokens = Counter("lmforge_completion_tokens", "Tokens generated",
                                         registry=r)
        self.queue_depth = Gauge("lmforge_queue_depth", "Sequences waiting for a batch slot",
                                 registry=r)
        self.batch_size = Gauge("lmforge_batch_size", "Sequences being decoded together",
                                registry=r)
        self.ttft = Histogram("lmforge_time_to_first_token_seconds",
                              "From request accepted to its first token", buckets=TTFT_BUCKETS,
                              registry=r)
        self.tokens_per_second = Gauge("lmforge_tokens_per_second",
                                       f"Tokens generated per second over the last {window_s:g} s",
                                       registry=r)
        self.cancelled = Counter("lmforge_cancelled_sequences",
                                 "Sequences cancelled (client disconnected or stopped)", registry=r)
        self.rejected = Counter("lmforge_rejected_requests", "Requests refused with 429 (queue full)",
                                registry=r)
        self._window_s = window_s
        self._recent: deque[tuple[float, int]] = deque()  # (time, tokens) of recent steps
        self._lock = threading.Lock()

    def generated(self, n: int) -> None:
        """`n` tokens were generated just now (one decoding step of the batch)."""
        self.completion_tokens.inc(n)
        now = time.monotonic()
        with self._lock:
            self._recent.append((now, n))
            self._refresh(now)

    def _refresh(self, now: float) -> None:
        while self._recent and self._recent[0][0] < now - self._window_s:
            self._recent.popleft()
        total = sum(n for _, n in self._recent)
        self.tokens_per_second.set(total / self._window_s)

    def render(self) -> bytes:
        with self._lock:
            self._refresh(time.monotonic())  # an idle server decays to 0 tokens/s
        return generate_latest(self.registry)
