"""Paused by default: a full restore leaves every DAG paused and remembers which were active.

Where the record lives, and why: in the restored database itself, in its own
schema ``afbackup`` (table ``paused_by_restore``), next to the data it is
about. ``afbackup unpause --target-dsn DSN`` then needs nothing but the
database: no file from the restore's host, no report that a CronJob pod took
with it. The schema is not Airflow's (its migrations and ``db clean`` never see
it, and backups of the Airflow schema do not carry it); each full restore
replaces the record.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging

import psycopg
from psycopg import sql

from afbackup.sources.postgres import connect

logger = logging.getLogger(__name__)

RECORD_SCHEMA = "afbackup"
RECORD_TABLE = "paused_by_restore"


def pause_all(dsn: str, password: str | None, schema: str, backup_id: str, timeout: float) -> list[str]:
    """Pause every DAG; record (and return) the ids that were active, in one transaction."""
    record = sql.Identifier(RECORD_SCHEMA, RECORD_TABLE)
    with connect(dsn, password, timeout, autocommit=False) as conn:
        rows = conn.execute(sql.SQL("UPDATE {}.dag SET is_paused = true WHERE NOT is_paused RETURNING dag_id")
                            .format(sql.Identifier(schema))).fetchall()
        active = sorted(row[0] for row in rows)
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(RECORD_SCHEMA)))
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(record))
        conn.execute(sql.SQL("CREATE TABLE {} (dag_id text PRIMARY KEY, backup_id text NOT NULL, "
                             "airflow_schema text NOT NULL, paused_at timestamptz NOT NULL DEFAULT now())")
                     .format(record))
        with conn.cursor() as cur:
            cur.executemany(sql.SQL("INSERT INTO {} (dag_id, backup_id, airflow_schema) VALUES (%s, %s, %s)")
                            .format(record), [(dag_id, backup_id, schema) for dag_id in active])
    return active


def forget(dsn: str, password: str | None, timeout: float) -> None:
    """Drop the record of an earlier restore (``--no-pause-dags``: nothing is paused, nothing to unpause)."""
    with connect(dsn, password, timeout) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(RECORD_SCHEMA, RECORD_TABLE)))


@dataclasses.dataclass(frozen=True)
class PausedRecord:
    backup_id: str | None
    paused_at: dt.datetime | None
    dags: tuple[str, ...]  # recorded as active at restore time
    missing: tuple[str, ...]  # recorded, but no longer in the dag table
    already_active: tuple[str, ...]  # recorded, but someone unpaused them since


def read_record(dsn: str, password: str | None, timeout: float) -> PausedRecord | None:
    """The restore's record, or None when this database holds none (no full restore, or already unpaused)."""
    with connect(dsn, password, timeout) as conn:
        exists = conn.execute("SELECT to_regclass(%s)", (f"{RECORD_SCHEMA}.{RECORD_TABLE}",)).fetchone()
        if exists is None or exists[0] is None:
            return None
        schema = _airflow_schema(conn)
        if schema is None:
            return PausedRecord(None, None, (), (), ())
        rows = conn.execute(sql.SQL("SELECT r.dag_id, r.backup_id, r.paused_at, d.is_paused FROM {} r "
                                    "LEFT JOIN {}.dag d ON d.dag_id = r.dag_id ORDER BY r.dag_id").format(
            sql.Identifier(RECORD_SCHEMA, RECORD_TABLE), sql.Identifier(schema))).fetchall()
    if not rows:
        return None
    return PausedRecord(rows[0][1], rows[0][2], tuple(r[0] for r in rows if r[3] is not None),
                        tuple(r[0] for r in rows if r[3] is None), tuple(r[0] for r in rows if r[3] is False))


def unpause_recorded(dsn: str, password: str | None, timeout: float) -> list[str]:
    """Unpause exactly the recorded DAGs (those still in the dag table) and drop the record, atomically."""
    record = sql.Identifier(RECORD_SCHEMA, RECORD_TABLE)
    with connect(dsn, password, timeout, autocommit=False) as conn:
        schema = _airflow_schema(conn)
        rows = [] if schema is None else conn.execute(
            sql.SQL("UPDATE {}.dag d SET is_paused = false FROM {} r WHERE d.dag_id = r.dag_id AND d.is_paused "
                    "RETURNING d.dag_id").format(sql.Identifier(schema), record)).fetchall()
        conn.execute(sql.SQL("DROP TABLE {}").format(record))
    unpaused = sorted(row[0] for row in rows)
    logger.info("unpaused %d DAG(s) recorded by the restore", len(unpaused))
    return unpaused


def _airflow_schema(conn: psycopg.Connection) -> str | None:
    row = conn.execute(sql.SQL("SELECT min(airflow_schema) FROM {}").format(
        sql.Identifier(RECORD_SCHEMA, RECORD_TABLE))).fetchone()
    return row[0] if row else None
