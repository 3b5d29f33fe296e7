"""Work in flight: what was running at backup time, and what a restore does with it.

A backup is a point in time. The task instances, DAG runs and triggers that
were live in that snapshot come back in a restored database in the same
states, with no worker, executor slot or triggerer behind them. Left alone
(``keep``), Airflow's scheduler then resets queued work (it runs again) and
fails running work as zombies (retries, failure callbacks, pages).

Two halves, like ``retention.py``:
- ``read_in_flight`` records, in the dump's own snapshot, what was in flight
  (per DAG, with counts, and a bounded list of the task instances);
- ``plan_in_flight`` is a pure planner: given the in-flight rows of the
  restored database and a policy, every task instance and DAG run gets an
  action and the reason for it. ``restore/reconcile.py`` applies the plan.

Policies (``--in-flight``; the default and its reasoning are in docs/restore.md):
- ``reset``: task instances back to no state, so the scheduler runs them again
  once their DAG is unpaused; DAG runs stay as they were (running / queued),
  so they carry on. Work that finished after the backup repeats: tasks must be
  idempotent (Airflow's own contract; the restore rewinds time anyway).
- ``fail``: task instances and DAG runs marked failed directly in the
  database: no retry, no callback, no email. Nothing runs again unless the
  operator clears it.
- ``keep``: nothing changes; Airflow's own recovery decides (see above).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg import sql

TASK_STATES = ("running", "queued", "scheduled", "restarting", "up_for_retry", "up_for_reschedule", "deferred")
RUN_STATES = ("running", "queued")
POLICIES = ("reset", "fail", "keep")
DEFAULT_POLICY = "reset"
LISTED_TASKS = 100  # the manifest lists at most this many task instances (the counts are always complete)


@dataclasses.dataclass(frozen=True)
class TaskRow:
    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    state: str

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class RunRow:
    dag_id: str
    run_id: str
    state: str


def read_in_flight(conn: psycopg.Connection, schema: str, data_tables: Iterable[str]) -> dict[str, Any]:
    """The in-flight record of a database (run it in the dump's snapshot): totals, per DAG, a bounded list.

    Tables whose rows the backup does not carry are named in ``not_captured``:
    nothing of them comes back, so nothing of them is in flight after a restore.
    """
    tables = set(data_tables)
    tasks = read_tasks(conn, schema) if "task_instance" in tables else []
    runs = read_runs(conn, schema) if "dag_run" in tables else []
    triggers = _trigger_counts(conn, schema, "task_instance" in tables) if "trigger" in tables else {}
    return summarize(tasks, runs, triggers, not_captured=[t for t in ("task_instance", "dag_run", "trigger")
                                                          if t not in tables])


def summarize(tasks: Sequence[TaskRow], runs: Sequence[RunRow], triggers: dict[str | None, int], *,
              not_captured: Sequence[str] = ()) -> dict[str, Any]:
    """The manifest's ``in_flight`` document (also what ``restore --json`` reports as ``in_flight``)."""
    by_dag: dict[str, dict[str, Any]] = {}

    def entry(dag_id: str) -> dict[str, Any]:
        return by_dag.setdefault(dag_id, {"task_instances": {}, "dag_runs": {}, "triggers": 0})

    for task in tasks:
        states = entry(task.dag_id)["task_instances"]
        states[task.state] = states.get(task.state, 0) + 1
    for run in runs:
        states = entry(run.dag_id)["dag_runs"]
        states[run.state] = states.get(run.state, 0) + 1
    for dag_id, count in triggers.items():
        if dag_id is not None:
            entry(dag_id)["triggers"] = count
    ordered = sorted(tasks, key=lambda t: (t.dag_id, t.run_id, t.task_id, t.map_index))
    return {"task_instances": len(tasks), "dag_runs": len(runs), "triggers": sum(triggers.values()),
            "by_dag": dict(sorted(by_dag.items())),
            "tasks": [t.as_dict() for t in ordered[:LISTED_TASKS]], "tasks_truncated": len(tasks) > LISTED_TASKS,
            "not_captured": list(not_captured)}


def read_tasks(conn: psycopg.Connection, schema: str) -> list[TaskRow]:
    query = sql.SQL("SELECT dag_id, run_id, task_id, map_index, state FROM {}.task_instance "
                    "WHERE state = ANY(%s)").format(sql.Identifier(schema))
    return [TaskRow(*row) for row in conn.execute(query, (list(TASK_STATES),)).fetchall()]


def read_runs(conn: psycopg.Connection, schema: str) -> list[RunRow]:
    query = sql.SQL("SELECT dag_id, run_id, state FROM {}.dag_run WHERE state = ANY(%s)").format(
        sql.Identifier(schema))
    return [RunRow(*row) for row in conn.execute(query, (list(RUN_STATES),)).fetchall()]


def _trigger_counts(conn: psycopg.Connection, schema: str, with_tasks: bool) -> dict[str | None, int]:
    """Triggers per DAG (through the task instances that wait on them); None: not a task's (e.g. an asset
    watcher's, or orphaned)."""
    ident = sql.Identifier(schema)
    if not with_tasks:
        total = conn.execute(sql.SQL("SELECT count(*) FROM {}.trigger").format(ident)).fetchone()
        return {None: int(total[0])} if total and total[0] else {}
    query = sql.SQL("SELECT (SELECT min(ti.dag_id) FROM {s}.task_instance ti WHERE ti.trigger_id = t.id), count(*) "
                    "FROM {s}.trigger t GROUP BY 1").format(s=ident)
    return {dag_id: int(count) for dag_id, count in conn.execute(query).fetchall()}


@dataclasses.dataclass(frozen=True)
class Action:
    """What happens to one task instance or DAG run, and why."""

    kind: str  # task_instance | dag_run
    key: tuple[str, ...]
    state: str  # as restored
    new_state: str | None  # None: no state (the scheduler schedules it again); == state: unchanged
    reason: str

    @property
    def changes(self) -> bool:
        return self.new_state != self.state


@dataclasses.dataclass(frozen=True)
class InFlightPlan:
    policy: str
    actions: tuple[Action, ...]

    def changed(self, kind: str) -> list[Action]:
        return [a for a in self.actions if a.kind == kind and a.changes]

    def summary(self) -> dict[str, Any]:
        """Counts of what the plan changes: ``{"task_instances": {"running->None": 1, …}, "dag_runs": {…}}``."""
        out: dict[str, dict[str, int]] = {"task_instances": {}, "dag_runs": {}}
        for action in self.actions:
            if action.changes:
                label = f"{action.state}->{action.new_state or 'none'}"
                bucket = out[action.kind + "s"]
                bucket[label] = bucket.get(label, 0) + 1
        return {"policy": self.policy, **out}


_TASK_REASONS = {
    "reset": "no worker holds it after a restore: cleared so the scheduler runs it again when its DAG is unpaused",
    "fail": "no worker holds it after a restore: failed without retry or callback; clear it to run it again",
    "keep": "left as restored (--in-flight keep): the scheduler resets or fails it as a zombie",
}
_RUN_REASONS = {
    "reset": "left running/queued so the cleared tasks carry on",
    "fail": "failed with its in-flight tasks, without callbacks",
    "keep": "left as restored (--in-flight keep)",
}


def plan_in_flight(tasks: Sequence[TaskRow], runs: Sequence[RunRow], policy: str) -> InFlightPlan:
    """Decide, for every in-flight task instance and DAG run, its state after the restore.

    Safety property: only rows in the in-flight states are ever touched, and
    ``keep`` changes nothing. Pure: no I/O, same input → same plan.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown in-flight policy {policy!r}")
    actions = []
    for task in sorted(tasks, key=lambda t: (t.dag_id, t.run_id, t.task_id, t.map_index)):
        if task.state not in TASK_STATES:
            continue
        new = {"reset": None, "fail": "failed", "keep": task.state}[policy]
        actions.append(Action("task_instance", (task.dag_id, task.run_id, task.task_id, str(task.map_index)),
                              task.state, new, _TASK_REASONS[policy]))
    for run in sorted(runs, key=lambda r: (r.dag_id, r.run_id)):
        if run.state not in RUN_STATES:
            continue
        new = "failed" if policy == "fail" else run.state
        actions.append(Action("dag_run", (run.dag_id, run.run_id), run.state, new, _RUN_REASONS[policy]))
    return InFlightPlan(policy, tuple(actions))


def describe_in_flight(record: dict[str, Any] | None, policy: str, limit: int = 20) -> list[str]:
    """Plan lines: per DAG, what was in flight at backup time and what the policy does with it."""
    if record is None:
        return [f"work in flight: not recorded in this backup (made before afbackup recorded it); "
                f"--in-flight {policy} applies to whatever the restored database holds"]
    total = f"{record['task_instances']} task instance(s), {record['dag_runs']} DAG run(s), " \
            f"{record['triggers']} trigger(s)"
    lines = [f"work in flight at backup time: {total}; --in-flight {policy}: " + {
        "reset": "task instances cleared (they run again once their DAG is unpaused)",
        "fail": "task instances and DAG runs marked failed (no retries, no callbacks)",
        "keep": "left as they are (the scheduler resets or fails them)"}[policy]]
    for dag_id, item in list(record["by_dag"].items())[:limit]:
        parts = [", ".join(f"{n} {s}" for s, n in sorted(item["task_instances"].items())) or "no task instances"]
        if item["dag_runs"]:
            parts.append("runs: " + ", ".join(f"{n} {s}" for s, n in sorted(item["dag_runs"].items())))
        if item["triggers"]:
            parts.append(f"{item['triggers']} trigger(s)")
        lines.append(f"  in flight in {dag_id}: " + "; ".join(parts))
    if len(record["by_dag"]) > limit:
        lines.append(f"  … and {len(record['by_dag']) - limit} more DAG(s) (see --json)")
    return lines
