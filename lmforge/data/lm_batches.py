"""Language-modelling batches: windows of block_size + 1 tokens -> inputs x and targets y.

    batches = LMBatches(corpus.train, block_size=64, batch_size=12, seed=1337)
    x, y = batches.next()          # (B, T) int64 each; y[:, t] == x[:, t + 1] along the text

Random mode samples window starts uniformly (as nanoGPT's get_batch). Sequential mode, for
truncated backpropagation through time, cuts the array into `batch_size` contiguous streams and
walks each forward by `block_size` per batch, so a recurrent state can be carried across calls.
`state_dict()` / `load_state_dict()` capture the position exactly: a resumed run draws the
same batches it would have drawn.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..config import ConfigError


class LMBatches:
    """Random (or sequential) windows of block_size + 1 tokens from a 1-D token array."""

    def __init__(
        self,
        tokens: np.ndarray,
        block_size: int,
        batch_size: int,
        seed: int = 0,
        device: str | torch.device = "cpu",
        sequential: bool = False,
    ) -> None:
        if tokens.ndim != 1:
            raise ConfigError(f"LMBatches needs a 1-D token array, got shape {tuple(tokens.shape)}")
        if block_size <= 0 or batch_size <= 0:
            raise ConfigError(f"block_size and batch_size must be positive, got {block_size}, {batch_size}")
        n = len(tokens)
        if n <= block_size:
            raise ConfigError(
                f"corpus has {n} tokens, fewer than one context window of block_size+1 = {block_size + 1}; "
                "lower model.max_len or add text"
            )
        self.tokens = tokens
        self.block_size = block_size
        self.batch_size = batch_size
        self.seed = seed
        self.device = torch.device(device)
        self.sequential = sequential
        self.rng = np.random.default_rng(seed)
        self._window = np.arange(block_size + 1)  # (T+1,) offsets inside a window
        if sequential:
            self.stream_len = n // batch_size  # row b reads tokens[b * L : (b + 1) * L]
            if self.stream_len <= block_size:
                raise ConfigError(
                    f"corpus has {n} tokens: split into batch_size={batch_size} streams of "
                    f"{self.stream_len}, each shorter than one window of {block_size + 1}; "
                    "lower train.batch_size or model.max_len, or add text"
                )
            self._bases = np.arange(batch_size) * self.stream_len  # (B,) first token of each stream
        self.offset = 0  # sequential: position inside every stream
        self.reset = True  # sequential: True when this batch starts the streams afresh (drop state)

    def _starts(self) -> np.ndarray:
        """(B,) first token index of each window, advancing the sampler."""
        T = self.block_size
        if not self.sequential:
            return self.rng.integers(0, len(self.tokens) - T, size=self.batch_size)
        if self.offset + T + 1 > self.stream_len:  # the next window would leave the stream: wrap
            self.offset = 0
        self.reset = self.offset == 0
        starts = self._bases + self.offset
        self.offset += T  # the next window starts at this one's last input token + 1
        return starts

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next (x, y) batch: (B, T) int64 tensors on `device`; y is x shifted left by one."""
        idx = self._starts()[:, None] + self._window  # (B, T+1) token indices
        windows = torch.from_numpy(self.tokens[idx].astype(np.int64))  # (B, T+1); fancy index copies
        x, y = windows[:, :-1], windows[:, 1:]  # (B, T) each
        if self.device.type == "cuda":  # pinned memory lets the copy overlap with compute
            x = x.contiguous().pin_memory().to(self.device, non_blocking=True)
            y = y.contiguous().pin_memory().to(self.device, non_blocking=True)
            return x, y
        return x.contiguous().to(self.device), y.contiguous().to(self.device)

    __next__ = next

    def __iter__(self) -> "LMBatches":
        return self

    def state_dict(self) -> dict[str, Any]:
        """Sampler position: generator state (ints and strings only) and stream offset."""
        return {
            "rng": self.rng.bit_generator.state,
            "offset": int(self.offset),
            "reset": bool(self.reset),
            "sequential": self.sequential,
            "block_size": self.block_size,
            "batch_size": self.batch_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict()`: the following batches equal those after it was taken."""
        for name in ("sequential", "block_size", "batch_size"):
            if name in state and state[name] != getattr(self, name):
                raise ConfigError(
                    f"batch sampler state has {name}={state[name]!r} but this run uses {getattr(self, name)!r}"
                )
        self.rng.bit_generator.state = state["rng"]
        self.offset = int(state["offset"])
        self.reset = bool(state.get("reset", self.offset == 0))
