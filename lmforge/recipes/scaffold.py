"""The recipe scaffold: what `pretrain` and every `finetune` do around their own part.

    cfg = ...                                     # the recipe resolves its config
    validate_config(cfg)                          # the WHOLE config, before anything exists
    with RunDir(cfg.out, resume=resume) as run:     # after distributed.setup()
        # checked: --out is not a file and not an existing run (or, with --resume, the run's
        # trainer state loads and its weights are there); locked: a second command on the same
        # directory is refused; orphan *.tmp files of a killed command are gone
        tokenizer = prepare_tokenizer(cfg, texts, log, run_dir=run.path if resume else None)
        ... the recipe's own data, model and task ...
        trainer = run.start(task, cfg, log=log, tokenizer=tokenizer, files={...})
        trainer.fit()

`run.start` builds the Trainer (which reads the checkpoint), and only then writes config.yaml, model_config.json, the tokenizer and the
recipe's extra files, each atomically: a refused or failed --resume leaves every file
byte-identical, and so does a resume of a finished run (train.max_steps at or below its
step: "nothing to do" is logged, exit 0, no file written). If the command fails before its first checkpoint, what it created is removed
(the directory itself when it made it); what existed before is never touched.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from ..config import Config, ConfigError, save_config
from ..io import atomic_write_text
from ..run import CONFIG, MODEL_CONFIG, TOKENIZER, read_model_config
from ..train.checkpoint import TRAINER_STATE, WEIGHTS, CheckpointError, load_trainer_state
from ..train.optim import OPTIMIZERS
from ..train.runtime import pick_device

LOCK = ".lmforge.lock"
TOKENIZER_KINDS = ("char", "word", "bpe", "wordpiece")
RUN_MARKERS = (TRAINER_STATE, WEIGHTS, MODEL_CONFIG)  # any of these: the folder holds a run


# --------------------------------------------------------------------------- the config


def validate_config(cfg: Config) -> None:
    """Every value the Trainer and the recipe will use, checked before anything is created."""
    cfg.validate()
    t = cfg.train
    if t.optimizer not in OPTIMIZERS:
        raise ConfigError(f"train.optimizer={t.optimizer!r} is unknown; valid: {', '.join(OPTIMIZERS)}")
    if not t.lr > 0:
        raise ConfigError(f"train.lr must be positive, got {t.lr}")
    if t.max_steps < 0:
        raise ConfigError(f"train.max_steps must be positive, got {t.max_steps}")
    for name in ("log_every", "eval_batches"):
        if getattr(t, name) <= 0:
            raise ConfigError(f"train.{name} must be positive, got {getattr(t, name)}")
    for name in ("eval_every", "save_every", "warmup_steps", "decay_steps", "patience", "threads",
                 "min_lr", "weight_decay", "grad_clip", "time_budget_s", "sample_tokens"):
        if getattr(t, name) < 0:
            raise ConfigError(f"train.{name} must be >= 0, got {getattr(t, name)}")
    try:
        device = pick_device(t.device)
    except (RuntimeError, ConfigError) as err:  # torch refuses the name itself ("cuda:x", "gpu", ...)
        raise ConfigError(f"train.device={t.device!r}: {err}") from None
    if device.type == "cuda" and not _cuda_available():
        raise ConfigError(f"train.device={t.device} but this machine has no CUDA device; "
                          "use train.device=auto or cpu")
    if device.type == "mps" and not _mps_available():
        raise ConfigError(f"train.device={t.device} but Apple MPS is not available here")
    if t.precision == "fp16" and device.type != "cuda":
        raise ConfigError(f"train.precision=fp16 needs a CUDA device (a gradient scaler); this "
                          f"run is on {device.type}, use bf16")


def check_steps(cfg: Config) -> None:
    """A run of no steps would leave no weights: refused (pretrain checks it up front; recipes
    that derive max_steps from epochs are checked by `RunDir.start`)."""
    if cfg.train.max_steps <= 0:
        raise ConfigError(f"train.max_steps must be positive, got {cfg.train.max_steps} (a run of "
                          "no steps would leave no weights)")


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _mps_available() -> bool:
    import torch

    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def resume_config(run_dir: str | Path, overrides: list[str]) -> Config:
    """The config a run was started with, plus overrides; the architecture must not change."""
    import dataclasses

    from ..config import apply_overrides, config_from_dict, read_yaml

    run_dir = Path(run_dir)
    if not (run_dir / TRAINER_STATE).is_file():
        raise ConfigError(f"--resume {run_dir}: no {TRAINER_STATE} there to resume from")
    data = read_yaml(run_dir / CONFIG)
    apply_overrides(data, overrides)
    data["out"] = str(run_dir)
    cfg = config_from_dict(data, source=str(run_dir / CONFIG))
    saved = dataclasses.asdict(read_model_config(run_dir))
    wanted = dataclasses.asdict(cfg.model)
    changed = [k for k in saved if k != "vocab_size" and saved[k] != wanted.get(k)]
    if changed:
        k = changed[0]
        raise ConfigError(f"--resume {run_dir}: model.{k}={wanted[k]!r} differs from the run's "
                          f"{saved[k]!r}; a resumed run keeps its architecture")
    return cfg


# --------------------------------------------------------------------------- the tokenizer


def prepare_tokenizer(cfg: Config, texts: Callable[[], Iterable[str]], log: Callable[[str], Any],
                      run_dir: Path | None = None, what: str = "the training texts") -> Any:
    """The run's tokenizer (`run_dir`, on resume), `tokenizer.path`, a tokenizer.json named by
    `tokenizer.kind`, or a new one of that kind trained on `texts()` (called only then)."""
    from ..tokenizers import load_tokenizer, train_tokenizer

    tc = cfg.tokenizer
    if run_dir is not None:
        return load_tokenizer(Path(run_dir) / TOKENIZER)
    if tc.path:
        return load_tokenizer(tc.path)
    if tc.kind not in TOKENIZER_KINDS:
        if Path(tc.kind).exists():
            return load_tokenizer(tc.kind)
        raise ConfigError(f"tokenizer.kind={tc.kind!r} is not char, word, bpe, wordpiece "
                          "or a path to a tokenizer.json")
    t0 = time.perf_counter()
    tokenizer = train_tokenizer(tc.kind, texts(), vocab_size=tc.vocab_size, lowercase=tc.lowercase,
                                min_frequency=tc.min_frequency)
    log(f"trained a {tc.kind} tokenizer on {what}: {tokenizer.vocab_size} tokens "
        f"in {time.perf_counter() - t0:.1f}s")
    return tokenizer


# --------------------------------------------------------------------------- the run directory


class RunDir:
    """One command's hold on its run directory: checks, lock, writes, clean-up on failure.

    Only rank 0 (the writer under torchrun) touches the disk; the other ranks learn its
    checks' outcome and hold nothing.
    """

    def __init__(self, path: str | Path, resume: bool = False) -> None:
        from ..train import distributed

        self.path, self.resume = Path(path), resume
        self.writer = distributed.current().rank == 0
        self.resume_step: int | None = None
        self._made_dir = False
        self._before: set[str] = set()  # what the folder held before this command
        self._locked = False

    # ---- opening

    def __enter__(self) -> "RunDir":
        from ..train import distributed

        def open_on_writer() -> int | None:
            self._check()
            self._lock()
            if self.resume:
                remove_orphan_tmp(self.path)
            return self.resume_step

        # rank 0 checks and locks; every rank learns the step, or raises rank 0's error
        self.resume_step = distributed.from_rank0(open_on_writer)
        return self

    def _check(self) -> None:
        p = self.path
        if p.exists() and not p.is_dir():
            raise ConfigError(f"--out {p} is an existing file, not a run directory; choose another --out")
        if self.resume:
            if not (p / TRAINER_STATE).is_file():
                raise ConfigError(f"--resume {p}: no {TRAINER_STATE} there to resume from")
            state = load_trainer_state(p)  # refuses a corrupt state or weights that do not match
            if not (p / WEIGHTS).is_file():
                raise CheckpointError(f"--resume {p}: no {WEIGHTS} there")
            self.resume_step = int(state["step"])
        elif any((p / name).exists() for name in RUN_MARKERS) and not killed_before_checkpoint(p):
            raise ConfigError(f"{p} already holds a run; resume it with --resume {p} "
                              "or choose another --out")

    def _lock(self) -> None:
        try:
            if not self.path.exists():
                self.path.mkdir(parents=True)
                self._made_dir = True
            self._before = {entry.name for entry in self.path.iterdir()}
            take_lock(self.path / LOCK)
        except OSError as err:
            self._remove_created()
            raise ConfigError(f"cannot write the run directory {self.path}: "
                              f"{err.strerror or err}") from None
        self._locked = True

    # ---- writing

    def start(self, task: Any, cfg: Config, log: Callable[[str], Any] = print, tokenizer: Any = None,
              files: dict[str, Callable[[Path], Any]] | None = None,
              trainer_cls: type | None = None) -> Any:
        """Check that a resume has steps left, build the Trainer (it reads the checkpoint), then
        write config.yaml, model_config.json, the tokenizer (new runs) and `files` ({name:
        writer(path)}); returns the Trainer (`trainer_cls`, default train.loop.Trainer)."""
        from ..train.loop import Trainer

        if self.resume and self.resume_step is not None and cfg.train.max_steps <= self.resume_step:
            # a finished run resumed again: nothing to train and nothing is written, and the
            # command succeeds, so that "train this run to N steps" can be repeated safely
            log(f"--resume {self.path}: the run is already at step {self.resume_step} "
                f"(train.max_steps={cfg.train.max_steps}); nothing to do, no file changed "
                f"(raise train.max_steps to continue)")
            return FinishedRun(self.resume_step, load_trainer_state(self.path).get("elapsed", 0.0))
        check_steps(cfg)  # recipes that count epochs have set max_steps by now
        trainer = (trainer_cls or Trainer)(task, cfg.train, self.path, resume=self.resume, log=log)
        if self.writer:
            self.write(CONFIG, lambda path: save_config(cfg, path))
            self.write(MODEL_CONFIG, lambda path: atomic_write_text(path, cfg.model.to_json()))
            if tokenizer is not None and not self.resume:
                self.write(TOKENIZER, tokenizer.save)
            for name, writer in (files or {}).items():
                self.write(name, writer)
        return trainer

    def write(self, name: str, writer: Callable[[Path], Any]) -> Path:
        """Write one file of the run through `writer(path)` (writers write atomically)."""
        path = self.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        writer(path)
        return path

    # ---- closing

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.writer:
            return
        try:
            if exc_type is not None and not self.resume and not (self.path / TRAINER_STATE).exists():
                self._remove_created()  # failed before its first checkpoint: leave nothing behind
        finally:
            if self._locked:
                release_lock(self.path / LOCK)

    def _remove_created(self) -> None:
        if self._made_dir:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        for entry in self.path.iterdir() if self.path.is_dir() else []:
            if entry.name not in self._before and entry.name != LOCK:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink(missing_ok=True)


class FinishedRun:
    """What `RunDir.start` returns for a run that is already at train.max_steps: a Trainer
    whose `fit` has nothing to do."""

    def __init__(self, step: int, elapsed: float) -> None:
        self.step, self.elapsed = step, elapsed

    def fit(self, until_step: int | None = None) -> dict[str, float]:
        return {}


# --------------------------------------------------------------------------- the lock


def take_lock(path: Path) -> None:
    """Create the lock file with our pid; refuse when a live process holds it, take over a
    stale one (its process is gone)."""
    me = f"{os.getpid()} {socket.gethostname()}\n"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(path)
            if holder is not None and _alive(holder):
                raise ConfigError(f"{path.parent} is in use by another lmforge command (pid "
                                  f"{holder}, lock file {path}); wait for it or choose another "
                                  "--out") from None
            path.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(me)
        return
    raise ConfigError(f"{path.parent}: could not take the lock {path}")


def release_lock(path: Path) -> None:
    if _holder(path) == os.getpid():
        path.unlink(missing_ok=True)


def _holder(path: Path) -> int | None:
    try:
        pid, _, host = path.read_text().strip().partition(" ")
        if host and host != socket.gethostname():
            return int(pid) if pid.isdigit() else None  # another machine's: treated as alive
        return int(pid)
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def killed_before_checkpoint(run_dir: Path) -> bool:
    """True for what a command killed (kill -9, power loss) before its first checkpoint leaves:
    its config files and a lock of a dead process, but no weights and no trainer state. There
    is nothing to resume and nothing trained to lose, so a new run may start there."""
    holder = _holder(run_dir / LOCK)
    return (holder is not None and not _alive(holder) and not (run_dir / TRAINER_STATE).exists()
            and not (run_dir / WEIGHTS).exists())


def remove_orphan_tmp(run_dir: Path) -> list[Path]:
    """Delete the *.tmp files a killed command left (after the checkpoint roll-forward that
    `load_trainer_state` does, so the temp file that completes a checkpoint is used first)."""
    removed = []
    for folder in (run_dir, run_dir / "plots"):
        if folder.is_dir():
            for tmp in folder.glob("*.tmp"):
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
    return removed
