"""The clock seam (afbackup/clock.py): lock expiry and prune's incomplete_after follow the clock the run is given.

Time moves by ``FakeClock.advance``; nothing here sleeps. The end-to-end tests that used to sleep until a
lock went stale or a backup got old run the CLI with ``advance=`` instead (tests/harness/clock.py).
"""

from __future__ import annotations

import datetime as dt
import json
import logging

import pytest

from afbackup import manifest as mf
from afbackup.cli import run
from afbackup.clock import SYSTEM_CLOCK
from afbackup.errors import LockedError
from afbackup.lock import WRITER_LOCK, StoreLock
from afbackup.storage.local import LocalStore
from tests.harness.clock import AheadClock, FakeClock

TTL = 3.0


@pytest.fixture(autouse=True)
def _restore_logging():
    """run() points the afbackup logger at this test's captured stderr; undo that afterwards."""
    root = logging.getLogger("afbackup")
    saved = (list(root.handlers), root.level, root.propagate)
    yield
    root.handlers[:], root.level, root.propagate = saved[0], saved[1], saved[2]


@pytest.fixture
def store(tmp_path) -> LocalStore:
    return LocalStore(f"file://{tmp_path}/store")


def dead_lock(store: LocalStore, taken: dt.datetime, ttl: float = TTL) -> None:
    """The lock a killed backup leaves: taken at ``taken``, never refreshed again."""
    doc = {"operation": "backup", "host": "node-gone", "pid": 31337, "started_at": mf.iso(taken),
           "expires_at": mf.iso(taken + dt.timedelta(seconds=ttl)), "token": "dead"}
    store.put_bytes(WRITER_LOCK, json.dumps(doc).encode(), create_only=False)


def test_system_clock_is_aware_utc_now():
    before = dt.datetime.now(dt.UTC)
    now = SYSTEM_CLOCK.now()
    assert now.tzinfo is not None and now.utcoffset() == dt.timedelta(0)
    assert before <= now <= dt.datetime.now(dt.UTC)


def test_a_dead_runs_lock_is_taken_over_once_its_ttl_has_passed_on_the_clock(store, caplog):
    # GIVEN the lock of a backup killed at t0, with a 3 s TTL
    clock = FakeClock()
    dead_lock(store, clock.now())
    # WHEN a prune tries to take it 2 s later
    clock.advance(2)
    with pytest.raises(LockedError, match="another run holds the lock .* backup by node-gone pid 31337"):
        StoreLock(store, "prune", ttl=60, clock=clock.now).acquire()
    # THEN it is refused; and 3.5 s after t0 the stale lock is taken over, with a warning naming its holder
    clock.advance(1.5)
    with caplog.at_level(logging.WARNING, logger="afbackup"), StoreLock(store, "prune", ttl=60, clock=clock.now):
        held = json.loads(store.get_bytes(WRITER_LOCK))
        assert held["operation"] == "prune" and held["expires_at"] == mf.iso(clock.now() + dt.timedelta(seconds=60))
    assert "taking over a stale lock: backup by node-gone pid 31337" in caplog.text
    assert store.head(WRITER_LOCK) is None  # released


def test_the_cli_compares_against_the_clock_it_is_given(store, tmp_path, capsys):
    # GIVEN a dead run's lock that expires 3 s after it was taken, "now"
    config = tmp_path / "afbackup.toml"
    config.write_text(f'[storage]\nurl = "file://{tmp_path}/store"\n[encryption]\nrequire_signature = false\n')
    taken = SYSTEM_CLOCK.now()
    dead_lock(store, taken)
    # WHEN break-lock --yes runs on a clock 1 s later, the lock is live: refused (exit 9), kept
    assert run(["--config", str(config), "break-lock", "--yes"], clock=FakeClock(taken + dt.timedelta(seconds=1))) == 9
    assert store.head(WRITER_LOCK) is not None
    # AND on a clock 3.5 s ahead of the system clock (what `advance=3.5` gives a CLI child), it is stale: removed
    capsys.readouterr()
    assert run(["--config", str(config), "break-lock", "--yes"], clock=AheadClock(3.5)) == 0
    assert "removed stale lock held by backup by node-gone pid 31337" in capsys.readouterr().err
    assert store.head(WRITER_LOCK) is None


def test_list_shows_an_attempt_running_only_while_its_lock_is_live_on_the_clock(store, tmp_path, capsys):
    # GIVEN an attempt whose backup took the lock at t0 and died
    config = tmp_path / "afbackup.toml"
    config.write_text(f'[storage]\nurl = "file://{tmp_path}/store"\n[encryption]\nrequire_signature = false\n')
    t0 = SYSTEM_CLOCK.now().replace(microsecond=0)
    backup_id = mf.new_backup_id(t0)
    store.put_bytes(mf.key_of(backup_id, mf.ATTEMPT_NAME), json.dumps({"started_at": mf.iso(t0)}).encode())
    dead_lock(store, t0)

    def states(clock) -> list[str]:
        capsys.readouterr()
        assert run(["--config", str(config), "list", "--all", "--json"], clock=clock) == 0
        return [entry["state"] for entry in json.loads(capsys.readouterr().out)]

    # THEN it is "running" while the lock is live, "incomplete" once the lock's TTL has passed
    assert states(FakeClock(t0 + dt.timedelta(seconds=1))) == ["running"]
    assert states(FakeClock(t0 + dt.timedelta(seconds=TTL + 0.5))) == ["incomplete"]
