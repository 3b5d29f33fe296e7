"""One writer per prefix: prune vs a running backup, stale-lock takeover, and a SIGKILLed backup cleaned up.

(Two concurrent backups: tests/e2e/test_backup_failures.py::test_second_backup_exits_9_naming_the_holder.)
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time

import pytest

from afbackup import manifest as mf
from tests.helpers import bucket_of, manifests, pending_uploads, s3_keys

# slow: each test runs backups (killed, slow, or taking over a lock)
pytestmark = [pytest.mark.airflow, pytest.mark.slow]

LOCK_KEY = "airflow/v1/locks/writer.lock"
RETENTION = {"keep_last": 3, "min_keep": 1, "incomplete_after": "1s"}


@pytest.fixture(scope="module")
def db(env):
    return env.airflow("3")[1]


def _slow_pg_bin(tmp_path, body: str) -> str:
    """A pg_bin_dir whose pg_dump runs ``body`` (``--version`` answers like the real one)."""
    bin_dir = tmp_path / "pgbin"
    bin_dir.mkdir()
    script = bin_dir / "pg_dump"
    script.write_text(f'#!/bin/bash\nif [ "$1" = "--version" ]; then exec {shutil.which("pg_dump")} --version; fi\n'
                      f"{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(bin_dir)


def _start_backup(env, path) -> subprocess.Popen:
    """``afbackup backup`` in its own process group (so the test can kill it and its pg_dump at once)."""
    return subprocess.Popen([sys.executable, "-m", "afbackup", "--config", str(path), "backup"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env.afbackup_env(),
                            start_new_session=True)


def _wait_for(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_prune_while_a_backup_runs_exits_9_and_its_dry_run_shows_it_running(env, db, tmp_path):
    # GIVEN a backup that is running (its pg_dump is slow)
    pg_bin = _slow_pg_bin(tmp_path, f'sleep 8\nexec {shutil.which("pg_dump")} "$@"')
    cfg = env.config(db, database={"pg_bin_dir": pg_bin}, retention=RETENTION)
    path = env.write_config(cfg)
    bucket = bucket_of(cfg)
    backup = _start_backup(env, path)
    try:
        _wait_for(lambda: any(k.endswith(mf.ATTEMPT_NAME) for k in s3_keys(env, bucket)), "the attempt record")
        # WHEN prune --confirm starts on the same prefix
        confirm = env.afbackup(path, "prune", "--confirm")
        dry = env.afbackup(path, "prune", "--json")
        listing = json.loads(env.afbackup(path, "list", "--all", "--json").stdout)
    finally:
        out, err = backup.communicate(timeout=120)
    # THEN it exits 9 naming the holder, and deletes nothing
    assert confirm.returncode == 9, confirm.stderr
    assert "another run holds the lock" in confirm.stderr and "backup by" in confirm.stderr
    assert f"pid {backup.pid}" in confirm.stderr
    # AND the dry run (no lock taken) shows the backup's attempt as running, never as a leftover to delete
    assert dry.returncode == 0, dry.stderr
    attempts = json.loads(dry.stdout)["plan"]["attempts"]
    assert [(a["state"], a["action"]) for a in attempts] == [("running", "keep")]
    assert [r["state"] for r in listing] in (["incomplete"], ["running"])
    # AND the backup completes
    assert backup.returncode == 0, err
    assert len(manifests(env, bucket)) == 1


def test_a_stale_lock_is_taken_over_with_a_warning_naming_its_holder(env, db):
    # GIVEN a lock left by a run that died an hour ago
    cfg = env.config(db, backup={"lock_ttl": "10m"})
    path = env.write_config(cfg)
    bucket = bucket_of(cfg)
    dead = {"operation": "backup", "host": "node-gone", "pid": 31337, "started_at": "2026-01-01T03:00:00.000Z",
            "expires_at": mf.iso(mf.utcnow() - dt.timedelta(hours=1)), "token": "dead"}
    env.s3.client().put_object(Bucket=bucket, Key=LOCK_KEY, Body=json.dumps(dead).encode())
    # WHEN a backup runs
    done = env.afbackup(path, "backup")
    # THEN it succeeds, says whose lock it took over, and releases its own
    assert done.returncode == 0, done.stderr
    assert "taking over a stale lock: backup by node-gone pid 31337" in done.stderr
    assert len(manifests(env, bucket)) == 1 and LOCK_KEY not in s3_keys(env, bucket)


def test_a_killed_backup_is_invisible_and_the_next_prune_cleans_it_up(env, db, tmp_path):
    # GIVEN a backup SIGKILLed (with its pg_dump) while its multipart upload is under way, with a 3 s lock TTL
    pg_bin = _slow_pg_bin(tmp_path, "head -c 80000000 /dev/urandom; sleep 30")
    cfg = env.config(db, database={"pg_bin_dir": pg_bin}, backup={"lock_ttl": "3s"}, retention=RETENTION)
    path = env.write_config(cfg)
    bucket = bucket_of(cfg)
    backup = _start_backup(env, path)
    _wait_for(lambda: pending_uploads(env, bucket), "the multipart upload")
    os.killpg(backup.pid, signal.SIGKILL)
    backup.communicate(timeout=30)
    # THEN list shows nothing; list --all shows the attempt (incomplete; running while its lock is live)
    assert json.loads(env.afbackup(path, "list", "--json").stdout) == []
    attempts = json.loads(env.afbackup(path, "list", "--all", "--json").stdout)
    assert [a["state"] for a in attempts] in (["incomplete"], ["running"])
    assert manifests(env, bucket) == [] and pending_uploads(env, bucket) and LOCK_KEY in s3_keys(env, bucket)
    # WHEN prune --confirm runs once the dead run's lock is stale (its clock 3.5 s ahead: no sleeping)
    done = env.afbackup(path, "prune", "--confirm", "--json", advance=3.5)
    # THEN it takes the stale lock over, deletes the attempt's objects and aborts its upload
    assert done.returncode == 0, done.stderr
    assert "taking over a stale lock: backup by" in done.stderr
    result = json.loads(done.stdout)["result"]
    assert result["cleaned"] == [attempts[0]["backup_id"]] and len(result["aborted_uploads"]) == 1
    assert s3_keys(env, bucket) == [] and pending_uploads(env, bucket) == []
