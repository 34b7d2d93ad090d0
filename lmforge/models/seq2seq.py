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

from torch import nn

from ..config import ConfigError, ModelConfig
from .seq2seq_parts import (ATTENTIONS, IGNORE_INDEX, RECURRENT, EncoderDecoder, Memory,
                            PointerGenerator, extra, seq2seq_loss)
from .seq2seq_rnn import Attention, RecurrentSeq2Seq
from .seq2seq_transformer import TransformerSeq2Seq, load_gpt_decoder

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



__all__ = ["Memory", "TransformerSeq2Seq", "RecurrentSeq2Seq", "PointerGenerator", "Attention",
           "EncoderDecoder", "build_seq2seq", "load_gpt_decoder", "seq2seq_loss", "extra",
           "ATTENTIONS", "IGNORE_INDEX", "RECURRENT"]
