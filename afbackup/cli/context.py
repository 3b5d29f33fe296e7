"""What every command shares: the resolved settings (loaded lazily), its outcome, output helpers.

Every command ends with one summary log line (``<command>: ok|FAILED … in N s``, with
structured fields for JSON logs); backup, prune, verify and drill also notify
(Slack, Pushgateway). A notification problem is a warning, never the command's result.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import click

from afbackup.clock import SYSTEM_CLOCK, Clock
from afbackup.config import Settings, load_settings
from afbackup.log import event

logger = logging.getLogger("afbackup.summary")
NOTIFYING = frozenset({"backup", "prune", "verify", "drill", "check"})  # check: metrics only, no Slack


@dataclasses.dataclass
class AppContext:
    config_path: str | None
    verbosity: int
    log_format: str
    deployment: str | None = None  # --deployment / AFBACKUP_DEPLOYMENT
    _settings: Settings | None = None
    command: str = ""
    facts: dict[str, Any] = dataclasses.field(default_factory=dict)
    started: float = dataclasses.field(default_factory=time.monotonic)
    running: bool = False  # the command body started (``--help`` and usage errors never get here)
    clock: Clock = SYSTEM_CLOCK  # what commands that compare times ask (afbackup/clock.py)

    def record(self, **facts: Any) -> None:
        """Facts for the summary line and the notification: backup_id, bytes, rows, extra."""
        self.facts.update({key: value for key, value in facts.items() if value is not None})

    def finish(self, exit_code: int, error: str = "") -> None:
        """Log the summary line and send notifications; never raises."""
        seconds = round(time.monotonic() - self.started, 3)
        if not self.command or not self.running:
            return
        shown = {k: v for k, v in self.facts.items() if k != "extra"}
        words = " ".join(f"{k}={v}" for k, v in shown.items())
        state = "ok" if exit_code == 0 else f"FAILED (exit {exit_code})"
        logger.info("%s: %s in %.1fs%s", self.command, state, seconds, f" ({words})" if words else "",
                    extra=event(action=self.command, state="complete" if exit_code == 0 else "failed",
                                exit_code=exit_code, seconds=seconds, **shown))
        if self.command in NOTIFYING and self._settings is not None:
            self._notify(exit_code, error, seconds)

    def _notify(self, exit_code: int, error: str, seconds: float) -> None:
        from afbackup.notify import notify
        from afbackup.outcome import Outcome

        if self._settings is None:
            return
        cfg = self._settings.config
        try:
            notify(cfg.notify, Outcome(command=self.command, ok=exit_code == 0, exit_code=exit_code,
                                       seconds=seconds, backup_id=self.facts.get("backup_id", ""),
                                       bytes=int(self.facts.get("bytes", 0)), rows=int(self.facts.get("rows", 0)),
                                       error=error, extra=dict(self.facts.get("extra", {}))),
                   instance=cfg.backup.name, clock=self.clock)
        except Exception as exc:  # a notification must never change the command's result
            logger.warning("notification failed: %s", exc)

    def settings(self, overrides: Mapping[str, Any] | None = None) -> Settings:
        """Resolve configuration once (flags given as ``overrides`` take precedence)."""
        if self._settings is None or overrides:
            self._settings = load_settings(self.config_path, overrides=overrides, deployment=self.deployment)
        return self._settings

    def fail(self, message: str, exit_code: int) -> None:
        """End a command that already printed its report: the error line, then the exit code."""
        raise ReportedFailure(message, exit_code)


class ReportedFailure(Exception):
    """A command printed its own report and fails with ``exit_code`` (mapped in ``afbackup.cli``)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def pass_app(command: Callable[..., int]) -> Callable[..., int]:
    """Pass the AppContext to a command, and mark that the command really ran (not just --help)."""

    @click.pass_context
    def run_command(ctx: click.Context, *args: Any, **kwargs: Any) -> int:
        app = ctx.ensure_object(AppContext)
        app.running = True
        return ctx.invoke(command, app, *args, **kwargs)

    return functools.update_wrapper(run_command, command)


def duration(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float | None:
    """click callback: ``"26h"`` -> seconds (a bad value is a usage error, exit 2)."""
    if value is None:
        return None
    from afbackup.config.units import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def dsn_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """click callback for DSN flags: a password in one is a configuration error (exit 3), as in the file."""
    if not value:
        return value
    from afbackup.config import dsn_flag

    return dsn_flag(value, param.opts[0] if param.opts else f"--{param.name}")


def emit_json(doc: Any) -> None:
    """The single JSON document of ``--json`` on stdout."""
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def emit(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
