"""Version safety: a newer backup is refused, an older one needs --migrate, and --migrate makes it work."""

from __future__ import annotations

import json

import psycopg
import pytest

from tests.harness.airflow_env import AIRFLOW_VERSIONS, AirflowInstance

# slow: every test runs a backup, restore or drill through the CLI with Airflow; a longer timeout than the
# default 300 s: the first use of each Airflow version migrates its template DB, and `--migrate` runs another
pytestmark = [pytest.mark.airflow, pytest.mark.slow, pytest.mark.timeout(600)]


def _backup(env, major):
    airflow, db = env.airflow(major)
    cfg = env.config(db, airflow=airflow)
    done = env.afbackup(env.write_config(cfg), "backup", airflow=airflow)
    assert done.returncode == 0, done.stderr
    return airflow, cfg


def _deployment(env, major, source, cfg) -> tuple[AirflowInstance, str, object]:
    """A deployment of Airflow ``major`` (not yet created DB), and a config whose executor runs its CLI."""
    name = env.unique(f"upgrade{major}_")
    target = AirflowInstance(AIRFLOW_VERSIONS[major], env.workdir / f"home-{name}", env.pg.sqlalchemy_url(name),
                             source.fernet_key)
    return target, name, env.write_config(dict(cfg, airflow={"executor": "local", "command": [target.airflow]}))


def test_a_backup_from_a_newer_airflow_is_refused_before_anything_is_touched(env):
    source, cfg = _backup(env, "3")
    target, target_db, path = _deployment(env, "2", source, cfg)
    done = env.afbackup(path, "restore", "--target-dsn", env.pg.dsn(target_db), airflow=target)
    assert done.returncode == 4, done.stderr
    assert "newer Airflow" in done.stderr
    assert env.pg.execute("postgres", "SELECT 1 FROM pg_database WHERE datname LIKE %s", (f"{target_db}%",)) == []


def test_a_refused_restore_into_a_live_target_ends_no_session_and_leaves_it_as_it_was(env):
    # GIVEN a backup of Airflow 3, and a live Airflow 2 deployment whose "scheduler" holds a transaction open
    source, cfg = _backup(env, "3")
    target, target_db, path = _deployment(env, "2", source, cfg)
    env.pg.create_database(target_db)
    env.pg.execute(target_db, "CREATE TABLE dag (dag_id text PRIMARY KEY); INSERT INTO dag VALUES ('live')")
    with psycopg.connect(env.pg.dsn(target_db), application_name="airflow-scheduler-e2e") as client:
        client.execute("SELECT count(*) FROM dag").fetchone()
        # WHEN a --clean restore that may end sessions runs (the version check finishes during the load)
        done = env.afbackup(path, "restore", "--target-dsn", env.pg.dsn(target_db), "--clean", "--yes",
                            "--terminate-sessions", "--json", airflow=target)
        # THEN it is refused (exit 4), saying the target is untouched
        assert done.returncode == 4, done.stderr
        assert "newer Airflow" in done.stderr and f"{target_db} is untouched" in done.stderr
        # AND the scheduler's session was not ended: refused restores end nobody's session
        assert client.execute("SELECT dag_id FROM dag").fetchall() == [("live",)]
    # AND the target is open again, as it was, and nothing afbackup created is left
    assert env.pg.execute("postgres", "SELECT datname, datallowconn FROM pg_database WHERE datname LIKE %s",
                          (f"{target_db}%",)) == [(target_db, True)]


def test_an_older_backup_needs_migrate_and_then_works_on_the_newer_airflow(env):
    # GIVEN a backup of Airflow 2, and a deployment of Airflow 3 to restore it into
    source, cfg = _backup(env, "2")
    target, target_db, path = _deployment(env, "3", source, cfg)
    # WHEN restored without --migrate: refused, nothing touched
    refused = env.afbackup(path, "restore", "--target-dsn", env.pg.dsn(target_db), airflow=target)
    assert refused.returncode == 4 and "--migrate" in refused.stderr
    assert env.pg.execute("postgres", "SELECT 1 FROM pg_database WHERE datname = %s", (target_db,)) == []
    # WHEN restored with --migrate
    done = env.afbackup(path, "restore", "--target-dsn", env.pg.dsn(target_db), "--migrate", "--json",
                        airflow=target)
    assert done.returncode == 0, done.stderr
    assert "airflow db migrate" in json.loads(done.stdout)["steps"]
    # THEN Airflow 3 accepts the database and reads every connection and variable of the backup
    target.cli("db", "check-migrations", "-t", "10")
    restored, original = target.probe(), source.probe()
    assert restored["connections"] == original["connections"]
    assert restored["variables"] == original["variables"]
