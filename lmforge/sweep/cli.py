"""`lmforge sweep`: start a sweep, or continue one (another worker, or after Ctrl-C)."""

from __future__ import annotations

import argparse

from ..config import ConfigError
from .study import PRUNERS, SweepSpec, read_spec, run_sweep


def cli(argv: list[str]) -> int:
    """lmforge sweep --config FILE --space SPACE.yaml --trials N --budget 2m --out DIR [key=value ...]"""
    task_args: list[str] = []
    if "--" in argv:  # everything after -- goes to the task's own command (e.g. --data PATH)
        cut = argv.index("--")
        argv, task_args = argv[:cut], argv[cut + 1:]
    p = argparse.ArgumentParser(
        prog="lmforge sweep", formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  lmforge sweep --config configs/shakespeare-char-gpt.yaml --space sweeps/gpt-small.yaml --trials 40 --budget 2m --out sweeps/gpt1\n  lmforge sweep --resume sweeps/gpt1",
        description="Search hyperparameters with Optuna (TPE sampler, pruning of poor trials). "
                    "Each trial is an ordinary run in DIR/trials/NNNN; at the end DIR holds "
                    "sweep.csv, best.yaml and plots/. Trailing key=value pairs fix config keys "
                    "for every trial; arguments after `--` go to the task's command, e.g. "
                    "`-- --data data/sst2`. See docs/sweep.md.")
    p.add_argument("--config", help="YAML recipe every trial starts from")
    p.add_argument("--space", help="search space YAML (see sweeps/gpt-small.yaml)")
    p.add_argument("--task", help="pretrain (default) or a finetune kind: classify, seq2seq, lm, ...")
    p.add_argument("--trials", type=int, help="finished trials the study should reach (default 20)")
    p.add_argument("--budget", help="per trial: training time (90s, 2m, 1h), steps (500steps) or "
                                    "tokens (2Mtokens); default 2m")
    p.add_argument("--timeout", help="stop this process after this long (e.g. 1h)")
    p.add_argument("--out", help="sweep folder to create")
    p.add_argument("--resume", metavar="DIR", help="continue the sweep in DIR (or join it as "
                                                    "another worker)")
    p.add_argument("--storage", help="Optuna storage URL shared by the workers (default "
                                     "sqlite:///DIR/study.db; postgresql://... across machines)")
    p.add_argument("--metric", help="objective (default: the task's monitored metric)")
    p.add_argument("--direction", choices=["min", "max"])
    p.add_argument("--pruner", choices=PRUNERS, help="median (default), hyperband or none")
    p.add_argument("--prune-after", type=int, help="median pruner: trials finished before pruning")
    p.add_argument("--seed", type=int, help="sampler seed")
    p.add_argument("--no-baseline", dest="baseline", action="store_false", default=None,
                   help="do not run the recipe's own values as the first trial")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_intermixed_args(argv)
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise ConfigError("lmforge sweep needs Optuna: pip install 'lmforge[sweep]'") from None
    from .objective import parse_budget

    timeout = None
    if args.timeout:
        limit = parse_budget(args.timeout)
        if limit.kind != "time":
            raise ConfigError(f"--timeout {args.timeout!r} must be a time, e.g. 30m or 2h")
        timeout = limit.amount
    if args.resume:
        spec = read_spec(args.resume)
        spec.out = args.resume
        for name in ("storage", "trials", "budget", "pruner"):
            if getattr(args, name) is not None:
                setattr(spec, name, getattr(args, name))
        if timeout is not None:
            spec.timeout = timeout
        run_sweep(spec, resume=True)
        return 0
    missing = [f"--{n}" for n in ("config", "space", "out") if not getattr(args, n)]
    if missing:
        raise ConfigError(f"lmforge sweep needs {', '.join(missing)} (or --resume DIR)")
    spec = SweepSpec(config=args.config, space=args.space, out=args.out,
                     overrides=list(args.overrides), task_args=task_args)
    for name in ("task", "trials", "budget", "storage", "metric", "direction", "pruner",
                 "prune_after", "seed", "baseline"):
        if getattr(args, name) is not None:
            setattr(spec, name, getattr(args, name))
    if timeout is not None:
        spec.timeout = timeout
    if spec.trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {spec.trials}")
    run_sweep(spec)
    return 0
