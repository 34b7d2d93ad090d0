"""Reorder the batch rows of any decoding state (beam search keeps, drops and repeats rows).

A state is whatever a model's step returns to continue a sequence: a KV cache, (h, c) of an
LSTM, the conv windows of a CNN, an encoder's memory, or a container of those.
"""

from __future__ import annotations

from typing import Any

import torch


def reorder_state(state: Any, rows: torch.Tensor, dim: int = 0) -> Any:
    """Keep batch rows `rows` (N',) of `state`, in that order; rows may repeat.

    Handles, recursively:
      - None and plain Python scalars / strings (shared by all rows: returned as they are);
      - tensors: `index_select(dim, rows)` (batch-first by default; torch's recurrent
        (layers, B, H) layout needs dim=1, or a wrapper with `select`);
      - tuples (named ones too), lists and dicts of states;
      - objects with a `select(rows)` method (`KVCache` selects in place and returns None:
        the object itself is then returned) or an `index_select(dim, rows)` method.

    >>> reorder_state((torch.tensor([10, 20]), [torch.tensor([[1], [2]])]), torch.tensor([1, 1, 0]))
    (tensor([20, 20, 10]), [tensor([[2], [2], [1]])])
    """
    if state is None or isinstance(state, (bool, int, float, str)):
        return state
    if isinstance(state, torch.Tensor):
        return state.index_select(dim, rows.to(state.device))
    if isinstance(state, dict):
        return type(state)((k, reorder_state(v, rows, dim)) for k, v in state.items())
    if isinstance(state, tuple) and hasattr(state, "_fields"):  # namedtuple
        return type(state)(*(reorder_state(v, rows, dim) for v in state))
    if isinstance(state, (tuple, list)):
        return type(state)(reorder_state(v, rows, dim) for v in state)
    if hasattr(state, "select"):
        out = state.select(rows)
        return state if out is None else out
    if hasattr(state, "index_select"):
        return state.index_select(dim, rows)
    raise TypeError(f"cannot reorder a decoding state of type {type(state).__name__}: give it a "
                    f"select(rows) method")
