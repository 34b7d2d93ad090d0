"""What a sweep leaves behind: sweep.csv, best.yaml and Optuna's plots.

    DIR/sweep.csv          one row per trial: number, state, value, params, steps, seconds, run dir
    DIR/best.yaml          the best trial's fully resolved config (`lmforge pretrain --config` it)
    DIR/plots/optimization_history.png, param_importances.png, parallel_coordinate.png
"""

from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path
from typing import Any

from ..train.checkpoint import atomic_write_text


def _done(study: Any) -> list[Any]:
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]


def trial_line(study: Any, trial: Any, metric: str) -> str:
    """`trial 3 complete: loss 1.8345 (best 1.8012, trial 1) | train.lr=0.002 ... | 61s`."""
    state = trial.state.name.lower()
    value = f" {metric} {trial.value:.4f}" if trial.value is not None else ""
    if "pruned_at" in trial.user_attrs:
        state += f" at step {trial.user_attrs['pruned_at']}"
    if trial.user_attrs.get("baseline"):
        state += " (the recipe's own values)"
    if "same_as" in trial.user_attrs:
        state += f" (same configuration as trial {trial.user_attrs['same_as']}, not rerun)"
    if "error" in trial.user_attrs:
        state += f" ({trial.user_attrs['error'][:120]})"
    best = ""
    if _done(study):
        best = f" (best {study.best_value:.4f}, trial {study.best_trial.number})"
    params = " ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
    seconds = trial.duration.total_seconds() if trial.duration else 0.0
    return f"trial {trial.number} {state}:{value}{best} | {params} | {seconds:.0f}s"


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_csv(study: Any, path: Path) -> None:
    trials = study.get_trials(deepcopy=False)
    keys = sorted({k for t in trials for k in t.params})
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["number", "state", "value", *keys, "last_step", "pruned_at", "seconds",
                     "run_dir", "error"])
    for t in trials:
        seconds = f"{t.duration.total_seconds():.1f}" if t.duration else ""
        writer.writerow([t.number, t.state.name.lower(), "" if t.value is None else f"{t.value:.6g}",
                         *[t.params.get(k, "") for k in keys], t.user_attrs.get("last_step", ""),
                         t.user_attrs.get("pruned_at", ""), seconds, t.user_attrs.get("run_dir", ""),
                         t.user_attrs.get("error", "")])
    atomic_write_text(path, buf.getvalue())


def write_best(study: Any, path: Path, metric: str) -> bool:
    """Copy the best trial's resolved config.yaml, with a header saying where it came from."""
    done = _done(study)
    if not done:
        return False
    best = study.best_trial
    run_config = Path(best.user_attrs.get("run_dir", "")) / "config.yaml"
    if not run_config.is_file():
        return False
    params = ", ".join(f"{k}={_short(v)}" for k, v in best.params.items())
    header = (f"# best of {len(done)} completed trials: trial {best.number}, {metric} "
              f"{best.value:.6g}\n# {params}\n")
    atomic_write_text(path, header + run_config.read_text(encoding="utf-8"))
    return True


def write_plots(study: Any, out_dir: Path) -> list[Path]:
    """Optuna's matplotlib plots; each is skipped when the study cannot support it yet."""
    if len(_done(study)) < 2:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, plot in (("optimization_history", ovm.plot_optimization_history),
                       ("param_importances", ovm.plot_param_importances),
                       ("parallel_coordinate", ovm.plot_parallel_coordinate)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ExperimentalWarning on every call
                ax = plot(study)
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
            fig.set_size_inches(8, 5)
            fig.tight_layout()
            fig.savefig(out_dir / f"{name}.png", dpi=90)
            plt.close(fig)
            written.append(out_dir / f"{name}.png")
        except (ValueError, RuntimeError, ZeroDivisionError) as err:  # e.g. one param value only
            print(f"note: no {name} plot ({err})")
    return written


def write_report(study: Any, out: Path, metric: str) -> list[Path]:
    write_csv(study, out / "sweep.csv")
    written = [out / "sweep.csv"]
    if write_best(study, out / "best.yaml", metric):
        written.append(out / "best.yaml")
    return written + write_plots(study, out / "plots")
