"""Handing the restored database to Airflow: paused, the in-flight work reconciled, the deployment compared.

- Before loading (also ``--dry-run``): the backup's deployment is compared
  with the target's (``environment_check``; errors stop the restore, exit 4),
  and the plan shows per DAG what was in flight at backup time and how many
  runs each DAG active at backup time would get once unpaused.
- After loading, before anything can schedule: every DAG paused and the active
  ones recorded (``pause``; ``--no-pause-dags`` opts out), then the in-flight
  policy applied (``reconcile``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from afbackup import manifest as mf
from afbackup.catchup import describe_catchup, estimate_all
from afbackup.inflight import describe_in_flight
from afbackup.restore import pause, reconcile
from afbackup.restore.environment_check import EnvironmentCheck, compare_environment

if TYPE_CHECKING:
    from afbackup.restore import RestoreReport
    from afbackup.restore.plan import RestoreContext

logger = logging.getLogger(__name__)


def in_flight_record(manifest: mf.Manifest) -> dict[str, Any] | None:
    """``restore --json``'s ``in_flight``: as counted at backup time (None for older backups)."""
    return manifest.in_flight.model_dump() if manifest.in_flight is not None else None


def catchup_estimates(manifest: mf.Manifest) -> list[dict[str, Any]] | None:
    return estimate_all(manifest.active_dags, mf.utcnow())


def check_environment(ctx: RestoreContext) -> EnvironmentCheck:
    """The backup's deployment against the target's (waits for the target check, which runs beside the download)."""
    if "db" not in ctx.options.parts:
        return EnvironmentCheck()
    target = ctx.schema_check().environment if ctx.agent is not None else None
    return compare_environment(ctx.manifest.environment, ctx.manifest.airflow.fab_revision, target,
                               migrate=ctx.options.migrate)


def record(ctx: RestoreContext, report: RestoreReport) -> EnvironmentCheck:
    """Fill the report's in_flight, catchup and environment; raise (exit 4) on an environment error."""
    report.in_flight, report.catchup = in_flight_record(ctx.manifest), catchup_estimates(ctx.manifest)
    check = check_environment(ctx)
    report.environment = check.as_dict()
    for warning in check.warnings:
        logger.warning("%s", warning)
    check.raise_errors()
    return check


def plan_lines(ctx: RestoreContext, report: RestoreReport) -> list[str]:
    opts = ctx.options
    lines = [("pause every DAG and record the active ones (`afbackup unpause` unpauses exactly those)"
              if opts.pause_dags else "leave DAGs as they were at backup time (--no-pause-dags): the scheduler "
              "starts on them at once")]
    lines += describe_in_flight(report.in_flight, opts.in_flight)
    lines += describe_catchup(report.catchup, opts.pause_dags)
    if report.environment:
        lines += [f"WARNING: {w}" for w in report.environment["warnings"]]
    return lines


def settle(ctx: RestoreContext, report: RestoreReport, dsn: str) -> None:
    """After the load and its checks, before anything can schedule: pause, then reconcile the in-flight work."""
    cfg, schema = ctx.cfg, ctx.manifest.postgres.schema_name
    timeout = cfg.database.connect_timeout
    if ctx.options.pause_dags:
        report.paused_dags = pause.pause_all(dsn, ctx.password, schema, ctx.manifest.backup_id, timeout)
        report.steps.append(f"paused every DAG; {len(report.paused_dags)} were active and are recorded for "
                            "`afbackup unpause`")
    else:
        pause.forget(dsn, ctx.password, timeout)
    report.reconciled = reconcile.reconcile_in_flight(dsn, ctx.password, schema, ctx.options.in_flight, timeout)
    found = report.reconciled["found"]
    report.steps.append(f"in-flight work (--in-flight {ctx.options.in_flight}): {found['task_instances']} task "
                        f"instance(s), {found['dag_runs']} DAG run(s) " + _changed(report.reconciled))


def _changed(summary: dict[str, Any]) -> str:
    changes = [f"{n} {kind.replace('_', ' ')[:-1]}(s) {label}" for kind in ("task_instances", "dag_runs")
               for label, n in sorted(summary[kind].items())]
    return ("changed: " + ", ".join(changes)) if changes else "left as they were"
