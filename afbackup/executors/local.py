"""The local executor: Airflow commands run as a child process on this machine."""

from __future__ import annotations

import logging
import os
import subprocess
import threading
from collections.abc import Sequence
from typing import IO

from afbackup.executors.base import DEFAULT_MAX_STDOUT, STDERR_TAIL, CommandNotFound, ExecError, ExecResult
from afbackup.procs import child_env, pipe

logger = logging.getLogger(__name__)


class LocalExecutor:
    """Runs argv with this process's environment, minus afbackup's own secrets."""

    name = "local"

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self._extra_env = dict(env or {})

    def describe(self) -> str:
        return "this machine"

    def run(
        self, argv: Sequence[str], *, stdin: bytes = b"", timeout: float, max_stdout: int = DEFAULT_MAX_STDOUT
    ) -> ExecResult:
        try:
            proc = subprocess.Popen(
                list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=child_env(self._extra_env), start_new_session=True,
            )
        except FileNotFoundError:
            raise CommandNotFound(f"{argv[0]} not found on this machine",
                                  hint="set [airflow] command/python to the Airflow installation") from None
        except OSError as exc:
            raise ExecError(f"cannot run {argv[0]}: {exc.strerror}") from None
        out, err = bytearray(), bytearray()
        readers = [
            threading.Thread(target=_drain, args=(pipe(proc.stdout), out, max_stdout + 1), daemon=True),
            threading.Thread(target=_drain, args=(pipe(proc.stderr), err, STDERR_TAIL, True), daemon=True),
        ]
        for reader in readers:
            reader.start()
        _feed(proc, stdin)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise ExecError(f"{os.path.basename(argv[0])} did not finish within {timeout:g}s",
                            hint="raise [airflow] timeout or check the Airflow database") from None
        for reader in readers:
            reader.join(timeout=10)
        if len(out) > max_stdout:
            raise ExecError(f"{os.path.basename(argv[0])} wrote more than {max_stdout} bytes to stdout")
        return ExecResult(returncode=code, stdout=bytes(out), stderr=bytes(err))


def _feed(proc: subprocess.Popen, data: bytes) -> None:
    try:
        if data:
            pipe(proc.stdin).write(data)
        pipe(proc.stdin).close()
    except BrokenPipeError:
        pass  # the child exited early; its exit code tells why


def _drain(stream: IO[bytes], sink: bytearray, limit: int, keep_tail: bool = False) -> None:
    """Read a pipe to EOF, keeping at most ``limit`` bytes (the head, or the tail)."""
    with stream:
        for chunk in iter(lambda: stream.read(65536), b""):
            sink += chunk
            if len(sink) > limit:
                if keep_tail:
                    del sink[: len(sink) - limit]
                else:
                    del sink[limit:]


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, 9)
    except ProcessLookupError:
        pass
    proc.wait()
