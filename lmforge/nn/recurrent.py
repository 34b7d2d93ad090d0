"""Recurrent cells written out once (the readable reference) and the masked fused runner.

The three cells below keep `torch.nn.RNNCell/LSTMCell/GRUCell`'s parameter names, shapes and
gate order, so weights copy across either way (`cells_like`). Training runs on the fused
`torch.nn.RNN/LSTM/GRU` kernels through `run_fused` (the Elman RNN trains on CPU through the
hand-written BPTT of `nn/elman.py`, faster than its kernel); `run_cells` unrolls the same maths in
Python and is tested to agree with the kernels to 1e-5. States use torch's layout:
h (L * dirs, B, H) for RNN/GRU and (h, c) for LSTM.

Every cell splits its step in two: `input_proj` (the input-to-hidden matmul, done for all time
steps at once) and `recur` (the per-step recurrence). The equations live in `recur`.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from . import elman
from .activation import get_activation

State = Any  # a tensor h, a tuple (h, c), a list of tensors, or None

FUSED_RNN_ACTIVATIONS = ("tanh", "relu")  # the only non-linearities torch.nn.RNN's kernel has


class _Cell(nn.Module):
    """Shared parameters: weight_ih (G*H, I), weight_hh (G*H, H), bias_ih, bias_hh (G*H,)."""

    n_gates = 1

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True) -> None:
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        G = self.n_gates * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(G, input_size))
        self.weight_hh = nn.Parameter(torch.empty(G, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(G)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(G)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # torch's default: every weight and bias ~ U(-1/sqrt(H), 1/sqrt(H))
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def input_proj(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., I) -> W_ih x + b_ih (..., G*H); one matmul for every time step at once."""
        return F.linear(x, self.weight_ih, self.bias_ih)

    def hidden_proj(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(h, self.weight_hh, self.bias_hh)  # (B, G*H)

    def zero_state(self, batch: int, like: torch.Tensor) -> State:
        return like.new_zeros(batch, self.hidden_size)

    def forward(self, x: torch.Tensor, state: State = None) -> State:
        """One step: x (B, I), state -> new state (h, or (h, c) for the LSTM)."""
        if state is None:
            state = self.zero_state(x.size(0), x)
        return self.recur(self.input_proj(x), state)


class RNNCell(_Cell):
    """Elman cell: h' = act(W_ih x + b_ih + W_hh h + b_hh).

    `activation` may be any name `get_activation` knows; the fused kernel has only tanh and relu.
    """

    n_gates = 1

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 activation: str = "tanh") -> None:
        super().__init__(input_size, hidden_size, bias)
        self.activation = activation
        self.act = get_activation(activation)

    def recur(self, gx: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return self.act(gx + self.hidden_proj(h))  # (B, H)


class LSTMCell(_Cell):
    """LSTM cell (Hochreiter & Schmidhuber 1997, with forget gate), torch's gate order i, f, g, o.

        i, f, o = sigmoid(.)          input, forget, output gates
        g       = tanh(.)             candidate cell
        c'      = f * c + i * g
        h'      = o * tanh(c')
    """

    n_gates = 4

    def zero_state(self, batch: int, like: torch.Tensor) -> State:
        h = like.new_zeros(batch, self.hidden_size)
        return h, torch.zeros_like(h)

    def recur(self, gx: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> State:
        h, c = state  # (B, H) each
        i, f, g, o = (gx + self.hidden_proj(h)).chunk(4, dim=-1)  # 4 x (B, H)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class GRUCell(_Cell):
    """GRU cell (Cho et al. 2014), torch's gate order r, z, n.

        r  = sigmoid(W_ir x + b_ir + W_hr h + b_hr)      reset gate
        z  = sigmoid(W_iz x + b_iz + W_hz h + b_hz)      update gate
        n  = tanh(W_in x + b_in + r * (W_hn h + b_hn))   candidate
        h' = (1 - z) * n + z * h
    """

    n_gates = 3

    def recur(self, gx: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        xr, xz, xn = gx.chunk(3, dim=-1)  # (B, H) each
        hr, hz, hn = self.hidden_proj(h).chunk(3, dim=-1)
        r = torch.sigmoid(xr + hr)
        z = torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        return (1 - z) * n + z * h  # (B, H)


CELLS: dict[str, type[_Cell]] = {"rnn": RNNCell, "lstm": LSTMCell, "gru": GRUCell}
FUSED: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


# --------------------------------------------------------------------------- masks and states


def lengths_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Real-token counts (B,) of a right-padded mask (B, T); other masks are an error.

    >>> lengths_from_mask(torch.tensor([[True, True, False], [True, True, True]]))
    tensor([2, 3])
    """
    mask = mask.bool()
    if bool((mask[:, 1:] & ~mask[:, :-1]).any()):
        raise ValueError("recurrent and convolutional backbones need right padding: each mask "
                         "row must be True for its real tokens, then False")
    return mask.sum(1)


def _to_per_layer(state: State, n: int, lstm: bool) -> list[State]:
    """Torch layout (n, B, H) [and c] -> a list of n per-cell states."""
    if lstm:
        h, c = state
        return [(h[i], c[i]) for i in range(n)]
    return [state[i] for i in range(n)]


def _from_per_layer(states: list[State], lstm: bool) -> State:
    if lstm:
        return torch.stack([s[0] for s in states]), torch.stack([s[1] for s in states])
    return torch.stack(states)


def detach_state(state: State) -> State:
    """Cut the autograd graph of a state (truncated BPTT): tensors, tuples/lists of them, None."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.detach()
    return type(state)(detach_state(s) for s in state)


def select_state(state: State, rows: torch.Tensor, dim: int) -> State:
    """Keep batch rows `rows` of every tensor in `state` (beam search reorders beams)."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.index_select(dim, rows)
    return type(state)(select_state(s, rows, dim) for s in state)


# --------------------------------------------------------------------------- runners


def run_cells(cells: Sequence[_Cell], x: torch.Tensor, state: State = None,
              mask: torch.Tensor | None = None, bidirectional: bool = False,
              dropout: float = 0.0, training: bool = False) -> tuple[torch.Tensor, State]:
    """Unrolled stacked (bi)directional recurrence: the reference for `run_fused`.

    Args:
        cells: one per layer and direction, in torch's order (layer 0 fwd, layer 0 bwd, ...).
        x: (B, T, I) inputs; state: torch layout or None (zeros).
        mask: (B, T) right-padding mask; the state stops at each row's last real token and
            padded outputs are zero, exactly as with packed sequences.
        dropout: applied to the outputs of every layer but the last (torch's semantics).
    Returns:
        out (B, T, dirs * H) and the final state in torch layout.
    """
    B, T, _ = x.shape
    dirs = 2 if bidirectional else 1
    lstm = isinstance(cells[0], LSTMCell)
    if state is None:
        states = [cell.zero_state(B, x) for cell in cells]
    else:
        states = _to_per_layer(state, len(cells), lstm)
    if mask is not None:
        lengths_from_mask(mask)  # right padding only, as with packed sequences
    keep = None if mask is None else mask.bool()[:, :, None]  # (B, T, 1)
    layer_in, finals = x, []
    for layer in range(len(cells) // dirs):
        outs = []
        for d in range(dirs):
            cell, s = cells[layer * dirs + d], states[layer * dirs + d]
            gx = cell.input_proj(layer_in)  # (B, T, G*H): all steps in one matmul
            out = x.new_zeros(B, T, cell.hidden_size)
            for t in (range(T - 1, -1, -1) if d == 1 else range(T)):
                new = cell.recur(gx[:, t], s)
                if keep is not None:  # padding: hold the state, emit zeros
                    m = keep[:, t]  # (B, 1)
                    new = tuple(torch.where(m, n, o) for n, o in zip(new, s)) if lstm \
                        else torch.where(m, new, s)
                s = new
                h = s[0] if lstm else s  # (B, H)
                out[:, t] = h if keep is None else h * keep[:, t]
            outs.append(out)
            finals.append(s)
        layer_in = torch.cat(outs, dim=-1)  # (B, T, dirs*H)
        if dropout and training and layer < len(cells) // dirs - 1:
            layer_in = F.dropout(layer_in, dropout, training=True)
    return layer_in, _from_per_layer(finals, lstm)


def run_fused(rnn: nn.RNNBase, x: torch.Tensor, mask: torch.Tensor | None = None,
              state: State = None) -> tuple[torch.Tensor, State]:
    """Run a batch-first torch.nn.RNN/LSTM/GRU, packing right-padded rows when a mask is given.

    x (B, T, I) -> out (B, T, dirs * H), state at each row's last real token. Padding changes
    neither the outputs at real positions nor the state; padded outputs are zero. A row with
    no real token keeps the incoming state.
    """
    if mask is None or bool(mask.all()):
        if elman.can_run(rnn, x):  # CPU Elman RNN training: hand-written BPTT, ~1.5x faster
            return elman.run_elman(rnn, x, state)
        return rnn(x, state)
    B, T, _ = x.shape
    lengths = lengths_from_mask(mask)  # (B,)
    packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True,
                                  enforce_sorted=False)
    out, new_state = rnn(packed, state)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)  # (B, T, dirs*H)
    empty = lengths == 0
    if bool(empty.any()):  # rows of pure padding: the clamp fed them one pad token; undo it
        out = out * (~empty)[:, None, None]
        if state is None:
            state = tuple(map(torch.zeros_like, new_state)) if isinstance(new_state, tuple) \
                else torch.zeros_like(new_state)
        keep = (~empty)[None, :, None]  # (1, B, 1)
        if isinstance(new_state, tuple):
            new_state = tuple(torch.where(keep, n, o) for n, o in zip(new_state, state))
        else:
            new_state = torch.where(keep, new_state, state)
    return out, new_state


def cells_like(rnn: nn.RNNBase) -> nn.ModuleList:
    """Hand-written cells holding copies of a fused torch.nn.RNN/LSTM/GRU's weights."""
    kind = {nn.LSTM: "lstm", nn.GRU: "gru", nn.RNN: "rnn"}[type(rnn)]
    dirs = 2 if rnn.bidirectional else 1
    cells = nn.ModuleList()
    for layer in range(rnn.num_layers):
        in_size = rnn.input_size if layer == 0 else rnn.hidden_size * dirs
        for d in range(dirs):
            kwargs = {"activation": rnn.nonlinearity} if kind == "rnn" else {}
            cell = CELLS[kind](in_size, rnn.hidden_size, rnn.bias, **kwargs)
            suffix = f"_l{layer}" + ("_reverse" if d else "")
            names = ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if rnn.bias else ())
            with torch.no_grad():
                for name in names:
                    getattr(cell, name).copy_(getattr(rnn, name + suffix))
            cells.append(cell.to(getattr(rnn, "weight_ih_l0").device))
    return cells
