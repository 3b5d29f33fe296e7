"""``afbackup smoke``: does a (restored) Airflow run? Named checks against its REST API.

- ``health``: the metadatabase and the scheduler are healthy; on Airflow 3 also the triggerer and the DAG
  processor (unless listed in ``[smoke] optional_components``).
- ``dags``: how many DAGs the API knows (stale/inactive ones included, the canary excluded) against the
  backup's ``dag`` row count; import errors are listed (they do not fail the check by themselves).
- ``stuck work``: task instances queued longer than ``queued_threshold``, and running ones whose heartbeat
  is older than ``heartbeat_timeout`` (read from the metadata database when afbackup can reach it: the API
  does not expose task heartbeats), each with DAG, task, run and pool.
- ``canary`` (with ``--canary``): trigger the canary DAG and wait for its run (smoke_canary).

A failed check makes the command exit 10; the report names it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

from afbackup.airflow_api import AirflowApi
from afbackup.check_report import Check, run_check
from afbackup.errors import DrillFailed

COMPONENTS_2 = ("metadatabase", "scheduler")
COMPONENTS_3 = ("metadatabase", "scheduler", "triggerer", "dag_processor")


@dataclasses.dataclass(frozen=True)
class SmokeOptions:
    queued_threshold: float = 600.0
    heartbeat_timeout: float = 300.0
    optional_components: tuple[str, ...] = ()
    manifest_dags: int | None = None  # the backup's dag row count; None: not compared
    backup_id: str = ""
    canary: bool = False
    canary_dag: str = "afbackup_canary"
    canary_connection: str = ""
    canary_variable: str = ""
    canary_timeout: float = 600.0
    dsn: str = ""  # the metadata database, for task heartbeats ("" : not checked)
    password: str | None = None
    schema: str = ""
    connect_timeout: float = 10.0


@dataclasses.dataclass
class StuckTask:
    state: str
    dag_id: str
    task_id: str
    run_id: str
    pool: str
    since: str  # queued since / last heartbeat

    def line(self) -> str:
        what = "queued since" if self.state == "queued" else "last heartbeat"
        return f"{self.dag_id}.{self.task_id} run {self.run_id} pool {self.pool}: {self.state}, {what} {self.since}"


@dataclasses.dataclass
class SmokeReport:
    url: str = ""
    airflow_major: int = 0
    backup_id: str = ""
    started_at: str = ""
    checks: list[Check] = dataclasses.field(default_factory=list)
    stuck: list[StuckTask] = dataclasses.field(default_factory=list)
    import_errors: list[str] = dataclasses.field(default_factory=list)
    canary: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(check.ok is not False for check in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "ok": self.ok}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2, sort_keys=True, default=str)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def run_smoke(api: AirflowApi, options: SmokeOptions) -> SmokeReport:
    from afbackup.smoke_canary import run_canary

    report = SmokeReport(url=api.url, backup_id=options.backup_id, started_at=utcnow().isoformat())
    checks = report.checks
    reachable = run_check(checks, "health", lambda: _health(api, options, report))
    skip = "" if reachable or report.airflow_major else "skipped: the API did not answer"
    run_check(checks, "dags", lambda: _dags(api, options, report), skip=skip)
    run_check(checks, "stuck work", lambda: _stuck(api, options, report), skip=skip)
    if options.canary:
        run_check(checks, "canary", lambda: run_canary(api, options, report), skip=skip)
    return report


def _health(api: AirflowApi, options: SmokeOptions, report: SmokeReport) -> str:
    health = api.health()
    report.airflow_major = api.major
    wanted = COMPONENTS_3 if api.major >= 3 else COMPONENTS_2
    bad, good = [], []
    for name in wanted:
        status = (health.get(name) or {}).get("status")
        beat = next((v for k, v in (health.get(name) or {}).items() if k.startswith("latest_")), None)
        text = f"{name} {status or 'not running'}" + (f" (heartbeat {beat})" if beat else "")
        if name in options.optional_components and status != "healthy":
            good.append(text + " (optional)")  # absent here; a restored job row may still say "unhealthy"
        elif status == "healthy":
            good.append(text)
        else:
            bad.append(text)
    if bad:
        raise DrillFailed("unhealthy: " + "; ".join(bad), hint="start the component, or see its logs")
    return f"Airflow {api.major}: " + "; ".join(good)


def _dags(api: AirflowApi, options: SmokeOptions, report: SmokeReport) -> str:
    params = {"exclude_stale": "false"} if api.major >= 3 else {"only_active": "false"}
    dags = [d for d in api.paginate("/dags", "dags", order_by="dag_id", params=params)
            if d["dag_id"] != options.canary_dag]
    active = sum(1 for d in dags if d.get("is_active", not d.get("is_stale", False)))
    order = "id" if api.major >= 3 else "import_error_id"
    errors = list(api.paginate("/importErrors", "import_errors", order_by=order))
    report.import_errors = [str(e.get("filename")) for e in errors]
    listed = f"; import errors in {len(errors)} file(s): {', '.join(report.import_errors[:10])}" if errors else \
        "; no import errors"
    served = f"{len(dags)} DAGs known to the API ({active} with their files present)"
    if options.manifest_dags is None:
        return served + " (the backup's DAG count is unknown: not compared)" + listed
    if len(dags) != options.manifest_dags:
        raise DrillFailed(f"{served}, but the backup holds {options.manifest_dags}{listed}",
                          hint="was the right backup restored into this database?")
    return served + f", as in the backup{listed}"


def _stuck(api: AirflowApi, options: SmokeOptions, report: SmokeReport) -> str:
    now = utcnow()
    limit = now - dt.timedelta(seconds=options.queued_threshold)
    order = "id" if api.major >= 3 else None
    for ti in api.paginate("/dags/~/dagRuns/~/taskInstances", "task_instances", order_by=order,
                           params={"state": "queued"}):
        since = parse_time(ti.get("queued_when"))
        if since is None or since < limit:
            report.stuck.append(StuckTask("queued", ti["dag_id"], ti["task_id"], ti["dag_run_id"],
                                          str(ti.get("pool")), since.isoformat() if since else "unknown"))
    queued = len(report.stuck)
    beats = "running tasks' heartbeats not checked (no metadata database to read them from)"
    if options.dsn:
        running = _running_without_heartbeat(options, api.major)
        report.stuck += running
        beats = f"{len(running)} running without a heartbeat for {options.heartbeat_timeout:g}s"
    if report.stuck:
        shown = "; ".join(s.line() for s in report.stuck[:20])
        more = f" (and {len(report.stuck) - 20} more)" if len(report.stuck) > 20 else ""
        raise DrillFailed(f"{queued} queued longer than {options.queued_threshold:g}s, {beats}: {shown}{more}",
                          hint="clear or fail them (airflow tasks clear / the UI) before unpausing DAGs")
    return f"0 queued longer than {options.queued_threshold:g}s; {beats}"


def _running_without_heartbeat(options: SmokeOptions, major: int) -> list[StuckTask]:
    from psycopg import sql

    from afbackup.sources.postgres import connect

    schema = sql.Identifier(options.schema or "public")
    if major >= 3:
        query = sql.SQL("SELECT dag_id, task_id, run_id, pool, last_heartbeat_at FROM {}.task_instance "
                        "WHERE state = 'running' AND (last_heartbeat_at IS NULL OR "
                        "last_heartbeat_at < now() - make_interval(secs => %s)) ORDER BY dag_id, task_id, run_id"
                        ).format(schema)
    else:
        query = sql.SQL("SELECT ti.dag_id, ti.task_id, ti.run_id, ti.pool, j.latest_heartbeat "
                        "FROM {0}.task_instance ti LEFT JOIN {0}.job j ON j.id = ti.job_id "
                        "WHERE ti.state = 'running' AND (j.latest_heartbeat IS NULL OR "
                        "j.latest_heartbeat < now() - make_interval(secs => %s)) ORDER BY 1, 2, 3").format(schema)
    with connect(options.dsn, options.password, options.connect_timeout) as conn:
        rows = conn.execute(query, (options.heartbeat_timeout,)).fetchall()
    return [StuckTask("running", r[0], r[1], r[2], r[3], r[4].isoformat() if r[4] else "never") for r in rows]
