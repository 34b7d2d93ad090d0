"""Small file helpers every layer may use: atomic writes and one JSON-lines parser.

Nothing here imports the rest of lmforge except `errors`, so config, data and the run
directory code can share one way of writing and one error format for bad lines.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import ConfigError


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write text through a temp file and a rename, so readers never see half a file. The
    temp name carries the pid: two processes writing the same file (sweep workers sharing a
    study folder) never rename each other's temp file away."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only left when the write or the rename failed


def json_line(path: str | Path, lineno: int, line: str, expected: str = "a JSON object") -> Any:
    """One line of a JSON Lines file, parsed: the object it holds.

    Every JSONL reader (corpus, labelled, parallel data) reports bad lines alike, naming the
    file and line: `train.jsonl:3: not valid JSON (Expecting value)`.
    """
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
    if not isinstance(row, dict):
        raise ConfigError(f"{path}:{lineno}: expected {expected}, got {type(row).__name__}")
    return row
