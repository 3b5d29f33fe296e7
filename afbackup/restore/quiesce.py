"""Quiesce an existing restore target: nobody else connected, nobody new comes in, no DDL waits forever.

Before anything is written, the other sessions on the target are listed from
``pg_stat_activity`` (application, client, user, state and since when). With
any, restore refuses (exit 4) and names them; ``--terminate-sessions`` ends
them with ``pg_terminate_backend``, once the version check has passed (the
load has started by then; a refusal must not have ended anybody's session
for nothing). While the restore runs, the target is
closed to new connections with ``ALTER DATABASE … WITH ALLOW_CONNECTIONS
false``: it refuses every role, superusers included, unlike ``REVOKE CONNECT``
(which the owner and superusers bypass) or ``CONNECTION LIMIT`` (which
superusers bypass). It is opened again on every exit path. afbackup never
needs to connect to the closed target itself: the load goes into a new
database (afbackup.restore.swap).

Every connection afbackup uses for DDL sets ``lock_timeout``
(``restore.lock_timeout``), so a statement queued behind another session's
lock fails after that long instead of waiting, and blocking everybody behind
it, forever.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from afbackup.errors import PreflightError
from afbackup.sources.postgres import connect

logger = logging.getLogger(__name__)

_SESSIONS = """
SELECT pid, usename, coalesce(application_name, ''), coalesce(client_addr::text, ''), coalesce(state, ''),
       coalesce(xact_start, state_change, backend_start)
FROM pg_stat_activity
WHERE datname = %s AND pid <> pg_backend_pid() AND backend_type = 'client backend'
ORDER BY pid
"""


@dataclasses.dataclass(frozen=True)
class Session:
    """Another client on the target (``pg_stat_activity``)."""

    pid: int
    user: str
    application: str
    client: str
    state: str
    since: dt.datetime | None

    def describe(self) -> str:
        since = f" since {self.since.astimezone(dt.UTC):%Y-%m-%dT%H:%M:%SZ}" if self.since else ""
        return (f"pid {self.pid} {self.application or '(no application_name)'} as {self.user or '?'} "
                f"from {self.client or 'a local socket'}, {self.state or 'state hidden'}{since}")

    def as_dict(self) -> dict[str, object]:
        return {"pid": self.pid, "user": self.user, "application": self.application, "client": self.client,
                "state": self.state, "since": self.since.isoformat() if self.since else None}


def ddl_connection(dsn: str, password: str | None, timeout: float, lock_timeout: float) -> psycopg.Connection:
    """A connection (autocommit) whose statements wait for a lock at most ``lock_timeout`` seconds."""
    conn = connect(dsn, password, timeout)
    conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{max(1, int(lock_timeout * 1000))}ms")))
    return conn


def with_lock_timeout(dsn: str, lock_timeout: float) -> str:
    """The DSN with ``-c lock_timeout=…`` added to its ``options`` (for pg_restore and the Airflow agent)."""
    options = conninfo_to_dict(dsn).get("options") or ""
    return make_conninfo(dsn, options=f"{options} -c lock_timeout={max(1, int(lock_timeout * 1000))}".strip())


def other_sessions(conn: psycopg.Connection, dbname: str, *, settle: float = 1.0) -> list[Session]:
    """The other client sessions on ``dbname``; a session that ends within ``settle`` seconds is not counted."""
    deadline = time.monotonic() + settle
    while True:
        rows = conn.execute(_SESSIONS, (dbname,)).fetchall()
        if not rows or time.monotonic() >= deadline:
            return [Session(*row) for row in rows]
        time.sleep(0.1)


def refuse_if_busy(sessions: list[Session], dbname: str) -> None:
    if sessions:
        shown = "; ".join(s.describe() for s in sessions[:5]) + (f" (+{len(sessions) - 5} more)"
                                                                  if len(sessions) > 5 else "")
        raise PreflightError(
            f"target database {dbname} has {len(sessions)} other session(s): {shown}",
            hint="stop Airflow (scheduler, api-server/webserver, triggerer, dag-processor, workers) first, "
                 "or pass --terminate-sessions; nothing was changed")


def set_connections(conn: psycopg.Connection, dbname: str, allow: bool) -> None:
    conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
        sql.Identifier(dbname), sql.SQL("true" if allow else "false")))


def close(conn: psycopg.Connection, dbname: str, *, terminate: bool) -> list[Session]:
    """Close ``dbname`` to new connections; refuse (exit 4) if others are on it, unless ``terminate``.

    Returns the sessions still on it, which ``--terminate-sessions`` ends once the restore is known to go
    ahead (``terminate_sessions``): closing is undone by opening again, a terminated session is not.
    On any failure the database is opened again.
    """
    set_connections(conn, dbname, False)
    logger.info("closed %s to new connections for the restore", dbname)
    try:
        sessions = other_sessions(conn, dbname, settle=0 if terminate else 1.0)
        if not terminate:
            refuse_if_busy(sessions, dbname)
        return sessions
    except BaseException:
        set_connections(conn, dbname, True)
        raise


def terminate_sessions(conn: psycopg.Connection, dbname: str, wait: float) -> list[Session]:
    """End every other session on ``dbname`` (closed: no new ones come); return those that were ended."""
    sessions = other_sessions(conn, dbname, settle=0)
    for session in sessions:
        logger.warning("terminating session on %s (--terminate-sessions): %s", dbname, session.describe())
        try:
            conn.execute("SELECT pg_terminate_backend(%s)", (session.pid,))
        except psycopg.errors.InsufficientPrivilege:
            raise PreflightError(
                f"not allowed to terminate {session.describe()} on {dbname}",
                hint="grant the restore role pg_signal_backend (or membership in the session's role), or stop "
                     "that client yourself") from None
    deadline = time.monotonic() + wait
    while sessions and time.monotonic() < deadline:
        if not other_sessions(conn, dbname, settle=0):
            return sessions
        time.sleep(0.2)
    left = other_sessions(conn, dbname, settle=0)
    if left:
        raise PreflightError(f"{len(left)} session(s) on {dbname} did not end within {wait:.0f}s: "
                             + "; ".join(s.describe() for s in left[:5]),
                             hint="stop those clients and re-run")
    return sessions
