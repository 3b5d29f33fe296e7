"""``afbackup check``: 0 when healthy, 4 for each failed preflight check, 8 for a missing or stale backup."""

from __future__ import annotations

import datetime as dt
import json
import stat

import pytest

from tests.helpers import bucket_of, s3_keys

# slow: a backup with Airflow in the module fixture, then `check` probes the Airflow executor
pytestmark = [pytest.mark.airflow, pytest.mark.slow]


@pytest.fixture(scope="module")
def healthy(env):
    """A real Airflow 3 deployment (local executor) with one fresh backup: (airflow, db, config dict)."""
    airflow, db = env.airflow("3")
    cfg = env.config(db, airflow=airflow, private_keys=False)
    done = env.afbackup(env.write_config(cfg), "backup", airflow=airflow)
    assert done.returncode == 0, done.stderr
    return airflow, db, cfg


def _check(env, cfg, *args, airflow=None):
    done = env.afbackup(env.write_config(cfg), "check", "--json", *args, airflow=airflow)
    report = json.loads(done.stdout)
    return done, report, {c["name"]: c for c in report["checks"]}


def _with(cfg, section, **values):
    changed = json.loads(json.dumps(cfg))
    changed[section].update(values)
    return changed


def test_healthy_deployment_passes_every_check(env, healthy):
    airflow, _, cfg = healthy
    done, report, checks = _check(env, cfg, airflow=airflow)
    assert done.returncode == 0, done.stderr
    assert report["ok"] and report["exit_code"] == 0
    assert list(checks) == ["config", "database", "pg_dump", "pg_restore", "keys", "bucket", "executor", "lock",
                            "freshness"]
    assert all(c["status"] == "ok" for c in checks.values()), checks
    assert f"Airflow {airflow.version}" in checks["executor"]["detail"]
    assert report["newest"]["age_seconds"] < 600
    # AND the signing key's expiry is reported (pushed as afbackup_signing_key_expiry_timestamp_seconds)
    expires = dt.datetime.fromisoformat(report["signing_key_expires_at"].replace("Z", "+00:00"))
    assert 0 < (expires - dt.datetime.now(dt.UTC)).total_seconds() <= 366 * 86400  # the test keys live a year
    assert "expires 20" in checks["keys"]["detail"]
    # AND the write probe is one small object, created once: a second check proves write access without writing
    assert "created the write probe" in checks["bucket"]["detail"]
    versions = env.s3.client().list_object_versions(Bucket=bucket_of(cfg), Prefix="airflow/v1/probes/")["Versions"]
    _, _, again = _check(env, _with(cfg, "airflow", executor="none"))
    assert again["bucket"]["status"] == "ok" and "nothing written" in again["bucket"]["detail"]
    assert s3_keys(env, bucket_of(cfg), "airflow/v1/probes/") == ["airflow/v1/probes/check.json"]
    assert env.s3.client().list_object_versions(Bucket=bucket_of(cfg),
                                                Prefix="airflow/v1/probes/")["Versions"] == versions


def test_text_output_and_stale_backup_exit_8(env, healthy):
    # GIVEN the backup is more than --max-age old
    _, _, cfg = healthy
    cfg = _with(cfg, "airflow", executor="none")
    # WHEN checked in text mode, 1.5 s later on the check's clock
    done = env.afbackup(env.write_config(cfg), "check", "--max-age", "1s", advance=1.5)
    # THEN exit 8, freshness FAIL, one ERROR line naming it
    assert done.returncode == 8, done.stderr
    assert "FAIL  freshness" in done.stdout and "older than the maximum age 1s" in done.stdout
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "check failed: freshness" in errors[0]


def test_no_backup_at_all_exits_8_and_a_stale_lock_is_only_a_warning(env, healthy):
    # GIVEN an empty bucket holding only a lock left by a dead run
    _, _, cfg = healthy
    cfg = _with(cfg, "airflow", executor="none")
    bucket = env.bucket()
    cfg["storage"]["url"] = f"s3://{bucket}/airflow"
    dead = {"operation": "backup", "host": "node-gone", "pid": 7, "started_at": "2026-01-01T03:00:00.000Z",
            "expires_at": "2026-01-01T03:30:00.000Z", "token": "dead"}
    env.s3.client().put_object(Bucket=bucket, Key="airflow/v1/locks/writer.lock", Body=json.dumps(dead).encode())
    # WHEN checked
    done, report, checks = _check(env, cfg)
    # THEN exit 8 for the missing backup; the stale lock is a warning naming its holder
    assert done.returncode == 8, done.stderr
    assert checks["freshness"]["status"] == "fail" and "no complete backup" in checks["freshness"]["detail"]
    assert checks["lock"]["status"] == "warn" and "node-gone pid 7" in checks["lock"]["detail"]
    assert [name for name, c in checks.items() if c["status"] != "ok"] == ["lock", "freshness"]


def _script(path, body: str) -> str:
    path.write_text("#!/bin/bash\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def _no_pg_bin(env, tmp_path, cfg):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    return _with(cfg, "database", pg_bin_dir=str(empty)), ["pg_dump", "pg_restore"], "not found in"


def _stranger_recipient(env, tmp_path, cfg):
    return _with(cfg, "encryption", recipients=["0123456789ABCDEF0123456789ABCDEF01234567"]), ["keys"], \
        "is not in the keyring"


def _missing_bucket(env, tmp_path, cfg):
    changed = _with(cfg, "storage", url="s3://no-such-bucket-afbackup/airflow", retries=0)
    return changed, ["bucket", "freshness"], "NoSuchBucket"


def _broken_executor(env, tmp_path, cfg):
    python = _script(tmp_path / "python", 'echo "Traceback: airflow is broken" >&2; exit 1')
    return _with(cfg, "airflow", python=[python]), ["executor"], "the Airflow agent exited with 1"


def _unreachable_database(env, tmp_path, cfg):
    from tests.harness.pg import free_port

    dsn = f"postgresql://nobody@127.0.0.1:{free_port()}/airflow"
    return _with(cfg, "database", dsn=dsn, connect_timeout="1s"), ["database", "pg_dump", "pg_restore"], \
        "cannot connect to PostgreSQL"


@pytest.mark.parametrize("breakage", [_no_pg_bin, _stranger_recipient, _missing_bucket, _broken_executor,
                                      _unreachable_database],
                         ids=["no-pg_dump", "unusable-recipient", "missing-bucket", "broken-executor",
                              "unreachable-database"])
def test_each_failed_preflight_check_exits_4(env, healthy, tmp_path, breakage):
    # GIVEN a healthy deployment with one thing broken
    airflow, _, cfg = healthy
    if breakage is not _broken_executor:
        cfg = _with(cfg, "airflow", executor="none")  # the real Airflow answers in test_healthy_…; save 3 s a run
    broken, names, words = breakage(env, tmp_path, cfg)
    # WHEN checked
    done, report, checks = _check(env, broken, airflow=airflow)
    # THEN exit 4, exactly the broken checks fail (every other check still ran), and the detail says why
    assert done.returncode == 4, done.stderr
    assert report["exit_code"] == 4 and not report["ok"]
    failed = [name for name, c in checks.items() if c["status"] == "fail"]
    assert failed == names, checks
    assert words in checks[names[0]]["detail"]
    assert len(checks) == 9


def test_bad_max_age_is_a_usage_error_and_a_broken_config_exits_3(env, healthy, tmp_path):
    _, _, cfg = healthy
    assert env.afbackup(env.write_config(cfg), "check", "--max-age", "soon").returncode == 2
    path = tmp_path / "bad.toml"
    path.write_text('[storage]\nurl = "s3://b/p"\nno_such_key = 1\n')
    done = env.afbackup(path, "check", "--json")
    assert done.returncode == 3, done.stderr
    report = json.loads(done.stdout)
    assert report["exit_code"] == 3 and report["checks"][0]["name"] == "config"
