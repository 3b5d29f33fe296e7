"""Apply the in-flight policy to a restored database, before anything can schedule on it.

The plan comes from ``afbackup.inflight.plan_in_flight`` over the rows the
restored database holds (the dump's snapshot, so the same rows the manifest
counted at backup time). It is applied in one transaction, keyed by the
planned rows only, and the number of rows changed must equal the plan.

Fields cleared with the state (where the table has them; 2.x and 3.x differ):
the trigger a deferred task waited on (Airflow's triggerer deletes triggers no
task references), the resume method and kwargs, and the executor/job/pid that
held the task in the old deployment.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from psycopg import sql

from afbackup.errors import RestoreError
from afbackup.inflight import InFlightPlan, plan_in_flight, read_runs, read_tasks
from afbackup.sources.postgres import connect

logger = logging.getLogger(__name__)

_CLEARED = ("trigger_id", "trigger_timeout", "next_method", "next_kwargs", "queued_by_job_id", "pid",
            "external_executor_id")


def reconcile_in_flight(dsn: str, password: str | None, schema: str, policy: str, timeout: float) -> dict[str, Any]:
    """Plan and apply ``policy`` in the restored database; returns the plan's summary (what changed)."""
    with connect(dsn, password, timeout, autocommit=False) as conn:
        tasks, runs = read_tasks(conn, schema), read_runs(conn, schema)
        plan = plan_in_flight(tasks, runs, policy)
        _apply(conn, schema, plan)
        conn.commit()
    summary = plan.summary()
    summary["found"] = {"task_instances": len(tasks), "dag_runs": len(runs)}
    if tasks or runs:
        logger.info("in-flight work reconciled (--in-flight %s): %d task instance(s), %d DAG run(s) changed",
                    policy, len(plan.changed("task_instance")), len(plan.changed("dag_run")))
    return summary


def _apply(conn: psycopg.Connection, schema: str, plan: InFlightPlan) -> None:
    tasks, runs = plan.changed("task_instance"), plan.changed("dag_run")
    if not tasks and not runs:
        return
    columns = _columns(conn, schema, "task_instance")
    ident = sql.Identifier(schema)
    for new_state in sorted({a.new_state or "" for a in tasks}):
        chosen = [a for a in tasks if (a.new_state or "") == new_state]
        sets: list[sql.Composable] = [sql.SQL("state = {}").format(sql.Literal(new_state or None))]
        sets += [sql.SQL("{} = NULL").format(sql.Identifier(c)) for c in _CLEARED if c in columns]
        if new_state == "failed":
            sets.append(sql.SQL("end_date = coalesce(end_date, now())"))
        keys = list(zip(*(a.key for a in chosen), strict=False))
        query = sql.SQL("UPDATE {s}.task_instance SET {sets} WHERE (dag_id, run_id, task_id, map_index) IN "
                        "(SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::int[])) "
                        "AND state = ANY(%s)").format(s=ident, sets=sql.SQL(", ").join(sets))
        done = conn.execute(query, (list(keys[0]), list(keys[1]), list(keys[2]), [int(i) for i in keys[3]],
                                    sorted({a.state for a in chosen})))
        _check(done.rowcount, len(chosen), "task instances")
    if runs:
        keys = list(zip(*(a.key for a in runs), strict=False))
        done = conn.execute(sql.SQL("UPDATE {s}.dag_run SET state = 'failed', end_date = coalesce(end_date, now()) "
                                    "WHERE (dag_id, run_id) IN (SELECT * FROM unnest(%s::text[], %s::text[])) "
                                    "AND state = ANY(%s)").format(s=ident),
                            (list(keys[0]), list(keys[1]), sorted({a.state for a in runs})))
        _check(done.rowcount, len(runs), "DAG runs")


def _columns(conn: psycopg.Connection, schema: str, table: str) -> set[str]:
    rows = conn.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
                        "AND table_name = %s", (schema, table)).fetchall()
    return {row[0] for row in rows}


def _check(changed: int, planned: int, what: str) -> None:
    if changed != planned:
        raise RestoreError(f"in-flight reconciliation changed {changed} {what}, the plan had {planned}",
                           stage="in-flight", hint="nothing was changed (rolled back); restore again with "
                                                   "--in-flight keep and reconcile by hand")
