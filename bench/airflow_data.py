"""Fill an already-migrated Airflow 2.x/3.x metadata database with a large, realistic data set.

50 DAGs x 20 tasks on 15-minute to 4-hour schedules: scheduled/manual runs (success, failed, a few running or
queued), task instances (retries in ``task_instance_history``), ``log`` events, ``xcom`` values for about half
of the task instances, rendered fields, jobs, serialized DAGs and DAG code, all made server side with
``INSERT ... SELECT``. Columns, types, NOT NULL and defaults come from ``information_schema``. Run it once on
a freshly migrated DB (the role must own the tables); connection, variable and slot_pool are left alone.
CLI: ``python -m bench.airflow_data --dsn DSN --size 1GiB`` prints the result as JSON.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import sys
import time
from datetime import UTC, datetime, timedelta

import psycopg

from afbackup.config.units import parse_size

N_TASKS, SLOT_S = 20, 40  # tasks per DAG; seconds between the starts of consecutive tasks of a run
ROUND_S = 14400  # a "round" of runs spans 4 hours: each DAG runs ROUND_S / interval times in it
START = datetime(2024, 1, 1, tzinfo=UTC)  # logical date of the first runs
RTIF_RUNS = 30  # rendered fields are kept for the newest runs of each task (Airflow's default)
DAGS_FOLDER = "/opt/airflow/dags"
DOMAINS = ["sales", "marketing", "finance", "billing", "inventory", "crm", "ads", "ml", "warehouse", "payments"]
KINDS = [("ingest", 900), ("export", 1800), ("hourly_sync", 3600), ("reporting", 7200), ("batch_etl", 14400)]
N_DAGS, ROUND_RUNS = len(DOMAINS) * len(KINDS), len(DOMAINS) * sum(ROUND_S // i for _k, i in KINDS)
OWNERS = ["data-eng", "analytics", "platform", "ml-team", "finance-eng"]
TASKS = ["start", "check_source", "extract_orders", "extract_customers", "extract_products", "validate_raw",
         "stage_orders", "stage_customers", "transform_facts", "transform_dims", "quality_checks", "load_dwh",
         "update_aggregates", "refresh_views", "export_to_s3", "publish", "notify", "cleanup", "audit", "end"]
OPERATORS = {  # task type: (module, ui_color, template_fields, extra constructor argument)
    "EmptyOperator": ("empty", "#e8f7e4", [], ""),
    "PythonOperator": ("python", "#ffefeb", ["templates_dict", "op_args", "op_kwargs"], ", python_callable=_{n}"),
    "BashOperator": ("bash", "#f0ede4", ["bash_command", "env", "cwd"], ', bash_command="{n}.sh {{{{ ds }}}}"')}
TASK_OPS = ["EmptyOperator"] + ["PythonOperator" if t % 2 else "BashOperator" for t in range(1, N_TASKS - 1)] + [
    "EmptyOperator"]  # task type of each task: empty start/end, in between alternating Python and Bash
BULK_TABLES = ["task_instance", "log", "xcom"]  # secondary indexes rebuilt after each bulk load
COUNTED = ["dag", "dag_tag", "dag_version", "serialized_dag", "dag_code", "job", "dag_run", "task_instance",
           "task_instance_history", "log", "xcom", "rendered_task_instance_fields"]


class SchemaError(RuntimeError):
    """The database schema needs a value this generator does not know how to produce."""


def J(sql: str, pickled: str | None = None):
    """A JSON SQL expression cast to the column type; bytea gets UTF-8 text or ``pickled`` (2.x PickleType)."""
    return lambda typ: (pickled or f"convert_to(({sql})::text, 'UTF8')") if typ == "bytea" else f"({sql})::{typ}"


def _insert(cur, schema: dict, table: str, exprs: dict, source: str, params=None, tail="") -> None:
    """INSERT ... SELECT exprs (column -> SQL, callable(column type) or None = default) FROM source."""
    cols = schema[table]
    missing = [c for c, (_t, notnull, dflt) in cols.items() if notnull and not dflt and exprs.get(c) is None]
    if missing:
        raise SchemaError(f"{table}: no generator for NOT NULL column(s) {missing}")
    use = [c for c, e in exprs.items() if c in cols and e is not None]
    vals = [exprs[c](cols[c][0]) if callable(exprs[c]) else exprs[c] for c in use]
    cur.execute(f"INSERT INTO {table} ({', '.join(use)}) SELECT {', '.join(vals)} FROM {source} {tail}",
                params or {})


def _serialized_dag(v3: bool, dag: dict) -> dict:
    """A serialized DAG shaped like Airflow's own: format version 3 for Airflow 3, version 1 for Airflow 2."""
    tasks = []
    for t, (op, name) in enumerate(zip(TASK_OPS, TASKS, strict=True)):
        mod, color, fields, _arg = OPERATORS[op]
        var = {"task_id": name, "owner": dag["owner"], "retries": 2, "retry_delay": 300.0, "ui_color": color,
               "template_fields": fields, "_needs_expansion": False, "task_type" if v3 else "_task_type": op,
               "_task_module": ("airflow.providers.standard.operators." if v3 else "airflow.operators.") + mod,
               "downstream_task_ids": TASKS[t + 1:t + 2], "template_ext": [], "_is_empty": op == "EmptyOperator"}
        if op == "BashOperator":
            var.update(bash_command=f"{name}.sh {{{{ ds }}}}", template_ext=[".sh", ".bash"],
                       template_fields_renderers={"bash_command": "bash", "env": "json"})
        elif op == "PythonOperator":
            var.update(op_args=[], op_kwargs={}, template_fields_renderers={"templates_dict": "json", "op_args":
                       "py", "op_kwargs": "py"}, **({"python_callable_name": f"_{name}"} if v3 else {}))
        var.update({"has_retry_policy": False} if v3 else {"pool": "default_pool", "weight_rule": "downstream"})
        tasks.append({"__type": "operator", "__var": var})
    group = {"_group_id": None, "prefix_group_id": True, "tooltip": "", "ui_color": "CornflowerBlue",
             "ui_fgcolor": "#000", "children": {t: ["operator", t] for t in TASKS}, "upstream_group_ids": [],
             "downstream_group_ids": [], "upstream_task_ids": [], "downstream_task_ids": []}
    body = {"fileloc": dag["fileloc"], "edge_info": {}, "timezone": "UTC", "catchup": False, "params": [],
            "start_date": START.timestamp(), "tags": dag["tags"], "dag_dependencies": [],
            "_processor_dags_folder": DAGS_FOLDER, "tasks": tasks,
            "default_args": {"__type": "dict", "__var": {"owner": dag["owner"], "retries": 2, "retry_delay":
                                                        {"__type": "timedelta", "__var": 300.0}}}}
    if not v3:
        body.update(_dag_id=dag["dag_id"], _description=dag["descr"], _task_group=group,
                    schedule_interval={"__type": "timedelta", "__var": float(dag["ivl"])})
        return {"__version": 1, "dag": body}
    body.update(dag_id=dag["dag_id"], description=dag["descr"], relative_fileloc=dag["rel"], max_active_runs=16,
                task_group={**group, "group_display_name": ""}, max_active_tasks=16, deadline=None,
                max_consecutive_failed_dag_runs=0, allowed_run_types=None, disable_bundle_versioning=False,
                timetable={"__type": "airflow.timetables.trigger.DeltaTriggerTimetable",
                           "__var": {"delta": float(dag["ivl"]), "interval": 0.0}})
    return {"__version": 3, "dag": body}


def _source(dag: dict) -> str:
    """Python source of a DAG file matching the serialized DAG (``dag_code.source_code``)."""
    lines = [f'"""{dag["descr"]}."""', "from datetime import datetime, timedelta\n", "from airflow import DAG"]
    lines += [f"from airflow.providers.standard.operators.{m} import {op}" for op, (m, *_x) in OPERATORS.items()]
    lines.append(f"from pipelines.{dag['dag_id']} import *  # noqa: F403 (the Python callables)")
    lines += [f'\n\nwith DAG("{dag["dag_id"]}", schedule=timedelta(seconds={dag["ivl"]}), catchup=False,\n'
              f'         start_date=datetime(2024, 1, 1), tags={dag["tags"]!r}, default_args={{"owner": '
              f'"{dag["owner"]}", "retries": 2, "retry_delay": timedelta(minutes=5)}}):']
    lines += [f'    {n} = {TASK_OPS[t]}(task_id="{n}"{OPERATORS[TASK_OPS[t]][3].format(n=n)})'
              for t, n in enumerate(TASKS)]
    return "\n".join(lines + ["    " + " >> ".join(TASKS)]) + "\n"


def _dag_rows(v3: bool) -> list[tuple]:
    """One row per DAG for the ``_b_dag`` helper table (columns as created in ``_setup``)."""
    rows, md5 = [], lambda text: hashlib.md5(text.encode()).hexdigest()
    for di in range(N_DAGS):
        dom, (kind, ivl) = DOMAINS[di // len(KINDS)], KINDS[di % len(KINDS)]
        dag = {"dag_id": f"{dom}_{kind}", "owner": OWNERS[di % len(OWNERS)], "ivl": ivl,
               "rel": f"{dom}/{dom}_{kind}.py", "tags": [dom, kind.split("_")[-1], "prod"],
               "descr": f"{kind.replace('_', ' ').capitalize()} pipeline of the {dom} domain"}
        dag["fileloc"] = f"{DAGS_FOLDER}/{dag['rel']}"
        data, src = json.dumps(_serialized_dag(v3, dag), sort_keys=True), _source(dag)
        fhash = int.from_bytes(hashlib.sha1(dag["fileloc"].encode()).digest()[-8:], "big") >> 8  # 2.x DagCode
        rows.append((di, dag["dag_id"], dag["owner"], ivl, dag["fileloc"], dag["rel"], dag["descr"], data, src,
                     md5(src), md5(data), md5("version:" + dag["dag_id"]), dag["tags"], di % 10 == 9,
                     str(timedelta(seconds=ivl)), fhash))
    return rows


def _setup(conn, cur, seed: int, v3: bool) -> bool:
    """Session settings, the seeded pseudo-random ``pg_temp.rnd(key, salt)`` in [0, 1) (plan-independent,
    unlike ``random()``), helper tables ``_b_dag``/``_b_task``/``_b_slot``. True if FK triggers are off."""
    try:  # FKs hold by construction: skip their per-row triggers while loading, when allowed
        cur.execute("SET session_replication_role = replica")
        conn.commit()
    except psycopg.errors.InsufficientPrivilege:
        conn.rollback()
    cur.execute("SET synchronous_commit = off; SET jit = off; SET maintenance_work_mem = '256MB'")
    cur.execute(f"""CREATE FUNCTION pg_temp.rnd(k bigint, salt int) RETURNS float8 LANGUAGE sql IMMUTABLE AS
        $$ SELECT (hashint8extended(k, salt + {int(seed) * 1000}) & 4503599627370495)::float8 / 2 ^ 52 $$""")
    cur.execute("""CREATE TEMP TABLE _b_dag (di int, dag_id text, owner text, ivl int, fileloc text, rel text,
        descr text, sdata text, src text, src_hash text, dag_hash text, ver uuid, tags text[], paused bool,
        summary text, fhash bigint)""")
    with cur.copy("COPY _b_dag FROM STDIN") as cp:
        for row in _dag_rows(v3):
            cp.write_row(row)
    cur.execute("CREATE TEMP TABLE _b_task AS SELECT * FROM unnest(%s::int[], %s::text[], %s::text[]) "
                "t(t, task_id, op)", (list(range(N_TASKS)), TASKS, TASK_OPS))
    cur.execute(f"""CREATE TEMP TABLE _b_slot AS SELECT (row_number() OVER (ORDER BY sub * ivl, di) - 1)::int AS
        slot, di, sub, {ROUND_S} / ivl AS per FROM _b_dag, generate_series(0, {ROUND_S} / ivl - 1) sub""")
    return cur.execute("SHOW session_replication_role").fetchone()[0] == "replica"


def _fill_static(cur, schema: dict, p: dict) -> None:
    """DAG bundle, DAGs, tags, versions, serialized DAGs, DAG code and the long-lived jobs."""
    t0, src = "%(t0)s::timestamptz", "_b_dag d"
    if "dag_bundle" in schema:
        _insert(cur, schema, "dag_bundle", {"name": "'dags-folder'", "active": "true", "template_params":
                J("'{}'")}, "(SELECT 1) x", tail="ON CONFLICT DO NOTHING")
    _insert(cur, schema, "dag", {
        "dag_id": "d.dag_id", "is_paused": "d.paused", "is_stale": "false", "is_active": "true", "is_subdag":
        "false", "last_parsed_time": t0, "last_parse_duration": "0.3 + d.di / 100.0", "fileloc": "d.fileloc",
        "relative_fileloc": "d.rel", "bundle_name": "'dags-folder'", "owners": "d.owner", "description":
        "d.descr", "default_view": "'grid'", "timetable_type": "'DeltaTriggerTimetable'", "timetable_summary":
        "d.summary", "timetable_periodic": "true", "partition_mapper_info": J("'[]'"), "schedule_interval": J(
            "jsonb_build_object('type', 'timedelta', 'attrs', jsonb_build_object('days', d.ivl / 86400, "
            "'seconds', mod(d.ivl, 86400), 'microseconds', 0))"), "max_active_tasks": "16", "max_active_runs":
        "16", "max_consecutive_failed_dag_runs": "0", "has_task_concurrency_limits": "false"}, src, p)
    _insert(cur, schema, "dag_tag", {"name": "tag", "dag_id": "d.dag_id"}, "_b_dag d, unnest(d.tags) tag")
    if "dag_version" in schema:
        _insert(cur, schema, "dag_version", {"id": "d.ver", "version_number": "1", "dag_id": "d.dag_id",
                "bundle_name": "'dags-folder'", "created_at": t0, "last_updated": t0}, src, p)
    common = {"dag_id": "d.dag_id", "fileloc": "d.fileloc", "fileloc_hash": "d.fhash", "created_at": t0,
              "last_updated": t0, "dag_version_id": "d.ver"}
    _insert(cur, schema, "serialized_dag", {**common, "id": "md5('sd:' || d.dag_id)::uuid",
            "data": J("d.sdata"), "dag_hash": "d.dag_hash"}, src, p)
    _insert(cur, schema, "dag_code", {**common, "id": "md5('code:' || d.dag_id)::uuid",
            "source_code": "d.src", "source_code_hash": "d.src_hash"}, src, p)
    kind = "(ARRAY['SchedulerJob', 'TriggererJob', 'DagProcessorJob'])[1 + mod(g, 3)]"
    _insert(cur, schema, "job", {"state": "'running'", "job_type": kind, "start_date": t0, "latest_heartbeat": t0,
            "executor_class": "'CeleryExecutor'", "hostname": f"lower({kind}) || '-0'", "unixname": "'airflow'"},
            "generate_series(0, 2) g", p, "ORDER BY g")  # scheduler, triggerer, DAG processor
    p["sched"] = cur.execute("SELECT max(id) FROM job WHERE job_type = 'SchedulerJob'").fetchone()[0]


RUNS_SOURCE = f"""(SELECT g.*, CASE WHEN g.manual THEN 'manual' ELSE 'scheduled' END AS run_type,
      CASE WHEN g.manual THEN g.ld ELSE g.ld + g.ivl * interval '1 s' END AS ra,
      CASE WHEN %(tail)s AND g.sub = g.per - 1 THEN (ARRAY['running', 'queued', 'success', 'running'])
           [1 + mod(g.di, 4)] WHEN pg_temp.rnd(g.k, 1) < 0.05 THEN 'failed' ELSE 'success' END AS state
    FROM (SELECT q.*, %(start)s::timestamptz + (q.seq * q.ivl + CASE WHEN q.manual THEN q.ivl / 3.0
                 + pg_temp.rnd(q.k, 2) * 60 ELSE 0 END) * interval '1 s' AS ld
          FROM (SELECT k, s.sub, s.per, d.*, (k / {ROUND_RUNS}) * s.per + s.sub AS seq,
                       mod((k / {ROUND_RUNS}) * s.per + s.sub, 25) = 12 AND mod(d.di, 3) = 0 AS manual
                FROM generate_series(%(k0)s::bigint, %(k1)s::bigint - 1) k
                JOIN _b_slot s ON s.slot = mod(k, {ROUND_RUNS}) JOIN _b_dag d ON d.di = s.di) q) g) r"""
_END, _QUEUED = f"r.ra + interval '{5 + N_TASKS * SLOT_S} s'", "r.state = 'queued'"
RUN = {  # dag_run columns, from rows r of RUNS_SOURCE; run ids as Airflow formats them
    "dag_id": "r.dag_id", "logical_date": "r.ld", "execution_date": "r.ld", "run_after": "r.ra", "run_id":
    "r.run_type || '__' || to_char(r.ld AT TIME ZONE 'UTC', CASE WHEN r.manual THEN 'YYYY-MM-DD\"T\"HH24:MI:SS.US'"
    " ELSE 'YYYY-MM-DD\"T\"HH24:MI:SS' END) || '+00:00'", "run_type": "r.run_type", "state": "r.state",
    "queued_at": "r.ra + interval '2 s'", "start_date": f"CASE WHEN NOT {_QUEUED} THEN r.ra + interval '5 s' END",
    "end_date": f"CASE WHEN r.state IN ('success', 'failed') THEN {_END} END", "external_trigger": "r.manual",
    "creating_job_id": "CASE WHEN NOT r.manual THEN %(sched)s END", "scheduled_by_job_id": "%(sched)s",
    "triggered_by": "CASE WHEN r.manual THEN 'REST_API' ELSE 'TIMETABLE' END",  # enum *names*, not values
    "triggering_user_name": "CASE WHEN r.manual THEN 'admin' END", "conf": J(
        """CASE WHEN r.manual THEN '{"full_refresh": true}' ELSE '{}' END""",
        "CASE WHEN r.manual THEN %(pk_manual)s ELSE %(pk_empty)s END"),
    "data_interval_start": "r.ld", "data_interval_end": "r.ld + r.ivl * interval '1 s'",
    "last_scheduling_decision": f"CASE WHEN {_QUEUED} THEN r.ra ELSE {_END} END", "clear_number": "0",
    "updated_at": f"CASE WHEN {_QUEUED} THEN r.ra ELSE {_END} END", "dag_hash": "r.dag_hash",
    "log_template_id": "%(log_tpl)s", "created_at": "r.ra", "created_dag_version_id": "r.ver",
    "context_carrier": J("jsonb_build_object('__type', 'dict', '__var', jsonb_build_object('traceparent', '00-' "
                         "|| md5('trace' || r.k) || '-' || left(md5('span' || r.k), 16) || '-00'))")}


def _stage_sql(ld_col: str, v3: bool) -> str:
    """Temp table ``_b_ti``: one row per task instance of DAG runs lo..hi, with its fate and timing."""
    rnd, carrier = "pg_temp.rnd(a.key, {})", "dr.context_carrier" if v3 else "NULL::jsonb"
    return f"""CREATE TEMP TABLE _b_ti AS
      SELECT b.*, CASE WHEN b.state IN ('success', 'failed', 'up_for_retry') THEN b.st + b.dur * '1 s'::interval
                  END AS en
      FROM (SELECT a.*, CASE WHEN a.op <> 'EmptyOperator' AND a.state IN ('success', 'failed', 'running',
                'up_for_retry') THEN 'airflow-worker-' || mod(a.key, 6) END AS host,
              CASE WHEN a.state IN ('success', 'failed', 'running', 'up_for_retry') THEN a.dr_start
                   + (a.t * {SLOT_S} + 1 + {rnd.format(5)} * 5) * interval '1 s' END AS st,
              CASE WHEN a.op = 'EmptyOperator' THEN 0 ELSE 2 + {rnd.format(4)} * 35 END AS dur,
              CASE WHEN a.op <> 'EmptyOperator' AND a.state = 'success' AND {rnd.format(3)} < 0.03 THEN 2
                   WHEN a.state IN ('success', 'running', 'up_for_retry') THEN 1
                   WHEN a.state = 'failed' THEN 3 ELSE 0 END AS try
        FROM (SELECT dr.id AS dr_id, dr.dag_id, dr.run_id, dr.{ld_col} AS ld, dr.queued_at,
                dr.start_date AS dr_start, {carrier} AS carrier, d.di, d.owner, d.ver, t.t, t.task_id, t.op,
                dr.id::bigint * {N_TASKS} + t.t AS key, CASE dr.state WHEN 'queued' THEN NULL WHEN 'running' THEN
                  CASE WHEN t.t < f THEN 'success' WHEN t.t = f THEN CASE mod(d.di, 8) WHEN 0 THEN 'up_for_retry'
                  ELSE 'running' END WHEN t.t = f + 1 THEN 'scheduled' END WHEN 'failed' THEN CASE WHEN t.t < f
                  THEN 'success' WHEN t.t = f THEN 'failed' ELSE 'upstream_failed' END ELSE 'success' END AS state
              FROM dag_run dr JOIN _b_dag d ON d.dag_id = dr.dag_id CROSS JOIN _b_task t
              CROSS JOIN LATERAL (SELECT 1 + floor(pg_temp.rnd(dr.id, 6) * {N_TASKS - 2})::int AS f) ff
              WHERE dr.id BETWEEN %(lo)s AND %(hi)s) a) b"""


# Deterministic uuid7-like ids: ms timestamp, 12 bits {mid}, variant nibble {v}, the dag_run id
UUID7 = ("(lpad(to_hex((extract(epoch FROM b.queued_at) * 1000)::bigint), 12, '0') || '7' || lpad(to_hex({mid}),"
         " 3, '0') || '{v}' || lpad(to_hex(b.dr_id), 15, '0'))::uuid")
_RAN = "CASE WHEN b.host IS NOT NULL THEN {} END"  # executed on a worker (EmptyOperators never are)
TI = {  # task_instance columns, from rows b of _b_ti
    "id": UUID7.format(mid="b.t", v="8"), "task_id": "b.task_id", "dag_id": "b.dag_id", "run_id": "b.run_id",
    "map_index": "-1", "start_date": "b.st", "end_date": "b.en", "state": "b.state", "try_number": "b.try",
    "duration": "CASE WHEN b.en IS NOT NULL THEN b.dur END", "max_tries": "2", "hostname": "b.host",
    "unixname": "'airflow'", "pool": "'default_pool'", "pool_slots": "1", "queue": "'default'", "operator": "b.op",
    "priority_weight": f"{N_TASKS}-b.t", "custom_operator_name": "b.op", "scheduled_dttm": "b.st - '3s'::interval",
    "queued_dttm": _RAN.format("b.st - interval '2 s'"), "queued_by_job_id": _RAN.format("%(sched)s"),
    "pid": _RAN.format("100 + mod(b.key * 7919, 30000)"), "executor_config": "%(pk_empty)s",
    "last_heartbeat_at": _RAN.format("coalesce(b.en, b.st + interval '25 s')"),
    "updated_at": "coalesce(b.en, b.st, b.queued_at)", "external_executor_id": _RAN.format("md5(b.key::text)"),
    "task_display_name": "b.task_id", "dag_version_id": "b.ver", "context_carrier": "b.carrier"}
_TRY = "b.st - (b.try - tr) * interval '6 min'"  # start of an earlier try tr
TIH = {**TI, "id": None, "try_number": "tr", "state": "'failed'", "start_date": _TRY,
       "task_instance_id": UUID7.format(mid="b.t * 16 + tr", v="9"), "end_date": f"{_TRY} + interval '20 s'",
       "duration": "20", "updated_at": f"{_TRY} + interval '20 s'", "queued_dttm": f"{_TRY} - interval '2 s'",
       "scheduled_dttm": f"{_TRY} - interval '3 s'", "last_heartbeat_at": f"{_TRY} + interval '20 s'",
       "external_executor_id": "md5(b.key || '-' || tr)"}
_CMD = ("''/home/airflow/.local/bin/airflow'', ''tasks'', ''run'', ''' || b.dag_id || ''', ''' || b.task_id || "
        "''', ''' || b.run_id || ''', ''--raw'', ''--subdir'', ''DAGS_FOLDER/' || b.dag_id || '.py''")
LOG = {  # log events of try tr: e=0 running, e=1 its outcome, e=2 (Airflow 2 only) the CLI command
    "dttm": "CASE e WHEN 0 THEN w.ts WHEN 1 THEN w.te ELSE w.ts - interval '1 s' END", "dag_id": "b.dag_id",
    "task_id": "b.task_id", "map_index": "-1", "run_id": "b.run_id", "logical_date": "b.ld",
    "execution_date": "b.ld", "owner": "b.owner", "try_number": "tr", "event": "CASE WHEN e = 0 THEN 'running'"
    " WHEN e = 2 THEN 'cli_task_run' WHEN tr < b.try THEN 'up_for_retry' ELSE b.state END",
    "extra": f"""'{{"host_name": "' || b.host || CASE e WHEN 2 THEN '", "full_command": "[{_CMD}]"}}'
                 ELSE '"}}' END"""}
LOG_SOURCE = f"""_b_ti b CROSS JOIN generate_series(1, b.try) tr CROSS JOIN generate_series(0, %(nev)s - 1) e
  CROSS JOIN LATERAL (SELECT CASE WHEN tr = b.try THEN b.st ELSE {_TRY} END AS ts,
    CASE WHEN tr = b.try THEN b.en ELSE {_TRY} + interval '20 s' END AS te) w
  WHERE b.host IS NOT NULL AND (e <> 1 OR w.te IS NOT NULL)"""
XCOM = {"dag_run_id": "b.dr_id", "task_id": "b.task_id", "map_index": "-1", "key": "'return_value'", "dag_id":
        "b.dag_id", "run_id": "b.run_id", "timestamp": "b.en", "value": J(
            "jsonb_build_object('status', 'ok', 'rows', (pg_temp.rnd(b.key, 7) * 2e6)::int, 'bytes', "
            "(pg_temp.rnd(b.key, 8) * 5e9)::bigint, 'checksum', md5(b.key::text), 'output_uri', "
            "'s3://acme-datalake-prod/' || b.dag_id || '/' || b.task_id || '/dt=' || to_char(b.ld AT TIME ZONE "
            "'UTC', 'YYYY-MM-DD/\"hour=\"HH24') || '/part-' || lpad(mod(b.key, 10000)::text, 5, '0') || "
            "'.snappy.parquet', 'watermark', to_char(b.ld AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
            "'duration_s', round(b.dur::numeric, 3))")}


def _batch(cur, schema: dict, p: dict, k0: int, k1: int, tail: bool = False) -> None:
    """Insert DAG runs number k0..k1-1 (``ROUND_RUNS`` per 4 hours) and everything hanging off them."""
    q = {**p, "k0": k0, "k1": k1, "tail": tail}
    q["lo"] = cur.execute("SELECT coalesce(max(id), 0) + 1 FROM dag_run").fetchone()[0]
    _insert(cur, schema, "dag_run", RUN, RUNS_SOURCE, q, tail="ORDER BY r.k")
    q["hi"] = cur.execute("SELECT max(id) FROM dag_run").fetchone()[0]
    cur.execute(_stage_sql(p["ld"], p["v3"]), q)
    _insert(cur, schema, "task_instance", TI, "_b_ti b ORDER BY b.key", q)
    _insert(cur, schema, "task_instance_history", TIH, "_b_ti b, generate_series(1, b.try - 1) tr", q)
    _insert(cur, schema, "log", LOG, LOG_SOURCE, q)
    _insert(cur, schema, "xcom", XCOM, "_b_ti b WHERE b.op = 'PythonOperator' AND b.state = 'success'", q)
    cur.execute("DROP TABLE _b_ti")  # temp tables count in pg_database_size()


def _load(conn, schema: dict, p: dict, k: int, n: int, step: int) -> int:
    """One transaction: drop the secondary indexes of BULK_TABLES, insert runs k..k+n-1 in batches of ``step``
    runs, recreate the indexes from their own definitions (cheaper than row-by-row upkeep). Returns k + n."""
    with conn.cursor() as cur:
        cur.execute("SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i WHERE "
                    "i.indrelid::regclass::text = ANY(%s) AND NOT i.indisunique AND NOT EXISTS "
                    "(SELECT FROM pg_constraint c WHERE c.conindid = i.indexrelid)", (BULK_TABLES,))
        indexes = cur.fetchall()
        for name, _ddl in indexes:
            cur.execute(f"DROP INDEX {name}")
        for k0 in range(k, k + n, step):
            _batch(cur, schema, p, k0, min(k0 + step, k + n))
        for _name, ddl in indexes:
            cur.execute(ddl)
    conn.commit()
    return k + n


def _finish(cur, schema: dict, p: dict) -> None:
    """Rendered template fields of the task instances of each DAG's newest runs."""
    fields = """CASE t.op WHEN 'BashOperator' THEN jsonb_build_object('bash_command', ti.task_id || '.sh ' ||
        to_char(dr.data_interval_start, 'YYYY-MM-DD'), 'env', NULL, 'cwd', NULL) WHEN 'PythonOperator' THEN
        jsonb_build_object('templates_dict', NULL, 'op_args', '[]'::jsonb, 'op_kwargs', '{}'::jsonb)
        ELSE '{}' END"""
    _insert(cur, schema, "rendered_task_instance_fields", {
        "dag_id": "ti.dag_id", "task_id": "ti.task_id", "run_id": "ti.run_id", "map_index": "ti.map_index",
        "rendered_fields": J(fields)}, "(SELECT * FROM (SELECT r.dag_id, r.run_id, r.data_interval_start, "
        "row_number() OVER (PARTITION BY r.dag_id ORDER BY r.id DESC) AS n FROM dag_run r JOIN _b_dag USING "
        f"(dag_id)) x WHERE n <= {RTIF_RUNS}) dr JOIN task_instance ti ON ti.dag_id = dr.dag_id AND ti.run_id = "
        "dr.run_id JOIN _b_task t ON t.task_id = ti.task_id WHERE ti.start_date IS NOT NULL", p)


def _size(conn) -> int:
    """Current database size in bytes (temp tables included)."""
    return conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]


def populate(dsn: str, target_bytes: int, *, seed: int = 1) -> dict:
    """Add data to the migrated Airflow DB at ``dsn`` (psycopg conninfo/URL) until ``pg_database_size()`` >=
    ``target_bytes``: a load of ~2 % measures the bytes per DAG run, one load of three batches adds the rest,
    small top-ups follow if needed. Returns row counts per table, ``database_bytes`` and ``seconds``."""
    began = time.monotonic()
    rounds = lambda runs: ROUND_RUNS * max(1, -int(-runs // ROUND_RUNS))  # noqa: E731 (whole rounds of runs)
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT table_name, column_name, data_type, is_nullable = 'NO', column_default IS NOT NULL"
                    " FROM information_schema.columns WHERE table_schema = current_schema()")
        schema: dict = {}  # table -> column -> (data type, NOT NULL, has default)
        for table, col, *info in cur.fetchall():
            schema.setdefault(table, {})[col] = tuple(info)
        v3 = "dag_version" in schema and "dag_bundle" in schema
        fast = _setup(conn, cur, seed, v3)
        p = {"v3": v3, "start": START, "t0": START - timedelta(days=1), "nev": 2 if v3 else 3,
             "ld": "logical_date" if v3 else "execution_date", "pk_empty": pickle.dumps({}),
             "pk_manual": pickle.dumps({"full_refresh": True}),
             "log_tpl": cur.execute("SELECT max(id) FROM log_template").fetchone()[0]}
        _fill_static(cur, schema, p)
        conn.commit()
        base = _size(conn)
        k = _load(conn, schema, p, 0, rounds(target_bytes * 0.02 / 30_000), ROUND_RUNS * 1000)  # guess 30 kB/run
        if _size(conn) < target_bytes:
            need = rounds((target_bytes - _size(conn)) / ((_size(conn) - base) / k) * 1.01)
            k = _load(conn, schema, p, k, need, rounds(need / 3))
        while (now := _size(conn)) < target_bytes:  # top up, indexes in place
            need = rounds((target_bytes - now) / ((now - base) / k))
            _batch(cur, schema, p, k, k + need)
            conn.commit()
            k += need
        _batch(cur, schema, p, k, k + ROUND_RUNS, tail=True)
        _finish(cur, schema, p)
        conn.commit()
        cur.execute("ANALYZE")
        rows = {t: cur.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in COUNTED if t in schema}
        return {"airflow_major": 3 if v3 else 2, "rows": rows, "database_bytes": _size(conn),
                "seconds": round(time.monotonic() - began, 2), "fk_triggers_skipped": fast}


def main(argv: list[str] | None = None) -> int:
    """CLI: populate and print the result as JSON."""
    ap = argparse.ArgumentParser(prog="python -m bench.airflow_data", description=__doc__.split("\n")[0])
    ap.add_argument("--dsn", required=True, help="psycopg conninfo or URL of a migrated Airflow DB")
    ap.add_argument("--size", required=True, type=parse_size, help="target size, e.g. 512MiB, 1GiB, 3GiB")
    ap.add_argument("--seed", type=int, default=1, help="seed of the generated content")
    args = ap.parse_args(argv)
    print(json.dumps(populate(args.dsn, args.size, seed=args.seed), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
