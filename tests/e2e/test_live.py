"""``afbackup smoke`` and ``drill --live`` against real Airflow 2.11.2 / 3.3.2 processes on restored databases.

One Airflow per version (scheduler, API server / webserver, DAG processor on 3) is started on a restored
database and shared by the smoke cases (module scope); the scheduler case runs last because it stops the
scheduler (and starts it again). Everything started is stopped (the fixture's ``with``).
"""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET

import pytest
from cryptography.fernet import Fernet

from afbackup.live_airflow import LiveAirflow, LiveSpec
from tests.harness.airflow_env import new_fernet_key

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

CANARY = {"canary_connection": "canary_db", "canary_variable": "plain"}


class Restored:
    def __init__(self, env, major, tmp) -> None:
        self.env, self.major, self.tmp = env, major, tmp
        self.source, db = env.airflow(major)
        cfg = env.config(db, airflow=self.source, smoke=CANARY)
        done = env.afbackup(env.write_config(cfg), "backup", airflow=self.source)
        assert done.returncode == 0, done.stderr
        self.backup_id, self.cfg = done.stdout.strip(), cfg
        self.db = env.unique("live_restored_")
        done = env.afbackup(env.write_config(cfg), "restore", "--target-dsn", env.pg.dsn(self.db), "--json",
                            airflow=self.source)
        assert done.returncode == 0, done.stderr

    def smoke_config(self, live: LiveAirflow, **smoke):
        api = {"url": live.url}
        if live.api_user:
            secret = self.tmp / "api-password"
            secret.write_text(live.api_user[1] + "\n")
            api.update(username=live.api_user[0], password_file=str(secret))
        airflow = {**self.cfg["airflow"], "api": api}
        return self.env.write_config({**self.cfg, "airflow": airflow,
                                      "smoke": {**CANARY, "optional_components": ["triggerer"], **smoke}})

    def smoke(self, live, *args, **smoke):
        return self.env.afbackup(self.smoke_config(live, **smoke), "smoke", self.backup_id,
                                 "--dsn", self.env.pg.dsn(self.db), *args, timeout=400)


@pytest.fixture(scope="module", params=["2", "3"], ids=["airflow2", "airflow3"])
def live(request, env, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"live{request.param}")
    restored = Restored(env, request.param, tmp)
    spec = LiveSpec(command=(restored.source.airflow,), major=int(request.param), dsn=env.pg.dsn(restored.db),
                    password=None, fernet_keys=(restored.source.fernet_key,), home_parent=str(tmp),
                    startup_timeout=300, extra_env={
                        # the stuck-work case plants a queued task: the scheduler must not fix it first
                        "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "86400",
                        "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "86400",
                        **{k: v for k, v in restored.source.env().items() if k == "PYTHONPATH"}})
    with LiveAirflow(spec) as airflow:
        airflow.wait_ready()
        yield restored, airflow
    assert airflow.processes == {} and airflow.home is None


def _checks(report: dict) -> dict[str, bool | None]:
    return {check["name"]: check["ok"] for check in report["checks"]}


def test_smoke_passes_on_a_healthy_restore(live, tmp_path):
    restored, airflow = live
    done = restored.smoke(airflow, "--canary", "--json", "--report", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert _checks(report) == {"health": True, "dags": True, "stuck work": True, "canary": True}
    assert report["airflow_major"] == int(restored.major) and report["backup_id"] == restored.backup_id
    assert report["canary"]["state"] == "success" and report["canary"]["conf"] == {
        "connection": "canary_db", "variable": "plain"}
    assert "as in the backup" in report["checks"][1]["detail"]
    suite = ET.parse(tmp_path / "smoke-junit.xml").getroot()
    assert (suite.get("tests"), suite.get("failures")) == ("4", "0")
    assert "# afbackup smoke test: PASSED" in (tmp_path / "smoke-report.md").read_text()


def test_smoke_fails_when_the_canary_connection_cannot_be_decrypted(live):
    # GIVEN a connection restored under another deployment's Fernet key
    restored, airflow = live
    token = Fernet(new_fernet_key().encode()).encrypt(b"not-for-this-key").decode()
    restored.env.pg.execute(restored.db, "INSERT INTO connection (conn_id, conn_type, host, password, is_encrypted,"
                            " is_extra_encrypted) VALUES ('wrong_key', 'http', 'h', %s, true, false)", (token,))
    # WHEN the canary reads it
    done = restored.smoke(airflow, "--canary", "--json", canary_connection="wrong_key")
    # THEN the smoke test fails with 10, naming the canary
    assert done.returncode == 10, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert _checks(report)["canary"] is False and report["canary"]["state"] == "failed"
    assert "smoke test failed: canary: canary run" in done.stderr
    # AND the report carries the task log's last error line: Airflow's secrets lookup swallows the decryption
    # error and reports the connection as not defined (both versions), which the detail explains
    assert "The conn_id `wrong_key` isn't defined" in report["canary"]["error"], report["canary"]
    assert "cannot decrypt as not defined" in report["checks"][-1]["detail"]


def test_smoke_fails_and_lists_tasks_stuck_in_queued_and_running_without_heartbeat(live):
    restored, airflow = live
    pg, db = restored.env.pg, restored.db
    rows = pg.execute(db, "SELECT dag_id, task_id, run_id, state FROM task_instance WHERE dag_id = 'sample_etl'"
                          " ORDER BY run_id, task_id LIMIT 2")
    queued, running = rows
    try:
        pg.execute(db, "UPDATE task_instance SET state = 'queued', queued_dttm = now() - interval '1 hour' "
                       "WHERE dag_id = %s AND task_id = %s AND run_id = %s", queued[:3])
        no_beat = "last_heartbeat_at = now() - interval '1 hour'" if restored.major == "3" else "job_id = NULL"
        pg.execute(db, f"UPDATE task_instance SET state = 'running', start_date = now() - interval '1 hour', "
                       f"{no_beat} WHERE dag_id = %s AND task_id = %s AND run_id = %s", running[:3])
        done = restored.smoke(airflow, "--queued-threshold", "10m")
    finally:
        for row in rows:
            pg.execute(db, "UPDATE task_instance SET state = %s WHERE dag_id = %s AND task_id = %s AND run_id = %s",
                       (row[3], *row[:3]))
    assert done.returncode == 10, done.stdout + done.stderr
    assert "| **FAIL** |" in done.stdout and "| stuck work | **FAIL**" in done.stdout
    assert f"| queued | sample_etl | {queued[1]} | {queued[2]} |" in done.stdout
    assert f"| running | sample_etl | {running[1]} | {running[2]} |" in done.stdout
    assert "smoke test failed: stuck work: 1 queued longer than 600s, 1 running without a heartbeat" in done.stderr


def test_smoke_fails_when_the_scheduler_is_not_running(live):
    # last in the module; the shared Airflow's scheduler is started again afterwards all the same
    restored, airflow = live
    airflow.stop_component("scheduler")
    try:
        deadline, done = time.monotonic() + 90, None
        while time.monotonic() < deadline:
            done = restored.smoke(airflow, "--json")
            if done.returncode != 0:
                break
            time.sleep(5)
    finally:
        airflow.start_component("scheduler")
    assert airflow.processes["scheduler"].poll() is None
    assert done.returncode == 10, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert _checks(report)["health"] is False
    assert "scheduler unhealthy" in report["checks"][0]["detail"] or "scheduler not running" in \
        report["checks"][0]["detail"]
