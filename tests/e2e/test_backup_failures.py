"""Every way a backup can fail: the documented exit code, one clear line, nothing that looks complete.

After each failure: no manifest, no multipart upload left behind, and the
attempt is shown by ``list --all`` as failed (never by ``list``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

import psycopg
import pytest

from tests.harness.faultproxy import Fault, FaultProxy, complete_upload, upload_part
from tests.harness.pg import free_port
from tests.helpers import bucket_of, manifests, pending_uploads, s3_keys

# slow: every test runs a backup, restore or drill through the CLI with Airflow
pytestmark = [pytest.mark.airflow, pytest.mark.slow]


def _script(path, body: str) -> str:
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def _fake_pg_bin(tmp_path, body: str, version: str | None = None) -> str:
    """A pg_bin_dir whose pg_dump runs ``body`` (``--version`` answers like the real one unless given)."""
    bin_dir = tmp_path / "pgbin"
    bin_dir.mkdir()
    real = shutil.which("pg_dump")
    answer = f'echo "{version}"' if version else f'exec {real} --version'
    _script(bin_dir / "pg_dump", f'if [ "$1" = "--version" ]; then {answer}; exit 0; fi\n{body}\n')
    return str(bin_dir)


def _assert_nothing_committed(env, cfg, path, done, code: int, words: str):
    assert done.returncode == code, (done.returncode, done.stderr)
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and words in errors[0], done.stderr
    bucket = bucket_of(cfg)
    assert manifests(env, bucket) == []
    assert pending_uploads(env, bucket) == []
    assert json.loads(env.afbackup(path, "list", "--json").stdout) == []


def test_pg_dump_dying_mid_stream_aborts_the_upload(env, tmp_path):
    airflow, db = env.airflow("3")
    pg_bin = _fake_pg_bin(tmp_path, "head -c 20000000 /dev/urandom\nexit 73")
    cfg = env.config(db, airflow=airflow, database={"pg_bin_dir": pg_bin})
    path = env.write_config(cfg)
    done = env.afbackup(path, "backup", airflow=airflow)
    _assert_nothing_committed(env, cfg, path, done, 5, "pg_dump: pg_dump exited with 73")
    attempts = json.loads(env.afbackup(path, "list", "--all", "--json").stdout)
    assert [a["state"] for a in attempts] == ["failed"] and "exited with 73" in attempts[0]["detail"]


def test_pg_dump_older_than_the_server_is_refused(env, tmp_path):
    airflow, db = env.airflow("3")
    pg_bin = _fake_pg_bin(tmp_path, "exit 99", version="pg_dump (PostgreSQL) 13.4")
    cfg = env.config(db, airflow=airflow, database={"pg_bin_dir": pg_bin})
    path = env.write_config(cfg)
    done = env.afbackup(path, "backup", airflow=airflow)
    _assert_nothing_committed(env, cfg, path, done, 4, "older than the PostgreSQL 15 server")


def test_lock_wait_timeout_fails_instead_of_waiting_forever(env):
    airflow, db = env.airflow("3")
    cfg = env.config(db, airflow=airflow, database={"lock_wait_timeout": "1s"})
    path = env.write_config(cfg)
    with psycopg.connect(env.pg.dsn(db)) as blocker:
        blocker.execute("LOCK TABLE dag_run IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        done = env.afbackup(path, "backup", airflow=airflow)
        elapsed = time.monotonic() - started
    _assert_nothing_committed(env, cfg, path, done, 5, "LOCK TABLE public.dag_run")
    assert "another session holds a lock" in done.stderr
    assert elapsed < 60


@pytest.mark.parametrize("behaviour,words", [
    ('echo "Traceback: airflow is broken" >&2; exit 1', "the Airflow agent exited with 1"),
    ('echo "Exported 3 connections to -"; echo "{not json"; exit 0', "sent no reply"),
    ('cat > /dev/null & echo "AFBACKUP-AGENT/1 999 abc"; echo "{}"; exit 0', "damaged or truncated"),
])
def test_export_failing_or_printing_garbage(env, tmp_path, behaviour, words):
    airflow, db = env.airflow("3")
    python = _script(tmp_path / "python", behaviour)
    cfg = env.config(db, airflow=airflow)
    cfg["airflow"]["python"] = [python]
    path = env.write_config(cfg)
    done = env.afbackup(path, "backup", airflow=airflow)
    _assert_nothing_committed(env, cfg, path, done, 5, words)


def test_missing_recipient_key(env):
    airflow, db = env.airflow("3")
    cfg = env.config(db, airflow=airflow, private_keys=False,  # the backup keyring: no stranger key
                     encryption={"recipients": [env.keys.fingerprints["stranger"]]})
    path = env.write_config(cfg)
    done = env.afbackup(path, "backup", airflow=airflow)
    _assert_nothing_committed(env, cfg, path, done, 7, "is not in the keyring")


def test_unreachable_s3_endpoint(env):
    airflow, db = env.airflow("3")
    cfg = env.config(db, airflow=airflow)
    cfg["storage"].update(endpoint_url=f"http://127.0.0.1:{free_port()}", retries=0)
    path = env.write_config(cfg)
    done = env.afbackup(path, "backup", airflow=airflow)
    assert done.returncode == 6, done.stderr
    assert "Could not connect to the endpoint" in done.stderr


@pytest.mark.parametrize("fault", [
    Fault(upload_part(2), status=500, code="InternalError"),
    Fault(complete_upload(), status=200, code="InternalError"),
], ids=["upload-part-500", "complete-200-with-error-body"])
def test_s3_failing_mid_upload_aborts_it(env, tmp_path, fault):
    airflow, db = env.airflow("3")
    pg_bin = _fake_pg_bin(tmp_path, f"head -c 16000000 /dev/urandom\nexec {shutil.which('pg_dump')} \"$@\" >/dev/null")
    with FaultProxy(env.s3.endpoint) as proxy:
        proxy.faults.append(fault)
        cfg = env.config(db, airflow=airflow, database={"pg_bin_dir": pg_bin})
        cfg["storage"].update(endpoint_url=proxy.endpoint, retries=0)
        path = env.write_config(cfg)
        done = env.afbackup(path, "backup", airflow=airflow)
        assert proxy.fired, "the fault was never injected"
        _assert_nothing_committed(env, cfg, path, done, 6, "InternalError")


def test_second_backup_exits_9_naming_the_holder(env, tmp_path):
    # GIVEN a backup that is still running (its pg_dump is slow)
    airflow, db = env.airflow("3")
    pg_bin = _fake_pg_bin(tmp_path, f"sleep 4\nexec {shutil.which('pg_dump')} \"$@\"")
    slow_cfg = env.config(db, airflow=airflow, database={"pg_bin_dir": pg_bin})
    slow_path = env.write_config(slow_cfg)
    first = subprocess.Popen([sys.executable, "-m", "afbackup", "--config", str(slow_path), "backup"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env.afbackup_env(airflow))
    lock_key = slow_cfg["storage"]["url"].split("/", 3)[3] + "/v1/locks/writer.lock"
    deadline = time.monotonic() + 60
    while lock_key not in s3_keys(env, bucket_of(slow_cfg)) and time.monotonic() < deadline:
        time.sleep(0.1)  # polling for the first run to hold the lock, not waiting for time to pass
    assert lock_key in s3_keys(env, bucket_of(slow_cfg)), "the first backup never took the lock"
    # WHEN a second backup starts on the same prefix
    second_cfg = env.config(db, airflow=airflow)
    second_cfg["storage"]["url"] = slow_cfg["storage"]["url"]
    second = env.afbackup(env.write_config(second_cfg), "backup", airflow=airflow)
    out, err = first.communicate(timeout=120)
    # THEN the second exits 9 naming the holder, and the first completes
    assert second.returncode == 9, second.stderr
    assert "another run holds the lock" in second.stderr and f"pid {first.pid}" in second.stderr
    assert first.returncode == 0, err
    assert len(manifests(env, bucket_of(slow_cfg))) == 1


def test_sigterm_mid_backup_commits_nothing_and_releases_the_lock(env, tmp_path):
    airflow, db = env.airflow("3")
    pg_bin = _fake_pg_bin(tmp_path, "head -c 12000000 /dev/urandom; sleep 30")
    cfg = env.config(db, airflow=airflow, database={"pg_bin_dir": pg_bin})
    # this run's own directory on tmpfs: backups on the other test worker export into /dev/shm too
    exports_root = tempfile.mkdtemp(prefix="sigterm-", dir="/dev/shm")
    cfg["airflow"]["tmp_dir"] = exports_root
    path = env.write_config(cfg)
    proc = subprocess.Popen([sys.executable, "-m", "afbackup", "--config", str(path), "backup"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env.afbackup_env(airflow))
    bucket = bucket_of(cfg)
    deadline = time.monotonic() + 60
    while not pending_uploads(env, bucket) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert pending_uploads(env, bucket), "the upload never started"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert manifests(env, bucket) == [] and pending_uploads(env, bucket) == []
    keys = [k for k in env.s3.client().list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert not any(k["Key"].endswith("writer.lock") for k in keys)
    leftovers = os.listdir(exports_root)
    shutil.rmtree(exports_root)
    assert leftovers == []  # the agent's plaintext exports are gone
