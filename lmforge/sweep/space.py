"""A search space in YAML: one entry per dotted config key, sampled through an Optuna trial.

    train.lr:           {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
    train.warmup_steps: {type: int, low: 0, high: 200, step: 20}
    model.dropout:      {type: float, low: 0.0, high: 0.3}
    model.d_model:      {type: categorical, choices: [64, 128, 192]}
    train.optimizer:    {type: categorical, choices: [adamw, sgd]}
    train.momentum:     {type: float, low: 0.5, high: 0.99, when: {train.optimizer: sgd}}

Types: float, logfloat (= float with log: true), int (optional step, log), categorical.
`when` makes a key conditional: it is sampled only when every named key (sampled earlier in
the file, or fixed) has the given value or one of a list of values; otherwise the config's
own value stands. Keys may be any dotted config key, `task.*` included.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import Config, ConfigError

TYPES = ("float", "logfloat", "int", "categorical")
_SECTIONS = {f.name: f for f in dataclasses.fields(Config)}


@dataclass
class Param:
    """One searched key."""

    key: str  # dotted config key, e.g. train.lr
    type: str  # float | int | categorical ("logfloat" is read as float + log)
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None
    choices: list[Any] = field(default_factory=list)
    when: dict[str, list[Any]] = field(default_factory=dict)  # key -> allowed values


def _check_key(key: str, where: str) -> None:
    """The key must name a config field (any key under `task.`, which each task checks)."""
    parts = key.split(".")
    section = _SECTIONS.get(parts[0])
    if section is None:
        raise ConfigError(f"{where}: {key!r} is not a config key (sections: "
                          f"{', '.join(_SECTIONS)})")
    if parts[0] in ("task", "out") or len(parts) < 2:
        return
    cls = section.default_factory  # the section's dataclass
    names = {f.name: f for f in dataclasses.fields(cls)}
    if parts[1] not in names:
        raise ConfigError(f"{where}: {key!r} is not a config key; `lmforge config keys "
                          f"{parts[0]}` lists them")
    if len(parts) > 2 and not str(names[parts[1]].type).startswith("dict"):
        # only free-form mappings (model.extra.*, train.newton.*) have keys below a field
        raise ConfigError(f"{where}: {key!r}: {parts[0]}.{parts[1]} has no sub-keys")


def _param(key: str, spec: Any, where: str, earlier: set[str]) -> Param:
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: {key} must be a mapping like {{type: float, low: 0.0, high: 1.0}}")
    unknown = set(spec) - {"type", "low", "high", "log", "step", "choices", "when"}
    if unknown:
        raise ConfigError(f"{where}: {key}: unknown field {sorted(unknown)[0]!r} "
                          "(valid: type, low, high, log, step, choices, when)")
    kind = str(spec.get("type", "")).lower()
    if kind not in TYPES:
        raise ConfigError(f"{where}: {key}: type must be one of {', '.join(TYPES)}, got {kind!r}")
    when = {}
    for other, allowed in (spec.get("when") or {}).items():
        if other == key:
            raise ConfigError(f"{where}: {key}: `when` cannot name the key itself")
        if other not in earlier:  # then a fixed config value decides
            _check_key(other, f"{where}: {key}: when")
        when[other] = allowed if isinstance(allowed, list) else [allowed]
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: {key}: categorical needs a non-empty list `choices`")
        return Param(key, kind, choices=choices, when=when)
    try:
        low, high = float(spec["low"]), float(spec["high"])
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"{where}: {key}: {kind} needs numbers `low` and `high`") from None
    log = kind == "logfloat" or bool(spec.get("log", False))
    if not low < high:
        raise ConfigError(f"{where}: {key}: low ({low:g}) must be below high ({high:g})")
    if log and low <= 0:
        raise ConfigError(f"{where}: {key}: a log scale needs low > 0, got {low:g}")
    step = spec.get("step")
    if step is not None and log:
        raise ConfigError(f"{where}: {key}: `step` and a log scale cannot be combined")
    if kind == "int" and (low != int(low) or high != int(high)):
        raise ConfigError(f"{where}: {key}: int bounds must be whole numbers")
    return Param(key, "int" if kind == "int" else "float", low, high, log,
                 float(step) if step is not None else None, when=when)


def load_space(path: str | Path) -> list[Param]:
    """Read and check a search-space YAML file (errors name the file and the key)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"search space {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        line = getattr(getattr(err, "problem_mark", None), "line", None)
        raise ConfigError(f"{path}{f' line {line + 1}' if line is not None else ''}: "
                          "not valid YAML") from None
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{path}: a search space maps dotted config keys to their ranges")
    params: list[Param] = []
    for key, spec in data.items():
        _check_key(str(key), str(path))
        params.append(_param(str(key), spec, str(path), {p.key for p in params}))
    return params


def sample(trial: Any, params: list[Param], fixed: dict[str, Any] | None = None) -> dict[str, Any]:
    """Draw one configuration: {dotted key: value} for the keys that apply in this trial."""
    chosen: dict[str, Any] = dict(fixed or {})
    drawn: dict[str, Any] = {}
    for p in params:
        if any(chosen.get(k) not in allowed for k, allowed in p.when.items()):
            continue  # condition not met: the config's own value stands
        if p.type == "categorical":
            value = trial.suggest_categorical(p.key, p.choices)
        elif p.type == "int":
            value = trial.suggest_int(p.key, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
        else:
            value = trial.suggest_float(p.key, p.low, p.high, step=p.step, log=p.log)
        chosen[p.key] = drawn[p.key] = value
    return drawn


def _inside(p: Param, value: Any) -> bool:
    """Whether a config value is one the trial could draw for this key."""
    if p.type == "categorical":
        return value in p.choices
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if not p.low <= value <= p.high:
        return False
    if p.type == "int" and value != int(value):
        return False
    step = p.step or (1 if p.type == "int" else None)
    return step is None or abs((value - p.low) / step - round((value - p.low) / step)) < 1e-9


def baseline(params: list[Param], fixed: dict[str, Any]) -> dict[str, Any]:
    """The recipe's own values of the searched keys, where the space holds them: the sweep's
    first trial, so that it measures the recipe as it stands and the best it reports is never
    worse than that (up to run-to-run noise). Keys whose value lies outside the space are
    left to the sampler."""
    chosen, values = dict(fixed), {}
    for p in params:
        if any(chosen.get(k) not in allowed for k, allowed in p.when.items()):
            continue
        value = fixed.get(p.key)
        if _inside(p, value):
            values[p.key] = value
    return values


def as_overrides(values: dict[str, Any]) -> list[str]:
    """{"train.lr": 0.001} -> ["train.lr=0.001"] (values written so YAML reads them back)."""
    out = []
    for key, value in values.items():
        text = yaml.safe_dump(value, default_flow_style=True).strip()
        out.append(f"{key}={text.removesuffix('...').strip()}")
    return out
