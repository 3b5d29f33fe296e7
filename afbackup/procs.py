"""Subprocess helpers: argv lists only, checked exit codes, bounded stderr, clean env.

A ``ChildProcess`` is a pipeline stage: a context manager that, on a clean
exit, waits and checks the exit code, and on an exception kills the child and
lets the original error through. Errors carry the argv, exit code and the
tail of stderr. ``shell=True`` is never used, and Popen keeps its default
``restore_signals=True`` so children see SIGPIPE normally.
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import IO

from afbackup.errors import AfbackupError, PreflightError, SourceError

logger = logging.getLogger(__name__)

STDERR_TAIL_LINES = 40
# Our own secrets never reach a child unless given to it explicitly.
_SCRUBBED_PREFIXES = ("AFBACKUP_",)
_SCRUBBED_NAMES = frozenset({"PGPASSWORD"})


def child_env(extra: Mapping[str, str] | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a child: ours minus afbackup's secrets, plus ``extra``."""
    env = {
        key: value
        for key, value in (os.environ if base is None else base).items()
        if key not in _SCRUBBED_NAMES and not key.startswith(_SCRUBBED_PREFIXES)
    }
    env.update(extra or {})
    return env


def find_program(name: str, bin_dir: str = "", *, what: str = "") -> str:
    """Absolute path of a program, or ``PreflightError`` (exit 4) saying how to fix it."""
    if bin_dir:
        candidate = os.path.join(bin_dir, name)
        if os.access(candidate, os.X_OK):
            return candidate
        raise PreflightError(f"{name} not found in {bin_dir}", hint=f"install {what or name} or fix the bin dir")
    found = shutil.which(name)
    if not found:
        raise PreflightError(f"{name} not found on PATH", hint=f"install {what or name} or set its bin dir")
    return found


def pipe(stream: IO[bytes] | None) -> IO[bytes]:
    """A pipe that Popen was asked to create (``stdin/stdout/stderr=PIPE``): never None."""
    if stream is None:
        raise RuntimeError("the child process was started without this pipe")
    return stream


class StderrTail:
    """Drains a child's stderr in a thread, keeping only the last lines."""

    def __init__(self, stream: IO[bytes], on_line: Callable[[str], None] | None = None) -> None:
        self._lines: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._on_line = on_line
        self._thread = threading.Thread(target=self._drain, args=(stream,), daemon=True)
        self._thread.start()

    def _drain(self, stream: IO[bytes]) -> None:
        with stream:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip()
                if line:
                    self._lines.append(line[:1000])
                    if self._on_line:
                        self._on_line(line)

    def text(self, limit: int = 600) -> str:
        self._thread.join(timeout=5)
        return " | ".join(self._lines)[-limit:]


class ChildProcess:
    """A child process used as a streaming pipeline stage.

    ``with ChildProcess(argv, stage="pg_dump") as proc: data = proc.stdout.read(...)``
    On leaving the block normally, ``finish()`` checks the exit code.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        stage: str,
        env: Mapping[str, str] | None = None,
        stdin: int | None = subprocess.DEVNULL,
        stdout: int | None = subprocess.PIPE,
        error: type[AfbackupError] = SourceError,
        on_stderr_line: Callable[[str], None] | None = None,
        hint_for: Callable[[str], str] | None = None,
    ) -> None:
        self.argv = list(argv)
        self.stage = stage
        self._error = error
        self._hint_for = hint_for
        try:
            self.proc = subprocess.Popen(
                self.argv, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, env=dict(env) if env else None
            )
        except OSError as exc:
            raise error(f"cannot start {self.argv[0]}: {exc.strerror}", stage=stage) from None
        self.stdin = self.proc.stdin
        self.stdout = self.proc.stdout
        self.stderr = StderrTail(pipe(self.proc.stderr), on_stderr_line)
        logger.debug("started %s (pid %d)", self.argv[0], self.proc.pid)

    def __enter__(self) -> ChildProcess:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.finish()
        else:
            self.kill()

    def kill(self) -> None:
        """Stop the child now (used on the failure path); never raises."""
        if self.proc.poll() is None:
            self.proc.kill()
        self._close_pipes()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - kill cannot be ignored
            logger.warning("%s (pid %d) did not exit after SIGKILL", self.argv[0], self.proc.pid)

    def finish(self, timeout: float | None = None) -> None:
        """Wait for the child; a non-zero exit raises the stage's error with the stderr tail."""
        self._close_pipes()
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise self._error(f"{self.argv[0]} did not finish within {timeout:g}s", stage=self.stage) from None
        self.check(code)

    def check(self, code: int | None = None) -> None:
        code = self.proc.returncode if code is None else code
        if code != 0:
            reason = f"killed by signal {-code}" if code < 0 else f"exited with {code}"
            tail = self.stderr.text()
            hint = self._hint_for(tail) if self._hint_for else ""
            raise self._error(f"{os.path.basename(self.argv[0])} {reason}: {tail}", stage=self.stage, hint=hint)

    def _close_pipes(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass


def run_checked(
    argv: Sequence[str],
    *,
    stage: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
    error: type[AfbackupError] = SourceError,
    input: bytes | None = None,
) -> str:
    """Run a short command to completion; return its stdout as text."""
    try:
        done = subprocess.run(
            list(argv), input=input, capture_output=True, env=dict(env) if env else None, timeout=timeout
        )
    except FileNotFoundError:
        raise PreflightError(f"{argv[0]} not found", stage=stage, hint="install it or fix its path") from None
    except subprocess.TimeoutExpired:
        raise error(f"{os.path.basename(argv[0])} did not finish within {timeout:g}s", stage=stage) from None
    if done.returncode != 0:
        tail = done.stderr.decode("utf-8", "replace").strip()[-600:]
        raise error(f"{os.path.basename(argv[0])} exited with {done.returncode}: {tail}", stage=stage)
    return done.stdout.decode("utf-8", "replace")
