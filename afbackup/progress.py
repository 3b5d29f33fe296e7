"""Progress: a bar (bytes, rate, stage) on a terminal, throttled log events otherwise.

CronJobs have no terminal: they get an ``afbackup.progress`` log event at
most every ``interval`` seconds (JSON with ``--log-format json``), so a
stuck backup is visible in the logs without flooding them.
"""

from __future__ import annotations

import logging
import sys
import threading
import time

from afbackup.config.units import format_bytes
from afbackup.log import event

logger = logging.getLogger("afbackup.progress")


class Progress:
    def __init__(self, action: str, *, enabled: bool | None = None, interval: float = 10.0) -> None:
        self.action = action
        self.interval = interval
        self._lock = threading.Lock()
        self._stage = ""
        self._bytes = 0
        self._stage_started = self._last_log = time.monotonic()
        interactive = sys.stderr.isatty() if enabled is None else enabled
        self._bar = _RichBar() if interactive and logger.isEnabledFor(logging.INFO) else None

    def stage(self, name: str) -> None:
        with self._lock:
            self._stage, self._bytes = name, 0
            self._stage_started = time.monotonic()
        if self._bar:
            self._bar.stage(name)
        logger.debug("%s: %s", self.action, name, extra=event(action=self.action, stage=name, state="begin"))

    def advance(self, nbytes: int) -> None:
        with self._lock:
            self._bytes += nbytes
            now = time.monotonic()
            due = now - self._last_log >= self.interval
            if due:
                self._last_log = now
            done, elapsed = self._bytes, now - self._stage_started
        if self._bar:
            self._bar.advance(nbytes)
        elif due:
            rate = done / elapsed / 2**20 if elapsed > 0 else 0.0
            logger.info("%s %s: %s so far (%.1f MiB/s)", self.action, self._stage, format_bytes(done), rate,
                        extra=event(action=self.action, stage=self._stage, state="progress", bytes=done,
                                    mib_per_s=round(rate, 1)))

    def close(self) -> None:
        if self._bar:
            self._bar.close()


class _RichBar:
    """A rich progress bar on stderr (imported only on a terminal)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, TextColumn, TimeElapsedColumn, TransferSpeedColumn
        from rich.progress import Progress as RichProgress

        self._progress = RichProgress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(binary_units=True),
            TransferSpeedColumn(), TimeElapsedColumn(), console=Console(stderr=True), transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task("starting", total=None)

    def stage(self, name: str) -> None:
        self._progress.update(self._task, description=name, completed=0)

    def advance(self, nbytes: int) -> None:
        self._progress.advance(self._task, nbytes)

    def close(self) -> None:
        self._progress.stop()
