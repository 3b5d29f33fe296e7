"""Damaged, altered, missing or untrusted backups: verify and restore fail with the documented codes,
and the target database is never touched."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time

import psutil
import pytest

from tests.helpers import bucket_of

# slow: every test runs a backup, restore or drill through the CLI with Airflow
pytestmark = [pytest.mark.airflow, pytest.mark.slow]


@pytest.fixture
def backed_up(env):
    """One fresh signed backup in its own bucket: (config dict, config path, backup id, archive key)."""
    airflow, db = env.airflow("3")
    cfg = env.config(db, airflow=airflow)
    path = env.write_config(cfg)
    done = env.afbackup(path, "backup", airflow=airflow)
    assert done.returncode == 0, done.stderr
    backup_id = done.stdout.strip()
    return cfg, path, backup_id, f"airflow/v1/backups/{backup_id}/"


def _object(env, cfg, key) -> bytes:
    return env.s3.client().get_object(Bucket=bucket_of(cfg), Key=key)["Body"].read()


def _replace(env, cfg, key, data: bytes) -> None:
    env.s3.client().put_object(Bucket=bucket_of(cfg), Key=key, Body=data)


def _verify_and_restore(env, path, ref: str = "latest"):
    """verify and restore ``ref`` (an untrusted backup is never `latest`: name it to see why it is refused)."""
    target = env.unique("untouched_")
    verify = env.afbackup(path, "verify", ref, "--json")
    restore = env.afbackup(path, "restore", ref, "--target-dsn", env.pg.dsn(target), "--yes")
    exists = env.pg.execute("postgres", "SELECT 1 FROM pg_database WHERE datname = %s", (target,))
    return verify, restore, exists


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_damaged_archive_fails_with_8_and_touches_nothing(env, backed_up, damage):
    cfg, path, _, prefix = backed_up
    key = prefix + "archive.tar.zst.gpg"
    data = bytearray(_object(env, cfg, key))
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
        _replace(env, cfg, key, bytes(data))
    elif damage == "truncate":
        _replace(env, cfg, key, bytes(data[:-10]))
    else:
        env.s3.client().delete_object(Bucket=bucket_of(cfg), Key=key)
    verify, restore, target_exists = _verify_and_restore(env, path)
    assert verify.returncode == 8, verify.stderr
    report = json.loads(verify.stdout)
    assert report["ok"] is False and "archive.tar.zst.gpg" in report["error"]
    assert restore.returncode == 8, restore.stderr
    assert "archive.tar.zst.gpg" in restore.stderr
    assert target_exists == []


def test_missing_private_key_fails_with_7(env, backed_up):
    cfg, _, _, _ = backed_up
    cfg["encryption"]["gnupghome"] = str(env.backup_keys.home)  # public keys only: cannot decrypt
    path = env.write_config(cfg)
    verify, restore, target_exists = _verify_and_restore(env, path)
    assert verify.returncode == 7 and "No secret key" in verify.stderr
    assert restore.returncode == 7 and target_exists == []


def test_manifest_signed_by_an_untrusted_key_fails_with_7(env, backed_up, tmp_path):
    cfg, path, backup_id, prefix = backed_up
    manifest = tmp_path / "manifest.json"
    manifest.write_bytes(_object(env, cfg, prefix + "manifest.json"))
    stranger = env.keys.fingerprints["stranger"]
    env.keys.gpg("--local-user", stranger, "--detach-sign", "--output", str(tmp_path / "sig"), str(manifest))
    _replace(env, cfg, prefix + "manifest.json.sig", (tmp_path / "sig").read_bytes())
    verify, restore, target_exists = _verify_and_restore(env, path, backup_id)
    assert verify.returncode == 7 and "not in encryption.trusted_signers" in verify.stderr
    assert restore.returncode == 7 and target_exists == []


def test_altered_manifest_fails_its_signature(env, backed_up):
    cfg, path, backup_id, prefix = backed_up
    doc = json.loads(_object(env, cfg, prefix + "manifest.json"))
    doc["scope"]["row_counts"]["dag_run"] += 1
    _replace(env, cfg, prefix + "manifest.json", json.dumps(doc).encode())
    verify, restore, target_exists = _verify_and_restore(env, path, backup_id)
    assert verify.returncode == 7 and "signature" in verify.stderr
    assert restore.returncode == 7 and target_exists == []


def test_unsigned_manifest_refused_when_signatures_are_required(env, backed_up):
    cfg, path, backup_id, prefix = backed_up
    env.s3.client().delete_object(Bucket=bucket_of(cfg), Key=prefix + "manifest.json.sig")
    verify, restore, target_exists = _verify_and_restore(env, path, backup_id)
    assert verify.returncode == 7 and "not signed" in verify.stderr
    assert restore.returncode == 7 and target_exists == []
    # AND `latest` never picks it: there is no trusted backup left
    verify, restore, target_exists = _verify_and_restore(env, path)
    assert verify.returncode == 8 and "1 untrusted or damaged" in verify.stderr
    assert restore.returncode == 8 and target_exists == []


def test_unsigned_manifest_with_a_wrong_copy_inside_fails_with_8(env, backed_up):
    # GIVEN signatures not required, and a stored manifest whose counts were changed
    cfg, _, _, prefix = backed_up
    cfg["encryption"].update(trusted_signers=[], require_signature=False)
    path = env.write_config(cfg)
    env.s3.client().delete_object(Bucket=bucket_of(cfg), Key=prefix + "manifest.json.sig")
    doc = json.loads(_object(env, cfg, prefix + "manifest.json"))
    doc["scope"]["row_counts"]["dag_run"] += 1
    _replace(env, cfg, prefix + "manifest.json", json.dumps(doc).encode())
    # THEN the copy inside the encrypted archive gives it away
    verify, restore, target_exists = _verify_and_restore(env, path)
    assert verify.returncode == 8 and "differ in 'scope'" in verify.stderr
    assert restore.returncode == 8 and target_exists == []


def _running(pid: int, cmdline: list[str]) -> bool:
    """Whether a descendant of ``pid`` runs ``cmdline``."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return False
    for child in children:
        try:
            if child.cmdline() == cmdline:
                return True
        except psutil.Error:
            continue
    return False


def _fake_pg_restore(tmp_path, body: str) -> str:
    bin_dir = tmp_path / "pgbin"
    bin_dir.mkdir()
    real = shutil.which("pg_restore")
    script = bin_dir / "pg_restore"
    script.write_text(f'#!/bin/bash\nfor a in "$@"; do case "$a" in --version|--list) exec {real} "$@";; esac; done\n'
                      f"{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    (bin_dir / "pg_dump").symlink_to(shutil.which("pg_dump"))
    return str(bin_dir)


def test_failing_pg_restore_says_so_and_leaves_no_database_behind(env, backed_up, tmp_path):
    cfg, _, _, _ = backed_up
    cfg["database"]["pg_bin_dir"] = _fake_pg_restore(tmp_path, 'echo "pg_restore: error: simulated" >&2; exit 1')
    path = env.write_config(cfg)
    target = env.unique("failed_")
    done = env.afbackup(path, "restore", "--target-dsn", env.pg.dsn(target), "--jobs", "2")
    assert done.returncode == 5, done.stderr
    # THEN the error names pg_restore's failure and the target's real state: never created, the staging one dropped
    assert "simulated" in done.stderr and f"{target} was not created" in done.stderr
    assert "was dropped" in done.stderr
    assert env.pg.execute("postgres", "SELECT 1 FROM pg_database WHERE datname = %s", (target,)) == []


def test_sigterm_during_restore_removes_the_spooled_plaintext(env, backed_up, tmp_path):
    cfg, _, _, _ = backed_up
    spool = tmp_path / "spool"
    spool.mkdir()
    cfg["database"]["pg_bin_dir"] = _fake_pg_restore(tmp_path, "sleep 60")
    cfg["restore"] = {"spool_dir": str(spool)}
    path = env.write_config(cfg)
    proc = subprocess.Popen([sys.executable, "-m", "afbackup", "--config", str(path), "restore", "--target-dsn",
                             env.pg.dsn(env.unique("killed_"))], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env.afbackup_env())
    deadline = time.monotonic() + 60
    while not any(p.name.startswith("afbackup-spool-") for p in spool.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    spooled = [p for p in spool.iterdir()]
    assert spooled and oct(spooled[0].stat().st_mode & 0o777) == "0o700"
    # the dump is spooled and pg_restore (the fake's `sleep 60`) runs: polled for, not slept for
    while not _running(proc.pid, ["sleep", "60"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _running(proc.pid, ["sleep", "60"]), "pg_restore never started"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert os.listdir(spool) == []
