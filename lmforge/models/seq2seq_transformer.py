"""The Transformer encoder-decoder (Vaswani et al. 2017), pre-LN, with cross-attention; a GPT can start its decoder."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError, ModelConfig
from ..nn.attention import CrossAttention, KVCache, SelfAttention
from ..nn.mlp import MLP
from ..nn.positional import LearnedPositions, Rotary

from .seq2seq_parts import (CopyAttention, EncoderDecoder, Memory, PointerGenerator, _embeddings, extra)


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


class TransformerSeq2Seq(EncoderDecoder):
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

