"""`lmforge finetune KIND ...`: dispatch to the task that fine-tunes (tasks/registry.py).

Python API: `lmforge.finetune(kind, **options)` calls the task's `finetune` function.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

from .tasks.registry import finetune_spec, finetune_tasks, resolve


def finetune(kind: str, **options: Any) -> Path:
    """Fine-tune for `kind` (a task of the registry: classify, seq2seq, lm, ...); returns
    the run directory."""
    return resolve(finetune_spec(kind).finetune).finetune(**options)


def cli(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: lmforge finetune {{{','.join(finetune_tasks())}}} [options]  (add --help for each)\n"
              "config keys (key=value overrides): `lmforge config keys train|model|data`, "
              "`lmforge config keys task.KIND`, or docs/config.md\n\n"
              "examples:\n  lmforge finetune classify --data data/sst2 --base runs/encoder --out runs/sst\n"
              "  lmforge finetune sft --base runs/smollm2 --data chats.jsonl --out runs/smol-sft\n"
              "  lmforge finetune seq2seq --data data/pairs --task translate --out runs/mt\n"
              "  lmforge finetune seq2seq --resume runs/mt train.max_steps=4000")
        return 0 if argv else 2
    kind, rest = argv[0], argv[1:]
    return int(resolve(finetune_spec(kind).finetune).finetune_cli(rest) or 0)


class _CallableModule(types.ModuleType):
    """Importing the submodule `lmforge.finetune` rebinds the package attribute `lmforge.finetune` to
    this module; calling it still runs `finetune(...)`, so `lmforge.finetune(...)` always works."""

    def __call__(self, *args: Any, **kwargs: Any) -> Path:
        return finetune(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
