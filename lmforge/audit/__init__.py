"""Responsible-AI audits: PII, duplicates, languages (data); memorization and bias (runs).

The libraries behind them (phonenumbers, datasketch, lingua, fairlearn) are the `audit`
extra, imported only when a check needs them: `pip install 'lmforge[audit]'`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..config import ConfigError


def need(module: str, package: str) -> ModuleType:
    """Import `module`, or refuse in one line with the install hint."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"this audit needs {package}: pip install {package} "
                          "(or pip install 'lmforge[audit]')") from None
