"""The scheduler: one thread owns the model; requests queue up and are decoded together.

    scheduler = Scheduler(model, tokenizer, max_batch=16, max_queue=64)
    scheduler.start()
    seq = Sequence(prompt_ids, DecodeOptions(max_new_tokens=50, temperature=0), sink=print)
    scheduler.submit([seq])          # QueueFull when the queue is full
    ...
    seq.cancel()                     # the client went away: the row leaves at the next step

Continuous batching: between two decoding steps, cancelled and finished rows leave the batch
and waiting sequences join it (up to `max_batch` rows), each prefilled on arrival (see
`engines.py`). Every row samples with its own options and its own seeded random stream, so
a row's tokens do not depend on which other rows share its batch: greedy and seeded outputs
equal one-at-a-time decoding (`generate.iter_tokens`) token for token.

Results flow out through each sequence's `sink(Delta)`, called on the model thread; the HTTP
layer hands them to its event loop. Other work that needs the model (classification) runs
on the same thread through `call(fn)`.
"""

from __future__ import annotations

import concurrent.futures
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..generate.sampling import (
    DecodeOptions,
    RowRandom,
    apply_repetition_penalty,
    draw,
    filter_logits,
    sample_next,
)
from ..generate.text import TextStream
from .engines import make_engine


class QueueFull(Exception):
    """The waiting queue has no room for the request (HTTP 429)."""


class SchedulerClosed(Exception):
    """The server is shutting down (HTTP 503)."""


@dataclass
class Delta:
    """What one step added to a sequence: new text (may be '' while a character or a possible
    stop string is incomplete), the token with its log-probability, and the finish reason
    ("stop", "length", "error") on the last delta."""

    text: str
    token: int | None = None  # None for the end-of-sequence / end-of-turn token
    logprob: float | None = None
    top_logprobs: list[tuple[int, float]] | None = None  # (id, logprob), best first
    finish_reason: str | None = None


class Sequence:
    """One row to decode: prompt ids, decoding options, where the results go.

    `stop_ids` end the row (the end-of-sequence token, a chat template's end-of-turn token);
    `options.stop` strings end it too (the text is cut before them). `top_logprobs` k >= 0
    reports the k most likely alternatives of each token; None reports no log-probs.
    """

    def __init__(self, prompt: Seq[int], options: DecodeOptions, sink: Callable[[Delta], None],
                 stop_ids: Seq[int] = (), top_logprobs: int | None = None) -> None:
        if not prompt:
            raise ValueError("a sequence needs at least one prompt token")
        self.prompt, self.options, self.sink = list(prompt), options, sink
        self.stop_ids = frozenset(int(i) for i in stop_ids)
        self.top_logprobs = top_logprobs
        self.tokens: list[int] = []  # every token chosen, the final stop token included
        self.pending: int | None = None  # chosen but not yet fed to the model
        self.finish_reason: str | None = None
        self.cancelled = False
        self.submitted = time.monotonic()
        self.first_token_at: float | None = None
        self._stream: TextStream | None = None
        self._random: RowRandom | None = None
        self._seen: torch.Tensor | None = None  # (1, V) tokens seen, for the repetition penalty

    def cancel(self) -> None:
        """Stop decoding this row (safe from any thread; takes effect before the next step)."""
        self.cancelled = True

    @property
    def done(self) -> bool:
        return self.finish_reason is not None or self.cancelled


class Scheduler:
    """Owns the model on one thread; decodes queued sequences with continuous batching."""

    def __init__(self, model: nn.Module, tokenizer: Any, max_batch: int = 16, max_queue: int = 64,
                 metrics: Any = None) -> None:
        if max_batch < 1 or max_queue < 1:
            raise ValueError(f"max_batch and max_queue must be >= 1, got {max_batch}, {max_queue}")
        self.model, self.tokenizer = model, tokenizer
        self.max_batch, self.max_queue, self.metrics = max_batch, max_queue, metrics
        self.engine = make_engine(model) if model is not None else None
        self.rows: list[Sequence] = []  # in the batch, in the engine's row order
        self._waiting: deque[Sequence] = deque()
        self._calls: deque[tuple[Callable[[], Any], concurrent.futures.Future]] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="lmforge-scheduler", daemon=True)

    # ------------------------------------------------------------------ any thread

    def start(self) -> Scheduler:
        self._thread.start()
        return self

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    def submit(self, seqs: Seq[Sequence]) -> None:
        """Queue sequences (all or none): QueueFull when they do not fit in the queue."""
        with self._cond:
            if self._closing:
                raise SchedulerClosed("the server is shutting down")
            if len(self._waiting) + len(seqs) > self.max_queue:
                raise QueueFull(f"the queue is full ({len(self._waiting)} of {self.max_queue} "
                                f"sequences waiting); retry later")
            self._waiting.extend(seqs)
            self._gauge()
            self._cond.notify()

    def call(self, fn: Callable[[], Any]) -> concurrent.futures.Future:
        """Run `fn()` on the model thread between two steps; its result as a future."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._cond:
            if self._closing:
                raise SchedulerClosed("the server is shutting down")
            self._calls.append((fn, future))
            self._cond.notify()
        return future

    def wake(self) -> None:
        """Have the model thread look at the queue now (after a cancel(), to free the slot)."""
        with self._cond:
            self._cond.notify()

    def close(self, timeout: float = 10.0) -> None:
        """Refuse new work, end every sequence still running or waiting, stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # ------------------------------------------------------------------ model thread

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(len(self._waiting))
            self.metrics.batch_size.set(len(self.rows))

    def _run(self) -> None:
        if self.model is not None:
            self.model.eval()
        with torch.inference_mode():
            while True:
                with self._cond:
                    while not (self._waiting or self._calls or self.rows or self._closing):
                        self._cond.wait()
                    if self._closing:
                        break
                    calls = list(self._calls)
                    self._calls.clear()
                    room = self.max_batch - sum(not s.done for s in self.rows)
                    arrivals = []
                    while self._waiting and len(arrivals) < room:
                        seq = self._waiting.popleft()
                        if not seq.cancelled:
                            arrivals.append(seq)
                    self._gauge()
                for fn, future in calls:
                    if future.set_running_or_notify_cancel():
                        try:
                            future.set_result(fn())
                        except BaseException as err:  # noqa: BLE001 - handed to the caller
                            future.set_exception(err)
                try:
                    self._advance(arrivals)
                except Exception as err:  # noqa: BLE001 - one bad batch must not kill the server
                    traceback.print_exc(file=sys.stderr)
                    self._fail(self.rows + arrivals, f"decoding failed: {err}")
                    self.rows, self.engine = [], make_engine(self.model)
        self._fail(self.rows + list(self._waiting), "the server is shutting down")
        self.rows = []
        self._waiting.clear()
        for _, future in self._calls:
            future.cancel()

    def _fail(self, seqs: Seq[Sequence], message: str) -> None:
        for seq in seqs:
            if not seq.done:
                seq.finish_reason = "error"
                self._send(seq, Delta(message, finish_reason="error"))

    def _send(self, seq: Sequence, delta: Delta) -> None:
        try:
            seq.sink(delta)
        except Exception:  # noqa: BLE001 - a broken consumer cancels its own row only
            seq.cancel()

    def _advance(self, arrivals: list[Sequence]) -> None:
        """One scheduling round: drop ended rows, step the batch, admit the arrivals."""
        self._drop_ended()
        if self.rows:
            logits = self.engine.step([s.pending for s in self.rows])  # (B, V)
            self._choose(self.rows, logits)
        joining = []
        for seq in arrivals:
            if seq.cancelled:
                continue
            if seq.options.max_new_tokens == 0:
                seq.finish_reason = "length"
                self._send(seq, Delta("", finish_reason="length"))
                continue
            try:
                self._prepare(seq)
            except Exception as err:  # noqa: BLE001 - one bad request fails alone
                self._fail([seq], f"cannot decode this request: {err}")
                continue
            joining.append(seq)
        if joining:  # one prefill for everyone who arrived this round
            logits = self.engine.admit([s.prompt for s in joining],
                                       [s.options.max_new_tokens for s in joining])  # (N, V)
            if self.metrics is not None:
                self.metrics.prompt_tokens.inc(sum(len(s.prompt) for s in joining))
            self.rows.extend(joining)
            self._choose(joining, logits)
        self._drop_ended()
        self._gauge()

    def _drop_ended(self) -> None:
        keep = [i for i, s in enumerate(self.rows) if not s.done]
        if len(keep) != len(self.rows):
            if self.metrics is not None:
                self.metrics.cancelled.inc(sum(s.cancelled and s.finish_reason is None
                                               for s in self.rows))
            self.engine.keep(keep)
            self.rows = [self.rows[i] for i in keep]

    def _prepare(self, seq: Sequence) -> None:
        opts = seq.options
        seq._stream = TextStream(self.tokenizer, opts.stop)
        if not opts.greedy:  # the same per-row stream iter_tokens uses for this seed
            seq._random = RowRandom([opts.seed]) if opts.seed is not None else RowRandom.fresh(1)
        if opts.repetition_penalty != 1.0:
            vocab = self.model.lm_head.weight.size(0)
            seq._seen = torch.zeros(1, vocab, dtype=torch.bool)
            seq._seen[0, seq.prompt] = True

    def _choose(self, rows: list[Sequence], logits: torch.Tensor) -> None:
        """Pick each row's next token (its own options), report it, mark finished rows.

        Rows sampling with the same settings are drawn together (filters and softmax are
        row-wise; each row reads its own random stream), the repetition penalty row by row:
        the same operations, in the same order, as `generate.sample_loop`."""
        logits = logits.float()  # (B, V)
        logp = F.log_softmax(logits, dim=-1)  # the unfiltered distribution, as sample_loop
        picks = logits.argmax(-1)  # (B,): greedy rows keep these
        groups: dict[tuple, list[int]] = {}
        for i, seq in enumerate(rows):
            opts = seq.options
            if seq._seen is not None:
                scores = apply_repetition_penalty(logits[i:i + 1], seq._seen.to(logits.device),
                                                  opts.repetition_penalty)
                picks[i] = sample_next(scores, opts.temperature, opts.top_k, opts.top_p,
                                       seq._random, opts.min_p)[0]
                seq._seen[0, int(picks[i])] = True
            elif not opts.greedy:
                groups.setdefault((opts.temperature, opts.top_k, opts.top_p, opts.min_p), []).append(i)
        for (temperature, top_k, top_p, min_p), members in groups.items():
            index = torch.tensor(members, device=logits.device)
            probs = F.softmax(filter_logits(logits[index] / temperature, top_k, top_p, min_p), -1)
            uniform = torch.cat([rows[i]._random.uniform() for i in members])  # (G,)
            picks[index] = draw(probs, uniform.to(probs.device))
        picks = picks.tolist()
        chosen = torch.tensor(picks, device=logp.device)
        lps = logp.gather(1, chosen[:, None])[:, 0].tolist()
        now = time.monotonic()
        for i, seq in enumerate(rows):
            top = None
            if seq.top_logprobs:
                values, ids = logp[i].topk(min(seq.top_logprobs, logp.size(-1)))
                top = list(zip(ids.tolist(), values.tolist()))
            self._record(seq, picks[i], lps[i], top, now)
        if self.metrics is not None:
            self.metrics.generated(len(rows))

    def _record(self, seq: Sequence, token: int, logprob: float,
                top: list[tuple[int, float]] | None, now: float) -> None:
        if seq.first_token_at is None:
            seq.first_token_at = now
            if self.metrics is not None:
                self.metrics.ttft.observe(now - seq.submitted)
        seq.tokens.append(token)
        if token in seq.stop_ids:
            seq.finish_reason = "stop"
            self._send(seq, Delta(seq._stream.flush(), None, logprob, top, "stop"))
            return
        text = seq._stream.push(token)
        if seq._stream.stopped:
            seq.finish_reason = "stop"
        elif len(seq.tokens) >= seq.options.max_new_tokens:
            seq.finish_reason = "length"
            text += seq._stream.flush()
        seq.pending = token
        self._send(seq, Delta(text, token, logprob, top, seq.finish_reason))
