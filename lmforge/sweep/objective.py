"""One trial of a sweep: an ordinary run of any task, reporting its evaluations to Optuna.

The task is a name: `pretrain`, or any kind `lmforge finetune` knows (classify, seq2seq, lm,
and whatever the finetune dispatch gains later). The trial runs that command's own CLI
function in-process with `--config`, `--out` and the sampled `key=value` overrides, so a trial
directory is exactly the run directory the command would make. A callback attached to the
run's Trainer reports every evaluation of the objective metric to the trial, asks the Trainer
to stop when the pruner says so, and enforces a token budget.
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import ConfigError
from ..train.loggers import Callback, RunInfo, attach

# the metric each task's Trainer monitors; other kinds default to the validation loss
TASK_OBJECTIVES = {"pretrain": ("loss", "min"), "lm": ("loss", "min"),
                   "classify": ("accuracy", "max"), "seq2seq": ("loss", "min")}
_BUDGET = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKM]?)\s*(s|sec|m|min|h|steps?|tok|tokens?)\s*$")


@dataclass
class Budget:
    """Per-trial budget: wall time (training seconds), optimizer steps or training tokens."""

    kind: str  # time | steps | tokens
    amount: float

    def overrides(self) -> list[str]:
        if self.kind == "time":
            return [f"train.time_budget_s={self.amount:g}"]
        if self.kind == "steps":
            return [f"train.max_steps={int(self.amount)}"]
        return []  # tokens: counted by the trial callback

    def __str__(self) -> str:
        return {"time": f"{self.amount:g}s of training", "steps": f"{int(self.amount)} steps",
                "tokens": f"{int(self.amount):,} tokens"}[self.kind]


def parse_budget(text: str) -> Budget:
    """`90s`, `2m`, `1h` (training time), `500steps`, `2Mtokens` / `200ktok`.

    >>> parse_budget("2m")
    Budget(kind='time', amount=120.0)
    """
    match = _BUDGET.match(text or "")
    if not match:
        raise ConfigError(f"--budget {text!r}: use a time (90s, 2m, 1h), steps (500steps) or "
                          "tokens (2Mtokens, 200ktok)")
    number, scale, unit = float(match[1]), {"": 1, "k": 1e3, "K": 1e3, "M": 1e6}[match[2]], match[3]
    if unit in ("s", "sec", "m", "min", "h"):
        if scale != 1:
            raise ConfigError(f"--budget {text!r}: k/M apply to steps or tokens, not to time")
        seconds = number * {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}[unit]
        return Budget("time", seconds)
    kind = "steps" if unit.startswith("step") else "tokens"
    return Budget(kind, number * scale)


def objective_for(task: str, metric: str = "", direction: str = "") -> tuple[str, str]:
    """(metric, "minimize" | "maximize"): the task's monitored metric unless one is given."""
    default_metric, mode = TASK_OBJECTIVES.get(task, ("loss", "min"))
    metric = metric or default_metric
    if not direction:
        direction = mode if metric == default_metric else ("min" if "loss" in metric or
                                                           metric in ("ppl", "perplexity") else "max")
    direction = {"min": "minimize", "max": "maximize"}.get(direction, direction)
    if direction not in ("minimize", "maximize"):
        raise ConfigError(f"--direction must be min or max, got {direction!r}")
    return metric, direction


class TrialReporter(Callback):
    """Reports each evaluation to the trial; stops the run when pruned or out of tokens."""

    def __init__(self, trial: Any, metric: str, direction: str, token_budget: float = 0.0) -> None:
        self.trial, self.metric, self.direction = trial, metric, direction
        self.token_budget = token_budget
        self.best: float | None = None
        self.pruned_at: int | None = None
        self.monitor: tuple[str, str] | None = None
        self.last_step = 0

    def on_start(self, info: RunInfo) -> None:
        self.monitor = info.monitor

    def on_log(self, step: int, values: dict[str, float]) -> bool:
        self.last_step = step
        return bool(self.token_budget) and values.get("tokens", 0) >= self.token_budget

    def on_evaluate(self, step: int, metrics: dict[str, float], lr: float, elapsed_s: float) -> bool:
        if self.metric not in metrics:
            raise ConfigError(f"sweep metric {self.metric!r} is not among this task's evaluation "
                              f"metrics ({', '.join(metrics)}); pass --metric")
        value = float(metrics[self.metric])
        self.last_step = step
        if math.isfinite(value) and (self.best is None or (value < self.best if self.direction ==
                                                           "minimize" else value > self.best)):
            self.best = value
        self.trial.report(value, step)
        if self.trial.should_prune():
            self.pruned_at = step
            return True
        return False


def command(task: str) -> Any:
    """The CLI function `argv -> exit code` that runs `task` (pretrain or a finetune kind)."""
    if task == "pretrain":
        from ..cli import pretrain_cli

        return pretrain_cli
    from ..tasks.registry import TASKS, finetune_tasks, resolve

    if task not in finetune_tasks():
        raise ConfigError(f"--task {task!r} is unknown; valid: pretrain, {', '.join(finetune_tasks())}")
    return resolve(TASKS[task].finetune).finetune_cli


def run_trial(task: str, config: str, out: Path, overrides: list[str], task_args: list[str],
              reporter: TrialReporter) -> None:
    """Run one trial into `out`, its console output in `out/output.log`."""
    out.mkdir(parents=True, exist_ok=True)
    argv = [*task_args, "--config", config, "--out", str(out), *overrides]
    with open(out / "output.log", "a", encoding="utf-8") as fh, \
            contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh), attach(reporter):
        print("argv:", " ".join(argv), flush=True)
        command(task)(argv)
