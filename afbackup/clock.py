"""The wall clock, injectable: code that compares times asks a ``Clock`` instead of reading the time itself.

What compares times: lock expiry (``lock``, ``break-lock``), freshness against ``max_age`` (``check``),
retention and ``incomplete_after`` (``prune``), the timestamps pushed as metrics (``notify``). The CLI
holds one clock per run (``AppContext.clock``, the system clock) and hands it, or the ``now`` it reads
once, down to those. Tests pass a fake clock and move it, instead of sleeping until time has passed
(``tests/harness/clock.py``; CONTRIBUTING.md).
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol


class Clock(Protocol):
    def now(self) -> dt.datetime:
        """The current time, timezone-aware UTC."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)


SYSTEM_CLOCK: Clock = SystemClock()
