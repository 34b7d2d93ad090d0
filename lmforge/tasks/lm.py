"""Causal language modelling: predict each next token; metrics loss and perplexity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.lm_batches import LMBatches
from ..eval.metrics import perplexity
from ..generate import generate_ids


class LanguageModelingTask:
    """Random windows of the training tokens; fixed validation windows; samples at each eval.

    With `tbptt=True` (recurrent backbones) the rows are contiguous streams and the hidden
    state is carried, detached, from one window to the next (truncated backpropagation
    through time).

    Under data parallelism pass `rank` / `world_size` and the same `seed` on every rank: each
    rank then trains on its own slice of one global batch (see `LMBatches`); validation is the
    same on every rank.
    """

    metric_names = ["ppl"]
    monitor = ("loss", "min")
    keep_best = False

    def __init__(self, model: nn.Module, tokenizer: Any, train_tokens: np.ndarray,
                 val_tokens: np.ndarray, block_size: int, batch_size: int, seed: int = 0,
                 eval_batches: int = 20, tbptt: bool = False, sample_tokens: int = 200,
                 device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1) -> None:
        self.model, self.tokenizer, self.device = model, tokenizer, torch.device(device)
        self.tbptt = tbptt
        self.train = LMBatches(train_tokens, block_size, batch_size, seed=seed, device=device,
                               sequential=tbptt, rank=rank, world_size=world_size)
        # the same validation windows at every evaluation, so val curves are comparable
        self.val = LMBatches(val_tokens, block_size, batch_size, seed=seed + 1, device=device)
        self.val_start = self.val.state_dict()
        self.eval_batches = eval_batches
        self.sample_tokens = sample_tokens
        self.state = None  # carried recurrent state (tbptt)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.train.next()
        if self.tbptt and self.train.reset:
            self.state = None  # the streams wrapped around: start from a fresh state
        return batch

    def batch_tokens(self, batch: tuple[torch.Tensor, torch.Tensor]) -> int:
        return batch[0].numel()

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor], model: nn.Module | None = None) -> torch.Tensor:
        x, y = batch  # (B, T), (B, T)
        model = self.model if model is None else model
        if not self.tbptt:
            return model(x, y)[1]
        _, loss, state = model(x, y, state=self.state, return_state=True)
        self.state = _detach(state)
        return loss

    def evaluate(self) -> dict[str, float]:
        self.val.load_state_dict(self.val_start)
        losses = [self.model(*self.val.next())[1].float() for _ in range(self.eval_batches)]
        loss = torch.stack(losses).mean().item()
        return {"loss": loss, "ppl": perplexity(loss)}

    def on_evaluate(self, step: int, run_dir: Path) -> None:
        """Append a sample to samples.txt so a run's progress can be read as text."""
        if not self.sample_tokens:
            return
        start = self.tokenizer.eos_id if self.tokenizer.eos_id is not None else 0
        ids = generate_ids(self.model, [start], self.sample_tokens, temperature=1.0, seed=step)
        text = self.tokenizer.decode(ids)
        with open(Path(run_dir) / "samples.txt", "a", encoding="utf-8") as fh:
            fh.write(f"===== step {step} =====\n{text}\n\n")

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"train": self.train.state_dict()}
        if self.state is not None:
            state["carried"] = _to_cpu(self.state)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.train.load_state_dict(state["train"])
        if "carried" in state:
            self.state = _to_device(state["carried"], self.device)


def _detach(state: Any) -> Any:
    if isinstance(state, torch.Tensor):
        return state.detach()
    if isinstance(state, (tuple, list)):
        return type(state)(_detach(s) for s in state)
    return state


def _to_cpu(state: Any) -> Any:
    if isinstance(state, torch.Tensor):
        return state.cpu()
    if isinstance(state, (tuple, list)):
        return [_to_cpu(s) for s in state]
    return state


def _to_device(state: Any, device: torch.device) -> Any:
    if isinstance(state, torch.Tensor):
        return state.to(device)
    if isinstance(state, list):
        return tuple(_to_device(s, device) for s in state)
    return state
