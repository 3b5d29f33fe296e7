"""Restore into a live target: quiesce (sessions, no new connections), atomic swap, the kept previous database,
and what an operator is told when a restore fails or is interrupted. Real PostgreSQL, real CLI processes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import psycopg
import pytest

from tests.harness.airflow_env import new_fernet_key
from tests.helpers import table_digests

pytestmark = pytest.mark.airflow

LEFTOVERS = "SELECT datname FROM pg_database WHERE datname LIKE %s ORDER BY 1"


def _backup(env, *, bulk_rows: int = 0):
    """A backup (no executor: the database only) of a seeded Airflow 3 DB, with ``bulk_rows`` extra rows."""
    _, db = env.airflow("3")
    if bulk_rows:
        env.pg.execute(db, "CREATE TABLE bulk AS SELECT g AS id, md5(g::text) || repeat('x', 120) AS pad "
                           f"FROM generate_series(1, {bulk_rows}) g")
    path = env.write_config(env.config(db))
    done = env.afbackup(path, "backup")
    assert done.returncode == 0, done.stderr
    return db, path, done.stdout.strip()


def _live_target(env) -> tuple[str, dict]:
    """An existing, populated Airflow database that differs from the backup; and its digests."""
    _, db = env.airflow("3")
    env.pg.execute(db, "DELETE FROM variable")
    return db, table_digests(env, db)


def _restore(env, path: Path, target_db: str, *args: str, dsn: str | None = None, airflow=None):
    return env.afbackup(path, "restore", "--target-dsn", dsn or env.pg.dsn(target_db), *args, airflow=airflow)


def _afbackup_databases(env, target_db: str) -> list[str]:
    return [row[0] for row in env.pg.execute("postgres", LEFTOVERS, (f"{target_db}__afbackup_%",))]


def _accepts_connections(env, db: str) -> bool:
    return env.pg.execute("postgres", "SELECT datallowconn FROM pg_database WHERE datname = %s", (db,))[0][0]


@pytest.mark.slow
def test_a_client_on_the_target_refuses_clean_then_terminate_sessions_swaps_and_keeps_the_previous(env):
    # GIVEN a backup, and a live target where a "scheduler" holds a transaction open
    source_db, path, _ = _backup(env)
    target_db, before = _live_target(env)
    client = psycopg.connect(env.pg.dsn(target_db), application_name="airflow-scheduler-e2e")
    try:
        client.execute("SELECT count(*) FROM dag").fetchone()  # an open transaction, as a scheduler's loop has
        # WHEN a --clean restore runs: refused with exit 4, naming the session, before anything is downloaded
        refused = _restore(env, path, target_db, "--clean", "--yes")
        assert refused.returncode == 4, refused.stderr
        assert "airflow-scheduler-e2e" in refused.stderr and "--terminate-sessions" in refused.stderr
        # THEN the target is unchanged, open, and nothing was created
        assert table_digests(env, target_db) == before and _accepts_connections(env, target_db)
        assert _afbackup_databases(env, target_db) == []
        # WHEN --terminate-sessions is added: the plan says when the session is ended, and a dry run ends nothing
        planned = _restore(env, path, target_db, "--clean", "--terminate-sessions", "--dry-run", "--json")
        assert planned.returncode == 0, planned.stderr
        assert any("terminate 1 other session(s)" in line and "airflow-scheduler-e2e" in line
                   for line in json.loads(planned.stdout)["plan"])
        assert client.execute("SELECT 1").fetchone() == (1,)
        done = _restore(env, path, target_db, "--clean", "--yes", "--terminate-sessions", "--json")
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
    finally:
        client.close()
    # THEN the session was terminated and named in the report
    assert [s["application"] for s in report["terminated_sessions"]] == ["airflow-scheduler-e2e"]
    # AND the target holds the backup, the previous database is kept under its documented name, as it was
    assert table_digests(env, target_db)["variable"] == table_digests(env, source_db)["variable"]
    previous = report["previous_database"]
    assert previous.startswith(f"{target_db}__afbackup_previous_") and _afbackup_databases(env, target_db) == [previous]
    assert table_digests(env, previous) == before and _accepts_connections(env, target_db)
    # AND the JSON report carries per-step timings
    assert {"download", "pg_restore", "checks", "swap"} <= set(report["timings"])
    # AND restore-cleanup drops the previous database (a dry run first lists it and changes nothing)
    listed = env.afbackup(path, "restore-cleanup", "--target-dsn", env.pg.dsn(target_db), "--dry-run", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout)["found"] == [{"name": previous, "kind": "previous"}]
    unconfirmed = env.afbackup(path, "restore-cleanup", "--target-dsn", env.pg.dsn(target_db))
    assert unconfirmed.returncode == 2 and _afbackup_databases(env, target_db) == [previous]
    cleaned = env.afbackup(path, "restore-cleanup", "--target-dsn", env.pg.dsn(target_db), "--yes")
    assert cleaned.returncode == 0, cleaned.stderr
    assert _afbackup_databases(env, target_db) == [] and table_digests(env, target_db)["variable"] == \
        table_digests(env, source_db)["variable"]


def test_drop_previous_drops_it_after_the_swap(env):
    _, path, _ = _backup(env)
    target_db, _ = _live_target(env)
    done = _restore(env, path, target_db, "--clean", "--yes", "--drop-previous", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["previous_database"] is None and _afbackup_databases(env, target_db) == []


def _wait_for_load(env, target_db: str, proc: subprocess.Popen, timeout: float = 120) -> str:
    """The staging database, once pg_restore is connected to it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        rows = env.pg.execute("postgres", "SELECT datname FROM pg_stat_activity WHERE application_name = "
                                          "'pg_restore' AND datname LIKE %s", (f"{target_db}__afbackup_restore_%",))
        if rows:
            return rows[0][0]
        time.sleep(0.05)
    raise AssertionError("pg_restore never started")


@pytest.fixture(scope="module")
def bulk_backup(env) -> Path:
    """A backup big enough that its load takes seconds (the config that restores it)."""
    return _backup(env, bulk_rows=800_000)[1]


def _start_restore(env, path: Path, target_db: str) -> subprocess.Popen:
    """The real CLI, restoring with --clean, in a child process."""
    return subprocess.Popen([sys.executable, "-m", "afbackup", "--config", str(path), "restore", "--target-dsn",
                             env.pg.dsn(target_db), "--clean", "--yes"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env.afbackup_env(), cwd=str(env.workdir))


@pytest.mark.slow
@pytest.mark.parametrize("existing", [True, False], ids=["live-target", "new-target"])
def test_sigterm_during_the_load_leaves_the_target_as_it_was_and_no_database_afbackup_created(env, bulk_backup,
                                                                                               existing):
    # GIVEN a backup big enough that its load takes seconds, and a live target (or none yet)
    target_db, before = _live_target(env) if existing else (env.unique("never_restored_"), {})
    # WHEN the real CLI restores it (--clean)
    proc = _start_restore(env, bulk_backup, target_db)
    try:
        staging = _wait_for_load(env, target_db, proc)
        if existing:  # THEN during the load the target accepts no new connection, from anyone
            with pytest.raises(psycopg.OperationalError, match="not currently accepting connections"):
                psycopg.connect(env.pg.dsn(target_db)).close()
        # WHEN SIGTERM arrives during the (multi-job) load
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # THEN it exits 128+15 and says what is true: the target untouched (or not created), the staging DB dropped
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    said = f"{target_db} is untouched" if existing else f"{target_db} was not created"
    assert said in stderr and f"the partially loaded {staging} was dropped" in stderr, stderr
    assert "nothing incomplete was committed" not in stderr
    # AND the live database is exactly as it was, open again, and nothing afbackup created is left
    if existing:
        assert table_digests(env, target_db) == before and _accepts_connections(env, target_db)
    else:
        assert env.pg.execute("postgres", "SELECT 1 FROM pg_database WHERE datname = %s", (target_db,)) == []
    assert _afbackup_databases(env, target_db) == []


@pytest.mark.slow
def test_after_a_sigkill_restore_cleanup_drops_the_staging_database_and_reopens_the_target(env, bulk_backup):
    # GIVEN a --clean restore killed with SIGKILL during the load (no clean-up possible)
    target_db, before = _live_target(env)
    proc = _start_restore(env, bulk_backup, target_db)
    try:
        staging = _wait_for_load(env, target_db, proc)
        proc.kill()
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not _accepts_connections(env, target_db) and staging in _afbackup_databases(env, target_db)
    deadline = time.monotonic() + 120  # the orphaned pg_restore finishes (or fails) on its own
    while env.pg.execute("postgres", "SELECT 1 FROM pg_stat_activity WHERE datname = %s", (staging,)):
        assert time.monotonic() < deadline, "pg_restore kept running"
        time.sleep(0.2)
    # WHEN the operator runs restore-cleanup
    cleaned = env.afbackup(bulk_backup, "restore-cleanup", "--target-dsn", env.pg.dsn(target_db), "--yes", "--json")
    # THEN the staging database is dropped, the target reopened, unchanged
    assert cleaned.returncode == 0, cleaned.stderr
    report = json.loads(cleaned.stdout)
    assert report["dropped"] == [staging] and report["reopened"] is True
    assert _afbackup_databases(env, target_db) == [] and _accepts_connections(env, target_db)
    assert table_digests(env, target_db) == before


def test_pg_restore_that_writes_nothing_says_untouched(env, tmp_path):
    # GIVEN a pg_restore that cannot reach the server (what a lost password or network does)
    _, path, _ = _backup(env)
    target_db, before = _live_target(env)
    real = subprocess.run(["bash", "-c", "command -v pg_restore"], capture_output=True, text=True).stdout.strip()
    wrapper = tmp_path / "bin" / "pg_restore"
    wrapper.parent.mkdir()
    port = env.pg.port  # every connection pg_restore makes goes to port 1 instead: refused
    wrapper.write_text("#!/bin/bash\nargs=()\nfor a in \"$@\"; do\n"
                       f"  a=\"${{a/port={port}/port=1}}\"; args+=(\"${{a/:{port}\\//:1/}}\")\n"
                       f"done\nexec {real} \"${{args[@]}}\"\n")
    wrapper.chmod(0o755)
    cfg = tomllib.loads(path.read_text())
    cfg["database"]["pg_bin_dir"] = str(wrapper.parent)
    broken = env.write_config(cfg)
    # WHEN a --clean restore runs
    failed = env.afbackup(broken, "restore", "--target-dsn", env.pg.dsn(target_db), "--clean", "--yes")
    # THEN pg_restore's failure is reported (exit 5) with the true state: untouched, nothing written
    assert failed.returncode == 5, failed.stderr
    assert f"{target_db} is untouched" in failed.stderr and "nothing was written" in failed.stderr
    assert "PARTIALLY" not in failed.stderr
    assert table_digests(env, target_db) == before and _accepts_connections(env, target_db)
    assert _afbackup_databases(env, target_db) == []


def test_missing_privileges_fail_before_anything_is_touched(env):
    # GIVEN a restore role without CREATEDB that does not own the live target
    _, path, _ = _backup(env)
    target_db, before = _live_target(env)
    role = env.unique("restorer_")
    env.pg.create_role(role)
    dsn = env.pg.dsn(target_db, user=role)
    # WHEN it restores with --clean: exit 4, naming CREATEDB
    no_createdb = _restore(env, path, target_db, "--clean", "--yes", dsn=dsn)
    assert no_createdb.returncode == 4 and "CREATEDB" in no_createdb.stderr, no_createdb.stderr
    # AND with CREATEDB but not the owner: exit 4, naming the owner
    env.pg.execute("postgres", f'ALTER ROLE "{role}" CREATEDB')
    not_owner = _restore(env, path, target_db, "--clean", "--yes", dsn=dsn)
    assert not_owner.returncode == 4 and "does not own" in not_owner.stderr, not_owner.stderr
    assert f"GRANT {env.pg.user} TO {role}" in not_owner.stderr
    # THEN nothing was touched
    assert table_digests(env, target_db) == before and _afbackup_databases(env, target_db) == []


def test_a_lock_held_on_the_target_fails_after_the_lock_timeout_not_forever(env):
    # GIVEN a session that holds the target's catalog row locked (an open transaction that changed a grant)
    _, path, _ = _backup(env)
    target_db, before = _live_target(env)
    cfg = tomllib.loads(path.read_text())
    cfg["restore"] = {"lock_timeout": "1s"}
    config = env.write_config(cfg)
    with psycopg.connect(env.pg.dsn("postgres")) as holder:
        holder.execute(f'GRANT CONNECT ON DATABASE "{target_db}" TO PUBLIC')
        # WHEN a --clean restore runs
        started = time.monotonic()
        failed = _restore(env, config, target_db, "--clean", "--yes")
        elapsed = time.monotonic() - started
        holder.rollback()
    # THEN it fails (exit 4) on the lock timeout, says so, and nothing changed
    assert failed.returncode == 4, failed.stderr
    assert "lock timeout" in failed.stderr and "restore.lock_timeout (1s)" in failed.stderr
    assert elapsed < 60
    assert table_digests(env, target_db) == before and _accepts_connections(env, target_db)
    assert _afbackup_databases(env, target_db) == []


@pytest.mark.slow
def test_airflow_db_own_runs_the_fernet_repair_after_the_swap_on_the_final_name(env):
    # GIVEN a backup made with an executor, and a live target deployment with ANOTHER Fernet key whose
    # agent's Airflow reaches its database only under its own configured name (restore.airflow_db = "own")
    source, source_db = env.airflow("3")
    cfg = env.config(source_db, airflow=source)
    done = env.afbackup(env.write_config(cfg), "backup", airflow=source)
    assert done.returncode == 0, done.stderr
    target, target_db = env.airflow("3", fernet_key=new_fernet_key())
    cfg["restore"] = {"airflow_db": "own"}
    config = env.write_config(cfg)
    # WHEN restored with --clean
    done = _restore(env, config, target_db, "--clean", "--yes", "--json", airflow=target)
    # THEN the swap happened first, then Airflow re-encrypted every value under the target key, exactly
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["fernet"]["reencrypted"] is True and report["previous_database"]
    assert target.probe() == source.probe()


def test_an_existing_empty_database_is_replaced_and_not_kept(env):
    # GIVEN an existing, empty database (pre-created by the operator) and a backup
    source_db, path, _ = _backup(env)
    _, target_db = env.airflow("3", empty=True)
    # WHEN restored into it (no --clean needed: it holds no tables)
    done = _restore(env, path, target_db, "--json")
    assert done.returncode == 0, done.stderr
    # THEN it holds the backup, and the empty database it replaced is not kept
    assert json.loads(done.stdout)["previous_database"] is None and _afbackup_databases(env, target_db) == []
    assert table_digests(env, target_db)["variable"] == table_digests(env, source_db)["variable"]


def test_a_second_clean_restore_into_a_restored_target_is_not_refused(env):
    # GIVEN a target restored once: it holds afbackup's own record of the DAGs it paused (schema "afbackup")
    _, path, _ = _backup(env)
    target_db = env.unique("twice_")
    first = _restore(env, path, target_db, "--yes")
    assert first.returncode == 0, first.stderr
    assert env.pg.execute(target_db, "SELECT to_regclass('afbackup.paused_by_restore') IS NOT NULL")[0][0]
    # WHEN the incident goes on and the operator restores again, with --clean
    again = _restore(env, path, target_db, "--clean", "--yes", "--drop-previous")
    # THEN afbackup's own schema is not counted as a foreign table that the swap would lose: it succeeds
    assert again.returncode == 0, again.stderr
    assert _afbackup_databases(env, target_db) == []


def _database_settings(env, db: str) -> list[tuple]:
    return env.pg.execute("postgres", "SELECT coalesce(pg_get_userbyid(NULLIF(s.setrole, 0)), ''), s.setconfig"
                                      " FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase"
                                      " WHERE d.datname = %s ORDER BY 1", (db,))


def _database_facts(env, db: str) -> tuple:
    return env.pg.execute("postgres", "SELECT datconnlimit, pg_get_userbyid(datdba),"
                                      " (SELECT array_agg(a::text ORDER BY a::text) FROM unnest(datacl) a)"
                                      " FROM pg_database WHERE datname = %s", (db,))[0]


def test_the_restored_database_keeps_the_targets_settings_grants_and_connection_limit(env):
    # GIVEN a live target with database settings (a search_path with a quoted element), a role's setting in it,
    # a connection limit and its own grants: what a fresh database would silently lose
    source_db, path, _ = _backup(env)
    target_db, _ = _live_target(env)
    reader = env.unique("reader_")
    env.pg.create_role(reader)
    for statement in (f"""ALTER DATABASE "{target_db}" SET search_path TO "$user", public, 'Odd, Name'""",
                      f"ALTER DATABASE \"{target_db}\" SET statement_timeout TO '5min'",
                      f"ALTER ROLE \"{reader}\" IN DATABASE \"{target_db}\" SET work_mem TO '8MB'",
                      f'ALTER DATABASE "{target_db}" CONNECTION LIMIT 40',
                      f'REVOKE ALL ON DATABASE "{target_db}" FROM PUBLIC',
                      f'GRANT CONNECT ON DATABASE "{target_db}" TO "{reader}"'):
        env.pg.execute("postgres", statement)
    settings, facts = _database_settings(env, target_db), _database_facts(env, target_db)
    # WHEN it is restored over with --clean
    done = _restore(env, path, target_db, "--clean", "--yes", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    # THEN the restored database has the same settings, limit and grants (and holds the backup)
    assert _database_settings(env, target_db) == settings and _database_facts(env, target_db) == facts
    assert table_digests(env, target_db)["variable"] == table_digests(env, source_db)["variable"]
    assert not any(step.startswith("NOT carried") for step in report["steps"])
    assert any("3 database setting(s)" in step for step in report["steps"]), report["steps"]
    # AND the search_path works as it did: a session of the reader role sees the restored tables
    with psycopg.connect(env.pg.dsn(target_db, user=reader)) as conn:
        assert conn.execute("SHOW search_path").fetchone() == ('"$user", public, "Odd, Name"',)
        assert conn.execute("SHOW work_mem").fetchone() == ("8MB",)


def test_a_setting_the_restore_role_may_not_set_is_reported_with_the_statement_to_run(env):
    # GIVEN a live target owned by a non-superuser restore role, with a superuser-only setting on it
    _, path, _ = _backup(env)
    target_db, _ = _live_target(env)
    owner = env.unique("owner_")
    env.pg.create_role(owner)
    env.pg.execute("postgres", f'ALTER ROLE "{owner}" CREATEDB')
    env.pg.execute("postgres", f'ALTER DATABASE "{target_db}" OWNER TO "{owner}"')
    env.pg.execute("postgres", f"ALTER DATABASE \"{target_db}\" SET log_statement TO 'ddl'")
    env.pg.execute("postgres", f"ALTER DATABASE \"{target_db}\" SET statement_timeout TO '5min'")
    # WHEN that role restores over it
    done = _restore(env, path, target_db, "--clean", "--yes", "--json", dsn=env.pg.dsn(target_db, user=owner))
    # THEN the restore succeeds, carries what it may, and names the exact statement an operator must run
    assert done.returncode == 0, done.stderr
    statement = f"ALTER DATABASE \"{target_db}\" SET \"log_statement\" TO 'ddl'"
    assert statement in done.stderr
    assert any(step.startswith("NOT carried") and statement in step for step in json.loads(done.stdout)["steps"])
    assert _database_settings(env, target_db) == [("", ["statement_timeout=5min"])]
