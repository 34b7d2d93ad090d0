"""The sweep driver: an Optuna study in a storage, trials as ordinary runs, a report at the end.

Everything a sweep needs to continue lives in DIR/sweep.json (what was asked) and in the
Optuna storage (what happened), so `lmforge sweep --resume DIR` continues after Ctrl-C, and
any number of processes given the same storage URL work on one study: Optuna hands each
trial to one worker, TPE's constant liar keeps concurrent workers from sampling alike, and
heartbeats return a killed worker's trial to the queue.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..config import ConfigError, load_config
from ..config_cli import flat_keys
from ..train.checkpoint import atomic_write_text
from ..train.loop import TrainingDiverged
from .objective import TrialReporter, objective_for, parse_budget, run_trial
from .space import as_overrides, baseline, load_space, sample

SPEC_FILE = "sweep.json"
PRUNERS = ("median", "hyperband", "none")


class InvalidSample(RuntimeError):
    """A sampled configuration the task refused (e.g. n_heads not dividing d_model)."""


@dataclass
class SweepSpec:
    """What `lmforge sweep` was asked to do; saved as DIR/sweep.json."""

    config: str
    space: str
    out: str
    task: str = "pretrain"
    trials: int = 20  # finished trials (complete, pruned or failed) the study should reach
    budget: str = "2m"  # per trial: 90s / 2m / 1h, 500steps, 2Mtokens
    timeout: float = 0.0  # seconds this process may spend on the sweep; 0 = no limit
    storage: str = ""  # Optuna storage URL; "" = sqlite:///DIR/study.db
    metric: str = ""  # "" = the task's monitored metric
    direction: str = ""  # min | max; "" = the metric's own
    pruner: str = "median"  # median | hyperband | none
    prune_after: int = 3  # median pruner: trials that finish before any is pruned
    seed: int | None = None  # sampler seed: a fresh one-worker sweep is reproducible
    baseline: bool = True  # trial 0 runs the recipe's own values of the searched keys
    overrides: list[str] = field(default_factory=list)  # fixed key=value for every trial
    task_args: list[str] = field(default_factory=list)  # passed to the task command (--data ...)

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{Path(self.out).resolve() / 'study.db'}"

    @property
    def study_name(self) -> str:
        return Path(self.out).resolve().name


def read_spec(sweep_dir: str | Path) -> SweepSpec:
    path = Path(sweep_dir) / SPEC_FILE
    if not path.is_file():
        raise ConfigError(f"--resume {sweep_dir}: no {SPEC_FILE} there (not a sweep folder)")
    data = json.loads(path.read_text(encoding="utf-8"))
    return SweepSpec(**{k: v for k, v in data.items() if k in {f.name for f in dataclasses.fields(SweepSpec)}})


def _storage(url: str) -> Any:
    import optuna

    if "://" not in url:
        raise ConfigError(f"--storage {url!r} is not a database URL (sqlite:///path/study.db, "
                          "postgresql://user:pass@host/db, mysql://...)")
    from optuna.storages import RDBStorage

    connect = {"connect_args": {"timeout": 60}} if url.startswith("sqlite:") else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # a worker that dies mid-trial stops beating: its trial is queued again, once
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1) \
            if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback") else None
        kwargs = {"heartbeat_stale_trial_callback": retry} if retry else {}
        return RDBStorage(url, engine_kwargs=connect, heartbeat_interval=30, grace_period=120,
                          **kwargs)


def _pruner(spec: SweepSpec) -> Any:
    import optuna

    if spec.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=spec.prune_after, n_warmup_steps=0)
    if spec.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource="auto", reduction_factor=3)
    if spec.pruner == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"--pruner must be one of {', '.join(PRUNERS)}, got {spec.pruner!r}")


def open_study(spec: SweepSpec, create: bool) -> Any:
    """Create the study (a new sweep) or load it (resume / another worker)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own line per trial instead
    metric, direction = objective_for(spec.task, spec.metric, spec.direction)
    seed = spec.seed
    if seed is not None and not create:
        # a worker joining (or resuming) must not replay the creator's random draws
        seed += os.getpid()
    sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True,
                                         n_startup_trials=min(10, max(2, spec.trials // 4)))
    try:
        study = optuna.create_study(storage=_storage(spec.storage_url), study_name=spec.study_name,
                                    direction=direction, sampler=sampler, pruner=_pruner(spec),
                                    load_if_exists=not create)
    except optuna.exceptions.DuplicatedStudyError:
        raise ConfigError(f"{spec.storage_url} already holds a study named {spec.study_name!r}; "
                          f"continue it with `lmforge sweep --resume {spec.out}`") from None
    if create:
        study.set_user_attr("metric", metric)
    elif study.user_attrs.get("metric", metric) != metric:
        raise ConfigError(f"the study optimises {study.user_attrs['metric']!r}, not {metric!r}")
    return study


def _finished(study: Any) -> int:
    """Trials that count towards --trials: not running, not interrupted by Ctrl-C."""
    from optuna.trial import TrialState

    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
               and not t.user_attrs.get("interrupted"))


def run_sweep(spec: SweepSpec, resume: bool = False, log: Callable[[str], Any] = print) -> Any:
    """Run (or continue) the sweep until the study has `spec.trials` finished trials."""
    import optuna

    from .report import trial_line, write_report

    out = Path(spec.out)
    params = load_space(spec.space)
    budget = parse_budget(spec.budget)
    base = load_config(spec.config, spec.overrides)  # a bad recipe fails here, not per trial
    fixed = flat_keys(base.to_dict())
    created = not resume and not out.exists()
    if not resume:
        if (out / SPEC_FILE).exists():
            raise ConfigError(f"{out} already holds a sweep; continue it with "
                              f"`lmforge sweep --resume {out}` or choose another --out")
        out.mkdir(parents=True, exist_ok=True)
    try:
        study = open_study(spec, create=not resume)
    except BaseException:
        if created:  # leave no half-made sweep folder behind (this call made all of it)
            shutil.rmtree(out, ignore_errors=True)
        raise
    if not resume:
        atomic_write_text(out / SPEC_FILE, json.dumps(dataclasses.asdict(spec), indent=2) + "\n")
        start = baseline(params, fixed) if spec.baseline else {}
        if start:
            study.enqueue_trial(start, user_attrs={"baseline": True})
    metric, direction = objective_for(spec.task, spec.metric, spec.direction)

    def objective(trial: Any) -> float:
        run_dir = out / "trials" / f"{trial.number:04d}"
        values = sample(trial, params, fixed)
        twin = _same_params(study, trial)
        if twin is not None:  # TPE may propose a finished configuration again: reuse its result
            trial.set_user_attr("same_as", twin.number)
            trial.set_user_attr("run_dir", twin.user_attrs.get("run_dir", ""))
            return twin.value
        reporter = TrialReporter(trial, metric, direction,
                                 budget.amount if budget.kind == "tokens" else 0.0)
        overrides = ["train.progress=false", *budget.overrides(), *spec.overrides,
                     *as_overrides(values)]
        trial.set_user_attr("run_dir", str(run_dir))
        try:
            run_trial(spec.task, spec.config, run_dir, overrides, spec.task_args, reporter)
        except KeyboardInterrupt:
            # the same configuration is tried again first when the sweep resumes
            trial.set_user_attr("interrupted", True)
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            raise
        except ConfigError as err:
            if reporter.monitor is not None:
                raise  # the sweep itself is wrong (e.g. --metric): stop
            trial.set_user_attr("error", str(err))
            raise InvalidSample(f"trial {trial.number}: {err}") from None
        except TrainingDiverged as err:
            trial.set_user_attr("error", str(err))
            raise
        trial.set_user_attr("last_step", reporter.last_step)
        if reporter.pruned_at is not None:
            trial.set_user_attr("pruned_at", reporter.pruned_at)
            raise optuna.TrialPruned(f"pruned at step {reporter.pruned_at}")
        if reporter.best is None:
            raise ConfigError(f"trial {trial.number} made no evaluation; check train.eval_every")
        return reporter.best

    def after_trial(study: Any, trial: Any) -> None:
        log(trial_line(study, trial, metric))
        if _finished(study) >= spec.trials:
            study.stop()

    left = spec.trials - _finished(study)
    log(f"sweep {out}: {spec.task} on {spec.config}, {len(params)} keys, {budget} per trial, "
        f"{metric} ({direction}), {spec.pruner} pruner | {left} of {spec.trials} trials to run | "
        f"storage {spec.storage_url}")
    t0 = time.perf_counter()
    try:
        if left > 0:
            study.optimize(objective, timeout=spec.timeout or None, callbacks=[after_trial],
                           catch=(InvalidSample, TrainingDiverged), gc_after_trial=True)
    except KeyboardInterrupt:
        log(f"interrupted; continue with `lmforge sweep --resume {out}`")
        raise
    finally:
        written = write_report(study, out, metric)
        log(f"{time.perf_counter() - t0:.0f}s | wrote {', '.join(str(p) for p in written)}")
    return study


def _same_params(study: Any, trial: Any) -> Any:
    from optuna.trial import TrialState

    for other in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if other.params == trial.params and other.number != trial.number:
            return other
    return None


