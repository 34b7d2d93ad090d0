"""Decoding causal LMs: the cache equals recomputation, batches equal single rows, beams are
exact on an enumerable model, seeds reproduce, bad options fail clearly."""

from __future__ import annotations

import importlib.util
import itertools

import pytest
import torch

from lmforge.config import ModelConfig
from lmforge.generate import (DecodeOptions, beam_search, generate_ids, generate_tokens,
                              score_ids, start_decoding, token_logprobs)
from lmforge.models.build import BACKBONES, build_model

@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny models: thread start-up costs more than the maths (and CI machines are shared)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


CAUSAL_ARCHS = ["gpt", "rnn", "lstm", "gru", "cnn", "rcnn", "mlp", "bigram"]
V = 40


def lm(arch: str, vocab: int = V, chaotic: bool = True, dtype: torch.dtype = torch.float64,
       **kw) -> torch.nn.Module:
    """A tiny random causal LM in float64; `chaotic` weights make greedy output non-trivial
    (a fresh init mostly repeats one token), float64 keeps near-ties out of the comparisons."""
    module = BACKBONES[arch].split(":")[0]
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not written yet")
    base = dict(arch=arch, vocab_size=vocab, d_model=16, n_layers=2, n_heads=2, max_len=256,
                tie_embeddings=False)
    if arch == "mlp":
        base["extra"] = {"context": 3}
    base.update(kw)
    torch.manual_seed(0)
    model = build_model(ModelConfig(**base)).to(dtype).eval()
    if chaotic:
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.5 if p.dim() > 1 else 0.1)
    return model


def recompute_greedy(model, prompt: list[int], n: int, limit: int | None) -> list[int]:
    """Reference: the whole prefix (cropped to the context) through the model for every token."""
    tokens = list(prompt)
    for _ in range(n):
        ctx = tokens[-limit:] if limit else tokens
        with torch.no_grad():
            logits, _ = model(torch.tensor([ctx]))
        tokens.append(int(logits[0, -1].argmax()))
    return tokens[len(prompt):]


# --------------------------------------------------------------------------- cache == recompute


@pytest.mark.parametrize("arch", CAUSAL_ARCHS)
def test_greedy_with_state_equals_recompute_200_tokens(arch):
    model = lm(arch)
    prompt = [1, 7, 3]
    cached = generate_ids(model, prompt, 200, temperature=0)
    assert cached == recompute_greedy(model, prompt, 200, None)
    assert len(cached) == 200


@pytest.mark.parametrize("arch", ["gpt", "lstm", "cnn"])
def test_seeded_sampling_with_state_equals_recompute(arch):
    model = lm(arch)
    a = generate_ids(model, [2, 5], 60, seed=3, top_p=0.9, min_p=0.02, repetition_penalty=1.3)
    b = generate_ids(model, [2, 5], 60, seed=3, top_p=0.9, min_p=0.02, repetition_penalty=1.3,
                     use_cache=False)
    assert a == b


@pytest.mark.parametrize("positional", ["learned", "rotary"])
def test_sliding_window_past_the_context(positional):
    """Past max_len the cache is refilled from the last max_len // 2 tokens: at each step the
    model sees a window that shrinks to L/2 when it would exceed L, then grows again."""
    L = 12
    model = lm("gpt", max_len=L, positional=positional)
    prompt = [4, 9, 1]
    out = generate_ids(model, prompt, 50, temperature=0)
    tokens, visible = list(prompt), len(prompt)
    ref = []
    for _ in range(50):
        with torch.no_grad():
            logits, _ = model(torch.tensor([tokens[-visible:]]))
        tok = int(logits[0, -1].argmax())
        ref.append(tok)
        tokens.append(tok)
        visible = L // 2 if visible >= L else visible + 1
    assert out == ref


def test_prompt_longer_than_context_keeps_its_end():
    model = lm("gpt", max_len=8)
    prompt = list(range(1, 21))
    out = generate_ids(model, prompt, 1, temperature=0)
    assert out == recompute_greedy(model, prompt[-8:], 1, None)


# --------------------------------------------------------------------------- greedy limits


@pytest.mark.parametrize("arch", ["gpt", "gru"])
def test_top_k_1_and_tiny_temperature_equal_greedy(arch):
    model = lm(arch)
    greedy = generate_ids(model, [3, 1], 40, temperature=0)
    assert generate_ids(model, [3, 1], 40, top_k=1, seed=0) == greedy
    assert generate_ids(model, [3, 1], 40, temperature=1e-6, seed=0) == greedy


@pytest.mark.parametrize("arch", ["gpt", "lstm", "cnn"])
def test_one_beam_equals_greedy(arch):
    model = lm(arch)
    greedy = generate_ids(model, [3, 1], 40, temperature=0)
    [[hyp]] = generate_tokens(model, [[3, 1]], DecodeOptions(max_new_tokens=40, num_beams=1,
                                                              temperature=0))
    assert hyp.tokens == greedy
    logits, state, step = start_decoding(model, [[3, 1]], 40)
    [[beam]] = beam_search(step, logits, state, num_beams=1, max_new_tokens=40)
    assert beam.tokens == greedy
    assert beam.logprob == pytest.approx(score_ids(model, [3, 1], greedy), abs=1e-9)


# --------------------------------------------------------------------------- beam search is exact


def _all_sequence_logprobs(model, prompt: list[int], vocab: int, length: int):
    seqs = [list(s) for s in itertools.product(range(vocab), repeat=length)]
    lps = token_logprobs(model, [(prompt, s) for s in seqs], batch_size=256)
    return seqs, lps


def test_beam_search_finds_the_best_sequence_by_brute_force():
    vocab = 5
    model = lm("gpt", vocab=vocab)
    seqs, lps = _all_sequence_logprobs(model, [1], vocab, 4)
    totals = torch.stack([lp.sum() for lp in lps])
    best = seqs[int(totals.argmax())]
    # with vocab ** 3 beams no prefix of length 3 is ever pruned: the search is exhaustive
    opts = DecodeOptions(max_new_tokens=4, num_beams=vocab ** 3, num_samples=3)
    hyps = generate_tokens(model, [[1]], opts)[0]
    assert hyps[0].tokens == best
    assert hyps[0].logprob == pytest.approx(float(totals.max()), abs=1e-9)
    ranked = totals.sort(descending=True).values[:3]
    assert [h.logprob for h in hyps] == pytest.approx(ranked.tolist(), abs=1e-9)
    # a handful of beams already finds it on this model or comes close; never beats it
    few = generate_tokens(model, [[1]], DecodeOptions(max_new_tokens=4, num_beams=3))[0][0]
    assert few.logprob <= float(totals.max()) + 1e-9


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 2.0])
def test_beam_search_with_eos_and_length_penalty_is_exact(length_penalty):
    """Hypotheses end at <eos> (any length <= 4) or at 4 tokens; rank = logprob / len ** lp."""
    vocab, eos = 4, 3
    model = lm("gpt", vocab=vocab)
    candidates = []
    for n in range(1, 5):
        for s in itertools.product(range(vocab), repeat=n):
            if eos in s[:-1] or (n < 4 and s[-1] != eos):
                continue  # eos only at the end; shorter sequences must end with it
            candidates.append(list(s))
    lps = token_logprobs(model, [([0], s) for s in candidates], batch_size=256)
    scores = [float(lp.sum()) / len(s) ** length_penalty for s, lp in zip(candidates, lps)]
    best = candidates[max(range(len(scores)), key=scores.__getitem__)]
    opts = DecodeOptions(max_new_tokens=4, num_beams=128, length_penalty=length_penalty,
                         early_stopping=False)
    hyp = generate_tokens(model, [[0]], opts, eos_id=eos)[0][0]
    assert hyp.tokens == best
    assert hyp.score == pytest.approx(max(scores), abs=1e-9)
    assert hyp.finished == (best[-1] == eos)


# --------------------------------------------------------------------------- ragged batches


@pytest.mark.parametrize("arch,positional", [("gpt", "learned"), ("gpt", "rotary")]
                         + [(a, "learned") for a in CAUSAL_ARCHS[1:]])
def test_ragged_batch_equals_each_prompt_alone(arch, positional):
    model = lm(arch, positional=positional)
    prompts = [[5], [1, 2, 3, 4, 5, 6], [7, 8, 9]]
    for opts in (dict(temperature=0), dict(seed=11, top_k=20)):
        options = DecodeOptions(max_new_tokens=30, **opts)
        batch = [h[0].tokens for h in generate_tokens(model, prompts, options)]
        alone = [generate_tokens(model, [p], options)[0][0].tokens for p in prompts]
        assert batch == alone, opts


def test_ragged_batch_past_the_context_slides_every_row():
    model = lm("gpt", max_len=10)
    out = generate_tokens(model, [[1], [2, 3, 4, 5, 6, 7]], DecodeOptions(max_new_tokens=40,
                                                                            temperature=0))
    assert [len(h[0].tokens) for h in out] == [40, 40]


def test_ragged_beam_batch_equals_each_prompt_alone():
    model = lm("gpt")
    prompts = [[5], [1, 2, 3, 4], [7, 8]]
    opts = DecodeOptions(max_new_tokens=12, num_beams=4, num_samples=2)
    batch = generate_tokens(model, prompts, opts, eos_id=0)
    for p, hyps in zip(prompts, batch):
        alone = generate_tokens(model, [p], opts, eos_id=0)[0]
        assert [h.tokens for h in hyps] == [h.tokens for h in alone]


# --------------------------------------------------------------------------- seeds and stops


def test_same_seed_same_tokens_different_seed_different_tokens():
    model = lm("gpt")
    a = generate_ids(model, [1, 2], 50, temperature=1.0, seed=5)
    assert a == generate_ids(model, [1, 2], 50, temperature=1.0, seed=5)
    assert a != generate_ids(model, [1, 2], 50, temperature=1.0, seed=6)


def test_num_samples_use_consecutive_seeds_and_do_not_touch_global_rng():
    model = lm("lstm")
    state = torch.get_rng_state()
    [samples] = generate_tokens(model, [[1, 2]], DecodeOptions(max_new_tokens=20, num_samples=3,
                                                                seed=7))
    assert torch.equal(state, torch.get_rng_state())
    for j, hyp in enumerate(samples):
        assert hyp.tokens == generate_ids(model, [1, 2], 20, seed=7 + j)
    assert len({tuple(h.tokens) for h in samples}) == 3


def test_stop_ids_end_each_row_and_logprob_matches_score():
    model = lm("gpt")
    free = generate_ids(model, [1], 60, temperature=0)
    stop = free[10]
    first = free.index(stop)
    [[hyp]] = generate_tokens(model, [[1]], DecodeOptions(max_new_tokens=60, temperature=0),
                              eos_id=stop)
    assert hyp.tokens == free[:first + 1] and hyp.finished
    assert hyp.logprob == pytest.approx(score_ids(model, [1], hyp.tokens), abs=1e-9)


def test_max_new_tokens_zero_gives_nothing():
    model = lm("gru")
    assert generate_ids(model, [1], 0) == []
    [[beam]] = generate_tokens(model, [[1]], DecodeOptions(max_new_tokens=0, num_beams=2))
    assert beam.tokens == []


# --------------------------------------------------------------------------- scores


@pytest.mark.parametrize("arch", ["gpt", "lstm", "cnn"])
def test_score_is_the_sum_of_log_softmax_of_a_full_forward(arch):
    model = lm(arch)
    prompt, cont = [3, 1, 4], [1, 5, 9, 2]
    with torch.no_grad():
        logits, _ = model(torch.tensor([prompt + cont]))
    logp = torch.log_softmax(logits[0], dim=-1)  # (T, V)
    expected = sum(float(logp[len(prompt) - 1 + i, t]) for i, t in enumerate(cont))
    assert score_ids(model, prompt, cont) == pytest.approx(expected, abs=1e-9)
    batched = token_logprobs(model, [(prompt, cont), ([2], [7]), (prompt, [])])
    assert float(batched[0].sum()) == pytest.approx(expected, abs=1e-9)
    assert batched[2].numel() == 0


def test_score_past_the_context_uses_overlapping_windows():
    model = lm("gpt", max_len=8)
    seq = list(range(1, 31))
    lps = token_logprobs(model, [(seq[:2], seq[2:])])[0]
    assert lps.shape == (28,) and bool(torch.isfinite(lps).all())
    # the first window is the plain forward of the first max_len tokens
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([seq[:6]]))[0][0], -1)
    assert float(lps[0]) == pytest.approx(float(logp[1, seq[2]]), abs=1e-9)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kwargs,message", [
    (dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p"), (dict(temperature=-1.0), "temperature"),
    (dict(max_new_tokens=-1), "max_new_tokens"), (dict(min_p=1.0), "min_p"),
    (dict(top_k=-2), "top_k"), (dict(repetition_penalty=0.0), "repetition_penalty"),
    (dict(num_beams=0), "num_beams"), (dict(num_beams=2, num_samples=3), "num_samples"),
    (dict(num_beams=2, top_k=5), "beam search"), (dict(colour="red"), "unknown generation option"),
])
def test_bad_options_are_one_line_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message) as err:
        DecodeOptions.from_kwargs(**kwargs)
    assert "\n" not in str(err.value)


def test_empty_prompt_ids_and_non_causal_models_are_refused():
    with pytest.raises(ValueError, match="at least one token"):
        generate_ids(lm("gpt"), [], 5)
    encoder = build_model(ModelConfig(arch="lstm", head="classifier", vocab_size=V, d_model=8,
                                      n_layers=1, bidirectional=True))
    with pytest.raises(ValueError, match="causal"):
        generate_ids(encoder, [1], 5)
