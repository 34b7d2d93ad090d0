"""The model-agnostic pieces: logits filters, the sampler, reorder_state, and the two loops
driven by a plain step function (a Markov chain standing in for any decoder)."""

from __future__ import annotations

import itertools
from collections import namedtuple

import pytest
import torch

from lmforge.generate import (RowRandom, apply_repetition_penalty, beam_search, draw,
                              filter_logits, reorder_state, sample_loop, sample_next)
from lmforge.nn.attention import KVCache

# --------------------------------------------------------------------------- filters and sampler


def test_filters_keep_the_expected_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.15, 0.1]]))
    kept = lambda out: torch.isfinite(out[0]).nonzero().flatten().tolist()  # noqa: E731
    assert kept(filter_logits(logits, top_k=2)) == [0, 1]
    assert kept(filter_logits(logits, top_p=0.5)) == [0]  # token 0 alone holds 0.5
    assert kept(filter_logits(logits, top_p=0.7)) == [0, 1]
    assert kept(filter_logits(logits, top_p=0.76)) == [0, 1, 2]
    assert kept(filter_logits(logits, min_p=0.35)) == [0, 1]  # p >= 0.35 * 0.5
    assert kept(filter_logits(logits, min_p=0.19)) == [0, 1, 2, 3]
    assert kept(filter_logits(logits, top_k=3, top_p=0.6, min_p=0.1)) == [0, 1]


def test_repetition_penalty_pushes_seen_tokens_down():
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    seen = torch.tensor([[True, True, False]])
    out = apply_repetition_penalty(logits, seen, 2.0)
    assert out.tolist() == [[1.0, -2.0, 0.5]]
    assert apply_repetition_penalty(logits, seen, 1.0) is logits


def test_draw_follows_the_distribution_and_skips_zero_probability():
    probs = torch.tensor([[0.0, 0.3, 0.0, 0.7]])
    assert draw(probs, torch.tensor([0.0])).item() == 1
    assert draw(probs, torch.tensor([0.2999])).item() == 1
    assert draw(probs, torch.tensor([0.3001])).item() == 3
    assert draw(probs, torch.tensor([0.99999994])).item() == 3
    u = torch.rand(20000, generator=torch.Generator().manual_seed(0))
    ids = draw(probs.expand(20000, 4), u)
    assert set(ids.tolist()) == {1, 3} and abs((ids == 3).float().mean().item() - 0.7) < 0.02


def test_row_random_streams_depend_only_on_their_seed():
    a = RowRandom([5, 6, 7])
    b = RowRandom([7])
    first = torch.stack([a.uniform() for _ in range(100)], 1)  # (3, 100), across a block refill
    second = torch.stack([b.uniform() for _ in range(100)], 1)
    assert torch.equal(first[2], second[0]) and not torch.equal(first[0], first[1])


def test_sample_next_greedy_cases_and_seeded_generator():
    logits = torch.randn(4, 10)
    assert torch.equal(sample_next(logits, temperature=0), logits.argmax(-1))
    assert torch.equal(sample_next(logits, top_k=1), logits.argmax(-1))
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(sample_next(logits, generator=g1), sample_next(logits, generator=g2))


# --------------------------------------------------------------------------- reorder_state


class Boxed:
    """A state object with its own select (returns a new object)."""

    def __init__(self, t: torch.Tensor) -> None:
        self.t = t

    def select(self, rows: torch.Tensor) -> "Boxed":
        return Boxed(self.t[rows])


def test_reorder_state_handles_nested_states():
    Pair = namedtuple("Pair", "h c")
    cache = KVCache(3, 2, 5, 4, "cpu", torch.float32)
    cache.k[:, 0, 0, 0] = torch.tensor([0.0, 1.0, 2.0])
    state = {"pair": Pair(torch.arange(3), torch.arange(3) * 10), "caches": [cache],
             "box": Boxed(torch.tensor([7, 8, 9])), "step": 4, "none": None}
    out = reorder_state(state, torch.tensor([2, 2, 0]))
    assert out["pair"].h.tolist() == [2, 2, 0] and out["pair"].c.tolist() == [20, 20, 0]
    assert out["caches"][0] is cache and cache.k[:, 0, 0, 0].tolist() == [2.0, 2.0, 0.0]
    assert out["box"].t.tolist() == [9, 9, 7] and out["step"] == 4 and out["none"] is None
    h = torch.arange(6).view(1, 3, 2)  # torch's recurrent layout (layers, B, H)
    assert reorder_state(h, torch.tensor([1]), dim=1).tolist() == [[[2, 3]]]
    with pytest.raises(TypeError, match="select"):
        reorder_state(object(), torch.tensor([0]))


# --------------------------------------------------------------------------- the loops


def markov(V: int = 4, seed: int = 0, probs: list[list[float]] | None = None):
    """A decoder whose next-token distribution depends on the last token only (a random
    table, or `probs`); its state is a dict of per-row tensors, reordered with the beams."""
    table = torch.log_softmax(torch.randn(V, V, generator=torch.Generator().manual_seed(seed)) * 2, -1)
    if probs is not None:
        table = torch.tensor(probs).log()

    def step(ids: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        assert ids.shape == (state["steps"].size(0), 1)
        return table[ids[:, 0]], {"steps": state["steps"] + 1, "last": ids[:, 0]}

    return table, step


def sequence_logprob(table: torch.Tensor, start: int, seq: list[int]) -> float:
    prev, total = start, 0.0
    for t in seq:
        total += float(table[prev, t])
        prev = t
    return total


def test_beam_search_over_a_step_function_is_exact_and_reorders_state():
    V = 4
    table, step = markov(V)
    starts = torch.tensor([0, 2])  # start token ids: the first call goes through step_fn
    hyps = beam_search(step, starts, {"steps": torch.zeros(2, dtype=torch.long)},
                       num_beams=V ** 3, max_new_tokens=4, num_return=2)
    for b, start in enumerate(starts.tolist()):
        seqs = [list(s) for s in itertools.product(range(V), repeat=4)]
        scores = sorted((sequence_logprob(table, start, s) for s in seqs), reverse=True)
        assert [h.logprob for h in hyps[b]] == pytest.approx(scores[:2], abs=1e-5)
        best = max(seqs, key=lambda s: sequence_logprob(table, start, s))
        assert hyps[b][0].tokens == best


def test_beam_search_early_stopping_eos_and_length_penalty():
    V, eos = 4, 3
    table, step = markov(V, probs=[[0.1, 0.45, 0.05, 0.4], [0.3, 0.1, 0.3, 0.3],
                                   [0.4, 0.4, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25]])
    state = {"steps": torch.zeros(1, dtype=torch.long)}
    run = lambda **kw: beam_search(step, torch.tensor([0]), state, num_beams=2,  # noqa: E731
                                   max_new_tokens=30, eos_id=eos, num_return=2, **kw)[0]
    # ranked by total log-probability, ending soon wins: both hypotheses end with <eos>
    fast, full = run(length_penalty=0.0, early_stopping=True), run(length_penalty=0.0,
                                                                  early_stopping=False)
    for hyps in (fast, full):
        for h in hyps:
            assert h.finished and h.tokens[-1] == eos and eos not in h.tokens[:-1]
            assert h.logprob == pytest.approx(sequence_logprob(table, 0, h.tokens), abs=1e-5)
            assert h.score == pytest.approx(h.logprob, abs=1e-6)
    assert full[0].score >= fast[0].score - 1e-9  # searching on never finds worse
    assert [h.tokens for h in fast] == [[3], [1, 3]]
    # ranked per token, this chain's likely cycle 0 -> 2 -> 1 -> 0 beats every ending
    table, step = markov(V, seed=1)
    long = run(length_penalty=1.0, early_stopping=False)
    assert not long[0].finished and len(long[0].tokens) == 30
    assert long[0].score == pytest.approx(long[0].logprob / 30, abs=1e-6)


def test_sample_loop_from_start_ids_greedy_and_stop_ids():
    V = 4
    table, step = markov(V)
    state = {"steps": torch.zeros(2, dtype=torch.long)}
    out = list(sample_loop(step, torch.tensor([0, 1]), state, 6, temperature=0))
    tokens = torch.stack([t for t, _ in out], 1)  # (2, 6)
    prev = torch.tensor([0, 1])
    for t in range(6):
        assert torch.equal(tokens[:, t], table[prev].argmax(-1))
        prev = tokens[:, t]
    stop = int(tokens[1, 1])
    last = max(row.index(stop) for row in tokens.tolist())  # the step the later row stops at
    assert last >= 1
    stopped = list(sample_loop(step, torch.tensor([0, 1]), state, 6, temperature=0, stop_ids=[stop]))
    assert len(stopped) == last + 1  # the loop ends once every row has met the stop id
