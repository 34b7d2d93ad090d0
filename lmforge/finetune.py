"""`lmforge finetune classify|seq2seq|lm ...`: dispatch to the task that fine-tunes.

Python API: `lmforge.finetune(kind, **options)` calls the task's `finetune` function.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path
from typing import Any

from .config import ConfigError

# kind -> (module with `finetune(...)` and `finetune_cli(argv)`)
KINDS = {
    "classify": "lmforge.tasks.classify",
    "seq2seq": "lmforge.tasks.seq2seq",
    "lm": "lmforge.tasks.lm_finetune",
}


def finetune(kind: str, **options: Any) -> Path:
    """Fine-tune for `kind` (classify, seq2seq, lm); returns the run directory."""
    if kind not in KINDS:
        raise ConfigError(f"finetune kind {kind!r} is unknown; valid: {', '.join(KINDS)}")
    return importlib.import_module(KINDS[kind]).finetune(**options)


def cli(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: lmforge finetune {classify,seq2seq,lm} [options]  (add --help for each)\n"
              "config keys (key=value overrides): `lmforge config keys train|model|data`, "
              "`lmforge config keys task.KIND`, or docs/config.md")
        return 0 if argv else 2
    kind, rest = argv[0], argv[1:]
    if kind not in KINDS:
        raise ConfigError(f"finetune kind {kind!r} is unknown; valid: {', '.join(KINDS)}")
    return int(importlib.import_module(KINDS[kind]).finetune_cli(rest) or 0)


class _CallableModule(types.ModuleType):
    """Importing the submodule `lmforge.finetune` rebinds the package attribute `lmforge.finetune` to
    this module; calling it still runs `finetune(...)`, so `lmforge.finetune(...)` always works."""

    def __call__(self, *args: Any, **kwargs: Any) -> Path:
        return finetune(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
