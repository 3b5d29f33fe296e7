"""``afbackup drill --live`` end to end: restore, start Airflow on the scratch DB, canary to success, two RTOs;
and everything it started is gone after SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import psutil
import pytest

pytestmark = [pytest.mark.airflow, pytest.mark.slow]


def _backed_up(env, major, tmp_path):
    airflow, db = env.airflow(major)
    cfg = env.config(db, airflow=airflow, smoke={"canary_connection": "canary_db", "canary_variable": "plain"},
                     drill={"airflow_home": str(tmp_path / "live-homes")})
    path = env.write_config(cfg)
    done = env.afbackup(path, "backup", airflow=airflow)
    assert done.returncode == 0, done.stderr
    return airflow, path


def _drill_dbs(env) -> list:
    return env.pg.execute("postgres", "SELECT datname FROM pg_database WHERE datname LIKE 'afbackup_drill_%'")


@pytest.mark.parametrize("major", ["2", "3"], ids=["airflow2", "airflow3"])
def test_drill_live_reports_both_rtos_in_json_markdown_and_junit(env, major, tmp_path):
    airflow, path = _backed_up(env, major, tmp_path)
    before = _drill_dbs(env)
    report_dir = tmp_path / "report"
    done = env.afbackup(path, "drill", "--live", "--scratch-dsn", env.pg.dsn(), "--report", str(report_dir),
                        "--rto-target", "10m", "--rto-live-target", "15m", airflow=airflow, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((report_dir / "drill-report.json").read_text())
    names = [check["name"] for check in report["checks"]]
    assert names == ["select backup", "verify", "restore", "database checks", "airflow reads the database",
                     "live: airflow starts", "live: health", "live: dags", "live: stuck work", "live: canary",
                     "targets"]
    assert report["ok"] is True and report["live"] is True
    assert 0 < report["rto_seconds"] < report["rto_live_seconds"] < 900
    assert report["smoke"]["canary"]["state"] == "success"
    markdown = (report_dir / "drill-report.md").read_text()
    assert "**RTO live** (start → first successful task" in markdown and "| live: canary | pass |" in markdown
    suite = ET.parse(report_dir / "drill-junit.xml").getroot()
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert float(props["rto_live_seconds"]) == report["rto_live_seconds"]
    assert float(props["rto_seconds"]) == report["rto_seconds"]
    assert (suite.get("tests"), suite.get("failures")) == ("11", "0")
    assert _drill_dbs(env) == before  # Airflow was stopped, so the scratch database could be dropped
    assert list((tmp_path / "live-homes").iterdir()) == []


def _live_processes(home_parent: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("AIRFLOW_HOME", "").startswith(home_parent):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def test_sigterm_stops_the_live_airflow_and_drops_the_scratch_database(env, tmp_path):
    airflow, path = _backed_up(env, "3", tmp_path)
    homes = tmp_path / "live-homes"
    before = _drill_dbs(env)
    proc = subprocess.Popen([sys.executable, "-m", "afbackup", "--config", str(path), "drill", "--live",
                             "--scratch-dsn", env.pg.dsn()], env=env.afbackup_env(airflow), cwd=str(env.workdir),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and len(_live_processes(str(homes))) < 3:
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(1)
        assert len(_live_processes(str(homes))) >= 3  # api-server, scheduler, dag-processor running
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert _live_processes(str(homes)) == []
    assert list(homes.iterdir()) == []
    assert _drill_dbs(env) == before
