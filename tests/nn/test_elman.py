"""The hand-written Elman BPTT (nn/elman.py) against torch.nn.RNN with the same weights:
outputs, final states and every gradient, for the settings lmforge trains with."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lmforge.nn import elman
from lmforge.nn.recurrent import run_fused


def grads_of(rnn, x, h0, runner):
    for p in rnn.parameters():
        p.grad = None
    x = x.clone().requires_grad_()
    h0 = None if h0 is None else h0.clone().requires_grad_()
    out, last = runner(rnn, x, h0)
    # a loss that reaches every output and the final state, with uneven weights
    loss = (out * torch.linspace(-1, 1, out.size(-1))).square().sum() + last.sin().sum()
    loss.backward()
    return out, last, [p.grad for p in rnn.parameters()] + [x.grad] + ([] if h0 is None else [h0.grad])


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("layers, bias, with_state", [(1, True, False), (2, True, True),
                                                      (2, False, False)])
def test_bptt_equals_torch_rnn(nonlinearity, layers, bias, with_state):
    torch.manual_seed(0)
    rnn = nn.RNN(5, 7, num_layers=layers, nonlinearity=nonlinearity, bias=bias, batch_first=True)
    x = torch.randn(3, 11, 5)
    h0 = torch.randn(layers, 3, 7) * 0.5 if with_state else None
    assert elman.can_run(rnn, x)
    want = grads_of(rnn, x, h0, lambda r, a, h: r(a, h))
    got = grads_of(rnn, x, h0, elman.run_elman)
    torch.testing.assert_close(got[0], want[0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got[1], want[1], atol=1e-6, rtol=1e-5)
    for g, w in zip(got[2], want[2]):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)


def test_run_fused_uses_it_only_for_cpu_fp32_unidirectional_training():
    rnn = nn.RNN(4, 6, batch_first=True)
    x = torch.randn(2, 5, 4)
    assert elman.can_run(rnn, x)
    with torch.no_grad():
        assert not elman.can_run(rnn, x)  # inference: torch's kernel is already fast
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not elman.can_run(rnn, x)
    assert not elman.can_run(nn.RNN(4, 6, batch_first=True, bidirectional=True), x)
    assert not elman.can_run(nn.LSTM(4, 6, batch_first=True), x)
    out, state = run_fused(rnn, x)  # through the BPTT
    ref_out, ref_state = rnn(x)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(state, ref_state)


def test_dropout_between_layers_only_in_training():
    torch.manual_seed(0)
    rnn = nn.RNN(4, 6, num_layers=2, dropout=0.5, batch_first=True)
    x = torch.randn(2, 5, 4)
    train_out, _ = elman.run_elman(rnn, x)
    rnn.eval()
    eval_out, _ = elman.run_elman(rnn, x)
    torch.testing.assert_close(eval_out, rnn(x)[0])  # eval: no dropout, equals torch
    assert not torch.allclose(train_out, eval_out)  # training: layer 1's outputs were dropped
