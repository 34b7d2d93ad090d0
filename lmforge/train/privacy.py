"""Differentially private training (DP-SGD, Abadi et al. 2016) through Opacus, as Trainer hooks.

    train.dp.epsilon=8 train.dp.delta=1e-5 train.dp.max_grad_norm=1.0

Each optimizer step clips every example's gradient to `max_grad_norm`, sums them, adds
Gaussian noise of standard deviation `noise_multiplier * max_grad_norm` and divides by the
batch size. The noise multiplier is chosen once, before training, so that `max_steps` steps
at sampling rate q = batch_size / examples spend exactly (epsilon, delta) under the RDP
accountant (Mironov 2017). The accountant's history is saved in trainer_state.pt, so a
resumed run reports the privacy spent since step 0; `epsilon` is a metrics.csv column.

What Opacus can compute per-example gradients for, and so what lmforge trains privately:
Linear, Embedding, LayerNorm, RMSNorm, Conv1d/2d, GroupNorm layers; and torch's fused
RNN / LSTM / GRU, which are swapped in place for Opacus's DPRNN / DPLSTM / DPGRU (same
parameter names, so checkpoints load into the ordinary model). Refused, naming the layer:
learned absolute positions (`LearnedPositions`: one position table added to the whole
batch has no per-example input; use `model.positional=rotary`), hand-written recurrent cells
(`model.activation` other than tanh/relu for an RNN) and any other layer with its own
parameters. Also refused: grad_accum > 1, fp16, torch.compile, FSDP/DDP and line-search or
Newton optimizers.

Caveats, stated in docs/responsible.md: batches are the task's shuffled fixed-size batches,
not Poisson samples, as Opacus's accountant assumes (the usual practical approximation); for
a language model the privacy unit is one training window of `model.max_len` tokens, and a
document longer than that spans several units.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..config import ConfigError, TrainConfig

INSTALL_HINT = "differentially private training needs Opacus: pip install 'lmforge[privacy]'"


def _opacus() -> Any:
    try:
        import opacus
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    return opacus


def dataset_size(task: Any) -> int:
    """Privacy units in the task's training data: examples (classifiers) or windows (LMs)."""
    train = getattr(task, "train", None)
    if hasattr(train, "n_examples"):
        return int(train.n_examples)
    if hasattr(train, "tokens") and hasattr(train, "block_size"):
        return max(1, len(train.tokens) // train.block_size)
    raise ConfigError(f"train.dp: {type(task).__name__} does not say how many training examples "
                      "it has; differential privacy is available for classify and LM tasks")


def check_supported(model: nn.Module) -> None:
    """Raise ConfigError naming the first layer whose per-example gradients Opacus cannot
    compute (after `swap_recurrent`)."""
    from opacus import GradSampleModule
    from opacus.layers.dp_rnn import DPRNNBase, RNNLinear

    from ..nn.positional import LearnedPositions

    supported = tuple(GradSampleModule.GRAD_SAMPLERS) + (RNNLinear,)
    for name, module in model.named_modules():
        if isinstance(module, LearnedPositions) and module.weight.weight.requires_grad:
            raise ConfigError(f"train.dp: layer {name!r} (LearnedPositions) adds one position "
                              "table to the whole batch, so Opacus has no per-example gradient "
                              "for it; use model.positional=rotary (or train without train.dp)")
        if isinstance(module, DPRNNBase):
            continue
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if own and not isinstance(module, supported):
            raise ConfigError(f"train.dp: layer {name!r} ({type(module).__name__}) is not supported "
                              "by Opacus's per-example gradients; supported: Linear, Embedding, "
                              "LayerNorm, RMSNorm, Conv, GroupNorm and torch's RNN/LSTM/GRU")


def swap_recurrent(model: nn.Module) -> int:
    """Replace torch's fused RNN/LSTM/GRU by Opacus's DPRNN/DPLSTM/DPGRU in place (same
    weights and parameter names); returns how many were replaced."""
    from opacus.layers import DPGRU, DPLSTM, DPRNN

    swapped = 0
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            kind = type(child)
            if kind not in (nn.RNN, nn.LSTM, nn.GRU):
                continue
            cls = {nn.RNN: DPRNN, nn.LSTM: DPLSTM, nn.GRU: DPGRU}[kind]
            kwargs = {"nonlinearity": child.nonlinearity} if kind is nn.RNN else {}
            new = cls(child.input_size, child.hidden_size, child.num_layers, bias=child.bias,
                      batch_first=child.batch_first, dropout=child.dropout,
                      bidirectional=child.bidirectional, **kwargs)
            new.load_state_dict(child.state_dict())
            setattr(parent, child_name, new.to(next(child.parameters()).device))
            swapped += 1
    return swapped


def _loss_returning(dp_optimizer_cls: type) -> type:
    class LossReturningDPOptimizer(dp_optimizer_cls):
        """Opacus's DPOptimizer, but `step(closure)` returns the closure's loss (the loop logs
        it) and each real step is recorded by the accountant."""

        accountant: Any = None

        def step(self, closure: Any = None) -> Any:
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            if self.pre_step():
                self.original_optimizer.step()
                self.accountant.step(noise_multiplier=self.noise_multiplier,
                                     sample_rate=self.sample_rate)
            return loss

    return LossReturningDPOptimizer


class Privacy:
    """DP-SGD for one training run: prepares the model, wraps it and the optimizer, accounts."""

    def __init__(self, cfg: TrainConfig, n_examples: int, log: Any = print) -> None:
        _opacus()
        from opacus.accountants import RDPAccountant
        from opacus.accountants.utils import get_noise_multiplier

        dp = cfg.dp
        self.epsilon_target, self.delta, self.max_grad_norm = float(dp.epsilon), dp.delta, dp.max_grad_norm
        self.batch_size = cfg.batch_size
        self.sample_rate = min(1.0, cfg.batch_size / n_examples)
        self.noise_multiplier = get_noise_multiplier(
            target_epsilon=self.epsilon_target, target_delta=self.delta,
            sample_rate=self.sample_rate, steps=max(cfg.max_steps, 1), accountant="rdp")
        self.accountant = RDPAccountant()
        log(f"train.dp: epsilon {self.epsilon_target:g}, delta {self.delta:g} over "
            f"{cfg.max_steps} steps at sampling rate {self.sample_rate:.4g} ({n_examples:,} "
            f"examples) -> noise multiplier {self.noise_multiplier:.3f}, per-example clip "
            f"{self.max_grad_norm:g}")

    def prepare(self, model: nn.Module) -> nn.Module:
        """Before the optimizer is built: DP layers in place of fused RNNs; refuse the rest."""
        swap_recurrent(model)
        check_supported(model)
        return model

    def wrap(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[nn.Module, Any]:
        """(module that records per-example gradients, optimizer that clips, noises, accounts)."""
        import warnings

        from opacus import GradSampleModule
        from opacus.optimizers import DPOptimizer

        # Opacus's hooks fire on the embedding output, whose input (token ids) needs no grad
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        train_model = GradSampleModule(model, batch_first=True, loss_reduction="mean")
        dp_optimizer = _loss_returning(DPOptimizer)(
            optimizer, noise_multiplier=self.noise_multiplier, max_grad_norm=self.max_grad_norm,
            expected_batch_size=self.batch_size, loss_reduction="mean")
        dp_optimizer.sample_rate = self.sample_rate
        dp_optimizer.accountant = self.accountant
        self.optimizer = dp_optimizer
        return train_model, dp_optimizer

    def epsilon(self) -> float:
        """Privacy spent so far (0 before the first step)."""
        if not self.accountant.history:
            return 0.0
        return float(self.accountant.get_epsilon(delta=self.delta))

    def metrics(self) -> dict[str, float]:
        return {"epsilon": self.epsilon()}

    def state_dict(self) -> dict[str, Any]:
        """The accountant's history as plain lists (torch.load weights_only can read it)."""
        return {"history": [list(map(float, h[:2])) + [int(h[2])] for h in self.accountant.history],
                "noise_multiplier": float(self.noise_multiplier), "delta": float(self.delta)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.accountant.history = [(float(a), float(b), int(c)) for a, b, c in state["history"]]
        # the resumed run keeps its noise, even if train.max_steps changed
        self.noise_multiplier = state["noise_multiplier"]
        if getattr(self, "optimizer", None) is not None:
            self.optimizer.noise_multiplier = self.noise_multiplier


def from_config(cfg: TrainConfig, task: Any, log: Any = print) -> Privacy | None:
    """The Privacy hooks when `train.dp.epsilon` is set, else None; refuses what DP cannot do."""
    if cfg.dp.epsilon is None:
        return None
    refused = {"train.grad_accum > 1 (per-example gradients are clipped per optimizer step)":
               cfg.grad_accum > 1,
               "train.precision=fp16": cfg.precision == "fp16",
               "train.compile=true": cfg.compile,
               "train.fsdp=true": cfg.fsdp}
    from .optim import LINE_SEARCH_OPTIMIZERS

    refused[f"train.optimizer={cfg.optimizer}"] = cfg.optimizer in LINE_SEARCH_OPTIMIZERS or \
        cfg.optimizer.startswith("newton")
    for what, bad in refused.items():
        if bad:
            raise ConfigError(f"train.dp cannot be combined with {what}")
    from . import distributed

    if distributed.current().enabled:
        raise ConfigError("train.dp: differentially private training runs in one process "
                          "(not under torchrun)")
    return Privacy(cfg, dataset_size(task), log)
