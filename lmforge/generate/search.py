"""Model-agnostic decoding loops: sampling (greedy included) and beam search.

Both drive a *step function*, so any model that can extend a sequence one token at a time
plugs in: a causal LM (`lmforge.generate.causal`), an encoder-decoder, anything.

    step_fn(ids (N, 1) long, state) -> (logits or log-probs (N, V), state)

`ids` are the tokens just chosen; `state` is whatever the model needs to continue (KV caches,
recurrent state, encoder memory, ...). Everything in `state` that has a batch row must be
reorderable by `reorder_state` (or the `reorder` callable you pass): beam search repeats the
rows of its first call to make num_beams copies and keeps the surviving beams after each step.
The step function must not hold per-row tensors in its closure.

Each loop starts from `start`: either the first step's logits (B, V) (e.g. from a prompt
prefill) or start token ids (B,) / (B, 1) to feed to `step_fn` first (e.g. <bos> for a decoder).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from .sampling import RowRandom, apply_repetition_penalty, full_precision, sample_next
from .state import reorder_state

StepFn = Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]]
Reorder = Callable[[Any, torch.Tensor], Any]


@dataclass
class Hypothesis:
    """One decoded sequence of new tokens."""

    tokens: list[int]
    logprob: float  # sum of the model's log-probabilities of `tokens` (unfiltered distribution)
    score: float  # what beam search ranks by: logprob / len(tokens) ** length_penalty
    finished: bool  # ended with the end-of-sequence token (else: ran out of max_new_tokens)


def first_logits(step_fn: StepFn, start: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
    """The logits of the first new token: `start` itself, or step_fn(start ids, state)."""
    if start.is_floating_point():
        return start, state
    return step_fn(start.reshape(-1, 1), state)


@torch.inference_mode()
def sample_loop(step_fn: StepFn, start: torch.Tensor, state: Any, max_new_tokens: int, *,
                temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0,
                repetition_penalty: float = 1.0, seen: torch.Tensor | None = None,
                stop_ids: Sequence[int] = (),
                generator: torch.Generator | RowRandom | None = None
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Sample (or, with temperature 0, pick greedily) up to `max_new_tokens` tokens per row.

    Yields, once per step, the chosen tokens (B,) and their log-probabilities (B,) under the
    model's unfiltered distribution. Stops when every row has produced one of `stop_ids`;
    a row that stopped keeps producing tokens until then (callers cut each row at its first
    stop id). `seen` (B, V) bool marks tokens already in each row's text, for the repetition
    penalty (the prompt, typically); it is updated in place.
    """
    if max_new_tokens <= 0:
        return
    logits, state = first_logits(step_fn, start, state)
    B, V = logits.shape
    is_stop = None
    if stop_ids:
        is_stop = torch.zeros(V, dtype=torch.bool, device=logits.device)
        is_stop[[i for i in stop_ids if 0 <= i < V]] = True
        finished = torch.zeros(B, dtype=torch.bool, device=logits.device)
    if repetition_penalty != 1.0 and seen is None:
        seen = torch.zeros(B, V, dtype=torch.bool, device=logits.device)
    for t in range(max_new_tokens):
        logits = full_precision(logits)  # (B, V)
        scores = logits if repetition_penalty == 1.0 else \
            apply_repetition_penalty(logits, seen, repetition_penalty)
        tokens = sample_next(scores, temperature, top_k, top_p, generator, min_p)  # (B,)
        logprobs = F.log_softmax(logits, dim=-1).gather(1, tokens[:, None]).squeeze(1)  # (B,)
        if repetition_penalty != 1.0:
            seen.scatter_(1, tokens[:, None], True)
        yield tokens, logprobs
        if t == max_new_tokens - 1:
            break
        if is_stop is not None:
            finished |= is_stop[tokens]
            if bool(finished.all()):
                break
        logits, state = step_fn(tokens[:, None], state)


class _Finished:
    """The best `k` finished hypotheses of one batch row."""

    def __init__(self, k: int) -> None:
        self.k, self.hyps = k, []

    def add(self, hyp: Hypothesis) -> None:
        if len(self.hyps) < self.k or hyp.score > self.hyps[-1].score:
            self.hyps = sorted(self.hyps + [hyp], key=lambda h: -h.score)[: self.k]

    @property
    def full(self) -> bool:
        return len(self.hyps) == self.k

    @property
    def worst(self) -> float:
        return self.hyps[-1].score


def _normalise(logprob: float, length: int, length_penalty: float) -> float:
    return logprob / (length ** length_penalty)


@torch.inference_mode()
def beam_search(step_fn: StepFn, start: torch.Tensor, state: Any, num_beams: int,
                max_new_tokens: int, *, eos_id: int | None = None, length_penalty: float = 1.0,
                early_stopping: bool = True, num_return: int = 1,
                reorder: Reorder = reorder_state) -> list[list[Hypothesis]]:
    """Beam search over `num_beams` beams per row; returns the `num_return` best
    hypotheses of each of the B rows, best first.

    Hypotheses are ranked by logprob / length ** length_penalty (length in new tokens, the
    end token included): 0 ranks by total log-probability (favours short outputs), 1 by the
    mean per token, > 1 favours longer ones. A beam that picks `eos_id` is finished. A row is
    done when `num_beams` hypotheses have finished and either `early_stopping` is True or no
    live beam can still beat the worst of them (an exact bound: scores only fall as tokens
    are added). Beams still alive after `max_new_tokens` compete as unfinished hypotheses.
    """
    if not 1 <= num_return <= num_beams:
        raise ValueError(f"num_return must be in [1, num_beams={num_beams}], got {num_return}")
    K = num_beams
    logits, state = first_logits(step_fn, start, state)
    B, V = logits.shape
    device = logits.device
    if max_new_tokens <= 0:
        return [[Hypothesis([], 0.0, 0.0, False)] for _ in range(B)]
    # K copies of each row; only the first copy is live at the start, so the first step does
    # not pick the same token K times
    state = reorder(state, torch.arange(B, device=device).repeat_interleave(K))
    logp = F.log_softmax(full_precision(logits), dim=-1).repeat_interleave(K, dim=0)  # (B*K, V)
    beam_scores = torch.full((B, K), float("-inf"), device=device, dtype=logp.dtype)
    beam_scores[:, 0] = 0.0
    tokens = torch.empty(B * K, 0, dtype=torch.long, device=device)  # (B*K, t)
    finished = [_Finished(K) for _ in range(B)]
    done = [False] * B
    row_base = torch.arange(B, device=device)[:, None] * K  # (B, 1)
    for t in range(max_new_tokens):
        length = t + 1
        cand = (beam_scores.view(B * K, 1) + logp).view(B, K, V)  # (B, K, V)
        if eos_id is not None:
            # an end token among a row's top K candidates finishes that hypothesis
            top_scores, top_idx = cand.view(B, K * V).topk(K, dim=-1)  # (B, K)
            hits = (top_idx % V == eos_id) & torch.isfinite(top_scores)
            for b, j in hits.nonzero().tolist():
                if done[b]:
                    continue
                beam, s = int(top_idx[b, j]) // V, float(top_scores[b, j])
                finished[b].add(Hypothesis(tokens[b * K + beam].tolist() + [eos_id], s,
                                           _normalise(s, length, length_penalty), True))
            cand[:, :, eos_id] = float("-inf")  # live beams never contain the end token
        beam_scores, idx = cand.view(B, K * V).topk(K, dim=-1)  # (B, K)
        origin = (row_base + idx // V).view(-1)  # (B*K,): the beam each survivor extends
        new = (idx % V).view(-1, 1)  # (B*K, 1)
        tokens = torch.cat([tokens.index_select(0, origin), new], dim=1)  # (B*K, t+1)
        for b in range(B):
            if done[b] or not finished[b].full:
                continue
            if early_stopping:
                done[b] = True
                continue
            best = float(beam_scores[b, 0])  # sums only fall; the bound is the best length
            best_len = max_new_tokens if length_penalty > 0 else length
            done[b] = _normalise(best, best_len, length_penalty) <= finished[b].worst
        if all(done) or t == max_new_tokens - 1:
            break
        state = reorder(state, origin)
        logits, state = step_fn(new, state)
        logp = F.log_softmax(full_precision(logits), dim=-1)  # (B*K, V)
    results = []
    for b in range(B):
        if not done[b]:  # out of length: live beams compete as they stand
            for k in range(K):
                s = float(beam_scores[b, k])
                if s > float("-inf"):
                    finished[b].add(Hypothesis(tokens[b * K + k].tolist(), s,
                                               _normalise(s, tokens.size(1), length_penalty), False))
        results.append(finished[b].hyps[:num_return])
    return results
