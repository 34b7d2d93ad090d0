"""Where lmforge keeps what it can rebuild: tokenized corpora, measured matmul peaks and
Hugging Face checkpoints converted to runs."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """$LMFORGE_CACHE, or ~/.cache/lmforge."""
    return Path(os.environ.get("LMFORGE_CACHE", "~/.cache/lmforge")).expanduser()
