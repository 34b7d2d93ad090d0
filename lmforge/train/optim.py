"""Optimizers by name. Every one is a `torch.optim.Optimizer`; the loop always passes a closure.

    gd         plain gradient descent (torch SGD, no momentum)
    sgd        SGD with optional momentum / Nesterov
    rmsprop    RMSprop (Keras defaults: alpha 0.9, eps 1e-7)
    adagrad    Adagrad
    adam       Adam
    adamw      AdamW with decoupled weight decay (fused kernel where the device has one)
    lbfgs      L-BFGS with strong-Wolfe line search
    newton     exact damped Newton (small parameter sets)       lmforge.train.newton
    newton_cg  Hessian-free Newton-CG (Martens 2010)             lmforge.train.newton
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from ..config import ConfigError, TrainConfig

# methods whose step length comes from a line search: the lr schedule does not apply to them
LINE_SEARCH_OPTIMIZERS = ("lbfgs", "newton", "newton_cg")

OPTIMIZERS = ("gd", "sgd", "rmsprop", "adagrad", "adam", "adamw", "lbfgs", "newton", "newton_cg")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices (weights of linear / embedding layers); never decay biases or norms."""
    decay, no_decay = [], []
    seen: set[int] = set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def _supports_fused(cls: type[torch.optim.Optimizer], device: torch.device) -> bool:
    # on the nanoGPT CPU shape the fused kernel takes 0.27 ms per AdamW step against 1.16 ms
    # for the default per-tensor loop (torch 2.13, idle 2-core machine; an earlier reading of
    # the opposite was taken on a machine loaded by other jobs)
    if "fused" not in inspect.signature(cls).parameters:
        return False
    return device.type in ("cuda", "cpu", "mps")


def build_optimizer(model: nn.Module, cfg: TrainConfig,
                    device: torch.device | None = None) -> torch.optim.Optimizer:
    """The optimizer named by `cfg.optimizer`, over the model's trainable parameters."""
    name = cfg.optimizer
    device = device or next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the model has no trainable parameters")
    if name == "gd":
        return torch.optim.SGD(param_groups(model, cfg.weight_decay), lr=cfg.lr)
    if name == "sgd":
        return torch.optim.SGD(param_groups(model, cfg.weight_decay), lr=cfg.lr,
                               momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    if name == "rmsprop":
        return torch.optim.RMSprop(param_groups(model, cfg.weight_decay), lr=cfg.lr, alpha=0.9,
                                   eps=1e-7, momentum=cfg.momentum)
    if name == "adagrad":
        return torch.optim.Adagrad(param_groups(model, cfg.weight_decay), lr=cfg.lr)
    if name in ("adam", "adamw"):
        cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
        extra = {"fused": True} if _supports_fused(cls, device) else {}
        groups = param_groups(model, cfg.weight_decay if name == "adamw" else 0.0)
        return cls(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), **extra)
    if name == "lbfgs":
        # max_eval: torch derives it from max_iter (1 -> no room for a line search at all)
        options = {"history_size": 20, "max_iter": 1, "max_eval": 25, "line_search_fn": "strong_wolfe"}
        options.update(cfg.lbfgs)
        return torch.optim.LBFGS(params, lr=cfg.lr, **options)
    if name in ("newton", "newton_cg"):
        from . import newton

        cls = newton.Newton if name == "newton" else newton.NewtonCG
        options = dict(cfg.newton if name == "newton" else cfg.newton_cg)
        try:
            return cls(params, **options)
        except TypeError as err:
            raise ConfigError(f"train.{name}: {err}") from None
    raise ConfigError(f"train.optimizer={name!r} is unknown; valid: {', '.join(OPTIMIZERS)}")
