"""The afbackup agent, part 2 (sent before ``airflow_agent.py``, in the same source): which database the
agent's Airflow uses, and in which snapshot it reads.

Same rules as the agent: standard library plus Airflow, Python >= 3.8, never a
secret's value in a reply.
"""

from __future__ import annotations

import os
from typing import Any


def _driver() -> str:
    """The SQLAlchemy driver this deployment uses (its URL's scheme), else psycopg2 when installed.

    Read without importing Airflow: importing it builds the engine from the old URL.
    """
    import importlib.util

    current = os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "")
    if current.startswith("postgres") and "://" in current:
        return current.split("://", 1)[0].replace("postgres:", "postgresql:")
    return "postgresql+psycopg2" if importlib.util.find_spec("psycopg2") else "postgresql"


def _point_at(database: dict[str, Any]) -> None:
    from urllib.parse import quote, urlencode

    user, dbname = quote(database["user"], safe=""), quote(database["dbname"], safe="")
    url = f"{_driver()}://{user}@{database['host']}:{database['port']}/{dbname}"
    if database.get("query"):
        url += "?" + urlencode(database["query"])
    os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = url


def _read_in_snapshot(snapshot_id: str) -> None:
    """Make every database transaction of this process read the backup's snapshot.

    The backup exports a snapshot (``pg_export_snapshot()``) from the transaction that
    pg_dump also imports; each transaction Airflow opens here imports it first, so the
    exports hold exactly the rows of the dump. Needs the same PostgreSQL server as the
    dump (a replica or another server answers "invalid snapshot identifier").
    """
    import re

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    if not re.match(r"^[0-9A-F]+-[0-9A-F]+(-[0-9]+)?$", snapshot_id):
        raise ValueError(f"not a snapshot id: {snapshot_id!r}")

    def begin(conn: Any) -> None:
        conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        conn.exec_driver_sql(f"SET TRANSACTION SNAPSHOT '{snapshot_id}'")

    event.listen(Engine, "begin", begin)
