"""`lmforge evaluate RUN --data PATH`: score a run with the metrics of its task.

The run's head picks the evaluator: language models report loss and perplexity, classifiers
accuracy / F1 / confusion matrix, seq2seq models BLEU / chrF or ROUGE.
"""

from __future__ import annotations

import importlib

from .config import ConfigError
from .run import read_model_config

# model head -> module with `evaluate_cli(argv)`
EVALUATORS = {
    "causal_lm": "lmforge.tasks.lm_eval",
    "masked_lm": "lmforge.tasks.mlm",
    "classifier": "lmforge.tasks.classify",
    "seq2seq": "lmforge.tasks.seq2seq",
    "sft": "lmforge.tasks.sft",  # keyed by config.yaml task.kind, which wins over the head
    "dpo": "lmforge.tasks.dpo",
}


def cli(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print("usage: lmforge evaluate RUN --data PATH [options]")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    head = read_model_config(argv[0]).head
    head = _task_kind(argv[0]) or head  # SFT / DPO runs have a causal_lm head
    if head not in EVALUATORS:
        raise ConfigError(f"{argv[0]}: no evaluator for model.head={head!r}")
    return int(importlib.import_module(EVALUATORS[head]).evaluate_cli(argv) or 0)


def _task_kind(run_dir: str) -> str | None:
    """config.yaml's task.kind when it names an evaluator (sft, dpo), else None."""
    from pathlib import Path

    from .run import CONFIG, read_run_config

    if not (Path(run_dir) / CONFIG).is_file():
        return None
    kind = read_run_config(run_dir).task.get("kind")
    return kind if kind in EVALUATORS else None
