"""Predict a training run's peak memory from its configs, before anything big is allocated.

    est = estimate_memory(model_config, train_config, batch=8, seq=512, mode="lora")
    print(est.table())      # weights, gradients, optimizer state, activations, logits, peak

Accounting (bytes; parameters and gradients in their dtype, fp32 in lmforge):
- weights: every parameter; with `train.base_dtype=int8` the frozen base linears take 1 byte
  per weight plus a fp32 scale per row (lmforge.nn.quant).
- gradients and optimizer state: trainable parameters only (the optimizer is built over
  them alone); AdamW keeps 2 values per parameter, SGD with momentum 1, L-BFGS its history.
- activations: what autograd keeps for backward, per block measured on small copies of the
  model (lmforge.memory.trace). With activation checkpointing a checkpointed block keeps its
  input only and one block is rebuilt at a time in backward.
- logits: the plain loss holds the (B*T, V) logits, their log-softmax and, in backward, two
  gradients of that size; the chunked loss holds one chunk of that and a value per row.
- runtime: what the process holds before the model exists (libraries, allocator); on CPU
  the current process's resident memory.
The peak is the largest of three moments: loading (the weights in full precision, before an
int8 base is quantized, and a weights file's tensors while they are copied in), the start of backward (weights, optimizer state, activations,
logits, the output layer's gradient) and the end of backward (weights, optimizer state, all
gradients). Not counted: the data pipeline, evaluation, checkpoint writing, and on CPU the
allocator's slack (glibc keeps freed blocks; see docs/memory.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..config import ConfigError, ModelConfig, TrainConfig
from ..nn.chunked_ce import auto_chunk_size
from .trace import trace_blocks

DEFAULT_LORA = {"rank": 16, "alpha": 32.0, "targets": []}  # --mode lora without extra.lora
MODES = ("full", "lora")


def optimizer_state_values(train: TrainConfig) -> float:
    """Values of optimizer state per trainable parameter for `train.optimizer`."""
    name = train.optimizer
    if name in ("adam", "adamw"):
        return 2.0
    if name in ("sgd", "rmsprop"):
        return float(train.momentum > 0) + (1.0 if name == "rmsprop" else 0.0)
    if name == "adagrad":
        return 1.0
    if name == "gd":
        return 0.0
    if name == "lbfgs":
        return 2.0 * float(train.lbfgs.get("history_size", 20)) + 3.0  # s, y pairs + work vectors
    if name == "newton_cg":
        return 4.0  # CG's direction, residual and Hessian-vector product
    raise ConfigError(f"estimate-memory cannot estimate train.optimizer={name!r}")


@dataclass
class MemoryEstimate:
    """Predicted bytes per component, and the peak."""

    rows: list[tuple[str, float, str]] = field(default_factory=list)  # (name, bytes, detail)
    phases: dict[str, float] = field(default_factory=dict)  # moment of a step -> bytes held
    peak: float = 0.0
    device: str = "cpu"

    def add(self, name: str, nbytes: float, detail: str = "") -> float:
        self.rows.append((name, max(float(nbytes), 0.0), detail))
        return max(float(nbytes), 0.0)

    def get(self, name: str) -> float:
        return sum(b for n, b, _ in self.rows if n == name)

    def table(self) -> str:
        width = max(len(n) for n in [*(r[0] for r in self.rows), "peak (predicted)",
                                     *("= " + p for p in self.phases)])
        lines = [f"{'component':<{width}}  {'MiB':>10}  detail"]
        for name, nbytes, detail in self.rows:
            lines.append(f"{name:<{width}}  {nbytes / 2**20:>10.1f}  {detail}")
        for name, nbytes in self.phases.items():
            lines.append(f"{'= ' + name:<{width}}  {nbytes / 2**20:>10.1f}")
        lines.append(f"{'peak (predicted)':<{width}}  {self.peak / 2**20:>10.1f}  on {self.device}")
        return "\n".join(lines)


def _prepare(model: nn.Module, mode: str, lora: dict[str, Any], int8: bool) -> nn.Module:
    """The run's model as it trains: LoRA wrapped and frozen (lora), int8 base (int8)."""
    if mode == "lora":
        from ..nn.lora import (apply_lora, lora_options, mark_only_lora_and_head_trainable,
                               mark_only_lora_trainable)

        if not any("lora_A" in n for n, _ in model.named_parameters()):
            apply_lora(getattr(model, "backbone", model), **lora_options(lora))
        if getattr(model.config, "head", "causal_lm") == "causal_lm":
            mark_only_lora_trainable(model)
        else:
            mark_only_lora_and_head_trainable(model)
    if int8:
        from ..nn.quant import quantize_frozen_base

        quantize_frozen_base(model)
    return model


def _weights(est: MemoryEstimate, model: nn.Module, int8: bool) -> tuple[float, float, float]:
    """Add the weights row; returns (trainable bytes, output-layer gradient bytes, bytes of
    the weights as loaded, before int8)."""
    from ..nn.quant import frozen_base_linears

    quantized = {id(m.weight) for _, m in frozen_base_linears(model)} if int8 else set()
    total = trainable = loaded = 0.0
    n_params = 0
    for p in {id(p): p for p in model.parameters()}.values():
        n_params += p.numel()
        loaded += p.numel() * p.element_size()
        if id(p) in quantized:
            total += p.numel() + p.shape[0] * 4  # int8 values + a fp32 scale per row
        else:
            total += p.numel() * p.element_size()
        if p.requires_grad:
            trainable += p.numel() * p.element_size()
    detail = f"{n_params / 1e6:.1f}M parameters" + (" (frozen base linears in int8)" if int8 else "")
    est.add("weights", total, detail)
    head = getattr(model, "lm_head", None)
    head_grad = head.weight.numel() * head.weight.element_size() \
        if head is not None and head.weight.requires_grad else 0.0
    return trainable, head_grad, loaded


def estimate_memory(model_config: ModelConfig, train: TrainConfig, batch: int, seq: int,
                    mode: str = "full", device: str = "cpu", runtime_bytes: float = 0.0,
                    lora: dict[str, Any] | None = None,
                    loads_weights: bool = False) -> MemoryEstimate:
    """Predicted memory of training `model_config` with `train` at `batch` x `seq` tokens.

    `mode` lora wraps the backbone's linear layers in adapters (model.extra.lora, else
    `lora`, else rank 16 on every linear layer) and trains only them. `loads_weights`: the
    run starts from a weights file, which `load_weights` reads whole before copying it in.
    """
    if mode not in MODES:
        raise ConfigError(f"--mode must be full or lora, got {mode!r}")
    if batch < 1 or seq < 1:
        raise ConfigError(f"batch and seq must be positive, got {batch} x {seq}")
    lora = model_config.extra.get("lora") or lora or DEFAULT_LORA
    int8 = train.base_dtype == "int8"
    if int8 and mode != "lora":
        raise ConfigError("train.base_dtype=int8 holds a frozen base in int8: use --mode lora")
    precision = "bf16" if train.precision in ("bf16", "auto") and device != "mps" else train.precision
    precision = "bf16" if precision == "fp16" else precision  # same byte counts
    est = MemoryEstimate(device=device)
    est.add("runtime", runtime_bytes, "libraries and allocator before the model exists")
    with torch.device("meta"):  # shapes and dtypes only: nothing is allocated
        model = _prepare(_build(model_config), mode, lora, int8=False)
    trainable, head_grad, loaded = _weights(est, model, int8)
    n_opt = optimizer_state_values(train)
    opt = est.add("optimizer state", trainable * n_opt,
                  f"{train.optimizer}: {n_opt:g} values per trainable parameter")
    grads = est.add("gradients", trainable, f"{trainable / 4 / 1e6:.2f}M trainable values")

    trace = trace_blocks(model_config, seq, precision,
                         lambda m: _prepare(m, mode, lora, int8))
    n_blocks = _n_blocks(model_config)
    every = train.checkpoint_every if train.activation_checkpointing else 0
    per_block = trace.block(batch)
    if every:
        n_ckpt = len(range(0, n_blocks, every))
        block_input = batch * seq * model_config.d_model * 4  # the residual stream, fp32
        acts = n_ckpt * block_input + (n_blocks - n_ckpt) * per_block + trace.outside(batch)
        detail = (f"{n_ckpt} of {n_blocks} blocks checkpointed (keep their input), "
                  f"+1 block rebuilt in backward")
        acts += per_block
    else:
        acts = n_blocks * per_block + trace.outside(batch)
        detail = f"{n_blocks} blocks x {per_block / 2**20:.1f} MiB + embeddings"
    acts = est.add("activations", acts, f"{precision}; {detail}")
    logits = est.add("logits / loss", _logits_bytes(model_config, train, batch * seq, precision),
                     _logits_detail(model_config, train, batch * seq))
    static = est.get("runtime") + est.get("weights") + opt + (grads if train.grad_accum > 1 else 0)
    # the base in full precision once, plus the file's tensors while they are copied in
    est.phases = {"loading": est.get("runtime") + loaded * (2 if loads_weights else 1),
                  "start of backward": static + acts + logits + head_grad,
                  "end of backward": static + grads}
    est.peak = max(est.phases.values())
    return est


def _build(config: ModelConfig) -> nn.Module:
    from ..models.build import build_model

    return build_model(config)


def _n_blocks(config: ModelConfig) -> int:
    """Layers as the trace counts them; an encoder-decoder's traced layer is one encoder
    block plus one decoder block, so its count is the mean depth of the two stacks."""
    if config.head == "seq2seq":
        extra = config.extra
        enc = int(extra.get("enc_layers") or config.n_layers)
        dec = int(extra.get("dec_layers") or config.n_layers)
        return max(1, round((enc + dec) / 2))
    return config.n_layers


def _logits_bytes(config: ModelConfig, train: TrainConfig, rows: int, precision: str) -> float:
    V, D = config.vocab_size, config.d_model
    if train.chunked_ce and config.head == "causal_lm":
        chunk = train.ce_chunk_size or auto_chunk_size(rows, V, D)
        # kept rows (N, D) and one log-sum-exp per row; in backward one chunk's logits, its
        # softmax-gradient and the cast: about 3 chunk-sized fp32 tensors
        return rows * D * 4 + rows * 4 + 3 * min(chunk, rows) * V * 4
    # logits (bf16: + their fp32 copy), log-softmax kept for backward, then in backward the
    # gradients of the log-softmax and of the logits
    per_value = 12 if precision == "fp32" else 14
    return rows * V * per_value


def _logits_detail(config: ModelConfig, train: TrainConfig, rows: int) -> str:
    if train.chunked_ce and config.head == "causal_lm":
        chunk = train.ce_chunk_size or auto_chunk_size(rows, config.vocab_size, config.d_model)
        return f"chunked: {min(chunk, rows)} of {rows} rows x vocab {config.vocab_size} at a time"
    return f"{rows} rows x vocab {config.vocab_size} (train.chunked_ce=true avoids this)"


def with_overrides(train: TrainConfig, **changes: Any) -> TrainConfig:
    """A copy of `train` with the given fields changed (the CLI's flags)."""
    return dataclasses.replace(train, **{k: v for k, v in changes.items() if v is not None})
