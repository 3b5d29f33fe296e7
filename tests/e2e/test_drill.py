"""``afbackup drill`` on the embedded environment: passes, and fails with exit 10 when it should."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from tests.harness.airflow_env import new_fernet_key

# slow: every test runs a backup, restore or drill through the CLI with Airflow
pytestmark = [pytest.mark.airflow, pytest.mark.slow]


@pytest.fixture
def backed_up(env):
    airflow, db = env.airflow("3")
    path = env.write_config(env.config(db, airflow=airflow))
    done = env.afbackup(path, "backup", airflow=airflow)
    assert done.returncode == 0, done.stderr
    return airflow, path, done.stdout.strip()


def _drill_dbs(env) -> list:
    return env.pg.execute("postgres", "SELECT datname FROM pg_database WHERE datname LIKE 'afbackup_drill_%'")


def test_drill_passes_and_writes_json_markdown_and_junit(env, backed_up, tmp_path):
    airflow, path, backup_id = backed_up
    before = _drill_dbs(env)
    done = env.afbackup(path, "drill", "--scratch-dsn", env.pg.dsn(), "--report", str(tmp_path),
                        "--rto-target", "10m", "--rpo-target", "1h", airflow=airflow)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "drill-report.json").read_text())
    assert report["ok"] is True and report["backup_id"] == backup_id
    assert 0 < report["rto_seconds"] < 600 and 0 <= report["rpo_seconds"] < 3600
    names = [check["name"] for check in report["checks"]]
    assert names == ["select backup", "verify", "restore", "database checks", "airflow reads the database", "targets"]
    assert "decrypt with the source Fernet key" in report["checks"][4]["detail"]
    assert "# afbackup DR drill: PASSED" in (tmp_path / "drill-report.md").read_text()
    suite = ET.parse(tmp_path / "drill-junit.xml").getroot()
    assert suite.get("tests") == "6" and suite.get("failures") == "0"
    assert _drill_dbs(env) == before  # the scratch database was dropped
    # AND the drill left its record in the store, which fleet status shows
    status = json.loads(env.afbackup(path, "fleet", "status", "--json").stdout)
    (deployment,) = status["deployments"]
    drill = deployment["last_drill"]
    assert drill["ok"] is True and drill["backup_id"] == backup_id and drill["failed_checks"] == []
    assert drill["rto_seconds"] == report["rto_seconds"] and drill["rpo_seconds"] == report["rpo_seconds"]
    assert drill["rto_live_seconds"] is None and drill["rto_target"] == 600


def test_a_target_set_too_tight_fails_with_10(env, backed_up, tmp_path):
    airflow, path, _ = backed_up
    done = env.afbackup(path, "drill", "--scratch-dsn", env.pg.dsn(), "--rto-target", "1ms", "--report",
                        str(tmp_path), "--json", airflow=airflow)
    assert done.returncode == 10, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is False and report["checks"][-1]["name"] == "targets"
    assert "RTO" in report["checks"][-1]["detail"]
    suite = ET.parse(tmp_path / "drill-junit.xml").getroot()
    assert suite.get("failures") == "1"
    status = env.afbackup(path, "fleet", "status", "--json")
    assert status.returncode == 10, status.stderr  # the failed drill is the deployment's problem
    (deployment,) = json.loads(status.stdout)["deployments"]
    assert deployment["last_drill"]["ok"] is False and deployment["last_drill"]["failed_checks"] == ["targets"]


def test_a_broken_check_fails_with_10_and_later_checks_are_skipped(env, backed_up, tmp_path):
    # GIVEN an escrowed Fernet key that is not the source's (broken on purpose)
    airflow, path, _ = backed_up
    wrong = tmp_path / "fernet.key"
    wrong.write_text(new_fernet_key() + "\n")
    done = env.afbackup(path, "drill", "--scratch-dsn", env.pg.dsn(), "--fernet-key-file", str(wrong), "--json",
                        "--keep", airflow=airflow)
    assert done.returncode == 10, done.stderr
    report = json.loads(done.stdout)
    failed = [check for check in report["checks"] if check["ok"] is False]
    assert [check["name"] for check in failed] == ["airflow reads the database"]
    assert "do not decrypt" in failed[0]["detail"]
    assert report["checks"][-1]["ok"] is None  # targets: skipped
    # AND --keep kept the scratch database for inspection
    kept = report["scratch"].split()[0]
    assert [(kept,)] == env.pg.execute("postgres", "SELECT datname FROM pg_database WHERE datname = %s", (kept,))
    env.pg.drop_database(kept)


def test_the_escrowed_source_key_decrypts_the_restored_connections(env, backed_up, tmp_path):
    airflow, path, _ = backed_up
    key = tmp_path / "fernet.key"
    key.write_text(airflow.fernet_key + "\n")
    done = env.afbackup(path, "drill", "--scratch-dsn", env.pg.dsn(), "--fernet-key-file", str(key), "--json",
                        airflow=airflow)
    assert done.returncode == 0, done.stderr
    assert "escrowed source Fernet key" in json.loads(done.stdout)["checks"][4]["detail"]
