"""Catch-up: how many DAG runs the scheduler would create, once unpaused, for the time since the backup.

At backup time (in the dump's snapshot) ``read_active_dags`` records each
active DAG's schedule: ``next_dagrun_create_after`` (when the scheduler would
create its next run), the timetable from the serialized DAG (cron expression
or fixed delta, timezone) and ``catchup``. At restore time ``estimate_runs``
counts the runs due between that moment and now:

- nothing is due before ``next_dagrun_create_after``; no such time (asset- or
  manually-triggered DAGs): no run is created by time;
- catchup off: one run (the scheduler creates only the latest);
- catchup on: every period between ``next_dagrun_create_after`` and now, when
  the period is fixed and derivable: a ``timedelta`` schedule, ``@hourly``/
  ``@daily``/``@weekly``, or a cron expression of that shape (``M * * * *``,
  ``M H * * *``, ``M H * * D``, ``*/N * * * *``, ``M */N * * *``). Anything
  else (month-based or irregular crons, custom timetables) is reported as
  unknown rather than guessed. A cron in a zone with daylight saving time may
  be off by one run around a change; end dates and ``max_active_runs`` are not
  considered (they limit, never add, runs).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import zlib
from typing import Any

import psycopg
from psycopg import sql

_PRESETS = {"@hourly": 3600, "@daily": 86400, "@midnight": 86400, "@weekly": 604800}
_NUMBER = re.compile(r"^\d+$")
_DAY = re.compile(r"^([0-7]|sun|mon|tue|wed|thu|fri|sat)$", re.IGNORECASE)
_STEP = re.compile(r"^\*/(\d+)$")
LISTED_DAGS = 5000


def read_active_dags(conn: psycopg.Connection, schema: str) -> list[dict[str, Any]]:
    """Every unpaused, non-stale DAG with its schedule facts (bounded to ``LISTED_DAGS``).

    One pass, no per-DAG subquery (3.x keeps every version of a serialized DAG, with no index on ``dag_id``):
    the latest version of each active DAG is picked by key first, and only the few schedule fields leave the
    server (the whole document only for compressed rows).
    """
    ident = sql.Identifier(schema)
    dag_columns, serialized_columns = _columns(conn, schema, "dag"), _columns(conn, schema, "serialized_dag")
    alive = sql.SQL("NOT d.is_stale") if "is_stale" in dag_columns else sql.SQL("d.is_active")
    active = sql.SQL("SELECT d.dag_id FROM {s}.dag d WHERE NOT d.is_paused AND {alive}").format(s=ident, alive=alive)
    if "id" in serialized_columns:  # 3.x: several versions per DAG
        latest = sql.SQL("SELECT id FROM (SELECT DISTINCT ON (dag_id) id FROM {s}.serialized_dag WHERE dag_id IN "
                         "({active}) ORDER BY dag_id, last_updated DESC) v").format(s=ident, active=active)
        pick: sql.Composable = sql.SQL("s.id IN ({latest})").format(latest=latest)
    else:  # 2.x: one row per DAG
        pick = sql.SQL("true")
    fields = sql.SQL(", ").join(sql.SQL("{name}, s.data->'dag'->{name}").format(name=sql.Literal(name))
                                for name in ("timetable", "catchup", "schedule_interval", "timezone"))
    query = sql.SQL(
        "SELECT d.dag_id, d.next_dagrun, d.next_dagrun_create_after, json_build_object({fields})::text, "
        "CASE WHEN s.data IS NULL THEN s.data_compressed END "
        "FROM {s}.dag d LEFT JOIN {s}.serialized_dag s ON s.dag_id = d.dag_id AND {pick} "
        "WHERE d.dag_id IN ({active}) ORDER BY d.dag_id LIMIT {limit}").format(
        fields=fields, s=ident, pick=pick, active=active, limit=sql.Literal(LISTED_DAGS))
    return [_schedule(*row) for row in conn.execute(query).fetchall()]


def _columns(conn: psycopg.Connection, schema: str, table: str) -> set[str]:
    rows = conn.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND "
                        "table_name = %s", (schema, table)).fetchall()
    return {row[0] for row in rows}


def _schedule(dag_id: str, next_dagrun: dt.datetime | None, create_after: dt.datetime | None,
              schedule_json: str | None, compressed: bytes | None) -> dict[str, Any]:
    """``schedule_json``: the DAG's schedule fields (from ``data``); ``compressed``: the whole document."""
    doc: Any = {}
    try:
        if compressed:
            doc = _mapping(json.loads(zlib.decompress(compressed))).get("dag")
        elif schedule_json:
            doc = json.loads(schedule_json)
    except (ValueError, zlib.error):
        doc = {}
    dag = _mapping(doc)
    timetable = _mapping(dag.get("timetable"))
    fields = _mapping(timetable.get("__var"))
    expression, delta = fields.get("expression"), _seconds(fields.get("delta"))
    legacy = dag.get("schedule_interval")  # 2.x serializes plain cron/timedelta schedules this way
    if not timetable and isinstance(legacy, str):
        expression = legacy
    elif not timetable and isinstance(legacy, dict) and legacy.get("__type") == "timedelta":
        delta = _seconds(legacy.get("__var"))
    zone = fields.get("timezone") or dag.get("timezone")
    return {"dag_id": dag_id, "next_dagrun": _iso(next_dagrun), "next_dagrun_create_after": _iso(create_after),
            "timetable": str(timetable.get("__type") or "").rsplit(".", 1)[-1] or None,
            "expression": expression if isinstance(expression, str) else None, "delta": delta,
            "timezone": zone if isinstance(zone, str) else None,
            # absent: the DAG used its deployment's [scheduler] catchup_by_default (filled in from the agent)
            "catchup": dag.get("catchup") if isinstance(dag.get("catchup"), bool) else None}


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _seconds(value: Any) -> float | None:
    if isinstance(value, (int, float)) and value > 0:
        return float(value)
    return None


def _iso(moment: dt.datetime | None) -> str | None:
    return moment.astimezone(dt.UTC).isoformat() if moment else None


def cron_period(expression: str) -> int | None:
    """The fixed period of a cron expression in seconds, or None when it is not one fixed period."""
    text = expression.strip().lower()
    if text in _PRESETS:
        return _PRESETS[text]
    fields = text.split()
    if len(fields) != 5:
        return None
    minute, hour, dom, month, dow = fields
    if dom != "*" or month != "*":
        return None
    fixed = bool(_NUMBER.match(minute))
    if dow != "*":
        return 604800 if fixed and _NUMBER.match(hour) and _DAY.match(dow) else None
    if fixed and _NUMBER.match(hour):
        return 86400
    if fixed and hour == "*":
        return 3600
    step = _STEP.match(hour)
    if fixed and step and 24 % int(step.group(1)) == 0:
        return int(step.group(1)) * 3600
    step = _STEP.match(minute)
    if hour == "*" and (minute == "*" or (step and 60 % int(step.group(1)) == 0)):
        return int(step.group(1)) * 60 if step else 60
    return None


def describe_schedule(dag: dict[str, Any]) -> str:
    if dag.get("expression"):
        return f"{dag['expression']} {dag.get('timezone') or ''}".strip()
    if dag.get("delta"):
        return f"every {dt.timedelta(seconds=dag['delta'])}"
    return dag.get("timetable") or "unknown schedule"


def estimate_runs(dag: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    """``runs``: how many runs the scheduler would create once unpaused (None: unknown), with the reason."""
    catchup = dag.get("catchup")
    out = {"dag_id": dag["dag_id"], "schedule": describe_schedule(dag), "catchup": catchup, "runs": None}
    due = dag.get("next_dagrun_create_after")
    if not due:
        return {**out, "runs": 0, "reason": "not scheduled by time"}
    start = dt.datetime.fromisoformat(due)
    if start > now:
        return {**out, "runs": 0, "reason": f"next run not due until {due}"}
    period = dag.get("delta") or (cron_period(dag["expression"]) if dag.get("expression") else None)
    if catchup is False:
        return {**out, "runs": 1, "reason": "catchup off: only the latest run"}
    if period is None:
        return {**out, "reason": "unknown: the schedule has no fixed period (at least 1 run)"}
    count = int((now - start).total_seconds() // period) + 1
    if catchup is None:
        return {**out, "reason": f"catchup unknown: 1 run if off, {count} if on"}
    return {**out, "runs": count, "reason": f"catchup on: one run per {dt.timedelta(seconds=period)} since {due}"}


def estimate_all(dags: list[dict[str, Any]] | None, now: dt.datetime) -> list[dict[str, Any]] | None:
    return None if dags is None else [estimate_runs(dag, now) for dag in dags]


def describe_catchup(estimates: list[dict[str, Any]] | None, paused: bool, limit: int = 20) -> list[str]:
    """Plan lines: per DAG active at backup time, the runs it would get once unpaused."""
    if estimates is None:
        return ["DAG runs due since the backup: not recorded in this backup (made before afbackup recorded "
                "schedules)"]
    when = "once unpaused (`afbackup unpause`)" if paused else "as soon as a scheduler starts (--no-pause-dags)"
    known = [e["runs"] for e in estimates if e["runs"] is not None]
    unknown = len(estimates) - len(known)
    lines = [f"{len(estimates)} DAG(s) were active at backup time; the scheduler would create {sum(known)} run(s) "
             f"{when}" + (f", plus an unknown number for {unknown} DAG(s)" if unknown else "")]
    for item in estimates[:limit]:
        runs = "unknown" if item["runs"] is None else str(item["runs"])
        catchup = {True: "on", False: "off", None: "unknown"}[item["catchup"]]
        lines.append(f"  {item['dag_id']} ({item['schedule']}, catchup {catchup}): {runs} run(s): {item['reason']}")
    if len(estimates) > limit:
        lines.append(f"  … and {len(estimates) - limit} more DAG(s) (see --json)")
    return lines
