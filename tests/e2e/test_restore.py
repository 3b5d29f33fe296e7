"""Restore round trips on real Airflow 2.x and 3.x: rows equal, secrets readable, Airflow usable."""

from __future__ import annotations

import json

import pytest

from tests.harness.airflow_env import CANARY_PASSWORD, VARIABLES, AirflowInstance, new_fernet_key
from tests.helpers import table_digests

# slow: every test runs a backup, restore or drill through the CLI with Airflow
pytestmark = [pytest.mark.airflow, pytest.mark.slow]

SCHEMA_ONLY = {"log", "xcom"}


def _backup(env, major, **sections):
    airflow, db = env.airflow(major)
    cfg = env.config(db, airflow=airflow, **sections)
    path = env.write_config(cfg)
    done = env.afbackup(path, "backup", airflow=airflow)
    assert done.returncode == 0, done.stderr
    return airflow, db, path, done.stdout.strip()


def _target(env, airflow: AirflowInstance, *, fernet_key: str | None = None) -> tuple[AirflowInstance, str]:
    """A deployment of the same Airflow version whose database does not exist yet."""
    name = env.unique("restored_")
    return AirflowInstance(airflow.version, env.workdir / f"home-{name}", env.pg.sqlalchemy_url(name),
                           fernet_key or airflow.fernet_key), name


def _restore(env, path, target_airflow, target_db, *args):
    return env.afbackup(path, "restore", "--target-dsn", env.pg.dsn(target_db), *args, airflow=target_airflow)


def test_round_trip_rows_secrets_and_a_working_airflow(env, airflow_major):
    # GIVEN a backup of a populated Airflow DB
    source, source_db, path, backup_id = _backup(env, airflow_major)
    target, target_db = _target(env, source)
    # WHEN it is restored into a new database
    done = _restore(env, path, target, target_db, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["backup_id"] == backup_id and report["fernet"]["reencrypted"] is False
    # THEN every table holds exactly the source's rows (log and xcom: schema only)
    before, after = table_digests(env, source_db), table_digests(env, target_db)
    assert set(before) == set(after)
    differing = [t for t in before if t not in SCHEMA_ONLY and before[t] != after[t]]
    assert differing == []
    assert all(after[t][0] == 0 for t in SCHEMA_ONLY)
    # AND Airflow reads the same connections, variables and pools
    assert target.probe() == source.probe()
    # AND the real Airflow CLI works on it: migrations current, DAG runs listed, a new run created
    target.cli("db", "check-migrations", "-t", "10")
    listing = target.cli("dags", "list-runs", *(["-d"] if airflow_major == "2" else []), "sample_etl").stdout
    assert "manual__" in listing or "sample_etl" in listing
    runs = "SELECT count(*) FROM dag_run WHERE dag_id = 'sample_etl'"
    target.cli("dags", "trigger", "sample_etl")  # inserts with the restored sequences: they must be sound
    assert env.pg.execute(target_db, runs)[0][0] == env.pg.execute(source_db, runs)[0][0] + 1


def test_restore_into_a_deployment_with_another_fernet_key(env, airflow_major):
    # GIVEN a backup, and a target deployment whose Fernet key differs
    source, _, path, _ = _backup(env, airflow_major)
    target, target_db = _target(env, source, fernet_key=new_fernet_key())
    # WHEN restored
    done = _restore(env, path, target, target_db, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["fernet"]["reencrypted"] is True
    # THEN every connection and variable reads back under the target key, byte for byte
    restored = target.probe()
    assert restored == source.probe()
    assert restored["connections"]["canary_db"]["password"] == CANARY_PASSWORD
    for key, value in VARIABLES.items():  # JSON strings and compact JSON included
        assert restored["variables"][key] == value, key


def test_pause_dags_reports_the_active_ones(env):
    source, source_db, path, _ = _backup(env, "3")
    env.pg.execute(source_db, "UPDATE dag SET is_paused = false WHERE dag_id = 'sample_etl'")
    done = env.afbackup(path, "backup", airflow=source)
    assert done.returncode == 0, done.stderr
    target, target_db = _target(env, source)
    done = _restore(env, path, target, target_db, "--pause-dags", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["paused_dags"] == ["sample_etl"]
    assert env.pg.execute(target_db, "SELECT count(*) FROM dag WHERE NOT is_paused")[0][0] == 0


def test_non_empty_target_needs_clean_and_dry_run_changes_nothing(env):
    source, source_db, path, _ = _backup(env, "3")
    target, target_db = _target(env, source)
    env.pg.create_database(target_db, template="template_af3")
    env.pg.execute(target_db, "DELETE FROM variable")
    before = table_digests(env, target_db)
    # WHEN restoring without --clean: refused, nothing changed
    refused = _restore(env, path, target, target_db)
    assert refused.returncode == 4 and "is not empty" in refused.stderr and "--clean" in refused.stderr
    # AND --dry-run prints the plan and changes nothing
    dry = _restore(env, path, target, target_db, "--clean", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"swap: rename {target_db}" in dry.stdout and "nothing changed" in dry.stdout
    assert table_digests(env, target_db) == before
    # AND without a terminal, --clean needs --yes
    unconfirmed = _restore(env, path, target, target_db, "--clean")
    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr
    assert table_digests(env, target_db) == before
    # AND --clean --yes replaces the content with the backup's
    done = _restore(env, path, target, target_db, "--clean", "--yes")
    assert done.returncode == 0, done.stderr
    assert table_digests(env, target_db)["variable"] == table_digests(env, source_db)["variable"]
    # AND the replaced database is kept under its documented name
    kept = env.pg.execute("postgres", "SELECT datname FROM pg_database WHERE datname LIKE %s",
                          (f"{target_db}__afbackup_previous_%",))
    assert len(kept) == 1 and table_digests(env, kept[0][0]) == before


def test_dry_run_into_a_missing_database_creates_nothing(env):
    source, _, path, _ = _backup(env, "2")
    target, target_db = _target(env, source)
    databases = env.pg.execute("postgres", "SELECT datname FROM pg_database ORDER BY 1")
    dry = _restore(env, path, target, target_db, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"create database {target_db}" in dry.stdout
    assert env.pg.execute("postgres", "SELECT datname FROM pg_database ORDER BY 1") == databases


def test_only_connections_variables_pools_into_a_running_airflow(env, airflow_major):
    # GIVEN a running Airflow whose DB has other values for the same ids
    source, _, path, _ = _backup(env, airflow_major)
    target, target_db = env.airflow(airflow_major, empty=True)
    target.migrate()
    target.run_batch([["variables", "set", "plain", "stale value"], ["pools", "set", "etl", "1", "stale"]],
                     connections=[{"conn_id": "canary_db", "conn_type": "http", "password": "stale"}])
    # WHEN only connections, variables and pools are restored
    done = _restore(env, path, target, target_db, "--only", "connections,variables,pools", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["imported"] == {"connections": 3, "pools": 3, "variables": 7}
    # THEN they are overwritten with the backup's values, exactly
    restored, original = target.probe(), source.probe()
    assert restored["connections"] == original["connections"]
    assert restored["variables"] == original["variables"]
    assert restored["pools"]["etl"] == original["pools"]["etl"]


def test_a_backup_made_without_an_executor_restores_the_database_and_drills(env):
    # GIVEN a backup made with executor = "none" (the database dump only)
    source, source_db = env.airflow("3")
    cfg = env.config(source_db)
    done = env.afbackup(env.write_config(cfg), "backup")
    assert done.returncode == 0, done.stderr
    # WHEN restored and drilled by an operator whose executor is configured
    cfg["airflow"] = {"executor": "local", "command": [source.airflow]}
    path = env.write_config(cfg)
    target, target_db = _target(env, source)
    only = _restore(env, path, target, target_db, "--only", "connections")
    assert only.returncode == 2 and "--only db" in only.stderr
    full = _restore(env, path, target, target_db)
    assert full.returncode == 0, full.stderr
    assert "not checked" in full.stderr
    assert target.probe() == source.probe()  # same Fernet key: the dump alone carries everything
    drill = env.afbackup(path, "drill", "--scratch-dsn", env.pg.dsn(), "--json", airflow=source)
    assert drill.returncode == 0, drill.stderr
    assert "no exports" in json.loads(drill.stdout)["checks"][4]["detail"]
