"""Small file helpers every layer may use: atomic writes and one JSONL reader.

Nothing here imports the rest of lmforge except `errors`, so config, data and the run
directory code can share one way of writing and one error format for bad lines.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

from .errors import ConfigError


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write text through a temp file and a rename, so readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only left when the write or the rename failed


def iter_jsonl(path: str | Path, errors: str = "strict") -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSON Lines file.

    A line that is not a JSON object raises one ConfigError naming the file and the line:
    `data.jsonl line 3: not a JSON object (Expecting value)`.
    """
    path = Path(path)
    with open(path, encoding="utf-8", errors=errors) as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ConfigError(f"{path} line {number}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise ConfigError(f"{path} line {number}: expected a JSON object, got "
                                  f"{type(row).__name__}")
            yield number, row
