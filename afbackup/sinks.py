"""Where a dump goes while an archive is read: a private spool file, or ``pg_restore --list``.

Spooled plaintext lives only in a private 0700 directory that is removed on
every exit path (exceptions, and SIGTERM/SIGINT, which the CLI turns into an
exception); the user is told where it is. A SIGKILL cannot be handled: the
directory name says what it is, for a manual cleanup.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from afbackup.errors import IntegrityError
from afbackup.procs import StderrTail, pipe

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def private_dir(base: str = "", purpose: str = "decrypted data") -> Iterator[Path]:
    """A 0700 directory for plaintext, removed when the block exits however it exits."""
    path = Path(tempfile.mkdtemp(prefix="afbackup-spool-", dir=base or None))
    os.chmod(path, 0o700)
    logger.info("spooling %s to private directory %s (removed on exit)", purpose, path)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class SpoolSink:
    """Writes the dump to a new 0600 file (pg_restore -j needs a regular, seekable file)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")

    def write(self, data: bytes) -> None:
        self._fh.write(data)

    def finish(self) -> None:
        self._fh.close()

    def abort(self) -> None:
        self._fh.close()
        self.path.unlink(missing_ok=True)


class TocSink:
    """Feeds the dump to ``pg_restore --list``: proves the dump's header and table of contents are readable.

    pg_restore reads only what it needs from a pipe and may exit before the end;
    the rest of the dump is still read (and hashed) by the caller.
    """

    def __init__(self, pg_restore: str) -> None:
        self._proc = subprocess.Popen([pg_restore, "--list"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE)
        self._stdin = pipe(self._proc.stdin)
        self._stderr = StderrTail(pipe(self._proc.stderr))
        self._out: list[bytes] = []
        self._reader = _Drain(pipe(self._proc.stdout), self._out)
        self._open = True
        self.toc = ""

    def write(self, data: bytes) -> None:
        if not self._open:
            return
        try:
            self._stdin.write(data)
        except BrokenPipeError:
            self._open = False

    def finish(self) -> None:
        with contextlib.suppress(BrokenPipeError):
            self._stdin.close()
        code = self._proc.wait(timeout=300)
        self._reader.join()
        if code != 0:
            raise IntegrityError(f"pg_restore --list cannot read the dump: {self._stderr.text()}",
                                 hint="the dump is damaged, or this pg_restore is older than the dump's pg_dump")
        self.toc = b"".join(self._out).decode("utf-8", "replace")

    def abort(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        with contextlib.suppress(OSError):
            self._stdin.close()
        self._proc.wait()


class _Drain:
    """Collects a pipe's output in a thread (so the child never blocks on a full pipe)."""

    def __init__(self, stream: IO[bytes], sink: list[bytes]) -> None:
        self._thread = threading.Thread(target=lambda: sink.extend(iter(lambda: stream.read(65536), b"")),
                                        daemon=True)
        self._thread.start()

    def join(self) -> None:
        self._thread.join(timeout=60)
