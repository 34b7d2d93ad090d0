"""Heads turn a backbone's hidden states into task outputs and return `(logits, loss)`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..nn.chunked_ce import chunked_cross_entropy

IGNORE_INDEX = -100  # target value that contributes no loss (padding)


class CausalLM(nn.Module):
    """Next-token prediction: hidden (B, T, D) -> logits (B, T, V), cross-entropy loss.

    The output projection shares the token embedding's weight when the widths agree
    (weight tying, Press & Wolf 2017): fewer parameters and a better model at small scale.

    `chunked_loss` (set from `train.chunked_ce`, see `lmforge.train.activation_checkpointing`)
    computes the loss chunk by chunk over the positions that carry one
    (`lmforge.nn.chunked_ce`) and returns `(None, loss)`: the (B, T, V) logits never exist.
    """

    def __init__(self, backbone: nn.Module, config: ModelConfig) -> None:
        super().__init__()
        self.backbone, self.config = backbone, config
        self.chunked_loss = False
        self.loss_chunk_size: int | None = None  # rows per chunk; None = auto
        tied = config.tie_embeddings and \
            tuple(backbone.embed.weight.shape) == (config.vocab_size, backbone.out_dim)
        # a tied head's own (V, D) matrix is never used: build it on the meta device, so
        # loading a large-vocabulary model does not allocate it only to throw it away
        self.lm_head = nn.Linear(backbone.out_dim, config.vocab_size, bias=False,
                                 device="meta" if tied else None)
        if tied:
            self.lm_head.weight = backbone.embed.weight
        else:
            backbone.init_weights(self.lm_head)

    @property
    def causal(self) -> bool:
        return self.backbone.causal

    def forward(self, ids: torch.Tensor, targets: torch.Tensor | None = None, *,
                mask: torch.Tensor | None = None, state=None, return_state: bool = False,
                last_only: bool = False):
        """ids (B, T) -> (logits, loss) or (logits, loss, state) with `return_state`.

        `last_only` projects only the final position (all that decoding needs).
        """
        hidden, state = self.backbone(ids, mask=mask, state=state)  # (B, T, D)
        if last_only:
            hidden = hidden[:, -1:]
        elif targets is not None and self.chunked_loss:
            loss = chunked_cross_entropy(hidden, self.lm_head.weight, targets, IGNORE_INDEX,
                                         self.loss_chunk_size)
            return (None, loss, state) if return_state else (None, loss)
        logits = self.lm_head(hidden)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(),
                                   ignore_index=IGNORE_INDEX)
        return (logits, loss, state) if return_state else (logits, loss)


# --------------------------------------------------------------------------- classification

POOLINGS = ("last", "mean", "max", "cls")


def right_align(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each row's real tokens to the front (left-padded or holey rows -> right-padded).

    Order among real tokens is kept: [pad, pad, a, b] -> [a, b, pad, pad]. Rows that are
    already right-padded come back unchanged.
    """
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)  # (B, T) real first
    return ids.gather(1, order), mask.gather(1, order)


def pool_hidden(hidden: torch.Tensor, mask: torch.Tensor, pooling: str,
                bidirectional: bool = False) -> torch.Tensor:
    """hidden (B, T, D) and a right-padded mask (B, T) -> one vector per row (B, D).

    last: the hidden state at each row's last real token. For a bidirectional recurrent
          backbone (D = 2H, forward then backward halves) it is the forward half at the last
          real token and the backward half at the first token: the final state of each
          direction, each having read the whole text.
    mean: average over real tokens; max: element-wise max over real tokens;
    cls:  the first position (BERT's [CLS]; for other backbones the first token).
    Padding never enters any of them.
    """
    B, T, D = hidden.shape
    lengths = mask.sum(1)  # (B,)
    if pooling == "last":
        rows = torch.arange(B, device=hidden.device)
        last = hidden[rows, (lengths - 1).clamp(min=0)]  # (B, D)
        if bidirectional:
            H = D // 2
            return torch.cat([last[:, :H], hidden[:, 0, H:]], dim=-1)  # (B, 2H)
        return last
    if pooling == "cls":
        return hidden[:, 0]
    m = mask[:, :, None]  # (B, T, 1)
    if pooling == "mean":
        total = (hidden * m.to(hidden.dtype)).sum(1)  # (B, D)
        return total / lengths.clamp(min=1)[:, None].to(hidden.dtype)
    if pooling == "max":
        pooled = hidden.masked_fill(~m, float("-inf")).amax(1)  # (B, D)
        return torch.where(lengths[:, None] > 0, pooled, torch.zeros_like(pooled))
    raise ValueError(f"model.pooling={pooling!r} is not one of {', '.join(POOLINGS)}")


class Classifier(nn.Module):
    """Text classification over any backbone: pool hidden states, dropout, linear -> (logits, loss).

    Multi-class: logits (B, K), softmax cross-entropy. Binary with `extra.binary_head`
    (n_classes 2): one logit (B, 1), sigmoid + binary cross-entropy, as Keras's
    `Dense(1, activation="sigmoid")` with `binary_crossentropy`. `extra.class_weights` (one
    weight per class) reweights the loss for imbalanced data. `extra.head_dropout` sets the
    dropout before the linear layer (default `dropout`). `extra.lora` ({rank, alpha,
    dropout, targets}) wraps the backbone's linear layers in LoRA adapters
    (`lmforge.nn.lora`), so a LoRA run rebuilds from its model_config.json alone.

    The mask decides what is padding, so neither padding side nor amount changes a
    prediction: left-padded rows are right-aligned first, and a causal backbone (a
    unidirectional RNN, a GPT) runs without the mask because padding after the last real
    token cannot reach the real positions; this skips packing, which is slower on CPU than
    running the few padded steps a length-bucketed batch has (`extra.always_mask` turns
    this off). Bidirectional and other non-causal backbones get the mask.
    """

    def __init__(self, backbone: nn.Module, config: ModelConfig) -> None:
        super().__init__()
        if config.pooling not in POOLINGS:
            raise ValueError(f"model.pooling={config.pooling!r} is not one of {', '.join(POOLINGS)}")
        if config.n_classes < 1:
            raise ValueError(f"model.n_classes must be >= 1, got {config.n_classes}")
        extra = config.extra
        self.backbone, self.config = backbone, config
        self.pooling = config.pooling
        self.binary = bool(extra.get("binary_head", False))
        if self.binary and config.n_classes != 2:
            raise ValueError(f"model.extra.binary_head needs n_classes=2, got {config.n_classes}")
        self.bidirectional = bool(backbone.bidirectional)
        self.always_mask = bool(extra.get("always_mask", False))
        self.dropout = nn.Dropout(float(extra.get("head_dropout", config.dropout)))
        self.head = nn.Linear(backbone.out_dim, 1 if self.binary else config.n_classes)
        weights = extra.get("class_weights")
        if weights:
            if len(weights) != config.n_classes:
                raise ValueError(f"model.extra.class_weights has {len(weights)} values for "
                                 f"{config.n_classes} classes")
            self.register_buffer("class_weights", torch.tensor(weights, dtype=torch.float32),
                                 persistent=False)
        else:
            self.class_weights = None
        if extra.get("lora"):
            from ..nn.lora import apply_lora, lora_options

            apply_lora(self.backbone, **lora_options(extra["lora"]))

    @property
    def n_classes(self) -> int:
        return self.config.n_classes

    def pooled(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """ids (B, T), mask (B, T) bool -> pooled features (B, out_dim)."""
        if mask is None:
            mask = torch.ones_like(ids, dtype=torch.bool)
        mask = mask.bool()
        if bool((mask[:, 1:] & ~mask[:, :-1]).any()):  # not right-padded (left padding, holes)
            ids, mask = right_align(ids, mask)
        pass_mask = None if (self.backbone.causal and not self.always_mask) else mask
        hidden, _ = self.backbone(ids, mask=pass_mask)  # (B, T, D)
        return pool_hidden(hidden, mask, self.pooling, self.bidirectional)

    def forward(self, ids: torch.Tensor, labels: torch.Tensor | None = None, *,
                mask: torch.Tensor | None = None):
        """ids (B, T), labels (B,) class ids -> (logits (B, K) or (B, 1) when binary, loss)."""
        logits = self.head(self.dropout(self.pooled(ids, mask)))  # (B, K) or (B, 1)
        loss = None
        if labels is not None:
            loss = self.loss(logits, labels)
        return logits, loss

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean (class-weighted) cross-entropy; binary cross-entropy on one logit when binary."""
        logits = logits.float()
        if not self.binary:
            return F.cross_entropy(logits, labels, weight=self.class_weights)
        per_row = F.binary_cross_entropy_with_logits(logits[:, 0], labels.float(), reduction="none")
        if self.class_weights is None:
            return per_row.mean()
        w = self.class_weights[labels]  # (B,) normalised like cross_entropy's `weight`
        return (per_row * w).sum() / w.sum()

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Class probabilities (B, K) from logits, for either head."""
        if self.binary:
            p = torch.sigmoid(logits.float()[:, 0])  # (B,) probability of class 1
            return torch.stack([1 - p, p], dim=-1)
        return torch.softmax(logits.float(), dim=-1)
