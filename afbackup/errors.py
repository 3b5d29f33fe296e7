"""The afbackup error tree and the exit-code table (DESIGN.md, "Exit codes").

Every expected failure is an ``AfbackupError`` subclass. Its class decides the
exit code; its message names what failed, and ``hint`` says what to do. Only
``afbackup.cli`` turns these into a process exit.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """The documented exit codes. Pinned by tests/unit/test_exit_codes.py."""

    OK = 0
    UNEXPECTED = 1
    USAGE = 2
    CONFIG = 3
    PREFLIGHT = 4
    SOURCE = 5
    STORAGE = 6
    CRYPTO = 7
    INTEGRITY = 8
    LOCKED = 9
    DRILL_FAILED = 10
    SIGNAL_BASE = 128


class AfbackupError(Exception):
    """Base of every expected failure. ``stage`` names the pipeline stage, if any."""

    exit_code: ExitCode = ExitCode.UNEXPECTED
    kind = "error"

    def __init__(self, message: str, *, hint: str = "", stage: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.stage = stage

    def one_line(self) -> str:
        """The single ERROR line shown to the user: what failed, then what to do."""
        prefix = f"{self.stage}: " if self.stage else ""
        text = f"{prefix}{self.message}"
        if self.hint:
            text += f" — {self.hint}"
        return " ".join(text.split())


class UsageError(AfbackupError):
    exit_code = ExitCode.USAGE
    kind = "usage"


class ConfigError(AfbackupError):
    exit_code = ExitCode.CONFIG
    kind = "config"


class PreflightError(AfbackupError):
    exit_code = ExitCode.PREFLIGHT
    kind = "preflight"


class SourceError(AfbackupError):
    """pg_dump, the Airflow CLI, or the exec channel failed."""

    exit_code = ExitCode.SOURCE
    kind = "source"


class StorageError(AfbackupError):
    exit_code = ExitCode.STORAGE
    kind = "storage"


class CryptoError(AfbackupError):
    exit_code = ExitCode.CRYPTO
    kind = "crypto"


class IntegrityError(AfbackupError):
    exit_code = ExitCode.INTEGRITY
    kind = "integrity"


class NotFoundError(IntegrityError):
    """A backup, or an object a manifest lists, does not exist (exit 8: the backup is not usable)."""


class LockedError(AfbackupError):
    exit_code = ExitCode.LOCKED
    kind = "locked"


class DrillFailed(AfbackupError):
    exit_code = ExitCode.DRILL_FAILED
    kind = "drill"


class RestoreError(AfbackupError):
    """A load into the target database failed (the target may be partially restored)."""

    exit_code = ExitCode.SOURCE
    kind = "restore"


class AirflowApiError(SourceError):
    """The Airflow REST API answered with an error (an RFC 7807 problem document, or the body it sent), or
    could not be reached. 401/403 are configuration errors (exit 3: fix ``[airflow.api]`` credentials);
    anything else is a source error (exit 5). ``status`` is 0 when no HTTP answer came."""

    kind = "airflow_api"

    def __init__(self, message: str, *, status: int = 0, title: str = "", detail: str = "", hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.title = title
        self.detail = detail

    @property
    def exit_code(self) -> ExitCode:  # type: ignore[override]
        return ExitCode.CONFIG if self.status in (401, 403) else ExitCode.SOURCE


class Interrupted(AfbackupError):
    """The run received a terminating signal; exit code 128 + signal number."""

    kind = "signal"

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by signal {signum}", hint="nothing was committed")
        self.signum = signum

    @property
    def exit_code(self) -> int:  # type: ignore[override]  # per instance (128 + signal), not per class
        return ExitCode.SIGNAL_BASE + self.signum
