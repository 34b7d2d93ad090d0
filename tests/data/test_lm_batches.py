"""LMBatches: shapes, shifted targets, exact resume, sequential streams, short-corpus error."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from lmforge.config import ConfigError
from lmforge.data.lm_batches import LMBatches

TOKENS = np.arange(1000, dtype=np.uint16)  # token value == its position: windows are easy to check


def test_shapes_dtype_and_shift():
    batches = LMBatches(TOKENS, block_size=16, batch_size=5, seed=0)
    x, y = batches.next()
    assert x.shape == y.shape == (5, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(y[:, :-1], x[:, 1:])  # y is x shifted by one
    assert torch.equal(y[:, -1], x[:, -1] + 1)  # ... and continues the text
    assert torch.equal(x - x[:, :1], torch.arange(16).expand(5, 16))  # contiguous windows
    assert int(y.max()) <= 999 and int(x.min()) >= 0


def test_every_start_reachable():
    # 18 tokens, block 16: starts 0 and 1 are the only windows of 17 tokens
    batches = LMBatches(np.arange(18, dtype=np.uint16), block_size=16, batch_size=64, seed=1)
    starts = {int(v) for v in batches.next()[0][:, 0]}
    assert starts == {0, 1}


def test_memmap_input(tmp_path):
    path = tmp_path / "t.bin"
    TOKENS.tofile(path)
    mm = np.memmap(path, dtype=np.uint16, mode="r")
    x, y = LMBatches(mm[:500], block_size=8, batch_size=3).next()
    assert int(y.max()) < 500


@pytest.mark.parametrize("sequential", [False, True])
def test_state_dict_resume_is_exact(sequential):
    a = LMBatches(TOKENS, block_size=8, batch_size=4, seed=7, sequential=sequential)
    for _ in range(5):
        a.next()
    state = a.state_dict()
    buf = io.BytesIO()
    torch.save(state, buf)  # as in trainer_state.pt
    buf.seek(0)
    restored = torch.load(buf, weights_only=True)
    expected = [a.next() for _ in range(40)]  # crosses a wrap in sequential mode
    b = LMBatches(TOKENS, block_size=8, batch_size=4, seed=123, sequential=sequential)
    b.load_state_dict(restored)
    for x, y in expected:
        bx, by = b.next()
        assert torch.equal(x, bx) and torch.equal(y, by)


def test_same_seed_same_batches_different_seed_differs():
    a, b, c = (LMBatches(TOKENS, 8, 4, seed=s) for s in (3, 3, 4))
    xa, xb, xc = a.next()[0], b.next()[0], c.next()[0]
    assert torch.equal(xa, xb) and not torch.equal(xa, xc)


def test_sequential_streams_continue_and_wrap():
    batches = LMBatches(TOKENS, block_size=10, batch_size=4, sequential=True)
    assert batches.stream_len == 250
    x0, y0 = batches.next()
    assert batches.reset
    assert x0[:, 0].tolist() == [0, 250, 500, 750]  # row b reads the b-th quarter
    x1, y1 = batches.next()
    assert not batches.reset
    assert torch.equal(x1[:, 0], y0[:, -1])  # window k+1 picks up exactly where window k stopped
    assert torch.equal(x1, x0 + 10)
    # 24 windows of 10 fit in a stream of 250 (the 25th would need token 251); then it wraps
    for _ in range(22):
        x, y = batches.next()
    assert int(y[0, -1]) <= 249
    x, _ = batches.next()
    assert batches.reset and x[:, 0].tolist() == [0, 250, 500, 750]


def test_too_short_corpus_errors():
    with pytest.raises(ConfigError, match="corpus has 16 tokens, fewer than one context window of block_size\\+1 = 17"):
        LMBatches(np.arange(16), block_size=16, batch_size=2)
    LMBatches(np.arange(17), block_size=16, batch_size=2)  # exactly one window is enough
    with pytest.raises(ConfigError, match="batch_size=4 streams"):
        LMBatches(np.arange(40), block_size=16, batch_size=4, sequential=True)
    with pytest.raises(ConfigError, match="block_size=8"):
        a = LMBatches(TOKENS, block_size=16, batch_size=2)
        a.load_state_dict(LMBatches(TOKENS, block_size=8, batch_size=2).state_dict())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batches():
    x, y = LMBatches(TOKENS, 8, 4, device="cuda").next()
    assert x.is_cuda and y.is_cuda and torch.equal(y[:, :-1], x[:, 1:])
