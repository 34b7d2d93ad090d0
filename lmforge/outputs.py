"""Where a command may write: never over its own input, never into a run it did not create,
and `--force` replaces a folder whole or not at all.

    check_output(out, inputs=[data], flag="--out")   # before any work is done
    replace_dir(staging, out)                          # the finished folder takes out's place
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterable

from .errors import ConfigError

# a folder holding either is an lmforge run (model.safetensors alone is not: Hugging Face
# folders have it too). The names are those of run.py and train/checkpoint.py, spelled here so
# that this check does not import torch.
RUN_MARKERS = ("model_config.json", "trainer_state.pt")


def holds_run(folder: str | Path) -> bool:
    folder = Path(folder)
    return folder.is_dir() and any((folder / name).exists() for name in RUN_MARKERS)


def same_path(a: str | Path, b: str | Path) -> bool:
    """True when a and b name the same file or folder (links and relative paths resolved)."""
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_output(out: str | Path, inputs: Iterable[str | Path] = (), flag: str = "--out",
                 folder: bool = False) -> None:
    """Refuse an output that is one of the command's inputs, or a file inside (or a folder
    that is) a run directory. `folder`: `out` is a folder the command fills."""
    out = Path(out)
    for source in inputs:
        if same_path(out, source):
            raise ConfigError(f"{flag} {out} is also the input {source}; no command writes over "
                              f"its own input: choose another {flag}")
    home = out if (folder or out.is_dir()) else out.parent
    if holds_run(home):
        raise ConfigError(f"{flag} {out} is inside the run directory {home}; lmforge never writes "
                          f"into a run it did not create: choose another {flag}")


def replace_dir(staging: Path, out: Path) -> None:
    """Move the finished folder `staging` to `out`, replacing what was there in one rename;
    the old folder is deleted only after the new one is in place."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    try:
        os.replace(staging, out)
    except OSError:
        if old is not None:
            os.replace(old, out)  # put the previous folder back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def staging_dir(out: Path) -> Path:
    """An empty sibling of `out` (same file system, so the final rename is atomic)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.new-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    return staging


def eval_stem(data: str | Path, split: str) -> str:
    """`<dataset>-<split>`, the name of an evaluation's output files: two data sets that both
    have a `test` split write RUN/eval/wmt-test.jsonl and RUN/eval/cnn-test.jsonl, not one file.

    >>> eval_stem("data/wmt14/", "test")
    'wmt14-test'
    """
    name = Path(str(data).rstrip("/\\")).stem or "data"
    return f"{name}-{split}"
