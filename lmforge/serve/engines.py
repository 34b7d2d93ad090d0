"""Decoding engines of the scheduler: rows join and leave a running batch between steps.

An engine holds the model's decoding state of every row in the batch and knows three moves,
all called from the scheduler's model thread only:

    admit(prompts, max_new_tokens)    -> logits (N, V) of the newcomers' first new tokens
    step(tokens)                      -> logits (B, V): feed each row its last chosen token
    keep(rows)                        -> keep only these rows, in this order (others leave)

`KVBatch` decodes all rows together over one KV cache (GPT, Llama: backbones with
`init_state`): continuous batching. `SoloRows` keeps one decoding state per row and steps them
one after the other (recurrent, convolutional and bigram models, whose states cannot be
merged); requests still interleave token by token.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..generate.causal import start_decoding


def _accepts_positions(backbone: nn.Module) -> bool:
    return "positions" in inspect.signature(backbone.forward).parameters


class KVBatch:
    """Continuous batching over one KV cache shared by all rows.

    The cache has one column clock: every step appends one column to every row. Row b's real
    tokens sit in columns [pad[b], length); `mask` (B, capacity) is True exactly there, and
    each token gets its true position (column - pad[b]), so every row computes what it would
    alone (the left-padding scheme of `generate.causal`, kept open while rows come and go).

    Newcomers whose prompts (at most P tokens) fit in the columns so far are prefilled
    together into columns [length - P, length) and their cache rows appended to the batch.
    Columns move only all together (a *shift*): attention depends on the distance between a
    query's and a key's column (rotary) or on explicit positions (learned), and moving every
    row by the same amount keeps both. A prompt longer than the columns so far shifts the
    batch right to make room; when the next column would pass the model's context, or when
    most columns have become padding (long-lived rows left), the batch shifts left over the
    columns no row uses. A shift copies the cache; only when no column is free (one row
    fills the whole context) is the batch *rebuilt*: every row's tokens so far are prefilled
    again, left-padded into fresh columns starting at 0.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model, self.backbone = model, model.backbone
        self.limit = int(model.config.max_len)  # rotary tables / learned positions end here
        self.device = model.lm_head.weight.device
        self.positions_ok = _accepts_positions(self.backbone)
        self.fed: list[list[int]] = []  # each row's tokens now in the cache (for a rebuild)
        self.caches: list[Any] | None = None  # one KVCache per layer, (B, H, capacity, hd)
        self.mask: torch.Tensor | None = None  # (B, capacity) True at real cached tokens
        self.pad: torch.Tensor | None = None  # (B,) column of each row's first real token
        self.rebuilds = 0  # how often the batch was re-prefilled (tests, benchmarks)
        self.appends = 0  # how often newcomers joined without a rebuild
        self.shifts = 0  # how often every row's columns moved together

    @property
    def length(self) -> int:
        """Columns used so far (the same for every row)."""
        return self.caches[0].length if self.caches else 0

    def __len__(self) -> int:
        return len(self.fed)

    def _capacity(self, need: int) -> int:
        # grow in steps of 64 columns: no reallocation per token, no max_len-sized buffers
        return min(self.limit, -(-need // 64) * 64)

    def _prefill(self, rows: list[list[int]], offset: int, capacity: int
                 ) -> tuple[torch.Tensor, list[Any], torch.Tensor, torch.Tensor]:
        """Left-pad `rows` so their last tokens end at column offset + P; run them through a
        fresh cache of `capacity` columns. Returns (logits (N, V), caches, mask, pad)."""
        P = max(len(r) for r in rows)
        N, dev = len(rows), self.device
        ids = torch.full((N, P), self.model.config.pad_id, dtype=torch.long, device=dev)
        for i, r in enumerate(rows):
            ids[i, P - len(r):] = torch.tensor(r, dtype=torch.long, device=dev)
        row_pad = torch.tensor([P - len(r) for r in rows], device=dev)  # (N,)
        caches = self.backbone.init_state(N, max_len=capacity, device=dev)
        for cache in caches:
            cache.length = offset  # columns before `offset` are masked out below
        mask = torch.zeros(N, capacity, dtype=torch.bool, device=dev)
        mask[:, offset:offset + P] = torch.arange(P, device=dev)[None] >= row_pad[:, None]
        kwargs: dict[str, Any] = {"mask": mask[:, :offset + P]}
        if self.positions_ok:  # learned positions: count from each row's first real token
            kwargs["positions"] = (torch.arange(P, device=dev)[None] - row_pad[:, None]).clamp(min=0)
        hidden, caches = self.backbone(ids, state=caches, **kwargs)  # (N, P, D)
        return self.model.lm_head(hidden[:, -1]), caches, mask, offset + row_pad

    def _rebuild(self) -> None:
        """Re-prefill every row from column 0; a row that fills the context keeps its last
        max_len // 2 tokens (the sliding window of `generate.causal`)."""
        self.rebuilds += 1
        keep = max(1, self.limit // 2)
        self.fed = [r[-keep:] if len(r) >= self.limit else r for r in self.fed]
        P = max(len(r) for r in self.fed)
        _, self.caches, self.mask, self.pad = self._prefill(self.fed, 0, self._capacity(P + 1))

    def _shift(self, delta: int, capacity: int) -> None:
        """Move every row's columns by `delta` (< 0: left) into buffers of `capacity` columns."""
        L, lo = self.length, int(self.pad.min())
        for cache in self.caches:
            for name in ("k", "v"):
                old = getattr(cache, name)
                B, H, _, hd = old.shape
                new = old.new_zeros(B, H, capacity, hd)
                new[:, :, lo + delta:L + delta] = old[:, :, lo:L]
                setattr(cache, name, new)
            cache.length = L + delta
        mask = self.mask.new_zeros(len(self.fed), capacity)
        mask[:, lo + delta:L + delta] = self.mask[:, lo:L]
        self.mask, self.pad = mask, self.pad + delta
        self.shifts += 1

    def _grow(self, need: int) -> None:
        """Make room for `need` columns (same columns, longer buffers)."""
        capacity = self.mask.size(1)
        if need <= capacity:
            return
        new = self._capacity(max(need, 2 * capacity))
        for cache in self.caches:
            B, H, _, hd = cache.k.shape
            zeros = cache.k.new_zeros(B, H, new - capacity, hd)
            cache.k, cache.v = torch.cat([cache.k, zeros], 2), torch.cat([cache.v, zeros], 2)
        self.mask = torch.cat([self.mask, self.mask.new_zeros(len(self.fed), new - capacity)], 1)

    def admit(self, prompts: Sequence[Sequence[int]], max_new_tokens: Sequence[int]) -> torch.Tensor:
        rows = [list(p)[-(self.limit - 1):] for p in prompts]  # room for one new token
        P, L = max(len(r) for r in rows), self.length
        if not self.fed:  # an empty batch: one ragged prefill of all newcomers
            logits, self.caches, self.mask, self.pad = self._prefill(rows, 0, self._capacity(P + 1))
        else:
            if P > L:  # no room left of the current column: every row moves right
                self._shift(P - L, max(self.mask.size(1), self._capacity(P + 1)))
                L = self.length
            logits, caches, mask, pad = self._prefill(rows, L - P, self.mask.size(1))
            for mine, new in zip(self.caches, caches):
                mine.k, mine.v = torch.cat([mine.k, new.k]), torch.cat([mine.v, new.v])
            self.mask, self.pad = torch.cat([self.mask, mask]), torch.cat([self.pad, pad])
            self.appends += 1
        self.fed.extend(rows)
        return logits

    def step(self, tokens: Sequence[int]) -> torch.Tensor:
        L = self.length
        waste = int(self.pad.min())  # columns no row uses
        if L + 1 > self.limit or (waste >= 32 and waste * 2 > L):
            if waste:  # drop the columns no row uses
                self._shift(-waste, self._capacity(L - waste + 1))
            else:  # a row fills the whole context: re-prefill its last tokens
                self._rebuild()
            L = self.length
        self._grow(L + 1)
        ids = torch.tensor(list(tokens), dtype=torch.long, device=self.device)[:, None]  # (B, 1)
        self.mask[:, L] = True
        # every row starting at column 0 (always so for a batch of one): no key to mask, and
        # attention takes its fast unmasked path
        ragged = bool(self.pad.any())
        kwargs: dict[str, Any] = {"mask": self.mask[:, :L + 1] if ragged else None}
        if self.positions_ok:
            kwargs["positions"] = (L - self.pad)[:, None]  # (B, 1)
        hidden, _ = self.backbone(ids, state=self.caches, **kwargs)  # (B, 1, D)
        for row, t in zip(self.fed, tokens):
            row.append(int(t))
        return self.model.lm_head(hidden[:, -1])

    def keep(self, rows: Sequence[int]) -> None:
        rows = list(rows)
        if rows == list(range(len(self.fed))):
            return
        self.fed = [self.fed[i] for i in rows]
        if not rows:
            self.caches = self.mask = self.pad = None
            return
        index = torch.tensor(rows, device=self.device)
        for cache in self.caches:
            cache.select(index)
        self.mask, self.pad = self.mask.index_select(0, index), self.pad.index_select(0, index)


class SoloRows:
    """One decoding state per row, stepped in turn (models whose states cannot be merged)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.rows: list[tuple[Any, Any]] = []  # (state, step_fn) per row

    def __len__(self) -> int:
        return len(self.rows)

    def admit(self, prompts: Sequence[Sequence[int]], max_new_tokens: Sequence[int]) -> torch.Tensor:
        out = []
        for prompt, n in zip(prompts, max_new_tokens):
            logits, state, step = start_decoding(self.model, [list(prompt)], max(1, n))
            self.rows.append((state, step))
            out.append(logits)
        return torch.cat(out)

    def step(self, tokens: Sequence[int]) -> torch.Tensor:
        out = []
        for i, ((state, step), t) in enumerate(zip(self.rows, tokens)):
            ids = torch.tensor([[int(t)]], device=self.model.lm_head.weight.device)
            logits, state = step(ids, state)
            self.rows[i] = (state, step)
            out.append(logits)
        return torch.cat(out)

    def keep(self, rows: Sequence[int]) -> None:
        self.rows = [self.rows[i] for i in rows]


def make_engine(model: nn.Module) -> KVBatch | SoloRows:
    """Continuous batching where the model has a KV cache; one state per row otherwise."""
    return KVBatch(model) if model.backbone.kv_cache else SoloRows(model)
