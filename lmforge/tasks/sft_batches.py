"""Length-bucketed batches of variable-length examples, with an exact-resume position.

Each epoch shuffles the examples (seeded by seed + epoch), cuts the order into windows of
`BUCKET_BATCHES` batches, sorts each window by length and cuts it into batches, then
shuffles the batches: examples of similar length share a batch (little padding) while the
order stays random. The state is just (epoch, batch index), since everything else is a
function of the seed.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from .sft_data import Encoded
from ..models.heads import IGNORE_INDEX

BUCKET_BATCHES = 50  # batches per sorting window


class BucketSampler:
    """Batches of example indices, length-bucketed and shuffled per epoch."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0,
                 bucket: bool = True, shuffle: bool = True) -> None:
        if len(lengths) == 0:
            raise ValueError("no examples to batch")
        self.lengths = np.asarray(lengths)
        self.batch_size, self.seed, self.bucket, self.shuffle = batch_size, seed, bucket, shuffle
        self.epoch, self.pos = 0, 0
        self._batches = self._plan(0)

    def _plan(self, epoch: int) -> list[np.ndarray]:
        n, B = len(self.lengths), self.batch_size
        rng = np.random.default_rng(self.seed + epoch)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        if self.bucket:
            window = B * BUCKET_BATCHES
            order = np.concatenate([
                chunk[np.argsort(-self.lengths[chunk], kind="stable")]
                for chunk in np.array_split(order, max(1, -(-n // window)))])
        batches = [order[i: i + B] for i in range(0, n, B)]
        if self.shuffle and self.bucket:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __len__(self) -> int:
        return len(self._batches)

    def next(self) -> np.ndarray:
        if self.pos >= len(self._batches):
            self.epoch, self.pos = self.epoch + 1, 0
            self._batches = self._plan(self.epoch)
        batch = self._batches[self.pos]
        self.pos += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._batches = self._plan(self.epoch)


def collate_lm(examples: Sequence[Encoded], pad_id: int,
               device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (B, T) and targets (B, T) for next-token loss on the masked tokens only.

    Row i: x = ids[:-1], y[t] = ids[t + 1] where loss_mask[t + 1], else IGNORE_INDEX;
    right-padded to the longest row (padding is never a target, and a causal model's real
    positions never see it).
    """
    T = max(len(e.ids) for e in examples) - 1
    x = np.full((len(examples), T), pad_id, dtype=np.int64)
    y = np.full((len(examples), T), IGNORE_INDEX, dtype=np.int64)
    for i, e in enumerate(examples):
        n = len(e.ids) - 1
        x[i, :n] = e.ids[:-1]
        y[i, :n] = np.where(e.loss_mask[1:], e.ids[1:], IGNORE_INDEX)
    return torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
