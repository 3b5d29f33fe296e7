"""Clocks for tests: move time instead of sleeping until it has passed (afbackup/clock.py is the seam).

- ``FakeClock``: in-process; starts at a fixed moment and moves only when told (``advance``).
- ``AheadClock``: the system clock moved ahead by a fixed amount, for a real CLI run in a child process
  (``python -m tests.harness.clock SECONDS ARGS…``, used by ``Environment.afbackup(..., advance=SECONDS)``):
  the child sees the time as if the test had slept SECONDS before starting it.
"""

from __future__ import annotations

import datetime as dt
import sys

from afbackup.clock import SYSTEM_CLOCK

EPOCH = dt.datetime(2026, 11, 24, 4, 0, 0, tzinfo=dt.UTC)


class FakeClock:
    def __init__(self, start: dt.datetime = EPOCH) -> None:
        self._now = start

    def now(self) -> dt.datetime:
        return self._now

    def advance(self, seconds: float) -> dt.datetime:
        self._now += dt.timedelta(seconds=seconds)
        return self._now


class AheadClock:
    def __init__(self, seconds: float) -> None:
        self.ahead = dt.timedelta(seconds=seconds)

    def now(self) -> dt.datetime:
        return SYSTEM_CLOCK.now() + self.ahead


def main(argv: list[str]) -> int:
    from afbackup.cli import run

    return run(argv[1:], clock=AheadClock(float(argv[0])))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
