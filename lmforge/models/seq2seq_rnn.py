"""The recurrent encoder-decoder: a bidirectional encoder and an attentional decoder (Bahdanau / Luong)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError, ModelConfig
from ..nn.recurrent import run_fused

from .seq2seq_parts import (ATTENTIONS, RECURRENT, EncoderDecoder, Memory, PointerGenerator, _embeddings,
                            _select, extra)


# --------------------------------------------------------------------------- recurrent


class Attention(nn.Module):
    """Attention of a decoder state over encoder states: Bahdanau (additive) or Luong.

    bahdanau       score(q, h) = v . tanh(W_q q + W_k h)        (Bahdanau et al., 2015)
    luong_dot      score(q, h) = q . h                           (Luong et al., 2015)
    luong_general  score(q, h) = q . (W h)
    The key side (W_k h or W h) is computed once per input by `keys`.
    """

    def __init__(self, kind: str, d_query: int, d_memory: int) -> None:
        super().__init__()
        self.kind = kind
        if kind == "bahdanau":
            self.w_q = nn.Linear(d_query, d_query, bias=False)
            self.w_k = nn.Linear(d_memory, d_query, bias=True)
            self.v = nn.Linear(d_query, 1, bias=False)
        elif kind == "luong_general":
            self.w_k = nn.Linear(d_memory, d_query, bias=False)
        elif d_query != d_memory:
            raise ConfigError(f"luong_dot attention needs equal widths, got {d_query} and {d_memory}")

    def keys(self, states: torch.Tensor) -> torch.Tensor:
        """Encoder states (B, S, Dm) -> keys (B, S, Dq)."""
        return states if self.kind == "luong_dot" else self.w_k(states)

    def forward(self, q: torch.Tensor, keys: torch.Tensor,
                memory: Memory) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries (B, T, Dq) -> attention weights (B, T, S), context (B, T, Dm)."""
        if self.kind == "bahdanau":
            scores = self.v(torch.tanh(self.w_q(q)[:, :, None] + keys[:, None])).squeeze(-1)
        else:
            scores = q @ keys.transpose(1, 2)  # (B, T, S)
        scores = scores.masked_fill(~memory.mask[:, None, :], float("-inf"))
        attn = F.softmax(scores.float(), dim=-1).to(q.dtype)
        return attn, attn @ memory.states


@dataclass
class RecurrentState:
    """Decoding state: the encoded input, the decoder RNN state and the input-feeding vector."""

    memory: Memory
    rnn: Any  # h (L, B, H), or (h, c) for an LSTM
    feed: torch.Tensor | None  # (B, H): last attentional vector (input feeding) / zeros


class RecurrentSeq2Seq(EncoderDecoder):
    """Bidirectional LSTM/GRU encoder, LSTM/GRU decoder with attention.

    Encoder: `enc_layers` layers, d_model // 2 units per direction when bidirectional, so the
    encoder states and the final states (both directions concatenated) are d_model wide and
    initialise the decoder directly (OpenNMT's `brnn`). Decoder, per target step t:

        bahdanau:  c_t = attn(s_{t-1});  s_t = RNN([y_{t-1}; c_t], s_{t-1});  o_t = tanh(W [s_t; c_t])
        luong:     s_t = RNN([y_{t-1}; o_{t-1}] or y_{t-1}, s_{t-1});  c_t = attn(s_t);
                   o_t = tanh(W [s_t; c_t])
        logits = o_t @ E_tgt^T   (o_t is d_embed wide; the output layer is the tied target embedding)

    Luong without input feeding runs the decoder RNN over the whole target in one fused call
    during training (fast on CPU); the other variants step through time.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = self.config = config
        cell = c.cell if c.arch == "rnn" else c.arch
        if cell not in RECURRENT:
            raise ConfigError(f"model.cell={cell!r} is not one of {', '.join(RECURRENT)}")
        self.cell = cell
        self.attention_kind = extra(c, "attention", "luong_general")
        if self.attention_kind not in ATTENTIONS:
            raise ConfigError(f"model.extra.attention={self.attention_kind!r} is not one of "
                              f"{', '.join(ATTENTIONS)}")
        self.input_feed = bool(extra(c, "input_feed", False)) and self.attention_kind != "bahdanau"
        self.enc_layers = extra(c, "enc_layers", 0) or c.n_layers
        self.dec_layers = extra(c, "dec_layers", 0) or c.n_layers
        self.max_src_len = extra(c, "max_src_len", 0) or c.max_len
        self.label_smoothing = float(extra(c, "label_smoothing", 0.0))
        H, E = c.d_model, c.embed_width
        if c.bidirectional and H % 2:
            raise ConfigError(f"model.d_model={H} must be even for a bidirectional encoder")
        rnn_cls = RECURRENT[cell]
        self.src_embed, self.tgt_embed = _embeddings(c, E)
        self.drop = nn.Dropout(c.dropout)
        self.encoder = rnn_cls(E, H // 2 if c.bidirectional else H, self.enc_layers, batch_first=True,
                               bidirectional=c.bidirectional,
                               dropout=c.dropout if self.enc_layers > 1 else 0.0)
        # input feeding adds o_{t-1} (E wide), Bahdanau the context c_t (H wide) to the input
        feed = E if self.input_feed else H if self.attention_kind == "bahdanau" else 0
        self.decoder = rnn_cls(E + feed, H, self.dec_layers, batch_first=True,
                               dropout=c.dropout if self.dec_layers > 1 else 0.0)
        self.attn = Attention(self.attention_kind, H, H)
        # o_t = tanh(W [s_t; c_t]) is embedding-wide, so the output layer can be the (tied)
        # target embedding: V x E parameters instead of V x H
        self.combine = nn.Linear(2 * H, E, bias=False)
        self.lm_head = nn.Linear(E, c.vocab_size, bias=False)
        if c.tie_embeddings:
            self.lm_head.weight = self.tgt_embed.weight
        self.pointer = PointerGenerator(H, E, E) if extra(c, "copy", False) else None
        for emb in {id(self.src_embed): self.src_embed, id(self.tgt_embed): self.tgt_embed}.values():
            nn.init.normal_(emb.weight, std=E ** -0.5)

    # ------------------------------------------------------------------ encoder

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor | None = None) -> Memory:
        """Source ids (B, S) -> Memory: encoder states (B, S, H) and attention keys."""
        if src.size(1) > self.max_src_len:
            raise ValueError(f"source of {src.size(1)} tokens is longer than max_src_len={self.max_src_len}")
        mask = src_mask if src_mask is not None else torch.ones_like(src, dtype=torch.bool)
        x = self.drop(self.src_embed(src))  # (B, S, E)
        states, final = run_fused(self.encoder, x, mask if src_mask is not None else None)  # (B, S, H)
        states = self.drop(states)
        memory = Memory(states, mask.bool(), src, self.attn.keys(states), self._bridge(final))
        return memory

    def _bridge(self, final: Any) -> Any:
        """Encoder final state (L*dirs, B, H/dirs) -> decoder initial state (L_dec, B, H)."""
        def one(h: torch.Tensor) -> torch.Tensor:
            if self.config.bidirectional:  # (L*2, B, H/2) -> (L, B, H): both directions side by side
                h = torch.cat([h[0::2], h[1::2]], dim=-1)
            if h.size(0) != self.dec_layers:  # depths differ: every decoder layer starts from the top
                h = h[-1:].expand(self.dec_layers, -1, -1)
            return h.contiguous()

        return tuple(one(h) for h in final) if isinstance(final, tuple) else one(final)

    # ------------------------------------------------------------------ decoder

    def init_state(self, memory: Memory, max_len: int | None = None) -> RecurrentState:
        """Decoder state at the first target step (bridged from the encoder)."""
        B, E = memory.states.size(0), self.config.embed_width
        feed = memory.states.new_zeros(B, E) if self.input_feed else None
        return RecurrentState(memory, memory.final, feed)

    def _step(self, emb: torch.Tensor, state: RecurrentState) -> tuple[torch.Tensor, ...]:
        """One target step: emb (B, E) -> o_t (B, E), attention (B, S), context (B, H), new state."""
        memory, rnn = state.memory, state.rnn
        if self.attention_kind == "bahdanau":
            top = (rnn[0] if isinstance(rnn, tuple) else rnn)[-1]  # s_{t-1}: (B, H)
            attn, context = self.attn(top[:, None], memory.keys, memory)  # (B, 1, S), (B, 1, H)
            x = torch.cat([emb, context[:, 0]], -1)
        else:
            x = emb if state.feed is None else torch.cat([emb, state.feed], -1)
        s, rnn = self.decoder(x[:, None], rnn)  # (B, 1, H)
        if self.attention_kind != "bahdanau":
            attn, context = self.attn(s, memory.keys, memory)
        out = self.drop(torch.tanh(self.combine(torch.cat([s, context], -1))))[:, 0]  # (B, E)
        feed = out if state.feed is not None else None
        return out, attn[:, 0], context[:, 0], RecurrentState(memory, rnn, feed)

    def decode(self, tgt_in: torch.Tensor, memory: Memory) -> torch.Tensor:
        """Teacher-forced target ids (B, T) -> logits (B, T, V) (log-probs with `copy`)."""
        emb = self.drop(self.tgt_embed(tgt_in))  # (B, T, E)
        state = self.init_state(memory)
        if self.attention_kind != "bahdanau" and not self.input_feed:
            s, _ = self.decoder(emb, state.rnn)  # all steps in one fused call: (B, T, H)
            attn, context = self.attn(s, memory.keys, memory)  # (B, T, S), (B, T, H)
            out = self.drop(torch.tanh(self.combine(torch.cat([s, context], -1))))  # (B, T, E)
        else:
            outs, attns, contexts = [], [], []
            for t in range(tgt_in.size(1)):
                o, a, ctx, state = self._step(emb[:, t], state)
                outs.append(o)
                attns.append(a)
                contexts.append(ctx)
            out, attn, context = (torch.stack(v, 1) for v in (outs, attns, contexts))
        logits = self.lm_head(out)  # (B, T, V)
        if self.pointer is None:
            return logits
        return self.pointer(logits, attn, context, out, emb, memory.src)

    def step(self, tokens: torch.Tensor, state: RecurrentState) -> tuple[torch.Tensor, RecurrentState]:
        """Previous tokens (B,) -> next-token log-probs (B, V) and the advanced state."""
        emb = self.drop(self.tgt_embed(tokens))  # (B, E)
        out, attn, context, state = self._step(emb, state)
        logits = self.lm_head(out)  # (B, V)
        if self.pointer is not None:
            logp = self.pointer(logits[:, None], attn[:, None], context[:, None], out[:, None],
                                emb[:, None], state.memory.src)[:, 0]
            return logp, state
        return F.log_softmax(logits.float(), dim=-1), state

    def reorder_state(self, state: RecurrentState, rows: torch.Tensor) -> RecurrentState:
        """Keep (and repeat) the given batch rows of the state, e.g. surviving beams."""
        return RecurrentState(state.memory.select(rows), _select(state.rnn, rows, 1),
                              _select(state.feed, rows, 0))


