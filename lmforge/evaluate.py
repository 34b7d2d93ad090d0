"""`lmforge evaluate RUN --data PATH`: score a run with the metrics of its task.

The run's task (tasks/registry.py) picks the evaluator: language models report loss and
perplexity, classifiers accuracy / F1 / confusion matrix, seq2seq models BLEU / chrF or
ROUGE, extractive summarizers ROUGE of the selected sentences.
"""

from __future__ import annotations

from .config import ConfigError
from .tasks.registry import resolve, task_of_run


def cli(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print("usage: lmforge evaluate RUN --data PATH [options]")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    spec = task_of_run(argv[0])
    if spec.evaluate is None:
        raise ConfigError(f"{argv[0]}: the {spec.name} task has no evaluator")
    return int(resolve(spec.evaluate)(argv) or 0)
