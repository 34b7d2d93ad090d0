"""`lmforge evaluate RUN --data PATH`: score a run with the metrics of its task.

The run's task (tasks/registry.py) picks the evaluator: language models report loss and
perplexity, classifiers accuracy / F1 / confusion matrix, seq2seq models BLEU / chrF or
ROUGE, extractive summarizers ROUGE of the selected sentences.
"""

from __future__ import annotations

import sys

from .config import ConfigError
from .tasks.registry import resolve, task_of_run


HELP = """usage: lmforge evaluate RUN --data PATH [options]

Score a run with the metrics of its task; the run picks the evaluator.

options every evaluator takes:
  RUN                 the run directory (its config names the task)
  --data PATH         the evaluation data (a file, or a folder holding SPLIT files)
  --split NAME        which split of a folder (default test)
  --device DEVICE     auto, cpu, cuda, mps (default auto)
  --out DIR           where outputs go (classifier, seq2seq, extractive; default
                      RUN/eval/<dataset>-<split>)
  lmforge evaluate RUN --help   lists the options of that run's task ({tasks})

examples:
  lmforge evaluate runs/shakespeare --data data/tiny.txt --split val
  lmforge evaluate runs/sst --data data/sst2 --split test
  lmforge evaluate runs/mt --data data/wmt --split test --beams 5 --limit 200"""


def cli(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        from .tasks.registry import TASKS

        tasks = ", ".join(name for name, spec in TASKS.items() if spec.evaluate)
        print(HELP.format(tasks=tasks), file=sys.stdout if argv else sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    spec = task_of_run(argv[0])
    if spec.evaluate is None:
        raise ConfigError(f"{argv[0]}: the {spec.name} task has no evaluator")
    return int(resolve(spec.evaluate)(argv) or 0)
