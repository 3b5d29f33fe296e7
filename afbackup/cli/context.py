"""What every command shares: the resolved settings (loaded lazily), output helpers."""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any, Mapping

import click

from afbackup.config import Settings, load_settings


@dataclasses.dataclass
class AppContext:
    config_path: str | None
    verbosity: int
    log_format: str
    _settings: Settings | None = None

    def settings(self, overrides: Mapping[str, Any] | None = None) -> Settings:
        """Resolve configuration once (flags given as ``overrides`` take precedence)."""
        if self._settings is None or overrides:
            self._settings = load_settings(self.config_path, overrides=overrides)
        return self._settings


    def fail(self, message: str, exit_code: int) -> None:
        """End a command that already printed its report: the error line, then the exit code."""
        raise ReportedFailure(message, exit_code)


class ReportedFailure(Exception):
    """A command printed its own report and fails with ``exit_code`` (mapped in ``afbackup.cli``)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


pass_app = click.make_pass_decorator(AppContext)


def emit_json(doc: Any) -> None:
    """The single JSON document of ``--json`` on stdout."""
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def emit(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
