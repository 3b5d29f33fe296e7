"""Backups of real Airflow 2.x and 3.x metadata, opened with standard tools only."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.harness.airflow_env import CANARY_PASSWORD
from tests.helpers import (
    bucket_of,
    download,
    join_dump,
    open_with_standard_tools,
    pending_uploads,
    s3_keys,
    sha256_file,
    stored_manifest,
)

# slow: every test runs a backup, restore or drill through the CLI with Airflow
pytestmark = [pytest.mark.airflow, pytest.mark.slow]

EXPORT_TABLES = {"connections": "connection", "variables": "variable", "pools": "slot_pool"}


def _backup(env, airflow, db, *args, **sections):
    cfg = env.config(db, airflow=airflow, private_keys=False, **sections)  # the backup pod holds no private key
    path = env.write_config(cfg)
    done = env.afbackup(path, "backup", "--json", *args, airflow=airflow)
    assert done.returncode == 0, done.stderr
    return cfg, path, json.loads(done.stdout), done


def test_backup_opens_with_gpg_zstd_tar_and_pg_restore(env, airflow_major, tmp_path):
    # GIVEN a populated Airflow metadata DB
    airflow, db = env.airflow(airflow_major)
    # WHEN it is backed up
    cfg, _, summary, _ = _backup(env, airflow, db)
    bucket, backup_id = bucket_of(cfg), summary["backup_id"]
    manifest = stored_manifest(env, bucket, backup_id)
    # THEN the stored object is what the manifest says
    cipher = download(env, bucket, f"airflow/v1/backups/{backup_id}/archive.tar.zst.gpg", tmp_path / "a.gpg")
    assert cipher.stat().st_size == manifest["objects"][0]["size"]
    assert sha256_file(cipher) == manifest["objects"][0]["sha256"]
    # AND it opens with gpg | zstd | tar, every member matching the manifest
    out = open_with_standard_tools(env, cipher, tmp_path / "open")
    for member in manifest["archive_members"]:
        assert sha256_file(out / member["name"]) == member["sha256"], member["name"]
        assert (out / member["name"]).stat().st_size == member["size"]
    # AND the joined dump is readable by pg_restore --list
    listing = subprocess.run(["pg_restore", "--list", str(join_dump(out))], capture_output=True, text=True,
                             check=True).stdout
    assert "TABLE DATA public dag_run" in listing and "TABLE DATA public log " not in listing
    # AND the exports are JSON whose counts equal the database's
    for kind, table in EXPORT_TABLES.items():
        exported = json.loads((out / "airflow" / f"{kind}.json").read_text())
        rows = env.pg.execute(db, f"SELECT count(*) FROM {table}")[0][0]
        assert len(exported) == rows == manifest["exports"][kind] == manifest["scope"]["row_counts"][table]
    # AND the manifest knows the Airflow version and the per-table row counts
    assert manifest["airflow"]["major"] == int(airflow_major)
    assert manifest["airflow"]["cli_version"] == airflow.version
    assert manifest["scope"]["row_counts"]["dag_run"] == env.pg.execute(db, "SELECT count(*) FROM dag_run")[0][0]
    assert set(manifest["scope"]["schema_only_tables"]) == {"log", "xcom"}


def test_manifest_is_signed_and_its_archive_copy_matches(env, tmp_path):
    airflow, db = env.airflow("3")
    cfg, _, summary, _ = _backup(env, airflow, db)
    bucket, backup_id = bucket_of(cfg), summary["backup_id"]
    base = f"airflow/v1/backups/{backup_id}/"
    manifest_path = download(env, bucket, base + "manifest.json", tmp_path / "manifest.json")
    signature = download(env, bucket, base + "manifest.json.sig", tmp_path / "manifest.json.sig")
    verified = env.keys.gpg("--status-fd", "1", "--verify", str(signature), str(manifest_path), check=False)
    assert verified.returncode == 0 and f"VALIDSIG {env.keys.fingerprints['signer']}" in verified.stdout.decode()
    stored = json.loads(manifest_path.read_text())
    out = open_with_standard_tools(env, download(env, bucket, base + "archive.tar.zst.gpg", tmp_path / "a"),
                                   tmp_path / "open")
    inner = json.loads((out / "manifest.json").read_text())
    different = {key for key in stored if stored[key] != inner.get(key)}
    assert different == {"status", "finished_at", "objects"}


def test_canary_password_never_reaches_disk_or_logs(env, tmp_path, tmp_path_factory):
    # GIVEN a connection whose password is a canary, a private TMPDIR, and verbose logging
    airflow, db = env.airflow("3")
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    path = env.write_config(env.config(db, airflow=airflow))
    runs = [env.afbackup(path, *args, airflow=airflow, env={"TMPDIR": str(tmpdir)})
            for args in (["backup"], ["-vv", "--log-format", "json", "backup"])]
    assert all(run.returncode == 0 for run in runs), runs[-1].stderr
    # THEN the canary is in no log line
    for run in runs:
        assert CANARY_PASSWORD not in run.stdout + run.stderr
    # AND in no file on local disk: temp dirs, the working dir, HOME, the database files.
    # (Other tests decrypt archives on purpose under pytest's own temp root: not scanned.)
    pytest_root = tmp_path_factory.getbasetemp().parent
    roots = [tmpdir, Path("/dev/shm"), Path(env.workdir), Path(os.environ["HOME"]), Path.cwd(), Path("/tmp")]
    assert _files_containing(roots, CANARY_PASSWORD.encode(), skip=[pytest_root]) == []


def _files_containing(roots, needle: bytes, skip=()) -> list[str]:
    found = []
    skipped = [str(path) for path in skip]
    for root in roots:
        for dirpath, dirnames, names in os.walk(root):
            dirnames[:] = [d for d in dirnames if not any(os.path.join(dirpath, d).startswith(s) for s in skipped)
                           and not d.startswith("bash_tool")]
            for name in names:
                path = os.path.join(dirpath, name)
                try:
                    if os.path.islink(path) or os.path.getsize(path) > 256 << 20:
                        continue
                    with open(path, "rb") as fh:
                        if needle in fh.read():
                            found.append(path)
                except OSError:
                    continue
    return found


def test_list_and_show_newest_first(env):
    airflow, db = env.airflow("3")
    cfg = env.config(db, airflow=airflow)
    path = env.write_config(cfg)
    ids = []
    for _ in range(2):
        done = env.afbackup(path, "backup", "--label", "trigger=test", airflow=airflow)
        assert done.returncode == 0, done.stderr
        ids.append(done.stdout.strip())
    listed = json.loads(env.afbackup(path, "list", "--json").stdout)
    assert [item["backup_id"] for item in listed] == ids[::-1]
    assert listed[0]["labels"] == {"trigger": "test"} and listed[0]["state"] == "complete"
    shown = env.afbackup(path, "show", "latest", "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["backup_id"] == ids[-1]
    assert CANARY_PASSWORD not in shown.stdout
    text = env.afbackup(path, "show", ids[0])
    assert text.returncode == 0 and "dag_run" in text.stdout


def test_file_target_and_dry_run(env, tmp_path):
    airflow, db = env.airflow("2")
    target = tmp_path / "store"
    cfg = env.config(db, airflow=airflow, storage={"url": f"file://{target}", "endpoint_url": ""})
    path = env.write_config(cfg)
    dry = env.afbackup(path, "backup", "--dry-run", airflow=airflow)
    assert dry.returncode == 0, dry.stderr
    assert "schema only (2): log, xcom" in dry.stdout and not target.exists()
    done = env.afbackup(path, "backup", airflow=airflow)
    assert done.returncode == 0, done.stderr
    backup_dir = target / "v1" / "backups" / done.stdout.strip()
    assert sorted(p.name for p in backup_dir.iterdir()) == [
        "archive.tar.zst.gpg", "attempt.json", "manifest.json", "manifest.json.sig"]


def test_executor_none_backs_up_the_database_only(env):
    airflow, db = env.airflow("3")
    cfg = env.config(db)  # no airflow: executor = "none"
    done = env.afbackup(env.write_config(cfg), "backup", "--json")
    assert done.returncode == 0, done.stderr
    manifest = json.loads(done.stdout)["manifest"]
    assert manifest["exports"] is None and "no executor" in manifest["not_captured"]["exports"]
    assert not pending_uploads(env, bucket_of(cfg))
    assert s3_keys(env, bucket_of(cfg))
