"""restore_drills/ on the embedded environment: the quarterly drill and the incident runbook, run as scripts.

The scripts call the real afbackup (``AFBACKUP="<python> -m afbackup"``) against real PostgreSQL, S3 (moto),
GPG and Airflow 3 (local executor), so the runbook cannot drift from the tool. Kubernetes is a fake
``kubectl`` (``KUBECTL``) that logs its argv, and whether the restore's target database existed at that moment.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.harness.airflow_env import AIRFLOW_VERSIONS, AirflowInstance, new_fernet_key
from tests.harness.fake_airflow_api import FakeAirflowApi

pytestmark = pytest.mark.airflow

REPO = Path(__file__).resolve().parents[2]
DRILLS = REPO / "restore_drills"
QUARTERLY = DRILLS / "quarterly_drill.sh"
INCIDENT = DRILLS / "incident_restore.sh"
REPORTS = ("drill-report.json", "drill-report.md", "drill-junit.xml")
BANNER = re.compile(r"^==== \[(\d)/8\] ", re.MULTILINE)


@pytest.fixture(scope="module")
def source(env):
    """A backup of a seeded Airflow 3 DB in which one DAG (sample_etl) is active."""
    airflow, db = env.airflow("3")
    env.pg.execute(db, "UPDATE dag SET is_paused = false WHERE dag_id = 'sample_etl'")
    config = env.write_config(env.config(db, airflow=airflow))
    done = env.afbackup(config, "backup", airflow=airflow)
    assert done.returncode == 0, done.stderr
    return airflow, db, config, done.stdout.strip()


def run_script(env, script: Path, *args: str, airflow: AirflowInstance, config: Path, cwd: Path,
               extra: dict[str, str] | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run a restore_drills script the way an operator or CI does: as an executable, no terminal on stdin."""
    variables = {"AFBACKUP_CONFIG": str(config), "AFBACKUP": f"{shlex.quote(sys.executable)} -m afbackup"}
    return subprocess.run([str(script), *args], capture_output=True, text=True, cwd=str(cwd), timeout=timeout,
                          stdin=subprocess.DEVNULL, env=env.afbackup_env(airflow, {**variables, **(extra or {})}))


def database_exists(env, name: str) -> bool:
    return bool(env.pg.execute("postgres", "SELECT 1 FROM pg_database WHERE datname = %s", (name,)))


def new_target(env, airflow: AirflowInstance, *, fernet_key: str | None = None,
               major: str | None = None) -> tuple[AirflowInstance, str]:
    """A deployment whose database does not exist yet (Airflow ``major``, default: the source's)."""
    name = env.unique("incident_")
    version = AIRFLOW_VERSIONS[major] if major else airflow.version
    return AirflowInstance(version, env.workdir / f"home-{name}", env.pg.sqlalchemy_url(name),
                           fernet_key or airflow.fernet_key), name


@pytest.fixture
def fake_kubectl(env, tmp_path):
    """A kubectl that logs argv (and whether the watched database exists) and has a 2-replica scheduler."""
    log, watched = tmp_path / "kubectl.log", tmp_path / "watched-db"
    psql = env.pg.bin / "psql"
    script = tmp_path / "kubectl"
    script.write_text(f"""#!/usr/bin/env bash
db=$(cat {shlex.quote(str(watched))} 2>/dev/null)
exists=$({shlex.quote(str(psql))} -XAt -d {shlex.quote(env.pg.dsn())} \\
    -c "SELECT count(*) FROM pg_database WHERE datname = '$db'")
echo "target_exists=$exists $*" >> {shlex.quote(str(log))}
case "$*" in
    *"get deployment"*"{{.spec.replicas}}"*) echo 2 ;;
    *"get deployment"*matchLabels*) printf 'component=scheduler,release=airflow,' ;;
    *"get pods"*) ;;
    *scale*) echo "deployment.apps/airflow-scheduler scaled" ;;
    *"rollout status"*) echo 'deployment "airflow-scheduler" successfully rolled out' ;;
    *) echo "fake kubectl: unexpected call: $*" >&2; exit 1 ;;
esac
""")
    script.chmod(0o755)

    class Fake:
        path = str(script)

        @staticmethod
        def watch(database: str) -> None:
            watched.write_text(database)

        @staticmethod
        def calls() -> list[str]:
            return log.read_text().splitlines() if log.exists() else []

        @staticmethod
        def scales() -> list[tuple[str, str]]:
            """(replicas, target_exists) of every `scale` call, in order."""
            found = []
            for line in Fake.calls():
                match = re.match(r"target_exists=(\d+) .*\bscale deployment/airflow-scheduler --replicas=(\d+)", line)
                if match:
                    found.append((match.group(2), match.group(1)))
            return found

    return Fake


def test_the_scripts_are_executable_bash_with_strict_mode():
    for script in (QUARTERLY, INCIDENT):
        assert os.access(script, os.X_OK), f"{script.name} is not executable"
        text = script.read_text()
        assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text


# --------------------------------------------------------------------------------------------- quarterly
@pytest.mark.slow  # the drill/restore scripts run restores through the CLI with Airflow
def test_quarterly_drill_passes_writes_the_reports_and_publishes_the_markdown(env, source, tmp_path):
    airflow, _, config, backup_id = source
    summary = tmp_path / "step-summary.md"
    summary.write_text("## an earlier step\n")
    done = run_script(env, QUARTERLY, airflow=airflow, config=config, cwd=tmp_path, extra={
        "DRILL_SCRATCH_DSN": env.pg.dsn(), "DRILL_REPORT_DIR": str(tmp_path / "out"),
        "DRILL_RTO_TARGET": "30m", "DRILL_RPO_TARGET": "1h", "GITHUB_STEP_SUMMARY": str(summary)})
    assert done.returncode == 0, done.stdout + done.stderr
    for name in REPORTS:
        assert (tmp_path / "out" / name).is_file(), name
    report = json.loads((tmp_path / "out" / "drill-report.json").read_text())
    assert report["ok"] is True and report["backup_id"] == backup_id
    assert report["rto_target"] == 1800 and report["rpo_target"] == 3600
    markdown = (tmp_path / "out" / "drill-report.md").read_text()
    assert markdown.startswith("# afbackup DR drill: PASSED")
    assert done.stdout.strip() == markdown.strip()  # stdout is exactly the published report
    assert summary.read_text().startswith("## an earlier step\n# afbackup DR drill: PASSED")  # appended
    assert ET.parse(tmp_path / "out" / "drill-junit.xml").getroot().get("failures") == "0"
    # AND the Airflow CLI is here (the local executor's), so the drill ran live and said so
    assert "live: the Airflow CLI" in done.stderr and report["live"] is True
    assert 0 < report["rto_seconds"] < report["rto_live_seconds"]


@pytest.mark.slow  # the drill/restore scripts run restores through the CLI with Airflow
def test_quarterly_drill_missing_its_rto_target_exits_10_and_still_reports(env, source, tmp_path):
    airflow, _, config, _ = source
    stale = tmp_path / "out"
    stale.mkdir()
    (stale / "drill-report.md").write_text("# afbackup DR drill: PASSED\n(a stale report of an earlier run)\n")
    done = run_script(env, QUARTERLY, airflow=airflow, config=config, cwd=tmp_path, extra={
        "DRILL_SCRATCH_DSN": env.pg.dsn(), "DRILL_REPORT_DIR": str(stale), "DRILL_RTO_TARGET": "1ms",
        "AFBACKUP_DRILL_AIRFLOW_COMMAND": '["/nonexistent/airflow"]'})
    assert done.returncode == 10, done.stdout + done.stderr
    for name in REPORTS:
        assert (stale / name).is_file(), name
    report = json.loads((stale / "drill-report.json").read_text())
    assert report["ok"] is False and "RTO" in report["checks"][-1]["detail"]
    assert done.stdout.startswith("# afbackup DR drill: FAILED") and "stale" not in done.stdout
    assert ET.parse(stale / "drill-junit.xml").getroot().get("failures") == "1"
    assert "exit 10" in done.stderr
    # AND with no Airflow CLI to start, the drill was not live, and the log says so
    assert "NOT live: no Airflow CLI here (/nonexistent/airflow" in done.stderr and report["live"] is False


def _postgres_processes_using(path: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if path in cmdline:
            found.append(f"{proc.name}: {cmdline}")
    return found


@pytest.mark.slow  # the drill/restore scripts run restores through the CLI with Airflow
def test_quarterly_drill_provisions_and_removes_its_own_scratch_postgres(env, source, tmp_path):
    # GIVEN no DRILL_SCRATCH_DSN and no [drill] scratch_dsn (we are root here: the server runs as postgres)
    airflow, _, config, backup_id = source
    done = run_script(env, QUARTERLY, airflow=airflow, config=config, cwd=tmp_path, extra={"DRILL_LIVE": "0"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "not live: DRILL_LIVE=0" in done.stderr
    # THEN the drill ran on a throwaway server, and wrote its reports into the default ./drill-report
    started = re.search(r"started a throwaway PostgreSQL \(.*\) on 127\.0\.0\.1:(\d+), data in (\S+);", done.stderr)
    assert started, done.stderr
    port, directory = int(started.group(1)), started.group(2)
    assert port != env.pg.port
    report = json.loads((tmp_path / "drill-report" / "drill-report.json").read_text())
    assert report["ok"] is True and report["backup_id"] == backup_id
    assert f":{port}" in report["scratch"] or str(port) in json.dumps(report)
    # AND the server is stopped and its directory removed
    assert not Path(directory).exists()
    assert _postgres_processes_using(directory) == []
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0, "the throwaway PostgreSQL still listens"


# --------------------------------------------------------------------------------------------- incident
@pytest.mark.slow  # the drill/restore scripts run restores through the CLI with Airflow
def test_incident_restore_scales_down_restores_paused_and_reencrypted_then_scales_back_up(
        env, source, tmp_path, fake_kubectl):
    # GIVEN a new deployment with ANOTHER Fernet key, whose scheduler is a 2-replica Deployment
    airflow, _, config, backup_id = source
    target, target_db = new_target(env, airflow, fernet_key=new_fernet_key())
    fake_kubectl.watch(target_db)
    # WHEN the runbook runs, confirmed by --yes
    done = run_script(env, INCIDENT, "--yes", "--target-dsn", env.pg.dsn(target_db), "--k8s-namespace", "airflow",
                      "--k8s-scheduler", "airflow-scheduler", airflow=target, config=config, cwd=tmp_path,
                      extra={"KUBECTL": fake_kubectl.path})
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    # THEN every step was announced, in order, with what was restored
    assert [int(n) for n in BANNER.findall(out)] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert f"backup:        {backup_id} (latest)" in out and "Airflow:       3." in out
    # AND the scheduler was at 0 before the target existed, and back at 2 after the restore
    assert fake_kubectl.scales() == [("0", "0"), ("2", "1")]
    assert any("get deployment airflow-scheduler -o jsonpath={.spec.replicas}" in c for c in fake_kubectl.calls())
    assert any("get pods -l component=scheduler,release=airflow -o name" in c for c in fake_kubectl.calls())
    # AND the restore pinned the id it showed, paused every DAG and reported the active one
    assert f"restore {backup_id} --target-dsn" in out
    assert env.pg.execute(target_db, "SELECT count(*) FROM dag WHERE NOT is_paused")[0][0] == 0
    assert "now PAUSED (1):\n  - sample_etl" in out
    # AND it said that the Fernet key differed and afbackup re-encrypted (no separate re-import)
    assert "afbackup re-encrypted" in out
    # AND what restore verified, then the next steps with the exact unpause command
    section5 = out.split("[5/8]")[1].split("[6/8]")[0]
    assert "verified" in section5 and "  - " in section5
    next_steps = out.split("[8/8] Next steps")[1]
    assert "airflow dags unpause sample_etl" in next_steps and "afbackup unpause --target-dsn" in next_steps
    # AND the non-DB items the operator must bring, each checked against the target
    section4 = out.split("[4/8]")[1].split("[5/8]")[0]
    for item in ("Fernet key", "JWT secret", "auth", "DAG bundles", "providers"):
        assert f"] {item}" in section4, item
    assert "Work in flight: 0 task instance(s)" in section4
    assert "kubectl -n airflow logs deployment/airflow-scheduler" in next_steps
    assert "quarterly_drill.sh" in next_steps and "rotate" in next_steps
    assert "skipped: no Airflow API configured" in out.split("[7/8]")[1]


def test_incident_restore_smoke_tests_before_unpausing_and_lists_stuck_work(env, source, tmp_path):
    # GIVEN a restored Airflow 3 whose API (a real HTTP server here) reports a task stuck in queued
    airflow, db, config, backup_id = source
    target, target_db = new_target(env, airflow)
    dags = [row[0] for row in env.pg.execute(db, "SELECT dag_id FROM dag ORDER BY dag_id")]
    healthy = {name: {"status": "healthy"} for name in ("metadatabase", "scheduler", "triggerer", "dag_processor")}
    stuck = {"dag_id": "sample_etl", "task_id": "extract", "dag_run_id": "manual__1", "pool": "etl",
             "queued_when": "2020-01-01T00:00:00Z", "state": "queued"}
    cfg = tomllib.loads(config.read_text())
    with FakeAirflowApi() as api:
        api.route("GET", "/api/v2/monitor/health", (200, {}, healthy))
        api.route("GET", "/auth/token", (201, {}, {"access_token": "t"}))
        api.route("GET", "/api/v2/dags", (200, {}, {"dags": [{"dag_id": d} for d in dags],
                                                     "total_entries": len(dags)}))
        api.route("GET", "/api/v2/importErrors", (200, {}, {"import_errors": [], "total_entries": 0}))
        api.route("GET", "/api/v2/dags/~/dagRuns/~/taskInstances",
                  (200, {}, {"task_instances": [stuck], "total_entries": 1}))
        cfg["airflow"]["api"] = {"url": api.url, "version": "3"}
        smoke_config = env.write_config(cfg)
        # WHEN the runbook restores
        done = run_script(env, INCIDENT, "--yes", "--target-dsn", env.pg.dsn(target_db), airflow=target,
                          config=smoke_config, cwd=tmp_path)
        asked = [(r.method, r.path) for r in api.requests]
    # THEN it ran the smoke test after the restore, listed the stuck task, and exits 10 (restored, not healthy)
    assert done.returncode == 10, done.stdout + done.stderr
    smoke = done.stdout.split("[7/8]")[1].split("[8/8]")[0]
    assert "PASS health" in smoke and "PASS dags" in smoke and "FAIL stuck work" in smoke
    assert "- queued: dag sample_etl, task extract, run manual__1, pool etl, since 2020-01-01" in smoke
    assert "THE SMOKE TEST FAILED" in done.stderr and "Do NOT unpause" in done.stderr
    assert "FIX WHAT THE SMOKE TEST FOUND" in done.stdout.split("[8/8]")[1]
    # AND the smoke test only read (nothing was unpaused: no PATCH, no POST)
    assert {method for method, _ in asked} == {"GET"}
    assert env.pg.execute(target_db, "SELECT count(*) FROM dag WHERE NOT is_paused")[0][0] == 0


@pytest.mark.slow  # the drill/restore scripts run restores through the CLI with Airflow
def test_incident_restore_scales_back_up_when_the_restore_fails(env, source, tmp_path, fake_kubectl):
    # GIVEN a target database that is not empty (and no --clean)
    airflow, _, config, _ = source
    target, target_db = new_target(env, airflow)
    env.pg.create_database(target_db, template="template_af3")
    fake_kubectl.watch(target_db)
    done = run_script(env, INCIDENT, "--yes", "--target-dsn", env.pg.dsn(target_db), "--k8s-namespace", "airflow",
                      "--k8s-scheduler", "deployment/airflow-scheduler", airflow=target, config=config,
                      cwd=tmp_path, extra={"KUBECTL": fake_kubectl.path})
    # THEN restore's exit code (4: preflight), and the scheduler scaled back to 2 all the same
    assert done.returncode == 4, done.stdout + done.stderr
    assert "is not empty" in done.stderr and "--clean" in done.stdout
    assert [replicas for replicas, _ in fake_kubectl.scales()] == ["0", "2"]
    assert "scaling it back up now" in done.stderr
    assert "[4/8]" not in done.stdout


@pytest.mark.slow  # the drill/restore scripts run restores through the CLI with Airflow
def test_incident_restore_without_yes_and_without_a_terminal_refuses(env, source, tmp_path, fake_kubectl):
    airflow, _, config, _ = source
    target, target_db = new_target(env, airflow)
    done = run_script(env, INCIDENT, "--target-dsn", env.pg.dsn(target_db), "--k8s-namespace", "airflow",
                      "--k8s-scheduler", "airflow-scheduler", airflow=target, config=config, cwd=tmp_path,
                      extra={"KUBECTL": fake_kubectl.path})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "--yes" in done.stderr and "Nothing was changed" in done.stderr
    assert not database_exists(env, target_db)
    assert fake_kubectl.calls() == []  # the scheduler was never touched


@pytest.mark.slow  # the drill/restore scripts run restores through the CLI with Airflow
@pytest.mark.timeout(600)  # may migrate the Airflow 2 and 3 template DBs first
def test_incident_restore_asks_for_migrate_and_does_not_add_it(env, tmp_path):
    # GIVEN a backup of Airflow 2 and a deployment of Airflow 3
    old, db = env.airflow("2")
    cfg = env.config(db, airflow=old)
    assert env.afbackup(env.write_config(cfg), "backup", airflow=old).returncode == 0
    target, target_db = new_target(env, old, major="3")
    # the same storage; the executor runs the target's Airflow 3 CLI
    config3 = env.write_config(dict(cfg, airflow={"executor": "local", "command": [target.airflow]}))
    done = run_script(env, INCIDENT, "--yes", "--target-dsn", env.pg.dsn(target_db), airflow=target,
                      config=config3, cwd=tmp_path)
    # THEN refused with restore's 4, told to rerun with --migrate, and nothing touched
    assert done.returncode == 4, done.stdout + done.stderr
    assert "rerun this script with --migrate" in done.stderr
    assert "--migrate" not in done.stdout.split("running: afbackup")[1].splitlines()[0]
    assert not database_exists(env, target_db)


@pytest.mark.parametrize("args, message", [
    ((), "--target-dsn is required"),
    (("--target-dsn", "postgresql://x@h/db", "--k8s-scheduler", "s"), "go together"),
    (("--target-dsn", "postgresql://x@h/db", "--frobnicate"), "unknown argument"),
])
def test_incident_restore_usage_errors_exit_2(args, message):
    done = subprocess.run([str(INCIDENT), *args], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          env={**os.environ, "AFBACKUP": "false", "KUBECTL": "false"})
    assert done.returncode == 2 and message in done.stderr and "usage:" in done.stderr
