"""The scheduler without HTTP: continuous batching equals one-at-a-time decoding, token for
token, and a cancelled sequence frees its slot."""

from __future__ import annotations

import threading

import pytest
import torch

from lmforge.config import ModelConfig
from lmforge.generate import DecodeOptions, generate_ids
from lmforge.models.build import build_model
from lmforge.serve.engines import KVBatch, SoloRows
from lmforge.serve.scheduler import QueueFull, Scheduler, Sequence
from lmforge.tokenizers.train import train_tokenizer

TEXT = "the quick brown fox jumps over the lazy dog. ROMEO: what light through yonder window"


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer("char", [TEXT])


def tiny(arch: str = "gpt", positional: str = "learned", vocab: int = 40, max_len: int = 48):
    torch.manual_seed(0)
    extra = {"n_kv_heads": 1} if arch == "llama" else {}  # grouped-query attention
    cfg = ModelConfig(arch=arch, vocab_size=vocab, d_model=32, n_layers=2, n_heads=2,
                      max_len=max_len, positional=positional, **extra)
    return build_model(cfg).eval()


class Collector:
    """A sink that records every delta and signals the end of its sequence."""

    def __init__(self, on_delta=None):
        self.deltas, self.done = [], threading.Event()
        self.on_delta = on_delta

    def __call__(self, delta):
        self.deltas.append(delta)
        if self.on_delta:
            self.on_delta(len(self.deltas))
        if delta.finish_reason:
            self.done.set()


def run_staggered(model, tokenizer, jobs, max_batch=8):
    """Submit the first job; the others join while it decodes (after its 3rd token), so the
    batch holds rows of different ages and prompt lengths. Returns each job's sequence."""
    sched = Scheduler(model, tokenizer, max_batch=max_batch).start()
    sinks = [Collector() for _ in jobs]
    seqs = [Sequence(prompt, opts, sink) for (prompt, opts), sink in zip(jobs, sinks)]
    later = seqs[1:]
    sinks[0].on_delta = lambda n: n == 3 and sched.submit(later)
    sched.submit(seqs[:1])
    try:
        for sink in sinks:
            assert sink.done.wait(30), "a sequence never finished"
    finally:
        sched.close()
    return seqs, sinks, sched


PROMPTS = [[5, 6, 7], [8] * 9, [9, 10], [11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22], [4]]


@pytest.mark.parametrize("arch,positional", [("gpt", "learned"), ("gpt", "rotary"),
                                             ("llama", "rotary")])
@pytest.mark.parametrize("first", [0, 3])
def test_batched_greedy_equals_one_at_a_time(tokenizer, arch, positional, first):
    """first=0: a 3-token prompt starts, longer ones arrive (the batch shifts right);
    first=3: a 12-token prompt starts, shorter ones join in place at the current column."""
    model = tiny(arch, positional, max_len=32)  # the column clock reaches max_len: shifted
    lengths = [20, 7, 25, 12, 30]  # rows finish at different steps and leave the batch
    jobs = [(p, DecodeOptions(max_new_tokens=n, temperature=0)) for p, n in zip(PROMPTS, lengths)]
    jobs.insert(0, jobs.pop(first))
    seqs, sinks, sched = run_staggered(model, tokenizer, jobs)
    assert isinstance(sched.engine, KVBatch)
    if first == 0:  # longer prompts than columns (shift right); then max_len reached (left)
        assert sched.engine.shifts >= 2 and sched.engine.rebuilds == 0
    else:
        assert sched.engine.appends >= 1
    for (prompt, opts), seq in zip(jobs, seqs):
        expected = generate_ids(model, prompt, max_new_tokens=opts.max_new_tokens, temperature=0)
        assert seq.tokens == expected
        assert seq.finish_reason == "length"
    text = "".join(d.text for d in sinks[0].deltas)
    assert text == tokenizer.decode(seqs[0].tokens)


def test_seeded_sampling_equals_one_at_a_time(tokenizer):
    model = tiny()
    opts = [DecodeOptions(max_new_tokens=15, temperature=0.9, top_k=10, seed=s) for s in (1, 2, 3)]
    opts.append(DecodeOptions(max_new_tokens=15, temperature=0.7, top_p=0.9, min_p=0.05,
                              repetition_penalty=1.3, seed=4))
    jobs = list(zip(PROMPTS, opts))
    seqs, _, _ = run_staggered(model, tokenizer, jobs)
    for (prompt, o), seq in zip(jobs, seqs):
        expected = generate_ids(model, prompt, max_new_tokens=15, temperature=o.temperature,
                                top_k=o.top_k, top_p=o.top_p, min_p=o.min_p,
                                repetition_penalty=o.repetition_penalty, seed=o.seed)
        assert seq.tokens == expected


def test_recurrent_models_interleave_rows(tokenizer):
    model = tiny(arch="lstm")
    jobs = [(p, DecodeOptions(max_new_tokens=10, temperature=0)) for p in PROMPTS[:3]]
    seqs, _, sched = run_staggered(model, tokenizer, jobs)
    assert isinstance(sched.engine, SoloRows)
    for (prompt, _), seq in zip(jobs, seqs):
        assert seq.tokens == generate_ids(model, prompt, max_new_tokens=10, temperature=0)


def test_a_stop_id_ends_the_row(tokenizer):
    model = tiny(max_len=48)
    stop = generate_ids(model, [5, 6, 7], max_new_tokens=6, temperature=0)[-1]
    sink = Collector()
    seq = Sequence([5, 6, 7], DecodeOptions(max_new_tokens=40, temperature=0), sink, stop_ids=[stop])
    sched = Scheduler(model, tokenizer).start()
    sched.submit([seq])
    assert sink.done.wait(30)
    sched.close()
    assert seq.finish_reason == "stop" and seq.tokens[-1] == stop and len(seq.tokens) <= 6
    assert sink.deltas[-1].token is None  # the end token carries no text


def test_cancel_frees_the_slot(tokenizer):
    model = tiny(max_len=200)
    sched = Scheduler(model, tokenizer, max_batch=1).start()
    first = Collector()
    long = Sequence([5, 6], DecodeOptions(max_new_tokens=150, temperature=0), first)
    first.on_delta = lambda n: n == 2 and long.cancel()
    second = Collector()
    short = Sequence([7], DecodeOptions(max_new_tokens=4, temperature=0), second)
    sched.submit([long, short])
    try:
        assert second.done.wait(30), "the waiting sequence never got the freed slot"
    finally:
        sched.close()
    assert long.finish_reason is None and len(long.tokens) < 10  # stopped early, no final delta
    assert short.finish_reason == "length" and len(short.tokens) == 4
    assert sched.rows == [] and len(sched.engine) == 0


def test_queue_is_bounded(tokenizer):
    sched = Scheduler(tiny(), tokenizer, max_batch=1, max_queue=2)  # not started: nothing leaves
    make = lambda: Sequence([5], DecodeOptions(max_new_tokens=2), lambda d: None)
    sched.submit([make(), make()])
    with pytest.raises(QueueFull):
        sched.submit([make()])


def test_a_batch_of_mostly_padding_shifts_left(tokenizer):
    """A late, short row outlives the long row it joined: once most columns are padding the
    batch moves left over them, and the late row still decodes exactly as it would alone."""
    model = tiny(positional="rotary", max_len=200)
    sched = Scheduler(model, tokenizer).start()
    late_sink = Collector()
    late = Sequence([9, 10], DecodeOptions(max_new_tokens=90, temperature=0), late_sink)
    early_sink = Collector(on_delta=lambda n: n == 60 and sched.submit([late]))
    early = Sequence([5, 6, 7], DecodeOptions(max_new_tokens=70, temperature=0), early_sink)
    sched.submit([early])
    try:
        assert late_sink.done.wait(60)
    finally:
        sched.close()
    assert sched.engine.appends == 1 and sched.engine.shifts == 1 and sched.engine.rebuilds == 0
    assert early.tokens == generate_ids(model, [5, 6, 7], max_new_tokens=70, temperature=0)
    assert late.tokens == generate_ids(model, [9, 10], max_new_tokens=90, temperature=0)


@pytest.mark.parametrize("positional", ["learned", "rotary"])
def test_a_row_past_the_context_slides_like_generate(tokenizer, positional):
    """A row that fills the whole context is re-prefilled from its last max_len // 2 tokens,
    as `generate` slides its window, and goes on decoding the same tokens."""
    model = tiny(positional=positional, max_len=16)
    sink = Collector()
    seq = Sequence([5, 6, 7], DecodeOptions(max_new_tokens=30, temperature=0), sink)
    sched = Scheduler(model, tokenizer).start()
    sched.submit([seq])
    try:
        assert sink.done.wait(30)
    finally:
        sched.close()
    assert sched.engine.rebuilds >= 1
    assert seq.tokens == generate_ids(model, [5, 6, 7], max_new_tokens=30, temperature=0)


def test_a_request_that_cannot_start_fails_alone(tokenizer):
    model = tiny()
    sched = Scheduler(model, tokenizer).start()
    good_sink, bad_sink = Collector(), Collector()
    good = Sequence([5, 6], DecodeOptions(max_new_tokens=5, temperature=0), good_sink)
    bad = Sequence([5], DecodeOptions(max_new_tokens=5, temperature=0.5, seed=2**70), bad_sink)
    sched.submit([good, bad])  # the seed does not fit a torch generator
    try:
        assert good_sink.done.wait(30) and bad_sink.done.wait(30)
    finally:
        sched.close()
    assert bad.finish_reason == "error" and "cannot decode" in bad_sink.deltas[-1].text
    assert good.tokens == generate_ids(model, [5, 6], max_new_tokens=5, temperature=0)
