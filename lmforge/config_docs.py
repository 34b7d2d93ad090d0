"""What each config key means, read from the dataclasses themselves.

The meaning of a key is the comment on its line in the dataclass (or, when the line has none,
the comment lines right above it), so the code stays the one place where keys are documented:

    lr: float = 3e-3  # peak learning rate        ->  KeyDoc("train.lr", "float", 0.003, "peak ...")

`docs/config.md` is generated from the same source (`lmforge config docs`), and a test fails
when the file is out of date.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import io
import textwrap
import tokenize
from dataclasses import dataclass
from typing import Any

from .config import Config, ConfigError, DataConfig, ModelConfig, TokenizerConfig, TrainConfig

SECTIONS: dict[str, type] = {"model": ModelConfig, "tokenizer": TokenizerConfig,
                             "data": DataConfig, "train": TrainConfig}
# task.KIND -> the dataclass that parses `task:` for that kind (module, class name)
TASK_OPTIONS = {"classify": ("lmforge.tasks.classify", "ClassifyOptions"),
                "seq2seq": ("lmforge.tasks.seq2seq", "TaskOptions")}
# which task section a run's config has, from its model head
HEAD_TASKS = {"classifier": "classify", "seq2seq": "seq2seq"}


@dataclass
class KeyDoc:
    """One documented key."""

    key: str  # dotted, e.g. train.lr
    type: str  # as annotated: int, float, list[int], ...
    default: Any
    doc: str  # the field's comment ("" when it has none)


def _comments(cls: type) -> dict[str, str]:
    """{field name: its comment} from the class source, via the tokenizer (strings are safe)."""
    source = textwrap.dedent(inspect.getsource(cls))
    by_line: dict[int, str] = {}
    code_lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            by_line[tok.start[0]] = tok.string.lstrip("#").strip()
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            code_lines.add(tok.start[0])
    lines = source.splitlines()
    out: dict[str, str] = {}
    names = {f.name for f in dataclasses.fields(cls)}
    for number, line in enumerate(lines, start=1):
        name = line.strip().split(":", 1)[0]
        if name not in names or name in out or ":" not in line:
            continue
        if number in by_line and number in code_lines:  # trailing comment
            out[name] = by_line[number]
            continue
        above, n = [], number - 1
        while n in by_line and n not in code_lines:  # a comment block directly above
            above.insert(0, by_line[n])
            n -= 1
        out[name] = " ".join(above)
    return out


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = f.default_factory()  # type: ignore[misc]
        return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return None


def class_keys(cls: type, prefix: str) -> list[KeyDoc]:
    """Every field of `cls` as a KeyDoc under `prefix`; nested dataclasses are expanded."""
    docs = _comments(cls)
    out = []
    for f in dataclasses.fields(cls):
        factory = f.default_factory if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
        if factory is not None and dataclasses.is_dataclass(factory):
            out += class_keys(factory, f"{prefix}.{f.name}")
            continue
        out.append(KeyDoc(f"{prefix}.{f.name}", str(f.type), _default(f), docs.get(f.name, "")))
    return out


def task_options_class(kind: str) -> type:
    if kind not in TASK_OPTIONS:
        raise ConfigError(f"no documented task section {kind!r}; valid: "
                          f"{', '.join('task.' + k for k in TASK_OPTIONS)}")
    module, name = TASK_OPTIONS[kind]
    return getattr(importlib.import_module(module), name)


def section_keys(section: str) -> list[KeyDoc]:
    """`train` -> every train.* key; `task.classify` -> the classify task's task.* keys."""
    if section in SECTIONS:
        return class_keys(SECTIONS[section], section)
    if section.startswith("task."):
        return class_keys(task_options_class(section.split(".", 1)[1]), "task")
    if section == "out":
        return [KeyDoc("out", "str", Config().out, "run directory")]
    valid = [*SECTIONS, *(f"task.{k}" for k in TASK_OPTIONS)]
    raise ConfigError(f"unknown config section {section!r}; valid: {', '.join(valid)}")


def all_keys(task_kind: str = "") -> dict[str, KeyDoc]:
    """Every documented key of a config (with the task section of `task_kind`, if any)."""
    keys = [KeyDoc("out", "str", Config().out, "run directory")]
    for section in SECTIONS:
        keys += section_keys(section)
    if task_kind:
        keys += section_keys(f"task.{task_kind}")
    return {k.key: k for k in keys}


def markdown() -> str:
    """docs/config.md: one table per section, generated from the dataclasses."""
    parts = ["# Config keys", "",
             "<!-- generated by `lmforge config docs --out docs/config.md`; do not edit by hand -->",
             "", "Every key of a recipe YAML and of a `key=value` override. The meaning is the",
             "comment on the field in `lmforge/config.py` (or the task module), so this page",
             "and `lmforge config keys SECTION` always say the same thing. See a run's fully",
             "resolved config, each key with its meaning: `lmforge config show RUN_OR_YAML`.", ""]
    for section in [*SECTIONS, *(f"task.{k}" for k in TASK_OPTIONS)]:
        cls = SECTIONS.get(section) or task_options_class(section.split(".", 1)[1])
        summary = (inspect.getdoc(cls) or "").splitlines()[0]
        parts += [f"## `{section}`", "", summary, "", "| key | type | default | meaning |",
                  "|---|---|---|---|"]
        for k in section_keys(section):
            default = repr(k.default) if isinstance(k.default, str) else str(k.default)
            meaning = k.doc.replace("|", "\\|")  # a literal | inside a Markdown table cell
            parts.append(f"| `{k.key}` | `{k.type}` | `{default}` | {meaning} |")
        parts.append("")
    return "\n".join(parts)
