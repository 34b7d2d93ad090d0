"""Hyperparameter sweeps on Optuna: `lmforge sweep` and `lmforge.sweep.run_sweep`.

    from lmforge.sweep import SweepSpec, run_sweep
    study = run_sweep(SweepSpec(config="configs/shakespeare-char-gpt.yaml",
                                space="sweeps/gpt-small.yaml", out="sweeps/gpt1",
                                trials=40, budget="2m"))
    print(study.best_params)

See docs/sweep.md.
"""

from __future__ import annotations

from .objective import Budget, parse_budget
from .space import Param, load_space
from .study import SweepSpec, read_spec, run_sweep

__all__ = ["Budget", "Param", "SweepSpec", "load_space", "parse_budget", "read_spec", "run_sweep"]
