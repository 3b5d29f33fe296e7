"""PostgreSQL: catalog discovery, snapshot-consistent row counts, and the pg_dump command, on a real server.

The "Airflow" schema here is a tiny fake: an alembic_version table and a few
FK-linked tables, including names that need quoting.
"""

from __future__ import annotations

import itertools
import shutil
import socket
import subprocess

import psycopg
import pytest

from afbackup.config.model import DatabaseConfig
from afbackup.errors import ConfigError, PreflightError
from afbackup.sources.postgres import (
    Snapshot,
    ToolVersion,
    check_dump_version,
    connect,
    pg_dump_argv,
    pg_dump_hint,
    qualified,
    quote_ident,
    read_catalog,
    read_password,
    tool_version,
)
from afbackup.sources.scope import compute_scope
from tests.harness.pg import PostgresServer

pytestmark = pytest.mark.skipif(shutil.which("pg_dump") is None or shutil.which("pg_restore") is None,
                                reason="PostgreSQL client tools not installed")

SCHEMA_SQL = '''
CREATE SCHEMA airflow;
CREATE TABLE airflow.alembic_version (version_num varchar(32) PRIMARY KEY);
INSERT INTO airflow.alembic_version VALUES ('29ce7909c52b');
CREATE TABLE airflow.dag_bundle (name text PRIMARY KEY);
CREATE TABLE airflow.dag (dag_id text PRIMARY KEY, bundle_name text REFERENCES airflow.dag_bundle);
CREATE TABLE airflow.dag_run (id serial PRIMARY KEY, dag_id text REFERENCES airflow.dag,
                              parent_id int REFERENCES airflow.dag_run);
CREATE TABLE airflow.log (id serial PRIMARY KEY, dag_id text, event text);
CREATE TABLE airflow."Odd ""Name""" (id int PRIMARY KEY, run_id int REFERENCES airflow.dag_run);
CREATE VIEW airflow.dag_view AS SELECT * FROM airflow.dag;
INSERT INTO airflow.dag_bundle VALUES ('dags-folder');
INSERT INTO airflow.dag SELECT 'dag_' || i, 'dags-folder' FROM generate_series(1, 5) i;
INSERT INTO airflow.dag_run (dag_id) SELECT 'dag_' || (i % 5 + 1) FROM generate_series(1, 40) i;
INSERT INTO airflow.log (dag_id, event) SELECT 'dag_1', 'e' || i FROM generate_series(1, 25) i;
INSERT INTO airflow."Odd ""Name""" VALUES (1, 1), (2, 2);
'''
TABLES = ("Odd \"Name\"", "alembic_version", "dag", "dag_bundle", "dag_run", "log")
_dbs = itertools.count()

pytestmark = pytest.mark.integration  # a real PostgreSQL server


@pytest.fixture(scope="module")
def pg():
    with PostgresServer() as server:
        yield server


@pytest.fixture
def airflow_db(pg) -> str:
    name = f"meta{next(_dbs)}"
    pg.create_database(name)
    with pg.connect(name) as conn:
        conn.execute(SCHEMA_SQL)
    return name


def open_conn(pg: PostgresServer, db: str, **kwargs) -> psycopg.Connection:
    return connect(pg.dsn(db), None, 5, **kwargs)


# -- the catalog ----------------------------------------------------------------------------
def test_read_catalog_finds_the_schema_with_alembic_version(pg, airflow_db):
    # GIVEN a database whose Airflow tables live in schema "airflow" (and nothing Airflow in public)
    pg.execute(airflow_db, "CREATE TABLE public.unrelated (id int)")
    # WHEN the catalog is read without naming a schema
    with open_conn(pg, airflow_db) as conn:
        catalog = read_catalog(conn)
        server_version = conn.execute("SHOW server_version").fetchone()[0]
    # THEN it found that schema, its tables (not views), FKs (self-references included) and the revision
    assert catalog.schema == "airflow"
    assert catalog.database == airflow_db
    assert catalog.tables == TABLES
    assert set(catalog.foreign_keys) == {("dag", "dag_bundle"), ("dag_run", "dag"), ("dag_run", "dag_run"),
                                         ('Odd "Name"', "dag_run")}
    assert catalog.revisions == {"alembic_version": "29ce7909c52b"}
    assert catalog.server_version == server_version
    assert catalog.server_major == int(server_version.split(".")[0])


def test_read_catalog_without_alembic_version_is_a_preflight_error(pg):
    pg.create_database("not_airflow")
    pg.execute("not_airflow", "CREATE TABLE public.t (id int)")
    with open_conn(pg, "not_airflow") as conn, pytest.raises(PreflightError, match="alembic_version"):
        read_catalog(conn)


def test_read_catalog_with_two_airflow_schemas_asks_for_one(pg, airflow_db):
    # GIVEN a second schema that also holds alembic_version
    pg.execute(airflow_db, "CREATE SCHEMA staging; CREATE TABLE staging.alembic_version (version_num text)")
    with open_conn(pg, airflow_db) as conn:
        # THEN discovery refuses to guess, naming both
        with pytest.raises(ConfigError) as info:
            read_catalog(conn)
        assert "airflow" in info.value.message and "staging" in info.value.message
        assert "database.schema" in info.value.hint
        # AND a configured schema settles it
        assert read_catalog(conn, "airflow").schema == "airflow"
        staging = read_catalog(conn, "staging")
        assert staging.tables == ("alembic_version",) and staging.revisions == {"alembic_version": ""}


def test_read_catalog_of_an_empty_configured_schema_is_a_preflight_error(pg, airflow_db):
    pg.execute(airflow_db, "CREATE SCHEMA empty")
    with open_conn(pg, airflow_db) as conn, pytest.raises(PreflightError, match="holds no tables"):
        read_catalog(conn, "empty")


# -- snapshot-consistent counts ---------------------------------------------------------------
def test_count_rows_sees_exactly_the_snapshot(pg, airflow_db):
    # GIVEN a snapshot taken now
    snapshot = Snapshot(open_conn(pg, airflow_db, autocommit=False), lock_wait_timeout=5)
    try:
        before = snapshot.count_rows("airflow", ["dag", "dag_run", "log", 'Odd "Name"'])
        # WHEN other sessions commit inserts and deletes afterwards
        pg.execute(airflow_db, "INSERT INTO airflow.dag_run (dag_id) SELECT 'dag_1' FROM generate_series(1, 7)")
        pg.execute(airflow_db, "DELETE FROM airflow.log WHERE id <= 10")
        after = snapshot.count_rows("airflow", ["dag", "dag_run", "log", 'Odd "Name"'])
        # AND pg_dump imports the same snapshot
        scope = compute_scope("airflow", TABLES, [], include=["dag_run"])
        argv = pg_dump_argv(shutil.which("pg_dump"), pg.dsn(airflow_db), scope, lock_wait_timeout=5,
                            snapshot=snapshot.snapshot_id)
        dump = subprocess.run(argv, capture_output=True, check=True).stdout
    finally:
        snapshot.close()
    # THEN the counts describe the snapshot, not the committed present
    assert before == after == {"dag": 5, "dag_run": 40, "log": 25, 'Odd "Name"': 2}
    assert pg.execute(airflow_db, "SELECT count(*) FROM airflow.dag_run")[0][0] == 47
    # AND the dump holds exactly the counted rows
    sql_text = subprocess.run(["pg_restore", "--data-only", "-f", "-"], input=dump, capture_output=True,
                              check=True).stdout.decode()
    copy = sql_text.split("COPY airflow.dag_run", 1)[1].split("\n\\.\n", 1)[0]
    assert len(copy.strip().splitlines()) - 1 == 40  # minus the COPY header line


def test_count_rows_of_no_tables_is_empty(pg, airflow_db):
    snapshot = Snapshot(open_conn(pg, airflow_db, autocommit=False), lock_wait_timeout=1)
    try:
        assert snapshot.count_rows("airflow", []) == {}
    finally:
        snapshot.close()


# -- the pg_dump command -----------------------------------------------------------------------
def test_quoting_is_exact():
    assert quote_ident("dag") == '"dag"'
    assert quote_ident('Odd "Name"') == '"Odd ""Name"""'
    assert qualified("airflow", "task_*") == '"airflow"."task_*"'


def test_pg_dump_argv_default_scope():
    scope = compute_scope("airflow", TABLES, [("dag_run", "dag")], exclude_data=["log", "dag"])
    argv = pg_dump_argv("/usr/bin/pg_dump", "postgresql://backup@db/airflow", scope,
                        lock_wait_timeout=60, snapshot="00000003-0000001B-1")
    assert argv[0] == "/usr/bin/pg_dump"
    assert "--strict-names" in argv and "--no-password" in argv
    assert "--format=custom" in argv and "--compress=0" in argv
    assert "--lock-wait-timeout=60000" in argv
    assert "--snapshot=00000003-0000001B-1" in argv
    assert '--schema="airflow"' in argv
    assert '--exclude-table-data="airflow"."log"' in argv
    assert '--exclude-table-data="airflow"."dag"' not in argv  # added back for the FK from dag_run
    assert argv[-1] == "--dbname=postgresql://backup@db/airflow"
    assert not any(arg.startswith("--table=") for arg in argv)


def test_pg_dump_argv_explicit_scope_and_millisecond_timeout():
    scope = compute_scope("airflow", TABLES, [('Odd "Name"', "dag_run")], include=['Odd "Name"'])
    argv = pg_dump_argv("pg_dump", "dbname=airflow", scope, lock_wait_timeout=0.25, snapshot=None)
    assert "--lock-wait-timeout=250" in argv
    assert [a for a in argv if a.startswith("--table=")] == ['--table="airflow"."Odd ""Name"""',
                                                             '--table="airflow"."dag_run"']
    assert not any(a.startswith(("--schema=", "--snapshot=")) for a in argv)


def restore_list(dump: bytes) -> str:
    return subprocess.run(["pg_restore", "--list"], input=dump, capture_output=True, check=True).stdout.decode()


def test_real_pg_dump_honours_the_default_scope(pg, airflow_db):
    # GIVEN the default scope (log is schema-only)
    scope = compute_scope("airflow", TABLES, [], exclude_data=["log"])
    argv = pg_dump_argv(shutil.which("pg_dump"), pg.dsn(airflow_db), scope, lock_wait_timeout=5, snapshot=None)
    # WHEN pg_dump runs it
    dump = subprocess.run(argv, capture_output=True, check=True).stdout
    # THEN pg_restore can list it: every table's definition, data for all but log
    listing = restore_list(dump)
    for table in ("dag", "dag_run", "log", 'Odd "Name"'):
        assert f"TABLE airflow {table} " in listing
    assert "TABLE DATA airflow dag " in listing and "TABLE DATA airflow dag_run " in listing
    assert 'TABLE DATA airflow Odd "Name" ' in listing
    assert "TABLE DATA airflow log " not in listing
    assert "unrelated" not in listing


def test_real_pg_dump_honours_an_explicit_scope_with_odd_names(pg, airflow_db):
    fks = [('Odd "Name"', "dag_run"), ("dag_run", "dag"), ("dag", "dag_bundle")]
    scope = compute_scope("airflow", TABLES, fks, include=['Odd "Name"'])
    argv = pg_dump_argv(shutil.which("pg_dump"), pg.dsn(airflow_db), scope, lock_wait_timeout=5, snapshot=None)
    listing = restore_list(subprocess.run(argv, capture_output=True, check=True).stdout)
    assert 'TABLE DATA airflow Odd "Name" ' in listing
    assert "TABLE DATA airflow dag_bundle " in listing
    assert "TABLE airflow log " not in listing and "alembic_version" not in listing


def test_strict_names_fail_loudly_on_a_missing_table(pg, airflow_db):
    scope = compute_scope("airflow", [*TABLES, "vanished"], [], include=["vanished"])
    argv = pg_dump_argv(shutil.which("pg_dump"), pg.dsn(airflow_db), scope, lock_wait_timeout=5, snapshot=None)
    done = subprocess.run(argv, capture_output=True)
    assert done.returncode != 0
    assert b"no matching tables" in done.stderr


def test_lock_wait_timeout_stops_pg_dump_behind_ddl(pg, airflow_db):
    # GIVEN a session holding an exclusive lock on dag (like a migration)
    with psycopg.connect(pg.dsn(airflow_db)) as blocker:
        blocker.execute("LOCK TABLE airflow.dag IN ACCESS EXCLUSIVE MODE")
        scope = compute_scope("airflow", TABLES, [])
        argv = pg_dump_argv(shutil.which("pg_dump"), pg.dsn(airflow_db), scope, lock_wait_timeout=0.3,
                            snapshot=None)
        # WHEN pg_dump runs
        done = subprocess.run(argv, capture_output=True, timeout=30)
        blocker.rollback()
    # THEN it gives up quickly with a lock error, and the hint explains it
    assert done.returncode != 0
    stderr = done.stderr.decode()
    assert "LOCK TABLE" in stderr and "timeout" in stderr
    assert "lock_wait_timeout" in pg_dump_hint(stderr)


# -- versions and connections ----------------------------------------------------------------------
def test_tool_version_parses_the_installed_pg_dump():
    version = tool_version("pg_dump")
    out = subprocess.run([version.path, "--version"], capture_output=True, text=True).stdout
    assert f"(PostgreSQL) {version.major}." in out
    assert version.major >= 10


def test_tool_version_in_a_missing_bin_dir_is_a_preflight_error(tmp_path):
    with pytest.raises(PreflightError, match="pg_dump not found"):
        tool_version("pg_dump", str(tmp_path))


@pytest.mark.parametrize(("dump_major", "server_major", "ok"), [(14, 15, False), (15, 15, True), (16, 15, True)])
def test_check_dump_version(dump_major, server_major, ok):
    version = ToolVersion(f"/usr/lib/postgresql/{dump_major}/bin/pg_dump",
                          f"pg_dump (PostgreSQL) {dump_major}.3", dump_major, 3)
    if ok:
        check_dump_version(version, server_major)
    else:
        with pytest.raises(PreflightError) as info:
            check_dump_version(version, server_major)
        assert str(server_major) in info.value.one_line() and "pg_bin_dir" in info.value.one_line()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when we return: nobody listens there


def test_connect_to_a_bad_port_is_a_preflight_error_without_the_password():
    dsn = f"postgresql://afbackup@127.0.0.1:{closed_port()}/airflow"
    with pytest.raises(PreflightError) as info:
        connect(dsn, "hunter2-secret", 2)
    text = info.value.one_line() + repr(info.value.__cause__) + repr(info.value.__context__)
    assert "cannot connect to PostgreSQL" in text
    assert "hunter2-secret" not in text
    assert info.value.__cause__ is None  # raised `from None`: psycopg's error (and its conninfo) is not chained


def test_connect_without_a_dsn_is_a_config_error():
    with pytest.raises(ConfigError, match="database.dsn"):
        connect("", None, 2)


def test_read_password_from_file(tmp_path):
    secret = tmp_path / "pg-password"
    secret.write_text("s3cret\n")
    assert read_password(DatabaseConfig(password_file=str(secret))) == "s3cret"
    assert read_password(DatabaseConfig()) is None
    with pytest.raises(ConfigError, match="password_file"):
        read_password(DatabaseConfig(password_file=str(tmp_path / "missing")))
