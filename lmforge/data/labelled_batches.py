"""Batches of labelled texts: length bucketing, padding, and each rank's share of a global batch."""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch

from ..config import ConfigError


# --------------------------------------------------------------------------- batches


class Share(NamedTuple):
    """A rank's part of a global batch (data parallel): its loss weight and the batch size.

    `weight` = world_size x (this rank's loss denominator) / (the global batch's), so that the
    mean over ranks of the reweighted per-rank mean losses is the global batch's mean loss
    (also for a ragged last batch split unevenly, and with class weights). 0 for a rank that
    only holds a stand-in row. `examples` counts the rows of the whole global batch.
    """

    weight: float
    examples: int


class LabelledBatches:
    """Padded batches `(ids (B, T), mask (B, T) bool, labels (B,))` of an encoded split.

    Training order: each epoch is a fresh permutation drawn from `seed + epoch`, so the
    position in training is just (epoch, cursor) and resuming is exact. With `bucket=True`
    the permutation is cut into pools of `pool` batches, each pool is sorted by length and
    cut into batches, and the batches are shuffled: rows of a batch have similar lengths and
    little compute goes to padding. Each batch is padded to its own longest row (or to
    `pad_to`), on the right (default) or the left.

    Data parallel (`rank`, `world_size`): `batch_size` is one rank's micro-batch. Every rank
    plans the epoch alike with the global batch of world_size x batch_size rows (the plan of
    one process with that batch size), takes each global batch in turn and keeps its own
    contiguous slice of it; `next()` then returns `(ids, mask, labels, Share)`. Every rank
    has the same number of batches per epoch. A ragged last batch is split as evenly as it
    goes (sizes differ by at most one) and `Share.weight` scales each rank's mean loss so that
    the all-reduced gradient is the global batch's; a rank left with no row gets a stand-in
    row of weight 0, so it still joins the all-reduce. `class_weights` (the loss's weight of
    each class) make those weights exact for a class-weighted loss. Iterating (evaluation)
    always walks the whole split, unsharded.
    """

    def __init__(self, ids: Sequence[np.ndarray], labels: np.ndarray | None, batch_size: int,
                 pad_id: int = 0, *, shuffle: bool = True, bucket: bool = True, pool: int = 50,
                 seed: int = 0, padding: str = "right", pad_to: int = 0,
                 device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1,
                 class_weights: Sequence[float] | None = None) -> None:
        if batch_size <= 0:
            raise ConfigError(f"batch_size must be positive, got {batch_size}")
        if padding not in ("right", "left"):
            raise ConfigError(f"padding={padding!r} must be right or left")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"LabelledBatches needs 0 <= rank < world_size, got rank {rank}, "
                              f"world size {world_size}")
        if not len(ids):
            raise ConfigError("no examples to batch")
        if world_size > 1 and labels is None:
            raise ConfigError("data-parallel batches need labels (they are for training)")
        self.lengths = np.fromiter((len(r) for r in ids), dtype=np.int64, count=len(ids))  # (N,)
        width = max(int(self.lengths.max()), pad_to)
        # one (N, L) right-padded matrix: a batch is then a fancy-index, not a Python loop
        self.matrix = np.full((len(ids), width), pad_id, dtype=np.int64)
        for i, row in enumerate(ids):
            self.matrix[i, : len(row)] = row
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        self.batch_size, self.pad_id, self.pad_to = batch_size, pad_id, pad_to
        self.shuffle, self.bucket, self.pool, self.seed = shuffle, bucket, pool, seed
        self.padding, self.device = padding, torch.device(device)
        self.rank, self.world_size = rank, world_size
        self.global_batch = batch_size * world_size  # rows per planned batch, over all ranks
        self.class_weights = None if class_weights is None else np.asarray(class_weights, np.float64)
        self.epoch, self.cursor = 0, 0
        self._plan: list[np.ndarray] | None = None

    def __len__(self) -> int:
        """Batches per epoch (global batches: the same number on every rank)."""
        return math.ceil(len(self.lengths) / self.global_batch)

    @property
    def n_examples(self) -> int:
        return len(self.lengths)

    def plan(self, epoch: int) -> list[np.ndarray]:
        """Row indices of every (global) batch of `epoch`, in order (a pure function of seed,
        epoch and the global batch size: the same on every rank)."""
        n, bs = len(self.lengths), self.global_batch
        if not self.shuffle:
            # evaluation: sorted by length (fast), the caller restores the original order
            order = np.argsort(self.lengths, kind="stable") if self.bucket else np.arange(n)
            return [order[i: i + bs] for i in range(0, n, bs)]
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(n)
        if not self.bucket:
            return [order[i: i + bs] for i in range(0, n, bs)]
        batches = []
        step = bs * self.pool
        for start in range(0, n, step):
            chunk = order[start: start + step]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches += [chunk[i: i + bs] for i in range(0, len(chunk), bs)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def collate(self, rows: np.ndarray) -> tuple[torch.Tensor, ...]:
        """Batch of rows: ids (B, T), mask (B, T) and labels (B,) when there are labels."""
        lengths = self.lengths[rows]  # (B,)
        T = max(int(lengths.max()), self.pad_to)
        ids = self.matrix[rows, :T]  # (B, T), right-padded
        mask = np.arange(T)[None, :] < lengths[:, None]  # (B, T)
        if self.padding == "left":
            shift = T - lengths  # move each row's tokens to the end
            cols = (np.arange(T)[None, :] - shift[:, None]) % T  # (B, T)
            ids = np.take_along_axis(ids, cols, axis=1)
            mask = np.take_along_axis(mask, cols, axis=1)
        out = [torch.from_numpy(np.ascontiguousarray(ids)), torch.from_numpy(mask)]
        if self.labels is not None:
            out.append(torch.from_numpy(self.labels[rows]))
        non_blocking = self.device.type == "cuda"
        return tuple(t.to(self.device, non_blocking=non_blocking) for t in out)

    def next(self) -> tuple[torch.Tensor, ...]:
        """The next training batch; epochs roll over forever."""
        if self._plan is None:
            self._plan = self.plan(self.epoch)
        if self.cursor >= len(self._plan):
            self.epoch, self.cursor = self.epoch + 1, 0
            self._plan = self.plan(self.epoch)
        rows = self._plan[self.cursor]
        self.cursor += 1
        if self.world_size == 1:
            return self.collate(rows)
        return self._rank_part(rows)

    def _denominator(self, rows: np.ndarray) -> float:
        """What the mean loss of `rows` divides by: the row count, or their class weights' sum."""
        if self.class_weights is None:
            return float(len(rows))
        return float(self.class_weights[self.labels[rows]].sum())

    def _rank_part(self, rows: np.ndarray) -> tuple[Any, ...]:
        """This rank's contiguous slice of the global batch `rows`, and its Share."""
        own = np.array_split(rows, self.world_size)[self.rank]
        whole = self._denominator(rows)
        if len(own):
            weight = self.world_size * self._denominator(own) / whole if whole > 0 else 0.0
            return (*self.collate(own), Share(weight, len(rows)))
        # fewer rows than ranks: a stand-in row keeps this rank in the all-reduce, weighing 0
        return (*self.collate(rows[:1]), Share(0.0, len(rows)))

    def __iter__(self):
        """One pass in plan order, yielding (row indices, batch): for evaluation."""
        for rows in self.plan(self.epoch):
            yield rows, self.collate(rows)

    def state_dict(self) -> dict[str, int]:
        """Position in training: epoch, batch within it, and the world size it assumes."""
        return {"epoch": self.epoch, "cursor": self.cursor, "world_size": self.world_size,
                "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore a `state_dict()`; refused when the world size or micro-batch differ (the
        saved cursor counts global batches of another size)."""
        saved_world = int(state.get("world_size", 1))
        if saved_world != self.world_size:
            raise ConfigError(
                f"batch position was saved by {saved_world} process(es) but this run has "
                f"{self.world_size}; resume with the same world size (torchrun --nproc_per_node)")
        if "batch_size" in state and int(state["batch_size"]) != self.batch_size:
            raise ConfigError(f"batch position was saved with batch_size={state['batch_size']} but "
                              f"this run uses {self.batch_size}; resume with the same train.batch_size")
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
        self._plan = None
