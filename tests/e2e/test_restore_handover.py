"""A snapshot taken mid-run, restored on real Airflow 2.x and 3.x: in-flight work, paused DAGs, the deployment
outside the database, and triggers under another Fernet key.

One source per Airflow version, two backups of it (every check reuses them):
A: a running DAG run (running, queued and scheduled task instances) and a queued one, one active DAG, a
   connection whose provider is not installed, (3.x) a DAG in a bundle the target does not configure;
B: A plus a deferred task instance whose trigger's kwargs are encrypted by Airflow under the source key, and
   an ``alembic_version_fab`` revision (FAB tables the targets here cannot version: no FAB provider in 3.x,
   none with its own migrations in 2.x; the refusal of a newer FAB schema is covered by
   tests/unit/test_environment_check.py).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import pytest

from tests.harness.airflow_env import AirflowInstance, new_fernet_key

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

TRIGGERS = Path(__file__).resolve().parents[1] / "harness" / "airflow_triggers.py"
TRIGGER_KWARGS = {"message": "wake up", "token": "kwargs-are-encrypted"}


@dataclasses.dataclass
class Scenario:
    major: str
    source: AirflowInstance
    db: str
    config: Path
    running_run: str
    queued_run: str
    backups: dict[str, str]


def _triggers(airflow: AirflowInstance, *args: str, spec: dict | None = None):
    done = subprocess.run([airflow.python, str(TRIGGERS), *args], input=json.dumps(spec or {}), text=True,
                          capture_output=True, env=airflow.env())
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def _backup(env, scenario_config: Path, airflow: AirflowInstance) -> str:
    done = env.afbackup(scenario_config, "backup", airflow=airflow)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(params=["2", "3"], ids=["airflow2", "airflow3"])
def scenario(env, request) -> Scenario:
    major = request.param
    source, db = env.airflow(major)
    sql = lambda statement, params=None: env.pg.execute(db, statement, params)  # noqa: E731
    running, queued = [row[0] for row in sql("SELECT run_id FROM dag_run WHERE dag_id = 'sample_etl' ORDER BY 1")]
    sql("UPDATE dag_run SET state = 'running' WHERE dag_id = 'sample_etl' AND run_id = %s", (running,))
    sql("UPDATE dag_run SET state = 'queued' WHERE dag_id = 'sample_etl' AND run_id = %s", (queued,))
    for task, state in (("extract", "running"), ("transform", "queued"), ("load", "scheduled")):
        sql("UPDATE task_instance SET state = %s WHERE dag_id = 'sample_etl' AND run_id = %s AND task_id = %s",
            (state, running, task))
    sql("UPDATE dag SET is_paused = false WHERE dag_id = 'sample_etl'")
    sql("INSERT INTO connection (conn_id, conn_type, is_encrypted, is_extra_encrypted) "
        "VALUES ('warehouse', 'snowflake', false, false)")
    if major == "3":
        sql("INSERT INTO dag_bundle (name, active) VALUES ('team_bundle', true)")
        sql("UPDATE dag SET bundle_name = 'team_bundle' WHERE dag_id = 'reporting'")
    config = env.write_config(env.config(db, airflow=source))
    backups = {"A": _backup(env, config, source)}
    trigger_id = _triggers(source, "add", spec={"classpath": "tests.NeverFires", "kwargs": TRIGGER_KWARGS})
    sql("UPDATE task_instance SET state = 'deferred', trigger_id = %s WHERE dag_id = 'sample_etl' AND run_id = %s "
        "AND task_id = 'extract'", (trigger_id, queued))
    sql("CREATE TABLE alembic_version_fab (version_num varchar(32) NOT NULL PRIMARY KEY)")
    sql("INSERT INTO alembic_version_fab VALUES ('ffffffffffff')")
    backups["B"] = _backup(env, config, source)
    return Scenario(major, source, db, config, running, queued, backups)


def _target(env, scenario: Scenario, fernet_key: str | None = None) -> tuple[AirflowInstance, str]:
    name = env.unique("handover_")
    return AirflowInstance(scenario.source.version, env.workdir / f"home-{name}", env.pg.sqlalchemy_url(name),
                           fernet_key or scenario.source.fernet_key), name


def _restore(env, scenario: Scenario, backup: str, *args: str, fernet_key: str | None = None):
    target, db = _target(env, scenario, fernet_key)
    done = env.afbackup(scenario.config, "restore", scenario.backups[backup], "--target-dsn", env.pg.dsn(db),
                        *args, airflow=target)
    return done, target, db


def _states(env, db: str, scenario: Scenario) -> tuple[dict, dict]:
    tasks = dict(env.pg.execute(db, "SELECT task_id, state FROM task_instance WHERE dag_id = 'sample_etl' AND "
                                    "run_id = %s", (scenario.running_run,)))
    runs = dict(env.pg.execute(db, "SELECT run_id, state FROM dag_run WHERE dag_id = 'sample_etl'"))
    return tasks, {"running": runs[scenario.running_run], "queued": runs[scenario.queued_run]}


def check_the_plan_reports_in_flight_work_catch_up_and_the_deployment_exactly(env, scenario: Scenario) -> None:
    # WHEN the snapshot taken mid-run is planned (--dry-run)
    done, _, db = _restore(env, scenario, "A", "--dry-run", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    # THEN the work in flight at backup time is counted exactly, per DAG
    flight = report["in_flight"]
    assert (flight["task_instances"], flight["dag_runs"], flight["triggers"]) == (3, 2, 0)
    assert flight["by_dag"] == {"sample_etl": {"task_instances": {"running": 1, "queued": 1, "scheduled": 1},
                                               "dag_runs": {"running": 1, "queued": 1}, "triggers": 0}}
    assert sorted(t["task_id"] for t in flight["tasks"]) == ["extract", "load", "transform"]
    # AND the one DAG active at backup time (daily, catchup off) would get exactly one run once unpaused
    assert [(c["dag_id"], c["catchup"], c["runs"]) for c in report["catchup"]] == [("sample_etl", False, 1)]
    # AND what the target lacks is reported: the connection type with no provider, (3.x) the bundle
    warnings = " | ".join(report["environment"]["warnings"])
    assert "snowflake (1 connection(s))" in warnings
    assert ("team_bundle" in warnings) is (scenario.major == "3")
    assert any("in flight in sample_etl: 1 queued, 1 running, 1 scheduled" in line for line in report["plan"])
    assert env.pg.execute("postgres", "SELECT 1 FROM pg_database WHERE datname = %s", (db,)) == []


def check_the_in_flight_policy_is_applied_before_anything_schedules(env, scenario: Scenario, policy: str) -> None:
    # WHEN restored with the policy (the default is reset)
    args = [] if policy == "default" else ["--in-flight", policy]
    done, _, db = _restore(env, scenario, "A", *args, "--json")
    assert done.returncode == 0, (policy, done.stderr)
    report = json.loads(done.stdout)
    assert report["in_flight"]["task_instances"] == 3 and report["in_flight"]["dag_runs"] == 2
    assert report["reconciled"]["found"] == {"task_instances": 3, "dag_runs": 2}
    # THEN the restored states are exactly the policy's
    tasks, runs = _states(env, db, scenario)
    expected = {
        "default": ({"extract": None, "transform": None, "load": None}, {"running": "running", "queued": "queued"}),
        "fail": ({"extract": "failed", "transform": "failed", "load": "failed"},
                 {"running": "failed", "queued": "failed"}),
        "keep": ({"extract": "running", "transform": "queued", "load": "scheduled"},
                 {"running": "running", "queued": "queued"}),
    }[policy]
    assert (tasks, runs) == expected, policy
    # AND every DAG is paused; the one active at backup time is recorded
    assert report["paused_dags"] == ["sample_etl"]
    assert env.pg.execute(db, "SELECT count(*) FROM dag WHERE NOT is_paused")[0][0] == 0
    if policy == "default":
        _unpause_restores_the_state_at_backup_time(env, scenario, db)


def _unpause_restores_the_state_at_backup_time(env, scenario: Scenario, db: str) -> None:
    dsn = env.pg.dsn(db)
    # without a terminal, unpause needs --yes; --dry-run shows and changes nothing
    assert env.afbackup(scenario.config, "unpause", "--target-dsn", dsn).returncode == 2
    dry = env.afbackup(scenario.config, "unpause", "--target-dsn", dsn, "--dry-run", "--json")
    assert dry.returncode == 0 and json.loads(dry.stdout)["dags"] == ["sample_etl"], dry.stderr
    done = env.afbackup(scenario.config, "unpause", "--target-dsn", dsn, "--yes", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["unpaused"] == ["sample_etl"]
    paused = dict(env.pg.execute(db, "SELECT dag_id, is_paused FROM dag"))
    assert paused == dict(env.pg.execute(scenario.db, "SELECT dag_id, is_paused FROM dag"))
    again = env.afbackup(scenario.config, "unpause", "--target-dsn", dsn, "--yes")
    assert again.returncode == 4 and "no record" in again.stderr


def check_a_deferred_tasks_trigger_decrypts_after_a_restore_under_a_new_fernet_key(env, scenario: Scenario) -> None:
    # GIVEN a backup with a deferred task instance, restored into a deployment with another Fernet key,
    # without pausing and keeping the in-flight work as it was
    done, target, db = _restore(env, scenario, "B", "--no-pause-dags", "--in-flight", "keep", "--json",
                                fernet_key=new_fernet_key())
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["in_flight"]["triggers"] == 1 and report["in_flight"]["by_dag"]["sample_etl"]["triggers"] == 1
    assert report["in_flight"]["task_instances"] == 4
    assert report["fernet"]["reencrypted"] is True and report["fernet"]["checked"]["triggers"] == 1
    # THEN Airflow on the target decrypts the trigger's kwargs with its own key, exactly
    assert list(_triggers(target, "read").values()) == [TRIGGER_KWARGS]
    # AND the deferred task still waits on it (keep), and the DAGs are as they were (--no-pause-dags)
    assert env.pg.execute(db, "SELECT state FROM task_instance WHERE trigger_id IS NOT NULL") == [("deferred",)]
    assert env.pg.execute(db, "SELECT dag_id FROM dag WHERE NOT is_paused") == [("sample_etl",)]
    assert env.pg.execute(db, "SELECT to_regclass('afbackup.paused_by_restore')") == [(None,)]
    # AND the FAB schema revision the target cannot compare is reported
    assert any("alembic_version_fab ffffffffffff" in w for w in report["environment"]["warnings"])


def test_a_snapshot_taken_mid_run_restores_into_a_paused_consistent_airflow(env, scenario):
    """One test per Airflow version, so its two backups are made once (xdist runs each test on one worker)."""
    check_the_plan_reports_in_flight_work_catch_up_and_the_deployment_exactly(env, scenario)
    for policy in ("default", "fail", "keep"):
        check_the_in_flight_policy_is_applied_before_anything_schedules(env, scenario, policy)
    check_a_deferred_tasks_trigger_decrypts_after_a_restore_under_a_new_fernet_key(env, scenario)
