"""The task registry: each task declares, once, how it is trained, scored, loaded and served.

Adding a task is one file in `tasks/` plus one `register(TaskSpec(...))` line below. The
dispatchers ask this table and keep no lists of their own:

    lmforge pretrain            TaskSpec.pretrain   (the Trainer task of a pretrainable head)
    lmforge finetune NAME       TaskSpec.finetune   (module with finetune(**options), finetune_cli(argv))
    lmforge evaluate RUN        TaskSpec.evaluate   (evaluate_cli(argv) of the run's task)
    lmforge generate RUN        TaskSpec.decode     ("causal" | "seq2seq" | None)
    lmforge serve RUN           TaskSpec.serve + TaskSpec.load

A run's task is the one its config.yaml names in `task.name` (new tasks write it), else the
task that owns its model head (every run written before the registry existed).
Targets are "module:attribute" strings, imported only when used.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError


@dataclass(frozen=True)
class TaskSpec:
    """One task: its name and where each of its entry points lives."""

    name: str  # `lmforge finetune NAME`, and `task.name` in a run's config.yaml
    summary: str  # one line for `lmforge finetune --help`
    heads: tuple[str, ...] = ()  # model heads whose runs belong to this task by default
    pretrain: str | None = None  # "module:Class": the Trainer task `lmforge pretrain` builds
    finetune: str | None = None  # "module" with finetune(**options) and finetune_cli(argv)
    evaluate: str | None = None  # "module:function" evaluate_cli(argv) -> exit code
    load: str | None = None  # "module:function" loader(path, device=...) for inference
    decode: str | None = None  # how `lmforge generate` decodes: "causal", "seq2seq" or None
    serve: str | None = None  # what `lmforge serve` offers: "completions", "classify" or None
    options: str | None = None  # "module:Class": the dataclass of its config.yaml `task:` section


TASKS: dict[str, TaskSpec] = {}


def register(spec: TaskSpec) -> TaskSpec:
    if spec.name in TASKS:
        raise ValueError(f"task {spec.name!r} is registered twice")
    TASKS[spec.name] = spec
    return spec


def resolve(target: str) -> Any:
    """'pkg.module:attr.sub' -> the object; 'pkg.module' -> the module."""
    module_name, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split(".") if attr else []:
        obj = getattr(obj, part)
    return obj


def finetune_tasks() -> list[str]:
    return [name for name, spec in TASKS.items() if spec.finetune]


def finetune_spec(name: str) -> TaskSpec:
    spec = TASKS.get(name)
    if spec is None or not spec.finetune:
        raise ConfigError(f"finetune kind {name!r} is unknown; valid: {', '.join(finetune_tasks())}")
    return spec


def task_options() -> dict[str, str]:
    """task name -> "module:Class" of its documented `task:` section."""
    return {name: spec.options for name, spec in TASKS.items() if spec.options}


def task_name_of(config: Any) -> str:
    """The task of a loaded Config: `task.name` when given, else the owner of its head."""
    task = config.task if isinstance(config.task, dict) else {}
    named = task.get("name")
    if named:
        return str(named)
    spec = task_for_head(config.model.head)
    return spec.name if spec else ""


def task_for_head(head: str) -> TaskSpec | None:
    """The task that owns runs of model head `head`, None when no task does."""
    return next((spec for spec in TASKS.values() if head in spec.heads), None)


def pretrain_task(head: str) -> Callable:
    """The Trainer task class `lmforge pretrain` uses for `head`."""
    spec = task_for_head(head)
    if spec is None or spec.pretrain is None:
        able = [h for s in TASKS.values() if s.pretrain for h in s.heads]
        raise ConfigError(f"model.head={head!r} cannot be pretrained; use {' or '.join(able)} "
                          "(fine-tune other heads with `lmforge finetune`)")
    return resolve(spec.pretrain)


def task_of_run(run_dir: str | Path) -> TaskSpec:
    """The task a run directory belongs to (see the module docstring)."""
    from ..run import (  # the run layer sits above the registries
        CONFIG,
        read_model_config,
    )

    head = read_model_config(run_dir).head
    named = _named_task(Path(run_dir) / CONFIG)
    spec = TASKS.get(named) if named else task_for_head(head)
    if spec is None:
        raise ConfigError(f"{run_dir}: no task for model.head={head!r}"
                          + (f" (task.name={named!r})" if named else ""))
    return spec


def _named_task(config_path: Path) -> str | None:
    if not config_path.is_file():
        return None
    from ..config import read_yaml

    task = read_yaml(config_path).get("task") or {}
    name = task.get("name") if isinstance(task, dict) else None
    return str(name) if name else None


# ------------------------------------------------------------------------ the tasks

register(TaskSpec(
    "lm", "continue training a language model on new text", heads=("causal_lm",),
    pretrain="lmforge.tasks.lm:LanguageModelingTask", finetune="lmforge.tasks.lm_finetune",
    evaluate="lmforge.tasks.lm_eval:evaluate_cli", load="lmforge.run:load_run",
    decode="causal", serve="completions"))
register(TaskSpec(
    "mlm", "masked language modelling (BERT)", heads=("masked_lm",),
    pretrain="lmforge.tasks.mlm:MaskedLMTask", evaluate="lmforge.tasks.mlm:evaluate_cli",
    load="lmforge.run:load_run"))
register(TaskSpec(
    "classify", "text classification (sentiment, topics, ...)", heads=("classifier",),
    finetune="lmforge.tasks.classify", evaluate="lmforge.tasks.classify_infer:evaluate_cli",
    load="lmforge.tasks.classify_infer:TextClassifier.load", serve="classify",
    options="lmforge.tasks.classify_task:ClassifyOptions"))
register(TaskSpec(
    "seq2seq", "translation and abstractive summarization (encoder-decoder)", heads=("seq2seq",),
    finetune="lmforge.tasks.seq2seq", evaluate="lmforge.tasks.seq2seq_infer:evaluate_cli",
    load="lmforge.tasks.seq2seq_infer:load_seq2seq", decode="seq2seq",
    options="lmforge.tasks.seq2seq_task:TaskOptions"))
# trained by `lmforge finetune seq2seq --task summarize` with model.head=extractive
register(TaskSpec(
    "extractive", "extractive summarization (select sentences)", heads=("extractive",),
    evaluate="lmforge.tasks.extractive_infer:evaluate_cli",
    load="lmforge.tasks.extractive_infer:load_extractive"))
register(TaskSpec(
    "sft", "instruction tuning of a causal LM on chat data (LoRA or full)",
    finetune="lmforge.tasks.sft", evaluate="lmforge.tasks.sft:evaluate_cli",
    load="lmforge.run:load_run", decode="causal", serve="completions",
    options="lmforge.tasks.sft:SFTOptions"))
register(TaskSpec(
    "dpo", "preference tuning (DPO) of a causal LM on chosen/rejected pairs",
    finetune="lmforge.tasks.dpo", evaluate="lmforge.tasks.dpo:evaluate_cli",
    load="lmforge.run:load_run", decode="causal", serve="completions",
    options="lmforge.tasks.dpo:DPOOptions"))
