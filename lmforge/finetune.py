"""`lmforge finetune KIND ...`: dispatch to the task that fine-tunes (tasks/registry.py).

Python API: `lmforge.finetune(kind, **options)` calls the task's `finetune` function.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .tasks.registry import finetune_spec, finetune_tasks, resolve


def finetune(kind: str, **options: Any) -> Path:
    """Fine-tune for `kind` (a task of the registry: classify, seq2seq, lm, ...); returns
    the run directory."""
    return resolve(finetune_spec(kind).finetune).finetune(**options)


def cli(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: lmforge finetune {{{','.join(finetune_tasks())}}} [options]  (add --help for each)\n\n"
              "examples:\n  lmforge finetune classify --data data/sst2 --base runs/encoder --out runs/sst\n"
              "  lmforge finetune seq2seq --data data/pairs --task translate --out runs/mt\n"
              "  lmforge finetune seq2seq --resume runs/mt train.max_steps=4000")
        return 0 if argv else 2
    kind, rest = argv[0], argv[1:]
    return int(resolve(finetune_spec(kind).finetune).finetune_cli(rest) or 0)
