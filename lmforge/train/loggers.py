"""Experiment tracking: the callback interface the Trainer calls, and the built-in loggers.

The Trainer calls, on rank 0 only:

    on_start(info)                              once, before the first step
    on_log(step, values) -> bool|None           each log interval: loss, lr, tokens_per_s, mfu,
                                                elapsed_s, tokens (cumulative, this process)
    on_evaluate(step, metrics, lr, elapsed_s) -> bool|None   after each evaluation
    on_checkpoint(step, run_dir)                after each checkpoint is on disk
    on_end(step, final, status)                 once: status finished | interrupted | failed

A truthy return from `on_log` / `on_evaluate` asks the Trainer to stop cleanly (evaluate,
checkpoint, return), which is how a sweep prunes a trial or ends it at a token budget.

`train.log=csv,tensorboard` names the loggers; metrics.csv is always written (plots, compare
and sweep read it). Trackers are optional dependencies, imported only when named, and refused
with an install hint when missing. Code that runs a recipe can add its own callbacks for the
runs started inside a `with attach(cb): ...` block (the sweep does).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

from ..config import LOGGERS, ConfigError

_ATTACHED: contextvars.ContextVar[tuple["Callback", ...]] = contextvars.ContextVar(
    "lmforge_callbacks", default=())


@dataclass
class RunInfo:
    """What a logger knows about the run when it starts."""

    run_dir: Path
    monitor: tuple[str, str]  # (metric, "min" | "max") of the task
    hparams: dict[str, Any] = field(default_factory=dict)  # flattened config.yaml
    resume_step: int | None = None  # the step a resumed run continues from


class Callback:
    """Base class: every hook is a no-op; override the ones you need."""

    def on_start(self, info: RunInfo) -> None: ...
    def on_log(self, step: int, values: dict[str, float]) -> bool | None: ...
    def on_evaluate(self, step: int, metrics: dict[str, float], lr: float,
                    elapsed_s: float) -> bool | None: ...
    def on_checkpoint(self, step: int, run_dir: Path) -> None: ...
    def on_end(self, step: int, final: dict[str, float], status: str) -> None: ...


class CallbackList(Callback):
    """Calls each callback in order; a stop request from any of them stops the run."""

    def __init__(self, callbacks: list[Callback]) -> None:
        self.callbacks = list(callbacks)

    def on_start(self, info: RunInfo) -> None:
        for cb in self.callbacks:
            cb.on_start(info)

    def on_log(self, step: int, values: dict[str, float]) -> bool:
        return any([bool(cb.on_log(step, values)) for cb in self.callbacks])  # all are called

    def on_evaluate(self, step: int, metrics: dict[str, float], lr: float, elapsed_s: float) -> bool:
        return any([bool(cb.on_evaluate(step, metrics, lr, elapsed_s)) for cb in self.callbacks])

    def on_checkpoint(self, step: int, run_dir: Path) -> None:
        for cb in self.callbacks:
            cb.on_checkpoint(step, run_dir)

    def on_end(self, step: int, final: dict[str, float], status: str) -> None:
        for cb in self.callbacks:
            cb.on_end(step, final, status)


@contextlib.contextmanager
def attach(*callbacks: Callback) -> Iterator[None]:
    """Add `callbacks` to every Trainer built inside the block (this thread / task only)."""
    token = _ATTACHED.set(_ATTACHED.get() + callbacks)
    try:
        yield
    finally:
        _ATTACHED.reset(token)


def parse_names(spec: str | list[str]) -> list[str]:
    """`"csv,tensorboard"` -> ["csv", "tensorboard"], checked against LOGGERS."""
    names = [n.strip().lower() for n in (spec.split(",") if isinstance(spec, str) else spec)]
    names = [n for n in names if n]
    for name in names:
        if name not in LOGGERS:
            raise ConfigError(f"train.log: unknown logger {name!r}; valid: {', '.join(LOGGERS)}")
    return names


def build_callbacks(spec: str, run_dir: Path, metrics_log: Any) -> CallbackList:
    """metrics.csv, the trackers named in `spec`, then any attached callbacks."""
    callbacks: list[Callback] = [CSVLogger(metrics_log)]
    for name in parse_names(spec):
        if name == "tensorboard":
            callbacks.append(TensorBoardLogger(run_dir))
        elif name == "mlflow":
            callbacks.append(MLflowLogger(run_dir))
        elif name == "wandb":
            callbacks.append(WandbLogger(run_dir))
    return CallbackList(callbacks + list(_ATTACHED.get()))


def flat_hparams(run_dir: Path) -> dict[str, Any]:
    """config.yaml as {"train.lr": 0.003, ...}; lists and dicts become JSON strings."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return {}
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        elif isinstance(node, (bool, int, float, str)):
            out[prefix] = node
        else:  # lists, empty dicts, None: one readable string
            out[prefix] = json.dumps(node)

    walk("", yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    return out


def _require(module: str, extra: str, what: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"train.log={what} needs the {module.split('.')[0]} package: "
                          f"pip install 'lmforge[{extra}]'") from None


def _finite(values: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


# --------------------------------------------------------------------------- loggers


class CSVLogger(Callback):
    """metrics.csv, exactly as before: one train row per log interval, one val row per eval."""

    def __init__(self, metrics_log: Any) -> None:
        self.metrics_log = metrics_log  # MetricsLog: append(row) with the fixed columns

    def on_log(self, step: int, values: dict[str, float]) -> None:
        self.metrics_log.append({"step": step, "split": "train", **values})

    def on_evaluate(self, step: int, metrics: dict[str, float], lr: float, elapsed_s: float) -> None:
        self.metrics_log.append({"step": step, "split": "val", **metrics, "lr": lr,
                                 "elapsed_s": elapsed_s})


class TensorBoardLogger(Callback):
    """RUN/tensorboard: train/* and val/* scalars, hparams with the final metrics at the end.

    `tensorboard --logdir runs/` then compares every run under runs/ (HPARAMS tab included).
    """

    def __init__(self, run_dir: Path) -> None:
        _require("tensorboard", "tensorboard", "tensorboard")
        self.log_dir = run_dir / "tensorboard"
        self.writer: Any = None
        self.hparams: dict[str, Any] = {}

    def on_start(self, info: RunInfo) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: a resumed run drops the events logged after its checkpoint
        self.writer = SummaryWriter(str(self.log_dir), purge_step=info.resume_step)
        self.hparams = info.hparams

    def on_log(self, step: int, values: dict[str, float]) -> None:
        for name, value in _finite(values).items():
            self.writer.add_scalar(f"train/{name}", value, step)

    def on_evaluate(self, step: int, metrics: dict[str, float], lr: float, elapsed_s: float) -> None:
        for name, value in _finite(metrics).items():
            self.writer.add_scalar(f"val/{name}", value, step)
        self.writer.flush()

    def on_end(self, step: int, final: dict[str, float], status: str) -> None:
        if self.writer is None:
            return
        if status == "finished" and final:
            # run_name=".": the hparams summary sits in the run's own folder, not a new one
            self.writer.add_hparams(self.hparams, {f"final/{k}": v for k, v in _finite(final).items()},
                                    run_name=".", global_step=step)
        self.writer.close()


class MLflowLogger(Callback):
    """An MLflow run in a local file store (MLFLOW_TRACKING_URI, else file:<runs parent>/mlruns).

    The experiment is the run folder's parent (runs/, a sweep folder), the MLflow run is named
    after the run folder, and a resumed lmforge run continues its MLflow run (RUN/mlflow_run_id).
    """

    ID_FILE = "mlflow_run_id"

    def __init__(self, run_dir: Path) -> None:
        _require("mlflow", "mlflow", "mlflow")
        self.run_dir = run_dir
        self.uri = os.environ.get("MLFLOW_TRACKING_URI") or \
            (run_dir.resolve().parent / "mlruns").as_uri()
        self.client: Any = None
        self.run_id = ""

    def on_start(self, info: RunInfo) -> None:
        from mlflow.tracking import MlflowClient

        if self.uri.startswith("file:"):
            # MLflow 3 keeps the file store behind an opt-in; a local folder is what we want here
            # (a database: MLFLOW_TRACKING_URI=sqlite:///mlflow.db)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=self.uri)
        id_file = self.run_dir / self.ID_FILE
        if info.resume_step is not None and id_file.is_file():
            self.run_id = id_file.read_text().strip()
            self.client.update_run(self.run_id, status="RUNNING")
            return
        name = self.run_dir.resolve().parent.name or "lmforge"
        experiment = self.client.get_experiment_by_name(name)
        exp_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        run = self.client.create_run(exp_id, run_name=self.run_dir.name,
                                     tags={"lmforge.run_dir": str(self.run_dir.resolve())})
        self.run_id = run.info.run_id
        id_file.write_text(self.run_id + "\n")
        from mlflow.entities import Param

        params = [Param(k, str(v)[:6000]) for k, v in info.hparams.items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def _metrics(self, prefix: str, values: dict[str, Any], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(f"{prefix}{k}", v, now, step) for k, v in _finite(values).items()]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

    def on_log(self, step: int, values: dict[str, float]) -> None:
        self._metrics("train_", values, step)

    def on_evaluate(self, step: int, metrics: dict[str, float], lr: float, elapsed_s: float) -> None:
        self._metrics("val_", metrics, step)

    def on_end(self, step: int, final: dict[str, float], status: str) -> None:
        if not self.run_id:
            return
        self._metrics("final_", final, step)
        self.client.set_terminated(self.run_id, status={"finished": "FINISHED",
                                                        "interrupted": "KILLED"}.get(status, "FAILED"))


class WandbLogger(Callback):
    """Weights & Biases in offline mode: RUN/wandb/offline-run-*; upload later with `wandb sync`."""

    def __init__(self, run_dir: Path) -> None:
        self.wandb = _require("wandb", "wandb", "wandb")
        self.run_dir = run_dir
        self.run: Any = None

    def on_start(self, info: RunInfo) -> None:
        self.run = self.wandb.init(mode="offline", dir=str(self.run_dir), config=info.hparams,
                                   project=self.run_dir.resolve().parent.name or "lmforge",
                                   name=self.run_dir.name, reinit="create_new")

    def on_log(self, step: int, values: dict[str, float]) -> None:
        self.run.log({f"train/{k}": v for k, v in _finite(values).items()}, step=step)

    def on_evaluate(self, step: int, metrics: dict[str, float], lr: float, elapsed_s: float) -> None:
        self.run.log({f"val/{k}": v for k, v in _finite(metrics).items()}, step=step)

    def on_end(self, step: int, final: dict[str, float], status: str) -> None:
        if self.run is None:
            return
        self.run.summary.update({f"final/{k}": v for k, v in _finite(final).items()})
        self.run.finish(exit_code=0 if status == "finished" else 1)
