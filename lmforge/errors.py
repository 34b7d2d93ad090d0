"""The error a user can fix: a bad config value, file, flag or run directory.

It lives in its own module so that the lowest layers (registries, config) can raise it
without importing each other; `lmforge.config.ConfigError` is the same class.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A bad config value or key; the message names it."""
