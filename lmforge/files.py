"""File modes: files lmforge writes get the permissions the user's umask asks for.

Temp-file-then-rename writes start from `tempfile.mkstemp` or safetensors, which create files
readable by their owner only (0600); a shared run folder would then hide its weights and
tokenizer from the rest of a team even though the user's umask (often 022) allows reading.
"""

from __future__ import annotations

import os
from pathlib import Path


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (the only portable way to read it)
    os.umask(mask)
    return mask


def as_umask_allows(path: str | Path) -> None:
    """chmod a freshly written regular file to 0666 & ~umask, as open() would have made it."""
    os.chmod(path, 0o666 & ~current_umask())
