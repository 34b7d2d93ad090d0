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
}


def cli(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print("usage: lmforge evaluate RUN --data PATH [options]")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    head = read_model_config(argv[0]).head
    if head not in EVALUATORS:
        raise ConfigError(f"{argv[0]}: no evaluator for model.head={head!r}")
    return int(importlib.import_module(EVALUATORS[head]).evaluate_cli(argv) or 0)
