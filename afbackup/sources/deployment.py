"""What a backup records about its deployment beyond the rows: read in the dump's snapshot, and from the agent.

From the database (same snapshot as the dump): the work in flight
(``afbackup.inflight``), the schedules of the active DAGs
(``afbackup.catchup``), the connection types in use (each needs a provider
on the target) and the DAG bundles the rows refer to (Airflow 3).

From the agent (the source Airflow's own interpreter): the auth manager,
whether ``[api_auth] jwt_secret`` is set (never its value), the installed
providers and ``[scheduler] catchup_by_default``.

The restore compares these with the target (``restore/environment_check.py``).
A fact that cannot be read is recorded as missing (None) with a warning: it
never fails the backup, whose job is the dump.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import psycopg
from psycopg import sql

from afbackup.catchup import read_active_dags
from afbackup.inflight import read_in_flight

logger = logging.getLogger(__name__)


def read_snapshot_facts(conn: psycopg.Connection, schema: str, tables: Iterable[str],
                        data_tables: Iterable[str]) -> dict[str, Any]:
    """``in_flight``, ``active_dags`` and the database half of ``environment``, each None if unreadable.

    Every read runs under a savepoint: a failure rolls back only itself, never
    the snapshot transaction that pg_dump is reading.
    """
    present, data = set(tables), list(data_tables)
    readers = {
        "in_flight": lambda: read_in_flight(conn, schema, data),
        "active_dags": lambda: read_active_dags(conn, schema) if {"dag", "serialized_dag"} <= present else None,
        "connection_types": lambda: _connection_types(conn, schema) if "connection" in present else {},
        "bundles": lambda: _bundles(conn, schema) if "dag_bundle" in present else None,
    }
    facts: dict[str, Any] = {}
    for name, read in readers.items():
        try:
            with conn.transaction():
                facts[name] = read()
        except psycopg.Error as exc:
            logger.warning("could not record %s at backup time: %s", name, str(exc).strip().splitlines()[0])
            facts[name] = None
    return facts


def _connection_types(conn: psycopg.Connection, schema: str) -> dict[str, int]:
    rows = conn.execute(sql.SQL("SELECT coalesce(conn_type, ''), count(*) FROM {}.connection GROUP BY 1 ORDER BY 1")
                        .format(sql.Identifier(schema))).fetchall()
    return {name: int(count) for name, count in rows}


def _bundles(conn: psycopg.Connection, schema: str) -> list[str]:
    """Bundle names the rows refer to: the bundles of DAGs that are not stale (3.x)."""
    rows = conn.execute(sql.SQL("SELECT DISTINCT bundle_name FROM {}.dag WHERE NOT is_stale AND bundle_name "
                                "IS NOT NULL ORDER BY 1").format(sql.Identifier(schema))).fetchall()
    return [row[0] for row in rows]


def environment_record(facts: Mapping[str, Any], info: Mapping[str, Any] | None) -> dict[str, Any]:
    """The manifest's ``environment``: database facts plus the agent's (None where no agent ran)."""
    agent = dict((info or {}).get("environment") or {})
    return {"auth_manager": agent.get("auth_manager"), "jwt_secret_set": agent.get("jwt_secret_set"),
            "providers": agent.get("providers"), "catchup_by_default": agent.get("catchup_by_default"),
            "connection_types": facts.get("connection_types"), "bundles": facts.get("bundles")}


def fill_catchup_default(dags: list[dict[str, Any]] | None, default: bool | None) -> list[dict[str, Any]] | None:
    """A DAG serialized without ``catchup`` used its deployment's ``catchup_by_default``."""
    if dags is None or default is None:
        return dags
    return [dict(d, catchup=default) if d.get("catchup") is None else d for d in dags]
