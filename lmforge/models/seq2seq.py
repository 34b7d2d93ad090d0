"""Encoder–decoder models for translation and summarization: Transformer and recurrent.

Both map a source (B, S) and a shifted target (B, T) to next-token logits (B, T, V):

    model = build_seq2seq(config)          # config.head == "seq2seq"
    logits, loss = model(src, tgt_in, tgt_out, src_mask=src_mask)
        src      (B, S) int64 source ids, right-padded
        src_mask (B, S) bool, True at real source tokens (None = no padding)
        tgt_in   (B, T) int64: <bos> y1 .. y_{T-1}   (right-padded with pad ids)
        tgt_out  (B, T) int64: y1 .. y_{T-1} <eos>   (padding = -100, no loss); optional
        loss     label-smoothed cross-entropy (`extra.label_smoothing`), None without targets

Decoding runs the encoder once and then one target token at a time:

    memory = model.encode(src, src_mask)   # encoder states + per-layer cross-attention K/V
    state = model.init_state(memory)       # empty decoder caches
    logp, state = model.step(tokens, state)    # tokens (B,) -> log-probs (B, V)
    state = model.reorder_state(state, rows)   # beam search: keep / repeat batch rows

`config.arch` picks the family: "transformer" (pre-LN encoder and decoder, cross-attention,
Vaswani et al. 2017) or "lstm" / "gru" / "rnn" (bidirectional recurrent encoder, recurrent
decoder with Bahdanau or Luong attention; "rnn" uses `config.cell`). Options in
`config.extra`, all optional:

    enc_layers, dec_layers   depth of each side (0 = n_layers)
    src_vocab_size           source vocabulary of separate tokenizers; 0 = one joint vocabulary
    share_embeddings         one embedding table for source and target (joint vocabulary only)
    max_src_len              longest source in tokens (0 = max_len); max_len bounds the target
    label_smoothing          epsilon of the training loss (Szegedy et al. 2016), e.g. 0.1
    copy                     pointer-generator copy mechanism (See et al. 2017; joint vocabulary)
    attention                recurrent: bahdanau | luong_dot | luong_general
    input_feed               recurrent Luong: feed the last attentional vector to the next step

With `copy` the model outputs log-probabilities of the mixture p_gen * P_vocab + (1 - p_gen) *
attention-over-source; they are returned where logits would be (softmax leaves them unchanged).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError, ModelConfig
from ..nn.attention import CrossAttention, KVCache, SelfAttention
from ..nn.mlp import MLP
from ..nn.positional import LearnedPositions, Rotary
from ..nn.recurrent import run_fused

IGNORE_INDEX = -100
ATTENTIONS = ("bahdanau", "luong_dot", "luong_general")
RECURRENT = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


def extra(config: ModelConfig, name: str, default: Any) -> Any:
    """`config.extra[name]`, or `default` when absent."""
    return config.extra.get(name, default)


def seq2seq_loss(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Mean token cross-entropy over non-padding targets; logits (B, T, V), targets (B, T)."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(),
                           ignore_index=IGNORE_INDEX, label_smoothing=label_smoothing)


@dataclass
class Memory:
    """What the decoder reads from one encoded batch (computed once per input)."""

    states: torch.Tensor  # (B, S, Dm) encoder outputs
    mask: torch.Tensor  # (B, S) bool, True at real source tokens
    src: torch.Tensor  # (B, S) source ids (the copy mechanism scatters onto them)
    keys: Any = None  # precomputed per input: cross-attention K/V per layer, or attention keys
    final: Any = None  # recurrent encoder's final state (decoder initialisation)

    def select(self, rows: torch.Tensor) -> "Memory":
        """Memory of the given batch rows, in that order (beam search repeats rows)."""
        return Memory(self.states.index_select(0, rows), self.mask.index_select(0, rows),
                      self.src.index_select(0, rows), _select(self.keys, rows, 0),
                      _select(self.final, rows, 1))


def _select(value: Any, rows: torch.Tensor, dim: int) -> Any:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return value.index_select(dim, rows)
    return type(value)(_select(v, rows, dim) for v in value)


# --------------------------------------------------------------------------- copy mechanism


class PointerGenerator(nn.Module):
    """Mix generating from the vocabulary with copying a source token (See et al., 2017, eq. 8-9).

    p_gen = sigmoid(w . [context; decoder output; input embedding] + b)
    P(w)  = p_gen * softmax(logits)(w) + (1 - p_gen) * sum of attention on source positions holding w
    Source and target share one vocabulary, so copying is a scatter-add onto the source ids.
    """

    def __init__(self, d_context: int, d_out: int, d_embed: int) -> None:
        super().__init__()
        self.gate = nn.Linear(d_context + d_out + d_embed, 1)

    def forward(self, logits: torch.Tensor, attn: torch.Tensor, context: torch.Tensor,
                out: torch.Tensor, emb: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
        """logits (B, T, V), attn (B, T, S) -> log-probabilities (B, T, V)."""
        p_gen = torch.sigmoid(self.gate(torch.cat([context, out, emb], -1))).float()  # (B, T, 1)
        probs = F.softmax(logits.float(), dim=-1) * p_gen  # (B, T, V)
        copy = attn.float() * (1.0 - p_gen)  # (B, T, S)
        index = src[:, None, :].expand(-1, logits.size(1), -1)  # (B, T, S)
        probs = probs.scatter_add(-1, index, copy)
        return probs.clamp_min(1e-12).log()


class CopyAttention(nn.Module):
    """One bilinear attention head from decoder outputs to encoder states, for copying."""

    def __init__(self, d_model: int, d_memory: int) -> None:
        super().__init__()
        self.q = nn.Linear(d_model, d_memory, bias=False)

    def forward(self, out: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, torch.Tensor]:
        """out (B, T, D) -> attention (B, T, S), context (B, T, Dm)."""
        scores = self.q(out) @ memory.states.transpose(1, 2) / math.sqrt(memory.states.size(-1))
        scores = scores.masked_fill(~memory.mask[:, None, :], float("-inf"))  # (B, T, S)
        attn = F.softmax(scores.float(), dim=-1).to(out.dtype)
        return attn, attn @ memory.states


# --------------------------------------------------------------------------- Transformer


class EncoderBlock(nn.Module):
    """x + self_attn(ln(x)) over the whole source, then x + mlp(ln(x)) (pre-LN)."""

    def __init__(self, c: ModelConfig, rotary: Rotary | None) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(c.d_model, eps=c.norm_eps, bias=c.bias)
        self.attn = SelfAttention(c.d_model, c.n_heads, c.dropout, c.bias, causal=False, rotary=rotary)
        self.ln2 = nn.LayerNorm(c.d_model, eps=c.norm_eps, bias=c.bias)
        self.mlp = MLP(c.d_model, c.ff_width, c.activation, c.dropout, c.bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x (B, S, D) -> (B, S, D); mask (B, S) hides source padding."""
        x = x + self.attn(self.ln1(x), mask)
        return x + self.mlp(self.ln2(x))


class DecoderBlock(nn.Module):
    """Causal self-attention, cross-attention over the encoder, MLP; each pre-LN and residual.

    ln1/attn/ln2/mlp are named as in `gpt.Block`, so a pretrained GPT's blocks load directly
    (`load_gpt_decoder`); only ln_cross/cross are new.
    """

    def __init__(self, c: ModelConfig, rotary: Rotary | None) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(c.d_model, eps=c.norm_eps, bias=c.bias)
        self.attn = SelfAttention(c.d_model, c.n_heads, c.dropout, c.bias, causal=True, rotary=rotary)
        self.ln_cross = nn.LayerNorm(c.d_model, eps=c.norm_eps, bias=c.bias)
        self.cross = CrossAttention(c.d_model, c.n_heads, c.dropout, c.bias)
        self.ln2 = nn.LayerNorm(c.d_model, eps=c.norm_eps, bias=c.bias)
        self.mlp = MLP(c.d_model, c.ff_width, c.activation, c.dropout, c.bias)

    def forward(self, x: torch.Tensor, memory_mask: torch.Tensor, memory_kv: tuple,
                cache: KVCache | None = None) -> torch.Tensor:
        """x (B, T, D) -> (B, T, D), attending over the encoder memory."""
        x = x + self.attn(self.ln1(x), None, cache)  # right padding: causal mask suffices
        x = x + self.cross(self.ln_cross(x), memory_mask=memory_mask, memory_kv=memory_kv)
        return x + self.mlp(self.ln2(x))


@dataclass
class TransformerState:
    """Decoding state: the encoded input and one self-attention KV cache per decoder layer."""

    memory: Memory
    caches: list[KVCache]


class TransformerSeq2Seq(nn.Module):
    """Pre-LN Transformer encoder–decoder with tied output embedding."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = self.config = config
        self.enc_layers = extra(c, "enc_layers", 0) or c.n_layers
        self.dec_layers = extra(c, "dec_layers", 0) or c.n_layers
        self.max_src_len = extra(c, "max_src_len", 0) or c.max_len
        self.label_smoothing = float(extra(c, "label_smoothing", 0.0))
        self.src_embed, self.tgt_embed = _embeddings(c, c.d_model)
        rotary = None
        if c.positional == "rotary":
            rotary = Rotary(c.d_model // c.n_heads, max(c.max_len, self.max_src_len))
            self.src_pos = self.tgt_pos = None
        else:
            self.src_pos = LearnedPositions(self.max_src_len, c.d_model)
            self.tgt_pos = LearnedPositions(c.max_len, c.d_model)
        self.drop = nn.Dropout(c.dropout)
        self.encoder = nn.ModuleList(EncoderBlock(c, rotary) for _ in range(self.enc_layers))
        self.enc_ln = nn.LayerNorm(c.d_model, eps=c.norm_eps, bias=c.bias)
        self.blocks = nn.ModuleList(DecoderBlock(c, rotary) for _ in range(self.dec_layers))
        self.ln_f = nn.LayerNorm(c.d_model, eps=c.norm_eps, bias=c.bias)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        self.copy_attn = self.pointer = None
        if extra(c, "copy", False):
            self.copy_attn = CopyAttention(c.d_model, c.d_model)
            self.pointer = PointerGenerator(c.d_model, c.d_model, c.d_model)
        self.apply(self._init_weights)
        if c.tie_embeddings:  # output projection = target embedding (Press & Wolf, 2017)
            self.lm_head.weight = self.tgt_embed.weight

    def _init_weights(self, module: nn.Module) -> None:
        # GPT-2 init; residual projections scaled by 1/sqrt(2 * depth) (see models/gpt.py)
        if isinstance(module, nn.Linear):
            std = 0.02
            if getattr(module, "is_residual_proj", False):
                std = 0.02 / math.sqrt(2 * max(self.enc_layers, self.dec_layers))
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    # ------------------------------------------------------------------ encoder

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor | None = None) -> Memory:
        """Source ids (B, S) -> Memory with encoder states and every layer's cross K/V."""
        B, S = src.shape
        if S > self.max_src_len:
            raise ValueError(f"source of {S} tokens is longer than max_src_len={self.max_src_len}")
        mask = src_mask if src_mask is not None else torch.ones_like(src, dtype=torch.bool)
        x = self.src_embed(src)  # (B, S, D)
        if self.src_pos is not None:
            x = x + self.src_pos(0, S, src.device)
        x = self.drop(x)
        key_mask = None if src_mask is None or bool(src_mask.all()) else mask
        for block in self.encoder:
            x = block(x, key_mask)
        states = self.enc_ln(x)  # (B, S, D)
        keys = [block.cross.memory_kv(states) for block in self.blocks]  # each (B, H, S, hd) x 2
        return Memory(states, mask.bool(), src, keys)

    # ------------------------------------------------------------------ decoder

    def decode(self, tgt_in: torch.Tensor, memory: Memory,
               caches: list[KVCache] | None = None) -> torch.Tensor:
        """Target ids (B, T) -> logits (B, T, V) (log-probs with `copy`)."""
        B, T = tgt_in.shape
        start = caches[0].length if caches else 0
        emb = self.tgt_embed(tgt_in)  # (B, T, D)
        x = emb if self.tgt_pos is None else emb + self.tgt_pos(start, T, tgt_in.device)
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, memory.mask, memory.keys[i], caches[i] if caches else None)
        out = self.ln_f(x)  # (B, T, D)
        logits = self.lm_head(out)  # (B, T, V)
        if self.pointer is None:
            return logits
        attn, context = self.copy_attn(out, memory)  # (B, T, S), (B, T, D)
        return self.pointer(logits, attn, context, out, emb, memory.src)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor, targets: torch.Tensor | None = None,
                *, src_mask: torch.Tensor | None = None,
                label_smoothing: float | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(src, tgt_in[, targets]) -> (logits (B, T, V), loss or None)."""
        logits = self.decode(tgt_in, self.encode(src, src_mask))
        eps = self.label_smoothing if label_smoothing is None else label_smoothing
        return logits, (seq2seq_loss(logits, targets, eps) if targets is not None else None)

    # ------------------------------------------------------------------ incremental decoding

    def init_state(self, memory: Memory, max_len: int | None = None) -> TransformerState:
        """Empty self-attention caches with room for `max_len` target tokens (default max_len)."""
        c, p = self.config, self.lm_head.weight
        B = memory.states.size(0)
        caches = [KVCache(B, c.n_heads, max_len or c.max_len, c.d_model // c.n_heads, p.device,
                          memory.states.dtype) for _ in self.blocks]
        return TransformerState(memory, caches)

    def step(self, tokens: torch.Tensor, state: TransformerState) -> tuple[torch.Tensor, TransformerState]:
        """Previous tokens (B,) -> next-token log-probs (B, V); the caches grow by one."""
        logits = self.decode(tokens[:, None], state.memory, state.caches)[:, -1]  # (B, V)
        return F.log_softmax(logits.float(), dim=-1), state

    def reorder_state(self, state: TransformerState, rows: torch.Tensor) -> TransformerState:
        """Keep (and repeat) the given batch rows of the state, e.g. surviving beams."""
        for cache in state.caches:
            cache.select(rows)
        return TransformerState(state.memory.select(rows), state.caches)


def _embeddings(c: ModelConfig, width: int) -> tuple[nn.Embedding, nn.Embedding]:
    """Source and target embeddings: one table when the vocabulary is joint and shared."""
    src_vocab = extra(c, "src_vocab_size", 0)  # 0: the joint vocabulary
    tgt = nn.Embedding(c.vocab_size, width)
    if extra(c, "share_embeddings", True) and not src_vocab:
        return tgt, tgt
    return nn.Embedding(src_vocab or c.vocab_size, width), tgt


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


class RecurrentSeq2Seq(nn.Module):
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

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor, targets: torch.Tensor | None = None,
                *, src_mask: torch.Tensor | None = None,
                label_smoothing: float | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(src, tgt_in[, targets]) -> (logits (B, T, V), loss or None)."""
        logits = self.decode(tgt_in, self.encode(src, src_mask))
        eps = self.label_smoothing if label_smoothing is None else label_smoothing
        return logits, (seq2seq_loss(logits, targets, eps) if targets is not None else None)

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


# --------------------------------------------------------------------------- builders


def build_seq2seq(config: ModelConfig) -> nn.Module:
    """The encoder–decoder named by `config.arch` (transformer | lstm | gru | rnn)."""
    config.validate()
    if config.vocab_size <= 0:
        raise ConfigError("model.vocab_size must be set (it is normally taken from the tokenizer)")
    copy = bool(extra(config, "copy", False))
    if copy and extra(config, "src_vocab_size", 0):
        raise ConfigError("model.extra.copy=true needs one joint source/target vocabulary "
                          "(model.extra.src_vocab_size must be 0)")
    if config.arch == "transformer":
        return TransformerSeq2Seq(config)
    if config.arch in RECURRENT:
        return RecurrentSeq2Seq(config)
    raise ConfigError(f"model.arch={config.arch!r} cannot be a seq2seq model; use transformer, "
                      "lstm, gru or rnn")


GPT_DECODER_KEYS = ("ln1.", "attn.", "ln2.", "mlp.")


def load_gpt_decoder(model: TransformerSeq2Seq, gpt_state: dict[str, torch.Tensor]) -> list[str]:
    """Copy a pretrained lmforge GPT (CausalLM state dict) into the decoder; returns loaded names.

    Decoder blocks take the GPT blocks' self-attention, MLP and norms; the target embedding,
    positions and final norm come along; cross-attention stays freshly initialised.
    """
    if not isinstance(model, TransformerSeq2Seq):
        raise ConfigError("--decoder-init needs model.arch=transformer")
    mapping = {"backbone.embed.weight": "tgt_embed.weight",
               "backbone.pos.weight.weight": "tgt_pos.weight.weight"}
    for name in gpt_state:
        if name.startswith("backbone.ln_f."):
            mapping[name] = "ln_f." + name[len("backbone.ln_f."):]
        elif name.startswith("backbone.blocks."):
            rest = name[len("backbone.blocks."):]
            index, sub = rest.split(".", 1)
            if sub.startswith(GPT_DECODER_KEYS):
                mapping[name] = f"blocks.{index}.{sub}"
    own = model.state_dict()
    loaded = []
    with torch.no_grad():
        for src_name, dst_name in mapping.items():
            if src_name not in gpt_state or dst_name not in own:
                continue
            value = gpt_state[src_name]
            if dst_name == "tgt_pos.weight.weight" and value.size(0) != own[dst_name].size(0):
                n = min(value.size(0), own[dst_name].size(0))  # a shorter/longer context: keep the overlap
                own[dst_name][:n].copy_(value[:n])
            elif own[dst_name].shape != value.shape:
                raise ConfigError(f"--decoder-init: {src_name} has shape {tuple(value.shape)}, the "
                                  f"decoder's {dst_name} has {tuple(own[dst_name].shape)}")
            else:
                own[dst_name].copy_(value)
            loaded.append(dst_name)
    return loaded


__all__ = ["Memory", "TransformerSeq2Seq", "RecurrentSeq2Seq", "PointerGenerator", "Attention",
           "build_seq2seq", "load_gpt_decoder", "seq2seq_loss"]
