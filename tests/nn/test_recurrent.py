"""Hand-written recurrent cells against torch's fused kernels, with copied weights."""

import pytest
import torch
from torch import nn

from lmforge.nn.recurrent import (CELLS, FUSED, RNNCell, cells_like, detach_state,
                                  lengths_from_mask, run_cells, run_fused, select_state)


TORCH_CELLS = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}
MASK = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0], [1, 0, 0, 0, 0, 0]]).bool()


def _flat(state):
    return list(state) if isinstance(state, tuple) else [state]


def _state(kind, layers, batch=3, hidden=7):
    h = torch.randn(layers, batch, hidden)
    return (h, torch.randn_like(h)) if kind == "lstm" else h


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_single_cell_matches_torch_cell(kind):
    ours = CELLS[kind](5, 7)
    ref = TORCH_CELLS[kind](5, 7)
    ref.load_state_dict(ours.state_dict())  # same names, shapes and gate order
    x = torch.randn(4, 5)
    state = (torch.randn(4, 7), torch.randn(4, 7)) if kind == "lstm" else torch.randn(4, 7)
    for a, b in zip(_flat(ours(x, state)), _flat(ref(x, state))):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind,nonlinearity",
                         [("rnn", "tanh"), ("rnn", "relu"), ("lstm", None), ("gru", None)])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_unrolled_cells_match_fused_kernel(kind, nonlinearity, bidirectional, masked, with_state):
    kwargs = {"nonlinearity": nonlinearity} if nonlinearity else {}
    fused = FUSED[kind](5, 7, num_layers=2, batch_first=True, bidirectional=bidirectional,
                        **kwargs)
    cells = cells_like(fused)
    x = torch.randn(3, 6, 5)
    dirs = 2 if bidirectional else 1
    state = _state(kind, 2 * dirs) if with_state else None
    mask = MASK if masked else None
    out_f, state_f = run_fused(fused, x, mask, state)
    out_c, state_c = run_cells(cells, x, state, mask, bidirectional)
    torch.testing.assert_close(out_c, out_f, atol=1e-5, rtol=1e-5)
    for a, b in zip(_flat(state_c), _flat(state_f)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_padding_changes_nothing_real(kind):
    fused = FUSED[kind](5, 7, num_layers=2, batch_first=True)
    x = torch.randn(3, 6, 5)
    out, state = run_fused(fused, x, MASK)
    for b, length in enumerate(MASK.sum(1).tolist()):
        alone, alone_state = fused(x[b:b + 1, :length])
        torch.testing.assert_close(out[b:b + 1, :length], alone, atol=1e-6, rtol=1e-5)
        assert out[b, length:].abs().max() == 0 if length < 6 else True
        for a, s in zip(_flat(alone_state), _flat(state)):
            torch.testing.assert_close(s[:, b:b + 1], a, atol=1e-6, rtol=1e-5)
    # garbage in the padded positions must not matter either
    noisy = x.clone()
    noisy[~MASK] = 100.0
    out2, state2 = run_fused(fused, noisy, MASK)
    torch.testing.assert_close(out2, out)
    for a, b in zip(_flat(state2), _flat(state)):
        torch.testing.assert_close(a, b)


def test_row_without_real_tokens_keeps_incoming_state():
    fused = nn.LSTM(5, 7, batch_first=True)
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]]).bool()
    state = _state("lstm", 1, batch=2)
    out, (h, c) = run_fused(fused, torch.randn(2, 3, 5), mask, state)
    torch.testing.assert_close(h[:, 1], state[0][:, 1])
    torch.testing.assert_close(c[:, 1], state[1][:, 1])
    assert out[1].abs().max() == 0


@pytest.mark.parametrize("activation", ["sigmoid", "gelu", "silu"])
def test_rnn_cell_any_activation(activation):
    cell = RNNCell(3, 4, activation=activation)
    x, h = torch.randn(2, 3), torch.randn(2, 4)
    pre = x @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T + cell.bias_hh
    expected = {"sigmoid": torch.sigmoid, "gelu": nn.functional.gelu,
                "silu": nn.functional.silu}[activation](pre)
    torch.testing.assert_close(cell(x, h), expected)


def test_left_padding_is_refused():
    with pytest.raises(ValueError, match="right padding"):
        lengths_from_mask(torch.tensor([[0, 1, 1]]).bool())
    assert lengths_from_mask(MASK).tolist() == [6, 4, 1]


def test_detach_and_select_state():
    h = torch.randn(2, 3, 4, requires_grad=True)
    state = (h * 2, h * 3)
    detached = detach_state(state)
    assert isinstance(detached, tuple) and not any(s.requires_grad for s in detached)
    rows = torch.tensor([2, 0])
    picked = select_state(state, rows, dim=1)
    torch.testing.assert_close(picked[0], (h * 2)[:, [2, 0]])
    assert detach_state(None) is None and select_state(None, rows, 0) is None
