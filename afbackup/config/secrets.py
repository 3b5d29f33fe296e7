"""Secrets named by the configuration: read from a file, or from an environment variable whose NAME is
configured. The only place besides ``load`` that reads ``os.environ``; values are never logged."""

from __future__ import annotations

import os
from pathlib import Path

from afbackup.errors import ConfigError


def read_secret(file: str, env: str, key: str) -> str | None:
    """The secret in ``file`` (trailing newline dropped) or in the variable named ``env``; None when neither
    is configured. ``key`` names the config key in the error message."""
    if file:
        try:
            value = Path(file).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"cannot read {key}_file {file}: {exc.strerror}") from None
        if not value:
            raise ConfigError(f"{key}_file {file} is empty")
        return value
    if env:
        value = os.environ.get(env, "")
        if not value:
            raise ConfigError(f"{key}_env names the environment variable {env}, which is not set or empty")
        return value
    return None
