"""Building a classifier's model: Keras-style init, and starting from a pretrained base run."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from torch import nn

from ..config import ConfigError, ModelConfig
from ..models.registry import backbone_spec
from ..run import MODEL_CONFIG, read_model_config, weights_path


def keras_init(model: nn.Module) -> None:
    """Keras's default initialisers, for faithful reproductions of Keras recipes.

    Embedding U(-0.05, 0.05); Dense and RNN input kernels Glorot-uniform; recurrent kernels
    orthogonal; biases zero, except the LSTM forget gate at 1 (`unit_forget_bias`).
    """
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            nn.init.uniform_(module.weight, -0.05, 0.05)
        elif isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.RNNBase):
            H = module.hidden_size
            for name, p in module.named_parameters():
                if name.startswith("weight_ih"):
                    nn.init.xavier_uniform_(p)  # Keras kernel (I, G*H): same fans
                elif name.startswith("weight_hh"):
                    nn.init.orthogonal_(p)
                else:
                    nn.init.zeros_(p)
                    if isinstance(module, nn.LSTM) and name.startswith("bias_ih"):
                        p.data[H: 2 * H] = 1.0  # torch gate order i, f, g, o


def load_base_backbone(backbone: nn.Module, base: Path) -> int:
    """Copy a pretrained run's `backbone.*` weights into `backbone` (its head is dropped)."""
    from ..train.checkpoint import load_state

    path = weights_path(base)
    state = {k[len("backbone."):]: v for k, v in load_state(path).items()
             if k.startswith("backbone.")}
    own = backbone.state_dict()
    for name, tensor in state.items():
        if name in own and own[name].shape != tensor.shape:
            raise ConfigError(f"{path}: {name} has shape {tuple(tensor.shape)}, the backbone "
                              f"expects {tuple(own[name].shape)}")
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigError(f"{path}: backbone weights do not fit (missing {missing[:5]}, "
                          f"unexpected {unexpected[:5]})")
    return len(state)


def base_model_config(base: Path, user_model: dict[str, Any]) -> ModelConfig:
    """The base run's architecture as a classifier; only head settings may be changed."""
    cfg = read_model_config(base)
    if cfg.extra.get("lora"):
        raise ConfigError(f"--base {base} has LoRA adapters; use its merged run ({base}/merged)")
    data = dataclasses.asdict(cfg)
    head_keys = {"head", "n_classes", "pooling", "dropout", "extra", "max_len"}
    for key, value in user_model.items():
        if key in head_keys:
            data[key] = {**data["extra"], **value} if key == "extra" else value
        elif key in data and ModelConfig.from_dict({key: value}).__dict__[key] != data[key]:
            raise ConfigError(f"model.{key}={value!r} differs from the base run's {data[key]!r}; "
                              f"fine-tuning --base {base} keeps its architecture")
    if backbone_spec(data["arch"]).positional and data["max_len"] > cfg.max_len:
        raise ConfigError(f"model.max_len={data['max_len']} exceeds the base run's {cfg.max_len} positions")
    if cfg.head == "causal_lm" and data["arch"] in ("cnn", "rcnn"):
        data["extra"] = {**data["extra"], "causal": True}  # keep the pretrained causal layout
    data["head"] = "classifier"
    return ModelConfig.from_dict(data, source=str(base / MODEL_CONFIG))


