"""The architecture arena: train several backbones on one corpus, one budget, one size.

    lmforge compare --archs bigram,mlp,rnn,lstm,gru,cnn,rcnn,gpt --data PATH \\
                    --budget 5m --params 1M --out arena/

    from lmforge.compare import compare
    rows = compare(["lstm", "gpt"], "input.txt", budget="2M-tokens", params="200K", out="arena")

What is held fixed, so the comparison is fair:
  - the data: one tokenizer is trained once (saved as arena/tokenizer.json) and the corpus is
    tokenized once into the shared token cache; every run reads the same train/val split;
  - the budget: wall time (`90s`, `5m`, `1h`: training seconds, evaluation excluded) or tokens
    (`2M-tokens`: the same number of training tokens for everyone);
  - the size: each family gets the width whose model (head included) has about `--params`
    parameters (`lmforge.models.sizing.size_for_params`); the bigram is the exception, its
    useful capacity is the V x V table, so it keeps d_model = vocab size;
  - the batch: `batch_size` windows of `context` tokens per step for every family.

What differs is each family's recipe (`ARCH_DEFAULTS`: depth, activation, learning rate),
its own documented default, as a practitioner would pick it. Each architecture trains through
`lmforge.pretrain.pretrain` into `out/ARCH/`, a normal run directory (`lmforge generate
arena/lstm --prompt ...` works). The results go to stdout, `out/compare.csv` and
`out/compare.png` (validation loss against training seconds, one curve per architecture).
"""

from __future__ import annotations

import argparse
import copy
import csv
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from .config import Config, ConfigError, apply_overrides, config_from_dict
from .models.registry import BACKBONES, arena_archs

CSV_COLUMNS = ["arch", "params", "tokens_per_s", "best_val_loss", "val_ppl", "wall_s"]

# Each family's recipe for a char- or subword-level corpus at ~0.1-10M parameters lives with
# the family in models/registry.py (`BackboneSpec.arena`). The width (d_model) is set by the
# parameter budget; everything else is the family's default, and the learning rate is each
# family's own (AdamW, cosine decay to lr/10, 0.1 weight decay; docs/arena.md).
ARCH_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    name: BACKBONES[name].arena for name in arena_archs()}  # type: ignore[misc]
EVAL_POINTS = 10  # evaluations per run: enough points for a curve


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Budget:
    """A training budget: `kind` "time" (seconds of training) or "tokens"."""

    kind: str
    value: float

    def __str__(self) -> str:
        if self.kind == "time":
            return f"{self.value:g}s"
        return f"{_human(self.value)} tokens"


_SUFFIX = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "b": 1e9}
_TIME = {"s": 1, "m": 60, "h": 3600}


def parse_count(text: str, what: str = "--params") -> int:
    """'1M' -> 1000000, '200K' -> 200000, '1.5m' -> 1500000, '5000' -> 5000.

    >>> parse_count("200K")
    200000
    """
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kKmMgGbB]?)\s*", str(text))
    value = float(m.group(1)) * _SUFFIX[m.group(2).lower()] if m else 0
    if not m or value < 1:
        raise ConfigError(f"{what} {text!r}: expected a positive count like 200K, 1M or 5000")
    return int(round(value))


def parse_budget(text: str) -> Budget:
    """'90s' / '5m' / '1.5h' -> a wall-time budget; '2M-tokens' / '500K-tokens' -> tokens.

    >>> parse_budget("5m")
    Budget(kind='time', value=300.0)
    >>> parse_budget("2M-tokens")
    Budget(kind='tokens', value=2000000.0)
    """
    s = str(text).strip()
    m = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)\s*([smh])", s)  # lower case: 2M is not 2 minutes
    if m and float(m.group(1)) > 0:
        return Budget("time", float(m.group(1)) * _TIME[m.group(2).lower()])
    m = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)\s*([kKmMgGbB]?)[-_ ]?tokens?", s, flags=re.IGNORECASE)
    if m and float(m.group(1)) * _SUFFIX[m.group(2).lower()] >= 1:
        return Budget("tokens", float(m.group(1)) * _SUFFIX[m.group(2).lower()])
    raise ConfigError(f"--budget {text!r}: expected a wall time like 90s, 5m or 1h, or a token "
                      f"count like 2M-tokens or 500K-tokens")


def parse_archs(text: str | list[str]) -> list[str]:
    """'lstm,gpt' -> ['lstm', 'gpt'], each checked against the arena's architectures."""
    names = [a.strip() for a in (text.split(",") if isinstance(text, str) else text) if a.strip()]
    if not names:
        raise ConfigError("--archs is empty; name one or more of " + ", ".join(ARCH_DEFAULTS))
    for name in names:
        if name not in ARCH_DEFAULTS:
            raise ConfigError(f"--archs: {name!r} is not an arena architecture; valid: "
                              f"{', '.join(ARCH_DEFAULTS)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"--archs {','.join(names)}: an architecture is named twice")
    return names


def _human(n: float) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:g}{suffix}"
    return f"{n:g}"


def split_overrides(overrides: list[str], archs: list[str]) -> dict[str, list[str]]:
    """'key=value' applies to every arch, 'ARCH:key=value' to one: {arch: [key=value, ...]}."""
    per_arch: dict[str, list[str]] = {a: [] for a in archs}
    for text in overrides:
        head, sep, rest = text.partition(":")
        if sep and "=" not in head:  # ARCH:key=value
            if head not in per_arch:
                raise ConfigError(f"override {text!r}: {head!r} is not one of --archs "
                                  f"({', '.join(archs)})")
            per_arch[head].append(rest)
        else:
            for a in archs:
                per_arch[a].append(text)
    return per_arch


# --------------------------------------------------------------------------- one arch's config


def arch_config(arch: str, *, data: str, out: Path, tokenizer_path: Path, vocab_size: int,
                params: int, context: int, batch_size: int, tbptt: bool,
                overrides: list[str], common: dict[str, Any]) -> tuple[Config, set[str]]:
    """The Config for `arch` (sized to `params`), and the dotted keys the user overrode."""
    from .models.sizing import size_for_params

    recipe = copy.deepcopy(ARCH_DEFAULTS[arch])
    tree: dict[str, Any] = {
        "model": {"arch": arch, "max_len": context, **recipe["model"]},
        "tokenizer": {"path": str(tokenizer_path)},
        "data": dict(common["data"], path=str(data)),
        "train": {"batch_size": batch_size, "tbptt": tbptt and BACKBONES[arch].recurrent,
                  **common["train"], **recipe["train"]},
        "out": str(out / arch),
    }
    tree["train"]["min_lr"] = tree["train"]["lr"] / 10
    apply_overrides(tree, overrides)
    given = {o.split("=", 1)[0].strip() for o in overrides}
    cfg = config_from_dict(tree, source=f"arena {arch}")
    cfg.model.vocab_size = vocab_size
    if "model.d_model" in given:
        pass  # the user fixed the width: no sizing
    elif arch == "bigram":
        cfg.model.d_model = vocab_size  # the full bigram table
    else:
        cfg.model = size_for_params(arch, params, vocab_size, base=cfg.model)
    if "train.min_lr" not in given and "train.lr" in given:
        cfg.train.min_lr = cfg.train.lr / 10
    return cfg, given


def measure_step_seconds(cfg: Config, device: torch.device, seconds: float = 1.5,
                         max_steps: int = 40) -> float:
    """Seconds per optimizer step of `cfg`'s model on random batches (after 3 warm-up steps),
    in the run's precision (a bf16 run steps up to twice as fast as an fp32 probe would say)."""
    from .models.build import build_model
    from .train.loop import autocast_context, resolve_precision
    from .train.optim import build_optimizer

    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model).to(device).train()
    opt = build_optimizer(model, cfg.train, device)
    B, T = cfg.train.batch_size * cfg.train.grad_accum, cfg.model.max_len
    ids = torch.randint(cfg.model.vocab_size, (B, T + 1), device=device)  # (B, T+1)
    x, y = ids[:, :-1], ids[:, 1:]  # (B, T) each

    amp = autocast_context(device, resolve_precision(cfg.train.precision, device))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with amp:
            loss = model(x, y)[1]
        loss.backward()
        if cfg.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        opt.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(3):
        step()
    sync()
    t0, n = time.perf_counter(), 0
    while n < max_steps and (n < 3 or time.perf_counter() - t0 < seconds):
        step()
        n += 1
    sync()
    return (time.perf_counter() - t0) / n


def apply_budget(cfg: Config, budget: Budget, given: set[str], step_seconds: float | None) -> None:
    """Set max_steps (and the time cap), evaluation and warm-up from the budget."""
    t = cfg.train
    tokens_per_step = t.batch_size * t.grad_accum * cfg.model.max_len
    if budget.kind == "tokens":
        steps = math.ceil(budget.value / tokens_per_step)
    else:
        # the schedule needs a step count: the probe's estimate; the time cap stops the run
        # if the machine turns out slower than measured
        steps = max(1, int(budget.value / step_seconds))
        if "train.time_budget_s" not in given:
            t.time_budget_s = budget.value
    defaults = {"max_steps": steps, "eval_every": max(1, steps // EVAL_POINTS),
                "warmup_steps": min(100, steps // 10), "log_every": max(1, min(50, steps // 50)),
                "decay_steps": 0}
    for key, value in defaults.items():
        if f"train.{key}" not in given:
            setattr(t, key, value)


# --------------------------------------------------------------------------- results


def read_curve(run_dir: Path) -> dict[str, Any]:
    """A run's metrics.csv -> val points [(elapsed_s, loss)], last step, training seconds."""
    val: list[tuple[float, float]] = []
    last_step, elapsed = 0, 0.0
    path = Path(run_dir) / "metrics.csv"
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            step, secs = int(row["step"]), float(row["elapsed_s"] or 0.0)
            last_step, elapsed = max(last_step, step), max(elapsed, secs)
            if row["split"] == "val" and row["loss"]:
                val.append((secs, float(row["loss"])))
    return {"val": val, "steps": last_step, "elapsed_s": elapsed}


def summarize(arch: str, cfg: Config, params: int, curve: dict[str, Any]) -> dict[str, Any]:
    """One row of compare.csv (plus a few extra fields for the table)."""
    t = cfg.train
    tokens = curve["steps"] * t.batch_size * t.grad_accum * cfg.model.max_len
    wall = curve["elapsed_s"]
    best = min((loss for _, loss in curve["val"]), default=float("nan"))
    return {"arch": arch, "params": params,
            "tokens_per_s": round(tokens / wall, 1) if wall > 0 else float("nan"),
            "best_val_loss": round(best, 4),
            "val_ppl": round(math.exp(best), 3) if math.isfinite(best) else float("nan"),
            "wall_s": round(wall, 1),
            # not in the CSV: shown in the table and returned to Python callers
            "steps": curve["steps"], "d_model": cfg.model.d_model, "lr": t.lr,
            "run_dir": str(cfg.out), "curve": curve["val"]}


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """compare.csv: exactly CSV_COLUMNS, one row per architecture."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def format_table(rows: list[dict[str, Any]]) -> str:
    """The stdout table: one line per architecture, best validation loss first."""
    head = (f"{'arch':<8}{'params':>11}{'d_model':>9}{'lr':>9}{'steps':>8}{'tokens/s':>11}"
            f"{'best val loss':>15}{'val ppl':>10}{'wall s':>9}")
    lines = [head, "-" * len(head)]
    for r in sorted(rows, key=lambda r: r["best_val_loss"]):
        lines.append(f"{r['arch']:<8}{r['params']:>11,}{r['d_model']:>9}{r['lr']:>9.0e}"
                     f"{r['steps']:>8,}{r['tokens_per_s']:>11,.0f}{r['best_val_loss']:>15.4f}"
                     f"{r['val_ppl']:>10.3f}{r['wall_s']:>9.1f}")
    return "\n".join(lines)


def plot_curves(rows: list[dict[str, Any]], path: Path, title: str = "") -> Path:
    """compare.png: validation loss against training seconds, one curve per architecture."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .eval.metrics import _save_figure

    fig = Figure(figsize=(7.0, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for r in rows:
        points = sorted(r["curve"])
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3,
                    linewidth=1.4, label=f"{r['arch']} ({r['best_val_loss']:.3f})")
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("validation loss")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return _save_figure(fig, path)


# --------------------------------------------------------------------------- the arena


def compare(archs: list[str] | str, data: str | Path, budget: str | Budget,
            params: int | str, out: str | Path, *, context: int = 128, batch_size: int = 32,
            tokenizer: str = "char", vocab_size: int = 4096, tbptt: bool = True,
            val_fraction: float = 0.1, device: str = "auto", threads: int = 0,
            seed: int = 1337, overrides: list[str] | None = None, progress: bool = True,
            log: Callable[[str], Any] = print) -> list[dict[str, Any]]:
    """Train each of `archs` on `data` with one budget and about `params` parameters.

    Returns one dict per architecture with the compare.csv columns (arch, params,
    tokens_per_s, best_val_loss, val_ppl, wall_s) plus steps, d_model, lr, run_dir and
    curve [(training seconds, val loss)]. `overrides` are dotted `key=value` settings for
    every architecture or `ARCH:key=value` for one (e.g. `lstm:train.lr=3e-3`).
    """
    from .data.corpus import corpus_texts_for_training, resolve_corpus_files, tokenize_corpus
    from .models.sizing import params_of
    from .pretrain import pretrain
    from .recipes.scaffold import prepare_tokenizer
    from .train.runtime import pick_device

    archs = parse_archs(archs)
    budget = budget if isinstance(budget, Budget) else parse_budget(budget)
    params = params if isinstance(params, int) else parse_count(params)
    if params < 1:
        raise ConfigError(f"--params must be positive, got {params}")
    if context < 1 or batch_size < 1:
        raise ConfigError(f"--context and --batch-size must be positive, got {context}, {batch_size}")
    out = Path(out)
    for arch in archs:
        if (out / arch / "trainer_state.pt").exists():
            raise ConfigError(f"{out / arch} already holds a run; choose another --out or "
                              f"remove it")
    per_arch = split_overrides(list(overrides or []), archs)
    common = {"data": {"val_fraction": val_fraction, "cache_dir": str(out / ".cache")},
              "train": {"device": device, "threads": threads, "seed": seed,
                        "progress": progress}}

    # one tokenizer and one tokenization for every architecture
    files = resolve_corpus_files(str(data))
    base = config_from_dict({"tokenizer": {"kind": tokenizer, "vocab_size": vocab_size},
                             "data": {"path": str(data), **common["data"]}})
    out.mkdir(parents=True, exist_ok=True)
    tok = prepare_tokenizer(base, lambda: corpus_texts_for_training(files, base.data.text_field,
                                                                    base.data.errors),
                            log, what="the corpus")
    tokenizer_path = out / "tokenizer.json"
    tok.save(tokenizer_path)
    corpus = tokenize_corpus(files, tok, val_fraction, cache_dir=out / ".cache",
                             progress=progress)
    log(f"arena: {len(archs)} architectures | {budget} each | ~{_human(params)} parameters | "
        f"vocab {tok.vocab_size} | train {len(corpus.train):,} / val {len(corpus.val):,} tokens")
    if threads > 0:
        torch.set_num_threads(threads)
    dev = pick_device(device)

    corpus_name = Path(str(data)).name or files[0].name  # "" = the bundled corpus
    title = f"{corpus_name}: {budget}, ~{_human(params)} parameters"
    rows: list[dict[str, Any]] = []
    for arch in archs:
        cfg, given = arch_config(arch, data=str(data), out=out, tokenizer_path=tokenizer_path,
                                 vocab_size=tok.vocab_size, params=params, context=context,
                                 batch_size=batch_size, tbptt=tbptt, overrides=per_arch[arch],
                                 common=common)
        step_s = measure_step_seconds(cfg, dev) if budget.kind == "time" else None
        apply_budget(cfg, budget, given, step_s)
        n_params = params_of(cfg.model)
        log(f"[{arch}] d_model {cfg.model.d_model}, {n_params:,} parameters, lr {cfg.train.lr:g}"
            f", {cfg.train.max_steps:,} steps" + (" (tbptt)" if cfg.train.tbptt else "")
            + (f", probe {step_s * 1e3:.1f} ms/step" if step_s else ""))
        run_dir = pretrain(cfg, log=lambda msg, a=arch: log(f"[{a}] {msg}"))
        row = summarize(arch, cfg, n_params, read_curve(run_dir))
        rows.append(row)
        # written after every architecture, so a long arena shows partial results
        write_csv(rows, out / "compare.csv")
        plot_curves(rows, out / "compare.png", title=title)
    log(format_table(rows))
    log(f"-> {out / 'compare.csv'}, {out / 'compare.png'}")
    return rows


def cli(argv: list[str]) -> int:
    """lmforge compare --archs A,B,... --data PATH --budget 5m|2M-tokens --params 1M --out DIR"""
    parser = argparse.ArgumentParser(
        prog="lmforge compare", formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  lmforge compare --archs gpt,lstm --budget 2m --params 1M --out runs/cmp\n"
               "  lmforge compare --archs gpt,gru --budget 2M-tokens --out runs/cmp2 lstm:train.lr=3e-3",
        description="Train several architectures on the same corpus, split, budget and "
                    "parameter count; write compare.csv, compare.png and one run per arch. "
                    "Trailing key=value pairs override every arch's config, ARCH:key=value "
                    "one arch's (e.g. lstm:train.lr=3e-3).")
    parser.add_argument("--archs", default=",".join(ARCH_DEFAULTS),
                        help=f"comma-separated, from {','.join(ARCH_DEFAULTS)} (default: all)")
    parser.add_argument("--data", default="", help="corpus file/folder/glob (default: bundled "
                                                   "Tiny Shakespeare)")
    parser.add_argument("--budget", default="5m",
                        help="per architecture: wall time (90s, 5m, 1h) or tokens (2M-tokens)")
    parser.add_argument("--params", default="1M", help="parameter count to size to (200K, 1M)")
    parser.add_argument("--out", default="arena", help="output folder (default arena/)")
    parser.add_argument("--context", type=int, default=128, help="tokens per window (128)")
    parser.add_argument("--batch-size", type=int, default=32, help="windows per step (32)")
    parser.add_argument("--tokenizer", default="char", help="char|word|bpe|wordpiece (char)")
    parser.add_argument("--vocab-size", type=int, default=4096, help="for bpe/wordpiece/word")
    parser.add_argument("--no-tbptt", action="store_true",
                        help="recurrent archs: start each window from a fresh state")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = all)")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("overrides", nargs="*", metavar="[ARCH:]key=value")
    args = parser.parse_args(argv)
    compare(args.archs, args.data, args.budget, args.params, args.out, context=args.context,
            batch_size=args.batch_size, tokenizer=args.tokenizer, vocab_size=args.vocab_size,
            tbptt=not args.no_tbptt, val_fraction=args.val_fraction, device=args.device,
            threads=args.threads, seed=args.seed, overrides=args.overrides,
            progress=not args.no_progress)
    return 0
