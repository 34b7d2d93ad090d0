"""`lmforge finetune classify|seq2seq|lm ...`: dispatch to the task that fine-tunes.

Python API: `lmforge.finetune(kind, **options)` calls the task's `finetune` function.
"""

from __future__ import annotations

import importlib
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
