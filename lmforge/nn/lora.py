"""LoRA: low-rank adapters on linear layers (Hu et al. 2021, "LoRA: Low-Rank Adaptation").

A frozen weight W (out, in) gets a trainable update scaled by alpha / r:

    y = x W^T + b + (alpha / r) * dropout(x) A^T B^T        A (r, in), B (out, r)

A starts random (Kaiming-uniform, as in the paper's reference code) and B at zero, so a fresh
adapter leaves the model's outputs unchanged. Only A, B (and the task head) train; merging
folds the update into W (`W + (alpha / r) B A`) and gives back a plain `nn.Linear` whose
outputs equal the adapted layer's.

    targets = apply_lora(model.backbone, rank=8, alpha=16, targets=["q", "k", "v", "o"])
    mark_only_lora_and_head_trainable(model)      # everything under model.backbone frozen but A, B
    ...train...
    with disable_adapters(model): ...             # the base model's outputs (DPO's reference)
    merge_lora(model)                             # plain model, identical outputs

Targets are module-name patterns: a pattern matches a layer whose name equals it, ends in
"." + it, or fnmatch-es it, so the short names `q,k,v,o,gate,up,down` pick those projections
in every block. A model whose `config.extra["lora"]` is set gets its adapters when it is
built (`apply_lora_from_config`), so a LoRA run rebuilds from model_config.json alone.
Adapters are saved alone in `adapter.safetensors` by `lmforge.nn.lora_io`.

What LoRA can adapt in each lmforge backbone (only `nn.Linear` layers are wrapped):

    llama       attention `attn.q`, `attn.k`, `attn.v`, `attn.o`; MLP `mlp.gate`, `mlp.up`,
                `mlp.down` (short names q,k,v,o,gate,up,down; all seven by default)
    gpt / bert  attention `attn.qkv`, `attn.proj`; MLP `mlp.fc`, `mlp.proj` (all of them by default)
    cnn         the residual blocks' MLP `mlp.fc`, `mlp.proj` and the input projection `proj_in`
                (the convolutions themselves are nn.Conv1d and stay frozen)
    rcnn        the projection `proj` of [left context; word; right context]
    rnn / lstm / gru   nothing: the fused nn.RNN / nn.LSTM / nn.GRU keep their gate matrices
                as flat parameters of one cuDNN-style kernel, not nn.Linear layers, so LoRA has
                no linear layer to wrap there; fine-tune these fully or with a frozen backbone.
"""

from __future__ import annotations

import contextlib
import fnmatch
import math
import re
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn


class LoRALinear(nn.Module):
    """An `nn.Linear` plus a rank-`rank` update scaled by `alpha / rank`; the base stays frozen."""

    def __init__(self, base: nn.Linear, rank: int = 8, alpha: float = 16.0,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"lora rank must be >= 1, got {rank}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"lora dropout must be in [0, 1), got {dropout}")
        self.base = base
        self.rank, self.alpha = int(rank), float(alpha)
        self.scaling = self.alpha / self.rank
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=w.device, dtype=w.dtype))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=w.device, dtype=w.dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # nn.Linear's own init for A
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.enabled = True  # False: the base layer alone (see `disable_adapters`)
        base.weight.requires_grad_(False)
        if base.bias is not None:
            base.bias.requires_grad_(False)

    # the wrapped layer still looks like a linear layer to code that inspects it
    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def delta_weight(self) -> torch.Tensor:
        """The update (alpha / r) B A, shaped like the base weight (out, in)."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return self.base(x)
        return self.add_update(x, F.linear(self.lora_dropout(x), self.lora_A))

    def add_update(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """base(x) + (alpha / r) B h, where h = A x (..., rank) was computed by the caller
        (`shared_input_lora` computes it for several layers at once)."""
        # scaled on the rank-r side, and B's product added by the same BLAS call (addmm):
        # no full-width temporary and no elementwise passes over the (..., out) output, which
        # cost 5 % of a SmolLM2 LoRA step on a CPU when written as base(x) + update * scaling
        h = h * self.scaling
        y = self.base(x)  # (..., out)
        out = torch.addmm(y.reshape(-1, y.size(-1)), h.reshape(-1, self.rank), self.lora_B.t())
        return out.view(y.shape)

    def merged(self) -> nn.Linear:
        """A plain nn.Linear computing W + (alpha / r) B A (trainable again, like any layer)."""
        base = self.base
        out = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None,
                        device=base.weight.device, dtype=base.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(base.weight + self.delta_weight().to(base.weight.dtype))
            if base.bias is not None:
                out.bias.copy_(base.bias)
        return out

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha:g}"


def shared_input_lora(x: torch.Tensor, layers: tuple[nn.Module, ...]) -> list[torch.Tensor] | None:
    """`[layer(x) for layer in layers]` for LoRA layers that read the same x (q, k, v; gate,
    up), with their A matrices stacked into one product; None unless every layer is an
    enabled LoRALinear without dropout (each dropout draws its own mask over x).

    One (rows, sum of ranks) product instead of one per layer, forward and backward: 3.4 ->
    2.3 ms for q, k, v at 1,600 rows x 576 -> 3 x 16 on 2 CPU threads."""
    if len(layers) < 2 or not all(isinstance(layer, LoRALinear) and layer.enabled
                                  and isinstance(layer.lora_dropout, nn.Identity) for layer in layers):
        return None
    stacked = torch.cat([layer.lora_A for layer in layers])  # (sum r, in)
    hs = F.linear(x, stacked).split([layer.rank for layer in layers], dim=-1)
    return [layer.add_update(x, h) for layer, h in zip(layers, hs)]


def _matches(name: str, patterns: list[str]) -> bool:
    """A module name matches a pattern equal to it, ending in "." + it, or fnmatch-ing it.

    >>> _matches("blocks.0.attn.qkv", ["attn.qkv"]), _matches("blocks.1.mlp.fc", ["blocks.*.mlp.*"])
    (True, True)
    """
    return any(name == p or name.endswith("." + p) or fnmatch.fnmatchcase(name, p) for p in patterns)


def layer_patterns(model: nn.Module) -> list[str]:
    """The distinct nn.Linear names of `model` with block indices as "*", for error messages.

    >>> layer_patterns(gpt_backbone)  # doctest: +SKIP
    ['blocks.*.attn.qkv', 'blocks.*.attn.proj', 'blocks.*.mlp.fc', 'blocks.*.mlp.proj']
    """
    seen: dict[str, None] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            seen[re.sub(r"\.\d+\.", ".*.", name.removesuffix(".base"))] = None
    return list(seen)


def lora_targets(model: nn.Module, targets: list[str] | None = None) -> list[str]:
    """Names of the nn.Linear modules of `model` that `targets` select ([] or None = all of them)."""
    wrapped = {n for n, m in model.named_modules() if isinstance(m, LoRALinear)}
    names = []
    for name, module in model.named_modules():
        if name.rpartition(".")[0] in wrapped and name.endswith("base"):
            continue  # the frozen layer inside an adapter: never wrap twice
        if isinstance(module, nn.Linear) and (not targets or _matches(name, list(targets))):
            names.append(name)
    return names


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def apply_lora(model: nn.Module, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0,
               targets: list[str] | None = None) -> list[str]:
    """Wrap the selected nn.Linear layers of `model` in LoRALinear, in place; returns their names.

    `targets` are module-name patterns ("attn.qkv", "mlp.*", "blocks.0.attn.proj"); empty
    means every linear layer of `model`. Pass the backbone, not the whole classifier, so the
    task head stays a plain (fully trained) layer.
    """
    names = lora_targets(model, targets)
    if not names:
        linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError(
                f"LoRA found no nn.Linear layer in {type(model).__name__}: recurrent backbones "
                "(rnn, lstm, gru) keep their weights inside fused nn.RNN/LSTM/GRU kernels; "
                "fine-tune them fully or with a frozen backbone instead")
        raise ValueError(f"lora targets {','.join(targets or [])} match no nn.Linear layer of "
                         f"{type(model).__name__}; its linear layers are: "
                         f"{', '.join(layer_patterns(model))}")
    for name in names:
        _set_module(model, name, LoRALinear(model.get_submodule(name), rank, alpha, dropout))
    return names


def apply_lora_from_config(model: nn.Module) -> list[str]:
    """Wrap the layers that `model.config.extra["lora"]` names, unless already done.

    LoRA adapts the backbone (`model.backbone`, else the whole model), never the task head.
    Called by `build_model`, so every head gets its adapters back from model_config.json.
    """
    options = getattr(getattr(model, "config", None), "extra", {}).get("lora")
    if not options or any(isinstance(m, LoRALinear) for m in model.modules()):
        return []
    return apply_lora(getattr(model, "backbone", model), **lora_options(options))


@contextlib.contextmanager
def disable_adapters(model: nn.Module) -> Iterator[nn.Module]:
    """Run `model` as its base inside the block: every LoRALinear skips its update.

    DPO's reference model is the policy with its adapters off: no second copy in memory.
    """
    layers = [m for m in model.modules() if isinstance(m, LoRALinear)]
    previous = [m.enabled for m in layers]
    for m in layers:
        m.enabled = False
    try:
        yield model
    finally:
        for m, was in zip(layers, previous):
            m.enabled = was


def has_lora(model: nn.Module) -> bool:
    return any(isinstance(m, LoRALinear) for m in model.modules())


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The adapter matrices A and B of every LoRALinear in `model`."""
    return [p for m in model.modules() if isinstance(m, LoRALinear) for p in (m.lora_A, m.lora_B)]


def mark_only_lora_and_head_trainable(model: nn.Module, backbone: str = "backbone") -> int:
    """Freeze everything under `model.<backbone>` except LoRA A/B; the rest (the head) trains.

    Returns the number of trainable parameters.
    """
    prefix = backbone + "."
    trainable = 0
    for name, p in model.named_parameters():
        keep = "lora_A" in name or "lora_B" in name or not name.startswith(prefix)
        p.requires_grad_(keep)
        trainable += p.numel() if keep else 0
    return trainable


def mark_only_lora_trainable(model: nn.Module) -> int:
    """Freeze every parameter but the adapters' A and B (causal LM, SFT, DPO: the head too,
    which is often the tied embedding). Returns the number of trainable parameters."""
    trainable = 0
    for name, p in model.named_parameters():
        keep = "lora_A" in name or "lora_B" in name
        p.requires_grad_(keep)
        trainable += p.numel() if keep else 0
    return trainable


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight, in place; returns the now plain model.

    A model with a `config` whose `extra` holds "lora" gets a copy of the config without it,
    so the merged model saves and reloads as an ordinary one.
    """
    names = [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    for name in names:
        _set_module(model, name, model.get_submodule(name).merged())
    config = getattr(model, "config", None)
    if config is not None and isinstance(getattr(config, "extra", None), dict) and "lora" in config.extra:
        import dataclasses

        extra = {k: v for k, v in config.extra.items() if k != "lora"}
        model.config = dataclasses.replace(config, extra=extra)
    return model


def lora_options(options: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of `apply_lora` from a config dict (rank, alpha, dropout, targets)."""
    return {"rank": int(options.get("rank", 8)), "alpha": float(options.get("alpha", 16.0)),
            "dropout": float(options.get("dropout", 0.0)), "targets": list(options.get("targets") or [])}
