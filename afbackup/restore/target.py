"""The target database: inspect it, prepare it (create, or clean with consent), load the dump.

A full restore goes into an empty database: created from ``template0`` when
missing; a non-empty one is only used with ``--clean``, which drops the
Airflow schema (CASCADE) first. pg_restore stops on the first error
(``--exit-on-error``; ``--single-transaction`` when ``jobs == 1``, so a
failure leaves nothing behind), restores without owners and ACLs (objects
belong to the restoring role), and skips the ``CREATE SCHEMA`` of a schema
that already exists (``public`` in every new database).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import subprocess
import time
from pathlib import Path

from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from afbackup.errors import ConfigError, PreflightError, RestoreError
from afbackup.procs import child_env, run_checked
from afbackup.restore.pause import RECORD_SCHEMA
from afbackup.sources.postgres import connect

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TargetState:
    dsn: str
    dbname: str
    server: str
    exists: bool
    schema_exists: bool
    tables: int  # tables in the Airflow schema
    other_tables: int  # tables in other non-system schemas (afbackup's own record schema not counted)

    @property
    def empty(self) -> bool:
        return not self.tables


def describe_server(dsn: str) -> str:
    params = conninfo_to_dict(dsn)
    return f"{params.get('host') or 'localhost'}:{params.get('port') or 5432}"


def maintenance_dsn(dsn: str) -> str:
    return make_conninfo(dsn, dbname="postgres")


def inspect_target(dsn: str, password: str | None, schema: str, timeout: float) -> TargetState:
    dbname = str(conninfo_to_dict(dsn).get("dbname") or "")
    if not dbname or dbname in ("postgres", "template0", "template1"):
        raise ConfigError(f"--target-dsn names database {dbname or '(none)'!r}",
                          hint="name the database to restore into, e.g. postgresql://user@host/airflow_restored")
    with connect(maintenance_dsn(dsn), password, timeout) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone() is not None
    if not exists:
        return TargetState(dsn, dbname, describe_server(dsn), False, False, 0, 0)
    with connect(dsn, password, timeout) as conn:
        rows = conn.execute(
            "SELECT n.nspname, count(c.oid) FROM pg_namespace n LEFT JOIN pg_class c ON c.relnamespace = n.oid"
            " AND c.relkind IN ('r', 'p') WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"
            " AND n.nspname NOT LIKE 'pg_temp%%' AND n.nspname NOT LIKE 'pg_toast_temp%%' GROUP BY 1").fetchall()
    counts: dict[str, int] = dict(rows)
    return TargetState(dsn, dbname, describe_server(dsn), True, schema in counts, counts.get(schema, 0),
                       sum(n for name, n in counts.items() if name not in (schema, RECORD_SCHEMA)))


def prepare_target(state: TargetState, password: str | None, schema: str, timeout: float) -> bool:
    """Create the database, or drop the Airflow schema of a non-empty one. Returns True if created."""
    if not state.exists:
        with connect(maintenance_dsn(state.dsn), password, timeout) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(state.dbname)))
        logger.info("created database %s on %s", state.dbname, state.server)
        return True
    if state.tables:
        with connect(state.dsn, password, timeout) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
        logger.warning("dropped schema %s of %s (%d tables) on %s (--clean)", schema, state.dbname, state.tables,
                       state.server)
    return False


def drop_database(state: TargetState, password: str | None, timeout: float) -> None:
    with connect(maintenance_dsn(state.dsn), password, timeout) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(state.dbname)))


def schema_exists(dsn: str, password: str | None, schema: str, timeout: float) -> bool:
    with connect(dsn, password, timeout) as conn:
        return conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone() is not None


def read_toc(pg_restore: str, dump: Path) -> str:
    """``pg_restore --list``: proves this pg_restore can read the dump, before the target is touched."""
    return run_checked([pg_restore, "--list", str(dump)], stage="pg_restore --list", timeout=600,
                       error=PreflightError)


def write_toc(toc: str, schema: str, skip_schema: bool, path: Path) -> Path:
    """The restore list: the whole dump, minus ``CREATE SCHEMA`` of a schema the target already has."""
    pattern = re.compile(rf"^\d+; \d+ \d+ (SCHEMA - |COMMENT - SCHEMA ){re.escape(schema)} ")
    lines = [(";" + line) if skip_schema and pattern.match(line) else line for line in toc.splitlines()]
    path.write_text("\n".join(lines) + "\n")
    return path


class Loading:
    """pg_restore running in the background (so the restore can check other things meanwhile).

    ``wait()`` raises RestoreError when it failed; leaving the ``with`` block before it
    finished (an error or a signal elsewhere) stops it: SIGTERM, then SIGKILL.
    """

    def __init__(self, argv: list[str], env: dict[str, str], stderr: Path) -> None:
        self.stderr = stderr
        self.started = time.monotonic()
        self.seconds = 0.0
        with stderr.open("wb") as sink:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=sink,
                                         env=env)

    def wait(self) -> None:
        returncode = self.proc.wait()
        self.seconds = time.monotonic() - self.started
        if returncode != 0:
            tail = self.stderr.read_bytes().decode("utf-8", "replace").strip()[-600:]
            raise RestoreError(f"pg_restore exited with {returncode}: {tail}", stage="pg_restore")

    def __enter__(self) -> Loading:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_load(pg_restore: str, dsn: str, password: str | None, dump: Path, toc: str, workdir: Path,
               schema: str, jobs: int, timeout: float) -> Loading:
    """Start pg_restore of the whole dump (``toc`` from ``read_toc``) into ``dsn``, skipping CREATE SCHEMA if it
    exists there. ``--single-transaction`` when ``jobs == 1``, else ``--jobs``."""
    listing = write_toc(toc, schema, schema_exists(dsn, password, schema, timeout), workdir / "restore.list")
    argv = [pg_restore, f"--dbname={dsn}", "--no-owner", "--no-acl", "--exit-on-error", "--no-password",
            f"--use-list={listing}"]
    argv += ["--single-transaction"] if jobs <= 1 else [f"--jobs={jobs}"]
    env = child_env({"PGPASSWORD": password} if password else {})
    return Loading(argv + [str(dump)], env, workdir / "pg_restore.stderr")


def load_dump(pg_restore: str, dsn: str, password: str | None, dump: Path, toc: str, workdir: Path,
              schema: str, jobs: int, timeout: float) -> None:
    """pg_restore the whole dump into ``dsn`` and wait for it (``start_load`` runs it in the background)."""
    with start_load(pg_restore, dsn, password, dump, toc, workdir, schema, jobs, timeout) as loading:
        loading.wait()
