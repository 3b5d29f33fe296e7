"""PostgreSQL: connecting, catalog facts, consistent row counts, and pg_dump.

pg_dump runs as a direct libpq client (never through an exec channel). It
imports a snapshot exported by our own REPEATABLE READ transaction, so the
row counts recorded in the manifest describe exactly the rows in the dump.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from afbackup.config.model import Config, DatabaseConfig
from afbackup.errors import ConfigError, PreflightError
from afbackup.procs import find_program, run_checked
from afbackup.sources.scope import Scope

logger = logging.getLogger(__name__)

_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


@dataclasses.dataclass(frozen=True)
class ToolVersion:
    path: str
    text: str
    major: int
    minor: int


def tool_version(name: str, bin_dir: str = "") -> ToolVersion:
    """Locate ``pg_dump``/``pg_restore`` and parse ``--version``."""
    path = find_program(name, bin_dir, what=f"the PostgreSQL client ({name})")
    text = run_checked([path, "--version"], stage="preflight", timeout=30).strip()
    match = _VERSION.search(text)
    if not match:
        raise PreflightError(f"cannot parse the version of {path}: {text!r}")
    return ToolVersion(path=path, text=text, major=int(match.group(1)), minor=int(match.group(2) or 0))


def read_password(db: DatabaseConfig, pgpassword: str | None = None) -> str | None:
    """The password for ``database.dsn``: ``database.password_file``, else ``pgpassword`` (PGPASSWORD).

    None means libpq finds it itself (PGPASSFILE, ~/.pgpass) or needs none (trust, certificates):
    children keep PGPASSFILE in their environment, so they find it the same way.
    """
    return password_from_file(db.password_file, "database.password_file") or pgpassword


def database_password(cfg: Config) -> str | None:
    """The password libpq would use for the source database (handed explicitly to pg_dump)."""
    return read_password(cfg.database, cfg.pgpassword)


def target_password(cfg: Config) -> str | None:
    """The password for restore targets and scratch servers: ``restore.password_file``, else PGPASSWORD."""
    return password_from_file(cfg.restore.password_file, "restore.password_file") or cfg.pgpassword


def password_from_file(path: str, key: str) -> str | None:
    """A password kept in a file (trailing newline ignored); None when ``path`` is empty."""
    if not path:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(f"cannot read {key} {path}: {exc.strerror}") from None


def connect(dsn: str, password: str | None, timeout: float, *, autocommit: bool = True) -> psycopg.Connection:
    """Open a connection; failures are preflight errors naming the server, never the password."""
    if not dsn:
        raise ConfigError("database.dsn is not set", hint="set it in [database] or AFBACKUP_DATABASE_DSN")
    kwargs: dict[str, Any] = {"password": password} if password else {}
    try:
        return psycopg.connect(
            dsn, connect_timeout=max(1, int(timeout)), application_name="afbackup", autocommit=autocommit, **kwargs
        )
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PreflightError(f"cannot connect to PostgreSQL: {first}",
                             hint="check database.dsn and the password") from None


@dataclasses.dataclass(frozen=True)
class Catalog:
    """What the metadata database holds, read once per run."""

    server_version: str
    server_major: int
    database: str
    schema: str
    tables: tuple[str, ...]
    foreign_keys: tuple[tuple[str, str], ...]
    revisions: dict[str, str]  # alembic table -> version_num


def one_row(cursor: psycopg.Cursor[Any]) -> tuple[Any, ...]:
    """The one row of a query that always returns one (SHOW, an aggregate, a function call)."""
    row = cursor.fetchone()
    if row is None:
        raise RuntimeError("a single-row query returned no row")
    return row


def read_catalog(conn: psycopg.Connection, configured_schema: str = "") -> Catalog:
    server_num = conn.info.server_version
    version = one_row(conn.execute("SHOW server_version"))[0]
    database = conn.info.dbname
    schema = configured_schema or _find_airflow_schema(conn)
    tables = tuple(row[0] for row in conn.execute(_TABLES, (schema,)).fetchall())
    if not tables:
        raise PreflightError(f"schema {schema!r} of database {database!r} holds no tables")
    fks = tuple((child, parent) for child, parent in conn.execute(_FOREIGN_KEYS, (schema,)).fetchall())
    revisions = {}
    for table in ("alembic_version", "alembic_version_fab"):
        if table in tables:
            row = conn.execute(sql.SQL("SELECT version_num FROM {}.{}").format(
                sql.Identifier(schema), sql.Identifier(table))).fetchone()
            revisions[table] = row[0] if row else ""
    return Catalog(version, server_num // 10000, database, schema, tables, fks, revisions)


def _find_airflow_schema(conn: psycopg.Connection) -> str:
    rows = conn.execute(
        "SELECT table_schema FROM information_schema.tables WHERE table_name = 'alembic_version'"
        " AND table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
    ).fetchall()
    if not rows:
        raise PreflightError(
            "no Airflow metadata found: no schema has an alembic_version table",
            hint="point database.dsn at the Airflow metadata database (after `airflow db migrate`)",
        )
    if len(rows) > 1:
        names = ", ".join(row[0] for row in rows)
        raise ConfigError(f"several schemas hold Airflow metadata ({names})", hint="set database.schema")
    return rows[0][0]


_TABLES = """
SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relkind IN ('r', 'p') ORDER BY 1
"""

_FOREIGN_KEYS = """
SELECT DISTINCT child.relname, parent.relname
FROM pg_constraint k
JOIN pg_class child ON child.oid = k.conrelid
JOIN pg_class parent ON parent.oid = k.confrelid
JOIN pg_namespace n ON n.oid = child.relnamespace
WHERE k.contype = 'f' AND n.nspname = %s
ORDER BY 1, 2
"""


class Snapshot:
    """A REPEATABLE READ transaction whose snapshot pg_dump imports (``--snapshot``).

    Its queries wait for table locks no longer than pg_dump does
    (``lock_timeout``), and ``close()`` cancels a query still running in
    another thread, so a failed backup never hangs on a lock.
    """

    def __init__(self, conn: psycopg.Connection, lock_wait_timeout: float) -> None:
        self.conn = conn
        conn.autocommit = False
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        self.snapshot_id: str = one_row(conn.execute("SELECT pg_export_snapshot()"))[0]
        conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{int(lock_wait_timeout * 1000)}ms")))

    def count_rows(self, schema: str, tables: Sequence[str]) -> dict[str, int]:
        """Exact row counts in the exported snapshot, one statement for all tables."""
        if not tables:
            return {}
        parts = [
            sql.SQL("SELECT {name}, count(*) FROM {schema}.{table}").format(
                name=sql.Literal(table), schema=sql.Identifier(schema), table=sql.Identifier(table)
            )
            for table in tables
        ]
        query = sql.SQL(" UNION ALL ").join(parts)
        return {name: int(count) for name, count in self.conn.execute(query).fetchall()}

    def close(self) -> None:
        """Cancel any query still running and close; safe to call twice."""
        if self.conn.closed:
            return
        try:
            self.conn.cancel_safe(timeout=5)
        except (psycopg.Error, AttributeError):
            pass
        self.conn.close()


def pg_dump_argv(
    pg_dump: str, dsn: str, scope: Scope, *, lock_wait_timeout: float, snapshot: str | None
) -> list[str]:
    """The pg_dump command for a scope: custom format, uncompressed (we compress once, later)."""
    argv = [
        pg_dump, "--format=custom", "--compress=0", "--no-password", "--strict-names",
        f"--lock-wait-timeout={int(lock_wait_timeout * 1000)}",
    ]
    if snapshot:
        argv.append(f"--snapshot={snapshot}")
    if scope.explicit:
        argv += [f"--table={qualified(scope.schema, table)}" for table in scope.all_tables]
    else:
        argv.append(f"--schema={quote_ident(scope.schema)}")
        argv += [f"--exclude-table-data={qualified(scope.schema, table)}" for table in scope.schema_only_tables]
    argv.append(f"--dbname={dsn}")
    return argv


def quote_ident(name: str) -> str:
    """Double-quote a name for a pg_dump pattern: exact match, no case folding, no wildcards."""
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str, table: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(table)}"


def pg_dump_hint(stderr: str) -> str:
    """What to do about the usual pg_dump failures."""
    text = stderr.lower()
    if "lock table" in text and "timeout" in text:
        return ("another session holds a lock on that table (DDL or `airflow db migrate`?); "
                "retry later or raise database.lock_wait_timeout")
    if "permission denied" in text:
        return "grant the backup role SELECT on the Airflow schema (see deploy/postgres/roles.sql)"
    if "password authentication failed" in text or "no password supplied" in text:
        return "check database.password_file / PGPASSWORD"
    if "server version" in text and "aborting because of server version mismatch" in text:
        return "install a pg_dump at least as new as the server (database.pg_bin_dir)"
    return ""


def check_dump_version(pg_dump: ToolVersion, server_major: int) -> None:
    """pg_dump must be at least the server's major version (FIELD_NOTES, pg_dump)."""
    if pg_dump.major < server_major:
        raise PreflightError(
            f"{pg_dump.path} is version {pg_dump.major}, older than the PostgreSQL {server_major} server",
            hint=f"install the PostgreSQL {server_major} client or set database.pg_bin_dir",
        )

