"""Language-modelling batches: windows of block_size + 1 tokens -> inputs x and targets y.

    batches = LMBatches(corpus.train, block_size=64, batch_size=12, seed=1337)
    x, y = batches.next()          # (B, T) int64 each; y[:, t] == x[:, t + 1] along the text

Random mode samples window starts uniformly (as nanoGPT's get_batch). Sequential mode, for
truncated backpropagation through time, cuts the array into `batch_size` contiguous streams and
walks each forward by `block_size` per batch, so a recurrent state can be carried across calls.
`state_dict()` / `load_state_dict()` capture the position exactly: a resumed run draws the
same batches it would have drawn.

Data parallel (`rank`, `world_size`): every rank holds the same seed, draws the whole global
batch of world_size x batch_size windows (or streams) and keeps its own contiguous slice of
batch_size rows. So N processes see exactly the windows one process with batch N x batch_size
would, and the sampler state is the same on every rank (any rank's state resumes all of them).
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
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if tokens.ndim != 1:
            raise ConfigError(f"LMBatches needs a 1-D token array, got shape {tuple(tokens.shape)}")
        if block_size <= 0 or batch_size <= 0:
            raise ConfigError(f"block_size and batch_size must be positive, got {block_size}, {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"LMBatches needs 0 <= rank < world_size, got rank {rank}, world size {world_size}")
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
        self.rank, self.world_size = rank, world_size
        self.global_batch = world_size * batch_size  # rows drawn per call, over all ranks
        self._rows = slice(rank * batch_size, (rank + 1) * batch_size)  # this rank's rows
        self.rng = np.random.default_rng(seed)
        self._window = np.arange(block_size + 1)  # (T+1,) offsets inside a window
        if sequential:
            self.stream_len = n // self.global_batch  # row b reads tokens[b * L : (b + 1) * L]
            if self.stream_len <= block_size:
                ranks = f" x world size {world_size}" if world_size > 1 else ""
                raise ConfigError(
                    f"corpus has {n} tokens: split into batch_size={batch_size}{ranks} streams of "
                    f"{self.stream_len}, each shorter than one window of {block_size + 1}; "
                    "lower train.batch_size or model.max_len, or add text"
                )
            # (B,) first token of each of this rank's streams
            self._bases = (np.arange(self.global_batch) * self.stream_len)[self._rows]
        self.offset = 0  # sequential: position inside every stream
        self.reset = True  # sequential: True when this batch starts the streams afresh (drop state)

    def _starts(self) -> np.ndarray:
        """(B,) first token index of each window, advancing the sampler."""
        T = self.block_size
        if not self.sequential:
            # the whole global batch from the shared generator; this rank keeps its rows
            return self.rng.integers(0, len(self.tokens) - T, size=self.global_batch)[self._rows]
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
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict()`: the following batches equal those after it was taken."""
        saved_world = state.get("world_size", 1)
        if saved_world != self.world_size:
            raise ConfigError(
                f"batch sampler state was saved by {saved_world} process(es) but this run has "
                f"{self.world_size}; resume with the same world size (torchrun --nproc_per_node)"
            )
        for name in ("sequential", "block_size", "batch_size"):
            if name in state and state[name] != getattr(self, name):
                raise ConfigError(
                    f"batch sampler state has {name}={state[name]!r} but this run uses {getattr(self, name)!r}"
                )
        self.rng.bit_generator.state = state["rng"]
        self.offset = int(state["offset"])
        self.reset = bool(state.get("reset", self.offset == 0))
