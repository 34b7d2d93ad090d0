"""Typed configs: dataclasses, YAML load, dotted `a.b=value` overrides, presets.

One `Config` holds everything a run needs. It is saved, fully resolved, as `config.yaml` in
the run directory; `ModelConfig` alone is saved as `model_config.json`.

    cfg = load_config("configs/shakespeare-char-gpt.yaml", ["model.n_layers=6", "train.lr=3e-4"])
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ACTIVATIONS = ("sigmoid", "tanh", "relu", "gelu", "gelu_tanh", "silu")  # gelu_tanh: GPT-2's gelu_new


# default `model.activation` per architecture (tanh keeps torch's fused RNN kernel)
FAMILY_ACTIVATIONS = {"rnn": "tanh", "rcnn": "tanh", "mlp": "tanh"}


class ConfigError(ValueError):
    """A bad config value or key; the message names it."""


@dataclass
class ModelConfig:
    """Architecture. `arch` names an entry of `lmforge.models.build.BACKBONES`."""

    arch: str = "gpt"
    head: str = "causal_lm"  # causal_lm | masked_lm | classifier | seq2seq
    vocab_size: int = 0  # 0 = taken from the tokenizer
    d_model: int = 128  # width; hidden size for recurrent nets
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 0  # 0 = 4 * d_model
    max_len: int = 64  # context length (tokens)
    dropout: float = 0.0
    activation: str = ""  # "" = the family's default: tanh for rnn/rcnn/mlp, gelu otherwise
    norm_eps: float = 1e-5  # LayerNorm epsilon (GPT-2 1e-5, BERT 1e-12)
    pad_id: int = 0
    bias: bool = True
    positional: str = "learned"  # learned | rotary (transformers)
    tie_embeddings: bool = True
    bidirectional: bool = False  # recurrent encoders / classifiers only
    d_embed: int = 0  # 0 = d_model; token-embedding width for recurrent / conv nets
    kernel_size: int = 3  # cnn: filter width; rcnn unused
    dilations: list[int] = field(default_factory=list)  # cnn: [] = 1, 2, 4, ... per layer
    gated: bool = False  # cnn: WaveNet gated activation tanh(x) * sigmoid(g)
    filter_widths: list[int] = field(default_factory=list)  # cnn classifier: Kim-2014 widths
    cell: str = "lstm"  # rcnn / seq2seq recurrent cell: rnn | lstm | gru
    # classifier head
    n_classes: int = 2
    pooling: str = "last"  # last | mean | max | cls
    # freeform per-family extras (kept JSON-serialisable)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.activation:  # the textbook non-linearity of each family
            self.activation = FAMILY_ACTIVATIONS.get(self.arch, "gelu")

    @property
    def ff_width(self) -> int:
        return self.d_ff or 4 * self.d_model

    @property
    def embed_width(self) -> int:
        return self.d_embed or self.d_model

    def validate(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ConfigError(
                f"model.activation={self.activation!r} is not one of {', '.join(ACTIVATIONS)}"
            )
        for name in ("d_model", "n_layers", "max_len"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.{name} must be positive, got {getattr(self, name)}")
        if self.arch in ("gpt", "bert", "transformer") and self.d_model % self.n_heads:
            raise ConfigError(
                f"model.n_heads={self.n_heads} does not divide model.d_model={self.d_model}"
            )
        if self.norm_eps <= 0:
            raise ConfigError(f"model.norm_eps must be positive, got {self.norm_eps}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.positional not in ("learned", "rotary"):
            raise ConfigError(f"model.positional must be learned or rotary, got {self.positional!r}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "model_config.json") -> "ModelConfig":
        return _from_dict(cls, data, prefix="model", source=source)


@dataclass
class TokenizerConfig:
    """Which tokenizer to train (or load) for the corpus."""

    kind: str = "char"  # char | word | bpe | wordpiece | a path to tokenizer.json
    vocab_size: int = 4096  # bpe / wordpiece / word cap
    lowercase: bool = False  # word / wordpiece
    min_frequency: int = 1
    path: str = ""  # load this tokenizer.json instead of training


@dataclass
class DataConfig:
    """Where the text comes from and how it is split."""

    path: str = ""  # file, folder, glob or .jsonl; "" = bundled Tiny Shakespeare
    text_field: str = "text"  # JSONL field
    val_fraction: float = 0.1
    errors: str = "strict"  # strict | replace: what to do with non-UTF-8 bytes
    cache_dir: str = ""  # "" = <run>/../.cache/lmforge or ~/.cache/lmforge


@dataclass
class DPConfig:
    """Differentially private training (DP-SGD through Opacus; see lmforge/train/privacy.py)."""

    epsilon: float | None = None  # privacy budget over the whole run; unset = no DP
    delta: float = 1e-5  # should be well below 1 / training examples
    max_grad_norm: float = 1.0  # per-example gradient clip

    def validate(self) -> None:
        if self.epsilon is None:
            return
        try:
            self.epsilon = float(self.epsilon)
        except (TypeError, ValueError):
            raise ConfigError(f"train.dp.epsilon must be a number, got {self.epsilon!r}") from None
        if not self.epsilon > 0:
            raise ConfigError(f"train.dp.epsilon must be > 0, got {self.epsilon:g} (leave it "
                              "unset to train without differential privacy)")
        if not 0 < self.delta < 1:
            raise ConfigError(f"train.dp.delta must be in (0, 1), got {self.delta:g}")
        if not self.max_grad_norm > 0:
            raise ConfigError(f"train.dp.max_grad_norm must be > 0, got {self.max_grad_norm:g}")


@dataclass
class TrainConfig:
    """The training loop: optimizer, schedule, batches, evaluation, checkpoints."""

    max_steps: int = 2000
    batch_size: int = 12
    grad_accum: int = 1
    optimizer: str = "adamw"  # gd | sgd | rmsprop | adagrad | adam | adamw | lbfgs | newton | newton_cg
    lr: float = 3e-3  # nanoGPT's CPU recipe uses 1e-3; 3e-3 reaches val 1.760 vs 1.893 at 2,000 steps
    min_lr: float = 3e-4
    warmup_steps: int = 100
    decay_steps: int = 0  # step where the schedule reaches min_lr; 0 = max_steps
    schedule: str = "cosine"  # cosine | linear | constant
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    momentum: float = 0.0
    nesterov: bool = False
    grad_clip: float = 1.0  # 0 = off
    eval_every: int = 250
    eval_batches: int = 20
    log_every: int = 10
    save_every: int = 0  # 0 = at each evaluation
    patience: int = 0  # early stopping: evaluations without improvement; 0 = off
    tbptt: bool = False  # recurrent LMs: carry state across consecutive windows
    time_budget_s: float = 0.0  # stop after this much training time; 0 = no limit
    sample_tokens: int = 200  # generated at each evaluation into samples.txt (LM runs)
    device: str = "auto"  # auto | cpu | cuda | mps
    precision: str = "fp32"  # fp32 | bf16 | fp16 | auto (bf16 where this device runs it fast)
    compile: bool = False
    threads: int = 0  # torch CPU threads; 0 = all cores
    seed: int = 1337
    progress: bool = True
    newton_cg: dict[str, Any] = field(default_factory=dict)  # options for optimizer=newton_cg
    newton: dict[str, Any] = field(default_factory=dict)  # options for optimizer=newton
    lbfgs: dict[str, Any] = field(default_factory=dict)  # options for optimizer=lbfgs
    fsdp: bool = False
    init_from: str = ""  # start from this run's weights (fine-tuning a language model)
    dp: DPConfig = field(default_factory=DPConfig)  # differential privacy; off unless dp.epsilon is set


@dataclass
class Config:
    """Everything a run needs."""

    model: ModelConfig = field(default_factory=ModelConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    out: str = "runs/shakespeare-char"
    # task-specific sections (finetune) live here as plain dicts, validated by the task
    task: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        self.model.validate()
        t = self.train
        if t.batch_size <= 0 or t.grad_accum <= 0:
            raise ConfigError("train.batch_size and train.grad_accum must be positive")
        if t.max_steps < 0:
            raise ConfigError(f"train.max_steps must be >= 0, got {t.max_steps}")
        if t.precision not in ("fp32", "bf16", "fp16", "auto"):
            raise ConfigError(f"train.precision must be fp32, bf16, fp16 or auto, got {t.precision!r}")
        if t.schedule not in ("cosine", "linear", "constant"):
            raise ConfigError(f"train.schedule must be cosine, linear or constant, got {t.schedule!r}")
        if not 0.0 < self.data.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in (0, 1), got {self.data.val_fraction}")
        t.dp.validate()
        if self.data.errors not in ("strict", "replace"):
            raise ConfigError(f"data.errors must be strict or replace, got {self.data.errors!r}")


# --------------------------------------------------------------------------- loading


def _closest(name: str, options: list[str]) -> str:
    match = difflib.get_close_matches(name, options, n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else f" (valid: {', '.join(sorted(options))})"


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, typ: Any, key: str, source: str) -> Any:
    """Convert a YAML/CLI value to the field's declared type, or raise naming the key."""
    origin = typing.get_origin(typ)
    if dataclasses.is_dataclass(typ):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} must be a mapping, got {value!r}")
        return _from_dict(typ, value, prefix=key, source=source)
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: {key} must be a list, got {value!r}")
        (inner,) = typing.get_args(typ)[:1] or (Any,)
        return [_coerce(v, inner, key, source) for v in value]
    if origin is dict or typ is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} must be a mapping, got {value!r}")
        return dict(value)
    if origin in (typing.Union, types.UnionType):
        return value
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{source}: {key} must be true or false, got {value!r}")
    if typ is int:
        if isinstance(value, bool):
            raise ConfigError(f"{source}: {key} must be an integer, got {value!r}")
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: {key} must be an integer, got {value!r}") from None
        if as_float != int(as_float):
            raise ConfigError(f"{source}: {key} must be an integer, got {value!r}")
        return int(as_float)
    if typ is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: {key} must be a number, got {value!r}") from None
    if typ is str:
        return "" if value is None else str(value)
    return value


def _from_dict(cls: type, data: dict[str, Any], prefix: str, source: str) -> Any:
    types_ = _field_types(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in types_:
            where = f"{prefix}.{key}" if prefix else key
            raise ConfigError(f"{source}: unknown key {where!r}{_closest(key, list(types_))}")
        kwargs[key] = _coerce(value, types_[key], f"{prefix}.{key}" if prefix else key, source)
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split `a.b=value` into (["a", "b"], parsed value); the value is read as YAML.

    >>> parse_override("train.lr=3e-4")
    (['train', 'lr'], 0.0003)
    """
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value (for example train.lr=3e-4)")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    # YAML reads 3e-4 as a string; numbers are coerced to the field type later anyway
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each dotted override into a nested dict (creating levels as needed)."""
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {part!r} is not a section")
        node[path[-1]] = value
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        line = getattr(getattr(err, "problem_mark", None), "line", None)
        where = f" line {line + 1}" if line is not None else ""
        raise ConfigError(f"{path}{where}: not valid YAML") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return data


def config_from_dict(data: dict[str, Any], source: str = "config") -> Config:
    cfg = _from_dict(Config, data, prefix="", source=source)
    cfg.validate()
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults <- YAML file <- dotted overrides, validated."""
    data = read_yaml(path) if path else {}
    apply_overrides(data, overrides or [])
    return config_from_dict(data, source=str(path) if path else "overrides")


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
