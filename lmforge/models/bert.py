"""BERT-style encoder (Devlin et al., 2019): token + position + token-type embeddings,
post-LayerNorm Transformer blocks that see the whole sequence, a pooler, and the masked-LM head.

Reading order: Block, the BERT backbone and its builder, then the `MaskedLM` head. The layout
follows Hugging Face's BertModel / BertForMaskedLM closely enough that their checkpoints map
onto it key by key (see `lmforge.convert.hf_bert`); the only structural difference is the
fused query/key/value projection of `lmforge.nn.attention.SelfAttention`.

Config fields used: vocab_size, d_model, n_layers, n_heads, d_ff, max_len (position table),
dropout, activation (BERT: exact "gelu"), norm_eps (BERT: 1e-12), bias, positional,
tie_embeddings, and `extra["type_vocab_size"]` (segment ids; default 2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError, ModelConfig
from ..nn.activation import get_activation
from ..nn.attention import SelfAttention
from ..nn.mlp import MLP
from ..nn.positional import LearnedPositions, Rotary
from .backbone import Backbone
from .heads import IGNORE_INDEX

TYPE_VOCAB_KEY = "type_vocab_size"  # model.extra key: number of segment (token-type) ids
DEFAULT_TYPE_VOCAB = 2  # BERT: sentence A / sentence B


def type_vocab_size(config: ModelConfig) -> int:
    """Number of token-type ids of a BERT config (`model.extra.type_vocab_size`, default 2)."""
    value = config.extra.get(TYPE_VOCAB_KEY, DEFAULT_TYPE_VOCAB)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"model.extra.{TYPE_VOCAB_KEY} must be a positive integer, got {value!r}")
    return value


class Block(nn.Module):
    """x = ln1(x + attn(x)), then x = ln2(x + mlp(x)) (post-LN, as in BERT)."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, activation: str, dropout: float,
                 bias: bool, norm_eps: float, rotary: Rotary | None) -> None:
        super().__init__()
        self.attn = SelfAttention(d_model, n_heads, dropout, bias, causal=False, rotary=rotary)
        self.ln1 = nn.LayerNorm(d_model, eps=norm_eps, bias=bias)
        self.mlp = MLP(d_model, d_ff, activation, dropout, bias)
        self.ln2 = nn.LayerNorm(d_model, eps=norm_eps, bias=bias)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.ln1(x + self.attn(x, key_mask))  # (B, T, D)
        return self.ln2(x + self.mlp(x))


class BERT(Backbone):
    """Bidirectional Transformer encoder backbone: ids (B, T) -> hidden (B, T, D).

    `forward` also takes `token_type_ids` (B, T) (segment A = 0, B = 1; default all 0).
    Encoders keep no state: `state` is ignored and None is returned in its place.
    """

    causal = False

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.out_dim = c.d_model
        self.embed = nn.Embedding(c.vocab_size, c.d_model)
        self.pos = LearnedPositions(c.max_len, c.d_model) if c.positional == "learned" else None
        rotary = Rotary(c.d_model // c.n_heads, c.max_len) if c.positional == "rotary" else None
        self.token_type = nn.Embedding(type_vocab_size(c), c.d_model)
        # BERT normalises the summed embeddings (then every block ends in a LayerNorm)
        self.ln_embed = nn.LayerNorm(c.d_model, eps=c.norm_eps, bias=c.bias)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            Block(c.d_model, c.n_heads, c.ff_width, c.activation, c.dropout, c.bias, c.norm_eps,
                  rotary)
            for _ in range(c.n_layers)
        )
        # pooler: tanh(W h_[CLS] + b), the sentence vector BERT's classifiers read
        self.pooler = nn.Linear(c.d_model, c.d_model, bias=c.bias)
        self.apply(self.init_weights)

    def init_weights(self, module: nn.Module) -> None:
        # BERT init: N(0, 0.02) everywhere (no depth-scaled residual init, unlike GPT-2)
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None, state=None,
                token_type_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        B, T = ids.shape
        x = self.embed(ids)  # (B, T, D)
        if self.pos is not None:
            x = x + self.pos(0, T, ids.device)  # (T, D) broadcast over the batch
        if token_type_ids is None:
            x = x + self.token_type.weight[0]  # every token in segment A
        else:
            if token_type_ids.shape != ids.shape:
                raise ValueError(f"token_type_ids has shape {tuple(token_type_ids.shape)}, "
                                 f"ids {tuple(ids.shape)}")
            x = x + self.token_type(token_type_ids)  # (B, T, D)
        x = self.drop(self.ln_embed(x))
        for block in self.blocks:
            x = block(x, mask)
        return x, None

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        """BERT's pooled output: tanh(dense(hidden of the first token)). (B, T, D) -> (B, D)."""
        return torch.tanh(self.pooler(hidden[:, 0]))


def build_bert(config: ModelConfig) -> BERT:
    """The BERT encoder backbone of `config` (registry entry "bert")."""
    return BERT(config)


class MaskedLM(nn.Module):
    """BERT's masked-LM head: dense, activation, LayerNorm, then a decoder to the vocabulary
    whose weight is the token embedding (tied) and which has its own bias.

    `forward(ids, targets)` -> (logits, loss); `targets` holds the original id at masked
    positions and IGNORE_INDEX (-100) elsewhere, so the loss counts masked positions only.
    With `masked_only=True` the vocabulary projection runs only where targets are set
    (logits (N, V) for those N positions): the same loss for a fraction of the compute.
    """

    def __init__(self, backbone: nn.Module, config: ModelConfig) -> None:
        super().__init__()
        self.backbone, self.config = backbone, config
        D = backbone.out_dim
        self.transform = nn.Linear(D, D, bias=config.bias)
        self.act = get_activation(config.activation)
        self.norm = nn.LayerNorm(D, eps=config.norm_eps, bias=config.bias)
        self.decoder = nn.Linear(D, config.vocab_size, bias=True)
        init = backbone.init_weights
        init(self.transform)
        init(self.decoder)
        if config.tie_embeddings and backbone.embed.weight.shape == self.decoder.weight.shape:
            self.decoder.weight = backbone.embed.weight

    @property
    def causal(self) -> bool:
        return self.backbone.causal

    def forward(self, ids: torch.Tensor, targets: torch.Tensor | None = None, *,
                mask: torch.Tensor | None = None, token_type_ids: torch.Tensor | None = None,
                masked_only: bool = False):
        """ids (B, T) -> (logits (B, T, V), loss); (logits (N, V), loss) with `masked_only`."""
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        hidden, _ = self.backbone(ids, mask=mask, **extra)  # (B, T, D)
        if masked_only and targets is not None:
            chosen = targets != IGNORE_INDEX  # (B, T)
            hidden, targets = hidden[chosen], targets[chosen]  # (N, D), (N,)
        logits = self.decoder(self.norm(self.act(self.transform(hidden))))  # (..., V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1),
                                   ignore_index=IGNORE_INDEX)
        return logits, loss
