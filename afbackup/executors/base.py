"""Where an Airflow command runs: the executor interface.

An executor runs one argv *where Airflow lives* (a local process, or a process
in the scheduler pod through the Kubernetes API) and returns its exit code,
stdout and stderr kept apart. Everything above this interface (the agent
protocol in ``afbackup.sources.airflow``) is the same for every executor.

Contract every implementation keeps:
- ``stdin`` is sent in full; implementations must not rely on the remote side
  seeing EOF (Kubernetes exec protocol v4 cannot half-close stdin), so callers
  send length-prefixed input and the remote reads exactly that many bytes.
- stdout is returned byte-exact (binary-safe) and bounded by ``max_stdout``
  bytes; more is an ``ExecError``. stderr keeps only its last ``STDERR_TAIL``
  bytes (it is for diagnostics and may carry log noise).
- The exit code comes from the process (or the exec status channel); a missing
  exit status is an error, never a success.
- ``timeout`` (seconds) is an overall deadline; exceeding it kills the command
  and raises ``ExecError``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol

from afbackup.errors import SourceError

STDERR_TAIL = 64 * 1024
DEFAULT_MAX_STDOUT = 256 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class ExecResult:
    """What a finished command returned. ``stderr`` is the tail only."""

    returncode: int
    stdout: bytes
    stderr: bytes

    def stderr_tail(self, limit: int = 400) -> str:
        """The last ``limit`` characters of stderr, decoded for an error message."""
        text = self.stderr.decode("utf-8", "replace").strip()
        return text[-limit:]


class ExecError(SourceError):
    """The command could not be run, or its channel failed (exit code 5)."""


class CommandNotFound(ExecError):
    """The program is not installed where the executor runs it."""


class Executor(Protocol):
    """Runs an argv where Airflow lives. Implementations: local, kubernetes."""

    name: str

    def describe(self) -> str:
        """Where commands run, for logs and error messages (no secrets)."""

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes = b"",
        timeout: float,
        max_stdout: int = DEFAULT_MAX_STDOUT,
    ) -> ExecResult:
        """Run ``argv`` to completion; raise ``ExecError`` if it cannot be run."""
