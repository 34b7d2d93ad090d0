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

from .errors import ConfigError
from .models.registry import known as known_backbone

ACTIVATIONS = ("sigmoid", "tanh", "relu", "gelu", "gelu_tanh", "silu")  # gelu_tanh: GPT-2's gelu_new
LOGGERS = ("csv", "tensorboard", "mlflow", "wandb")  # train.log: see lmforge/train/loggers.py


# model.rope_scaling: type -> the keys it needs (see lmforge.nn.positional.rope_inv_freq)
ROPE_SCALING_KEYS = {"linear": ("factor",),
                     "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_len")}


@dataclass
class ModelConfig:
    """Architecture. `arch` names a family of `lmforge.models.registry.BACKBONES`."""

    arch: str = "gpt"  # backbone: gpt | llama | bert | rnn | lstm | gru | cnn | rcnn | mlp | bigram (seq2seq: transformer | rnn | lstm | gru)
    head: str = "causal_lm"  # causal_lm | masked_lm | classifier | seq2seq
    vocab_size: int = 0  # 0 = taken from the tokenizer
    d_model: int = 128  # width; hidden size for recurrent nets
    n_layers: int = 4  # blocks (Transformer) or stacked layers (recurrent / conv)
    n_heads: int = 4  # attention heads (must divide d_model)
    d_ff: int = 0  # 0 = 4 * d_model
    max_len: int = 64  # context length (tokens)
    dropout: float = 0.0  # dropout probability in [0, 1)
    activation: str = ""  # "" = the family's default: tanh for rnn/rcnn/mlp, gelu otherwise
    norm_eps: float = 1e-5  # LayerNorm epsilon (GPT-2 1e-5, BERT 1e-12)
    pad_id: int = 0  # padding token id (set from the tokenizer)
    bias: bool = True  # biases in linear layers and norms
    positional: str = "learned"  # learned | rotary (transformers)
    tie_embeddings: bool = True  # output layer shares the token-embedding matrix
    bidirectional: bool = False  # recurrent encoders / classifiers only
    d_embed: int = 0  # 0 = d_model; token-embedding width for recurrent / conv nets
    kernel_size: int = 3  # cnn: filter width; rcnn unused
    dilations: list[int] = field(default_factory=list)  # cnn: [] = 1, 2, 4, ... per layer
    gated: bool = False  # cnn: WaveNet gated activation tanh(x) * sigmoid(g)
    filter_widths: list[int] = field(default_factory=list)  # cnn classifier: Kim-2014 widths
    cell: str = "lstm"  # rcnn / seq2seq recurrent cell: rnn | lstm | gru
    # llama family (Llama, Mistral, Qwen2, Qwen3): always RMSNorm + SwiGLU + rotary (half
    # layout), no biases but the optional q/k/v ones: `bias` is set false, `positional` rotary
    n_kv_heads: int = 0  # key-value heads of grouped-query attention; 0 = n_heads
    head_dim: int = 0  # width of one head; 0 = d_model // n_heads (Qwen3 sets it apart)
    rope_theta: float = 10000.0  # rotary base
    rope_scaling: dict[str, Any] = field(default_factory=dict)  # {} | {type: linear|llama3, ...}
    qkv_bias: bool = False  # biases on the q, k, v projections (Qwen2)
    qk_norm: bool = False  # RMSNorm over each query / key head before rotation (Qwen3)
    sliding_window: int = 0  # attend to the last N positions only (Mistral); 0 = all
    sliding_window_start: int = 0  # first layer with the window (Qwen's max_window_layers)
    # classifier head
    n_classes: int = 2
    pooling: str = "last"  # last | mean | max | cls
    # freeform per-family extras (kept JSON-serialisable)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        spec = known_backbone(self.arch)
        if not self.activation:  # the textbook non-linearity of each family
            self.activation = spec.activation if spec else "gelu"
        for name, value in (spec.fixed if spec else {}).items():  # fixed by the family
            setattr(self, name, value)

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
        spec = known_backbone(self.arch)
        if spec is not None and spec.gqa:  # heads may have their own width (model.head_dim)
            self._validate_gqa()
        elif spec is not None and spec.needs_heads and self.n_heads <= 0:
            raise ConfigError(f"model.n_heads must be positive, got {self.n_heads}")
        elif spec is not None and spec.needs_heads and self.d_model % self.n_heads:
            raise ConfigError(
                f"model.n_heads={self.n_heads} does not divide model.d_model={self.d_model}"
            )
        if self.norm_eps <= 0:
            raise ConfigError(f"model.norm_eps must be positive, got {self.norm_eps}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.positional not in ("learned", "rotary"):
            raise ConfigError(f"model.positional must be learned or rotary, got {self.positional!r}")

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def attn_head_dim(self) -> int:
        return self.head_dim or self.d_model // self.n_heads

    def _validate_gqa(self) -> None:
        if self.n_heads <= 0 or self.n_kv_heads < 0:
            raise ConfigError(f"model.n_heads={self.n_heads} / model.n_kv_heads={self.n_kv_heads} "
                              "must be positive (n_kv_heads 0 = n_heads)")
        if self.n_heads % self.kv_heads:
            raise ConfigError(f"model.n_kv_heads={self.n_kv_heads} must divide "
                              f"model.n_heads={self.n_heads} (query heads share key-value heads in groups)")
        if not self.head_dim and self.d_model % self.n_heads:
            raise ConfigError(f"model.n_heads={self.n_heads} does not divide model.d_model="
                              f"{self.d_model}; set model.head_dim to use heads of another width")
        if self.head_dim < 0 or self.attn_head_dim % 2:
            raise ConfigError(f"model.head_dim={self.attn_head_dim} must be a positive even number "
                              "(rotary positions rotate channel pairs)")
        if self.rope_theta <= 0:
            raise ConfigError(f"model.rope_theta must be positive, got {self.rope_theta}")
        if self.sliding_window < 0 or self.sliding_window_start < 0:
            raise ConfigError("model.sliding_window and model.sliding_window_start must be >= 0")
        if self.rope_scaling:
            kind = self.rope_scaling.get("type")
            if kind not in ROPE_SCALING_KEYS:
                raise ConfigError(f"model.rope_scaling.type={kind!r} is not one of "
                                  f"{', '.join(ROPE_SCALING_KEYS)}")
            for key in ROPE_SCALING_KEYS[kind]:
                value = self.rope_scaling.get(key)
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                    raise ConfigError(f"model.rope_scaling.{key} must be a positive number for "
                                      f"type {kind}, got {value!r}")
            if kind == "llama3" and self.rope_scaling["high_freq_factor"] <= self.rope_scaling["low_freq_factor"]:
                raise ConfigError("model.rope_scaling.high_freq_factor must exceed low_freq_factor")

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
    min_frequency: int = 1  # bpe / wordpiece / word: drop rarer tokens
    path: str = ""  # load this tokenizer.json instead of training


@dataclass
class DataConfig:
    """Where the text comes from and how it is split."""

    path: str = ""  # file, folder, glob or .jsonl; "" = bundled Tiny Shakespeare
    text_field: str = "text"  # JSONL field
    val_fraction: float = 0.1  # share of the corpus (its end) held out for validation
    errors: str = "strict"  # strict | replace: what to do with non-UTF-8 bytes
    cache_dir: str = ""  # "" = <run>/../.cache/lmforge or ~/.cache/lmforge
    format: str = ""  # chat files (SFT / DPO): messages | sharegpt | alpaca | prompt_completion; "" = detected


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

    max_steps: int = 2000  # optimizer steps to train for
    batch_size: int = 12  # sequences (or examples) per micro-batch, per process
    grad_accum: int = 1  # micro-batches per optimizer step
    optimizer: str = "adamw"  # gd | sgd | rmsprop | adagrad | adam | adamw | lbfgs | newton | newton_cg
    lr: float = 3e-3  # peak learning rate (nanoGPT's CPU recipe: 1e-3; 3e-3 reaches val 1.760 vs 1.893 at 2,000 steps)
    min_lr: float = 3e-4  # learning rate at the end of the decay
    warmup_steps: int = 100  # linear warmup from 0 to lr
    decay_steps: int = 0  # step where the schedule reaches min_lr; 0 = max_steps
    schedule: str = "cosine"  # cosine | linear | constant
    weight_decay: float = 0.1  # decoupled (AdamW-style), on matrices only, never biases / norms
    beta1: float = 0.9  # Adam family: first-moment decay
    beta2: float = 0.99  # Adam family: second-moment decay
    momentum: float = 0.0  # sgd / rmsprop momentum
    nesterov: bool = False  # sgd: Nesterov momentum
    grad_clip: float = 1.0  # 0 = off
    eval_every: int = 250  # steps between validation + checkpoint (+ samples); 0 = only at the end
    eval_batches: int = 20  # validation batches per evaluation
    log_every: int = 10  # steps between train rows in metrics.csv (and progress lines)
    log: str = "csv"  # trackers, comma-separated: csv | tensorboard | mlflow | wandb (metrics.csv always)
    save_every: int = 0  # 0 = at each evaluation
    patience: int = 0  # early stopping: evaluations without improvement; 0 = off
    tbptt: bool = False  # recurrent LMs: carry state across consecutive windows
    time_budget_s: float = 0.0  # stop after this much training time; 0 = no limit
    sample_tokens: int = 200  # generated at each evaluation into samples.txt (LM runs)
    device: str = "auto"  # auto | cpu | cuda | mps
    precision: str = "fp32"  # fp32 | bf16 | fp16 | auto (bf16 where this device runs it fast)
    compile: bool = False  # torch.compile the model
    threads: int = 0  # torch CPU threads; 0 = all cores
    seed: int = 1337  # initial weights, data order, dropout
    progress: bool = True  # progress bar on a terminal, one line per log interval otherwise
    newton_cg: dict[str, Any] = field(default_factory=dict)  # options for optimizer=newton_cg
    newton: dict[str, Any] = field(default_factory=dict)  # options for optimizer=newton
    lbfgs: dict[str, Any] = field(default_factory=dict)  # options for optimizer=lbfgs
    fsdp: bool = False  # under torchrun: shard the model with FSDP instead of DDP
    init_from: str = ""  # start from this run's weights (fine-tuning a language model)
    # memory (docs/memory.md): recompute each k-th block's activations in backward; compute a
    # causal LM's loss in row chunks without the (B, T, V) logits; hold a LoRA run's frozen
    # base weights in int8 ("" = as loaded)
    activation_checkpointing: bool = False  # recompute block activations in backward (less memory)
    checkpoint_every: int = 1  # with activation_checkpointing: every k-th block
    chunked_ce: bool = False  # causal-LM loss in chunks, never the full (B, T, V) logits
    ce_chunk_size: int = 0  # rows per chunk; 0 = auto (lmforge.nn.chunked_ce.auto_chunk_size)
    base_dtype: str = ""  # "" | int8
    check_memory: bool = True  # refuse at start-up a run predicted not to fit (lmforge.memory)
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
        if t.checkpoint_every < 1:
            raise ConfigError(f"train.checkpoint_every must be >= 1, got {t.checkpoint_every}")
        if t.ce_chunk_size < 0:
            raise ConfigError(f"train.ce_chunk_size must be >= 0, got {t.ce_chunk_size}")
        if t.base_dtype not in ("", "int8"):
            raise ConfigError(f"train.base_dtype must be \"\" or int8, got {t.base_dtype!r}")
        unknown = [n for n in t.log.replace(" ", "").split(",") if n and n not in LOGGERS]
        if unknown:
            raise ConfigError(f"train.log: unknown logger {unknown[0]!r}; valid: {', '.join(LOGGERS)}")
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


def parse_section(cls: type, data: dict[str, Any], prefix: str, source: str = "config") -> Any:
    """A dataclass from a mapping, each value coerced to its field's type; an unknown key or
    a bad value raises one ConfigError naming `prefix.key` (tasks parse `task:` with it)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {prefix} must be a mapping, got {data!r}")
    return _from_dict(cls, data, prefix=prefix, source=source)


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
    """Write `cfg` as YAML atomically: a crash leaves the old file or the new one, never half."""
    from .io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
