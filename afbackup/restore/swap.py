"""Atomic database restore: load into a new database, check it there, then swap it in by rename.

The dump is loaded into ``<target>__afbackup_restore_<UTC stamp>`` (the
staging database), created like the target (afbackup.restore.staging: owner,
encoding, locale, privileges, settings). Every check runs there. Only then,
in ONE transaction, ``<target>`` is renamed to ``<target>__afbackup_previous_
<stamp>`` and the staging database to ``<target>`` (a missing target: the
staging database is just renamed). The previous database is kept (open again
for inspection) until the operator drops it: ``restore --drop-previous``, or
later ``afbackup restore-cleanup``. Names longer than PostgreSQL's 63 bytes
are made by shortening ``<target>``; a database comment
(``afbackup:staging:<target>`` / ``afbackup:previous:<target>``) says what
each one is, which is how ``restore-cleanup`` finds them.

A failure or a signal before the swap drops the staging database (``WITH
(FORCE)``) and opens the target again: the live database is exactly as it
was. Privileges (checked before anything is downloaded): CREATEDB to create
the staging database; to rename an existing target, being its owner (or a
member of the owner role) and CREATEDB; superusers have all of them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import signal
import threading
from collections.abc import Iterator

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from afbackup.errors import PreflightError, RestoreError
from afbackup.restore import quiesce, staging
from afbackup.restore.target import TargetState, maintenance_dsn
from afbackup.sources.postgres import one_row

logger = logging.getLogger(__name__)

_MAX_NAME = 63  # bytes: NAMEDATALEN - 1
COMMENT_PREFIX = "afbackup:"


def derived_name(target: str, kind: str, stamp: str) -> str:
    """``<target>__afbackup_<kind>_<stamp>``, ``<target>`` shortened to fit PostgreSQL's 63 bytes."""
    suffix = f"__afbackup_{kind}_{stamp}"
    base = target.encode("utf-8")[:_MAX_NAME - len(suffix)].decode("utf-8", "ignore")
    return base + suffix


def check_privileges(conn: psycopg.Connection, state: TargetState) -> None:
    """Refuse (exit 4) before anything is touched when the restore role cannot create, close or rename."""
    role, superuser, createdb = one_row(conn.execute(
        "SELECT rolname, rolsuper, rolcreatedb FROM pg_roles WHERE rolname = current_user"))
    if superuser:
        return
    if not createdb:
        raise PreflightError(
            f"the restore role {role} lacks the CREATEDB privilege: restore loads into a new database and "
            f"renames it to {state.dbname}", hint=f"ALTER ROLE {role} CREATEDB (or restore as a role that has it); "
                                                  "nothing was changed")
    if state.exists:
        owner, owns = one_row(conn.execute(
            "SELECT pg_get_userbyid(datdba), pg_has_role(datdba, 'MEMBER') FROM pg_database WHERE datname = %s",
            (state.dbname,)))
        if not owns:
            raise PreflightError(
                f"the restore role {role} does not own database {state.dbname} (owner: {owner}): closing it to new "
                "connections and renaming it need ownership",
                hint=f"GRANT {owner} TO {role}, or restore as {owner}; nothing was changed")


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """SIGTERM/SIGINT wait until the block is done (clean-up and the swap are not cut in half)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _frame: received.append(signum))
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if received:
            logger.warning("signal %d received during clean-up: it was finished first", received[0])


@dataclasses.dataclass
class AtomicLoad:
    """One restore's staging database and its swap into the target; ``phase`` says what is true now."""

    state: TargetState
    password: str | None = dataclasses.field(repr=False)
    timeout: float
    lock_timeout: float
    stamp: str = dataclasses.field(default_factory=lambda: dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S"))
    phase: str = "untouched"  # untouched | closed | loading | loaded | swapped | done | rolled back
    sessions: list[quiesce.Session] = dataclasses.field(default_factory=list)  # on the target when it was closed
    terminated: list[quiesce.Session] = dataclasses.field(default_factory=list)
    carried: list[str] = dataclasses.field(default_factory=list)  # what the staging database took from the target
    not_carried: list[str] = dataclasses.field(default_factory=list)  # settings to set by hand (statement, reason)
    written: int | None = None  # tables found in the staging database when it was dropped (None: unknown)
    comment: str | None = None  # the target's own database comment, carried over to the restored database

    @property
    def target(self) -> str:
        return self.state.dbname

    @property
    def staging(self) -> str:
        return derived_name(self.target, "restore", self.stamp)

    @property
    def previous(self) -> str:
        return derived_name(self.target, "previous", self.stamp) if self.state.exists else ""

    @property
    def load_dsn(self) -> str:
        """Where pg_restore, the checks and the Airflow steps write until the swap (with the lock timeout)."""
        return quiesce.with_lock_timeout(make_conninfo(self.state.dsn, dbname=self.staging), self.lock_timeout)

    def _conn(self) -> psycopg.Connection:
        return quiesce.ddl_connection(maintenance_dsn(self.state.dsn), self.password, self.timeout,
                                      self.lock_timeout)

    def begin(self, *, terminate: bool) -> None:
        """Close the target to new connections (refusing other sessions unless ``terminate``); create the staging
        database. Sessions to terminate are left to ``terminate()``, once the restore is known to go ahead."""
        try:
            self._begin(terminate)
        except psycopg.Error as exc:
            raise PreflightError(f"cannot prepare the restore of {self.target}: {_first_line(exc)}",
                                 hint=_lock_hint(exc, self.lock_timeout)) from None

    def _begin(self, terminate: bool) -> None:
        with self._conn() as conn:
            if self.state.exists:
                with signals_deferred():
                    self.sessions = quiesce.close(conn, self.target, terminate=terminate)
                    self.phase = "closed"  # from here on, rollback() opens the target again
                self.comment = one_row(conn.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database"
                                                    " WHERE datname = %s", (self.target,)))[0]
            with signals_deferred():
                self.phase = "loading"  # from here on, rollback() drops the staging database and reopens the target
                self.carried, self.not_carried = staging.create_like(conn, self.state, self.staging)
                _comment(conn, self.staging, f"{COMMENT_PREFIX}staging:{self.target}")
        logger.info("created staging database %s", self.staging)

    def terminate(self) -> None:
        """``--terminate-sessions``: end the sessions ``begin`` found on the (closed) target."""
        if not self.sessions:
            return
        try:
            with self._conn() as conn:
                self.terminated = quiesce.terminate_sessions(conn, self.target, self.lock_timeout)
        except psycopg.Error as exc:
            raise PreflightError(f"cannot end the sessions on {self.target}: {_first_line(exc)}") from None

    def commit(self) -> None:
        """The swap: one transaction renames the target away and the staging database to the target's name."""
        try:
            self._commit()
        except psycopg.Error as exc:
            raise RestoreError(f"the swap into {self.target} failed: {_first_line(exc)}", stage="swap",
                               hint=_lock_hint(exc, self.lock_timeout)) from None

    def _commit(self) -> None:
        with signals_deferred(), self._conn() as conn:
            with conn.transaction():
                if self.state.exists:
                    _rename(conn, self.target, self.previous)
                    _comment(conn, self.previous, f"{COMMENT_PREFIX}previous:{self.target}")
                _rename(conn, self.staging, self.target)
                _comment(conn, self.target, self.comment)
            self.phase = "swapped"
            if self.state.exists:
                try:  # for inspection; the swap is done whether or not this works
                    quiesce.set_connections(conn, self.previous, True)
                except psycopg.Error as exc:
                    logger.warning("could not open the previous database %s to connections: %s", self.previous,
                                   _first_line(exc))
        logger.info("swapped the restored database in as %s%s", self.target,
                    f"; the previous one is kept as {self.previous}" if self.previous else "")

    def rollback(self) -> None:
        """Before the swap: drop the staging database, open the target again. After it: swap back."""
        if self.phase in ("untouched", "done", "rolled back"):
            return
        with signals_deferred(), self._conn() as conn:
            if self.phase == "swapped":
                _drop(conn, self.target, force=True)
                if self.state.exists:
                    _rename(conn, self.previous, self.target)
                    _comment(conn, self.target, self.comment)
            elif self.phase == "closed":
                quiesce.set_connections(conn, self.target, True)
            else:
                self.written = self._tables_written()
                _drop(conn, self.staging, force=True)
                if self.state.exists:
                    quiesce.set_connections(conn, self.target, True)
        self.phase = "rolled back"

    def _tables_written(self) -> int | None:
        try:
            with quiesce.ddl_connection(self.load_dsn, self.password, self.timeout, self.lock_timeout) as conn:
                return int(one_row(conn.execute(
                    "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind"
                    " IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')"))[0])
        except (psycopg.Error, PreflightError):
            return None

    def drop_previous(self) -> bool:
        """``--drop-previous``: drop the previous database now; False (and a warning) if that fails."""
        try:
            with self._conn() as conn:
                return drop_leftover(conn, self.previous)
        except (psycopg.Error, PreflightError) as exc:
            logger.warning("the previous database %s was kept: dropping it failed (%s); run "
                           "`afbackup restore-cleanup` later", self.previous, str(exc).strip().splitlines()[0])
            return False

    def real_state(self, failed_phase: str) -> str:
        """What is true of the target after a rollback from ``failed_phase``, for the error's hint."""
        if failed_phase == "untouched":
            return f"{self.target} is untouched" if self.state.exists else f"{self.target} was not created"
        live = (f"{self.target} is untouched (closed to new connections during the restore, open again)"
                if self.state.exists else f"{self.target} was not created")
        if failed_phase == "closed":
            return live
        if failed_phase == "loading" and self.written == 0:
            return f"{live}; nothing was written: the empty {self.staging} was dropped"
        if failed_phase == "loading":
            return f"{live}; the partially loaded {self.staging} was dropped"
        if failed_phase == "loaded":
            return f"{live}; {self.staging} was loaded but failed its checks and was dropped"
        return f"{live}: the restored database was swapped back out and dropped"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _lock_hint(exc: psycopg.Error, lock_timeout: float) -> str:
    if isinstance(exc, psycopg.errors.LockNotAvailable):
        return (f"another session held a lock on it for longer than restore.lock_timeout ({lock_timeout:g}s): "
                "find it in pg_locks / pg_stat_activity, end it, and re-run")
    return ""


def _rename(conn: psycopg.Connection, old: str, new: str) -> None:
    conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new)))


def _comment(conn: psycopg.Connection, name: str, text: str | None) -> None:
    conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name),
                                                                 sql.Literal(text) if text else sql.SQL("NULL")))


def _drop(conn: psycopg.Connection, name: str, *, force: bool) -> None:
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}{}").format(sql.Identifier(name),
                                                                 sql.SQL(" WITH (FORCE)" if force else "")))
    logger.info("dropped database %s", name)


@dataclasses.dataclass(frozen=True)
class Leftover:
    name: str
    kind: str  # previous | staging
    target: str


def leftovers(conn: psycopg.Connection, target: str) -> list[Leftover]:
    """The databases afbackup left for ``target``: kept previous ones and staging ones of killed runs."""
    rows = conn.execute("SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database"
                        " WHERE shobj_description(oid, 'pg_database') LIKE %s ORDER BY 1",
                        (COMMENT_PREFIX + "%",)).fetchall()
    found = []
    for name, comment in rows:
        kind, _, of = comment[len(COMMENT_PREFIX):].partition(":")
        if of == target and kind in ("previous", "staging"):
            found.append(Leftover(name, kind, of))
    return found


def drop_leftover(conn: psycopg.Connection, name: str) -> bool:
    """Drop a kept database; False (and a warning) when a session is using it."""
    try:
        _drop(conn, name, force=False)
        return True
    except psycopg.errors.ObjectInUse:
        logger.warning("database %s is in use and was kept: close the sessions on it, then run "
                       "`afbackup restore-cleanup`", name)
        return False
