"""Decoding an encoder-decoder: greedy and beam search with length limits and n-gram blocking."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

# --------------------------------------------------------------------------- decoding


def max_lengths(src_lengths: torch.Tensor, a: float, b: int, cap: int) -> torch.Tensor:
    """Most target tokens per row: a * source length + b, within [1, cap].

    >>> max_lengths(torch.tensor([10, 20]), 1.5, 10, 30).tolist()
    [25, 30]
    """
    return (src_lengths.float() * a + b).ceil().long().clamp(1, cap)


def block_repeats(logp: torch.Tensor, seqs: list[list[int]], n: int) -> None:
    """Forbid (in place) each row's tokens that would repeat one of its n-grams.

    >>> lp = torch.zeros(1, 5); block_repeats(lp, [[1, 2, 3, 1, 2]], 3); lp[0, 3].item()
    -inf
    """
    if n <= 0:
        return
    for r, seq in enumerate(seqs):
        if len(seq) < n - 1:
            continue
        prefix = seq[len(seq) - n + 1:] if n > 1 else []
        banned = [seq[i + n - 1] for i in range(len(seq) - n + 1) if seq[i:i + n - 1] == prefix]
        if banned:
            logp[r, banned] = float("-inf")


@torch.no_grad()
def greedy_search(model: nn.Module, memory: Any, limits: torch.Tensor, bos: int, eos: int,
                  no_repeat_ngram: int = 0) -> list[list[int]]:
    """Most likely token at each step, for a batch; stops at <eos> or the row's limit."""
    B, device = memory.states.size(0), memory.states.device
    state = model.init_state(memory, max_len=int(limits.max()) + 1)
    tokens = torch.full((B,), bos, dtype=torch.long, device=device)
    out = torch.zeros(B, 0, dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    for t in range(int(limits.max())):
        logp, state = model.step(tokens, state)  # (B, V)
        block_repeats(logp, out.tolist() if no_repeat_ngram else [], no_repeat_ngram)
        tokens = logp.argmax(-1).masked_fill(done, eos)
        out = torch.cat([out, tokens[:, None]], 1)
        done |= (tokens == eos) | (t + 1 >= limits)
        if bool(done.all()):
            break
    return [_strip(row, eos) for row in out.tolist()]


class _Decoding:
    """A seq2seq model as the step function of `lmforge.generate.beam_search`.

    The search state is (model state, history (N, t)): the history of chosen tokens lets the
    step block repeated n-grams, and `reorder` keeps it aligned with the beams. Each input's
    beams stay in rows b*K .. b*K+K-1, so per-input length limits are a fixed (N,) tensor.
    """

    def __init__(self, model: nn.Module, limits: torch.Tensor, eos: int, beams: int,
                 no_repeat_ngram: int) -> None:
        self.model, self.eos, self.no_repeat_ngram = model, eos, no_repeat_ngram
        self.limits, self.beams, self.t = limits, beams, 0

    def step(self, ids: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        """Feed the chosen tokens (N, 1); return log-probs (N, V) with limits and n-gram bans applied."""
        model_state, history = state
        if self.t > 0:  # the first call feeds <bos>, which is not part of the output
            history = torch.cat([history, ids], 1)
        logp, model_state = self.model.step(ids[:, 0], model_state)  # (N, V)
        limits = self.limits if logp.size(0) == self.limits.numel() else \
            self.limits.repeat_interleave(self.beams)
        ending = self.t + 1 >= limits  # (N,): these rows must end now
        if bool(ending.any()):
            eos_logp = logp[:, self.eos].clamp_min(-1e4)  # finite even if the model rules <eos> out
            logp[ending] = float("-inf")
            logp[ending, self.eos] = eos_logp[ending]
        block_repeats(logp, history.tolist() if self.no_repeat_ngram else [], self.no_repeat_ngram)
        self.t += 1
        return logp, (model_state, history)

    def reorder(self, state: tuple, rows: torch.Tensor) -> tuple:
        """Keep (and repeat) rows of the model state and of the history."""
        return self.model.reorder_state(state[0], rows), state[1].index_select(0, rows)


@torch.no_grad()
def beam_search(model: nn.Module, memory: Any, limits: torch.Tensor, bos: int, eos: int,
                beams: int = 5, length_penalty: float = 1.0, no_repeat_ngram: int = 0) -> list[list[int]]:
    """The best hypothesis of each input by `lmforge.generate.beam_search` (beams == 1: greedy).

    Scores are log-prob / length ** length_penalty; each input stops at its own limit
    (`max_lengths`: relative to its source), where <eos> is forced; a row is done once its
    `beams` best hypotheses have finished (early stopping, as fairseq).
    """
    from ..generate.search import beam_search as shared_beam_search

    if beams == 1:
        return greedy_search(model, memory, limits, bos, eos, no_repeat_ngram)
    B, device = memory.states.size(0), memory.states.device
    decoding = _Decoding(model, limits, eos, beams, no_repeat_ngram)
    state = (model.init_state(memory, max_len=int(limits.max()) + 1),
             torch.zeros(B, 0, dtype=torch.long, device=device))
    start = torch.full((B,), bos, dtype=torch.long, device=device)
    results = shared_beam_search(decoding.step, start, state, beams, int(limits.max()), eos_id=eos,
                                 length_penalty=length_penalty, early_stopping=True,
                                 reorder=decoding.reorder)
    return [_strip(hyps[0].tokens, eos) for hyps in results]


def _strip(ids: list[int], eos: int) -> list[int]:
    return ids[: ids.index(eos)] if eos in ids else ids


@torch.no_grad()
def decode_ids(model: nn.Module, sources: Sequence[np.ndarray], bos: int, eos: int, pad_id: int,
               beams: int = 5, length_penalty: float = 1.0, max_len_a: float = 1.5,
               max_len_b: int = 10, batch_size: int = 64, no_repeat_ngram: int = 0) -> list[list[int]]:
    """Decode source id arrays (each ending in <eos>) in length-sorted batches; one id list each.

    The encoder runs once per batch; the decoder steps with its caches (see models/seq2seq.py).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    cap = model.config.max_len
    order = np.argsort([-len(s) for s in sources], kind="stable")
    results: list[list[int]] = [[] for _ in sources]
    per_batch = max(1, batch_size // beams)
    for start in range(0, len(order), per_batch):
        rows = order[start: start + per_batch]
        S = max(len(sources[i]) for i in rows)
        src = torch.full((len(rows), S), pad_id, dtype=torch.long)
        for b, i in enumerate(rows):
            src[b, : len(sources[i])] = torch.as_tensor(sources[i])
        lengths = torch.tensor([len(sources[i]) for i in rows])
        mask = (torch.arange(S)[None] < lengths[:, None]).to(device)
        memory = model.encode(src.to(device), mask)
        limits = max_lengths(lengths - 1, max_len_a, max_len_b, cap).to(device)
        hyps = beam_search(model, memory, limits, bos, eos, beams, length_penalty, no_repeat_ngram)
        for i, hyp in zip(rows, hyps):
            results[i] = hyp
    model.train(was_training)
    return results


