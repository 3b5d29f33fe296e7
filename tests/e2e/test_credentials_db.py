"""Every documented way to give afbackup the database password, end to end, with a canary password.

One row per password source: ``password_file`` (``database.password_file`` and ``restore.password_file``),
``PGPASSWORD``, ``PGPASSFILE`` and trust (no password). Each row runs ``backup``, ``verify --deep``,
``restore`` (into a new database, with the Airflow agent pointed at it) and ``drill`` against a role that
PostgreSQL only lets in with that password, and proves the password reached neither the logs, nor any
child's argv (sampled while each command runs), nor a file on disk.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

import psycopg
import pytest
import tomli_w

from tests.harness.canary import files_containing, run_watched

pytestmark = [pytest.mark.airflow, pytest.mark.slow]


def _password_source(env, how: str, tmp_path: Path) -> tuple[str | None, str, dict, dict[str, str]]:
    """(role, secret, config sections, extra environment) for one way of passing the password."""
    secret = f"canary-pg-{secrets.token_hex(8)}"
    if how == "trust":
        return None, secret, {}, {}
    role = env.pg.password_role(env.unique("pwrole"), secret)
    vault = tmp_path / "secrets"
    vault.mkdir(mode=0o700)
    if how == "password_file":
        path = vault / "pg-password"
        path.write_text(secret + "\n")
        return role, secret, {"database": {"password_file": str(path)}, "restore": {"password_file": str(path)}}, {}
    if how == "PGPASSWORD":
        return role, secret, {}, {"PGPASSWORD": secret}
    path = vault / "pgpass"
    path.write_text(f"127.0.0.1:{env.pg.port}:*:{role}:{secret}\n")
    path.chmod(0o600)
    return role, secret, {}, {"PGPASSFILE": str(path)}


@pytest.mark.parametrize("how", ["password_file", "PGPASSWORD", "PGPASSFILE", "trust"])
def test_database_password_for_backup_verify_restore_and_drill(env, tmp_path, how):
    # GIVEN an Airflow 3 database reachable only with a canary password, given one documented way
    airflow, db = env.airflow("3")
    role, secret, sections, extra = _password_source(env, how, tmp_path)
    if role:
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(env.pg.dsn(db, role), connect_timeout=5).close()
    spool = tmp_path / "spool"
    spool.mkdir()
    restore_cfg = {"spool_dir": str(spool), **sections.get("restore", {})}
    cfg = env.config(db, airflow=airflow, database={"dsn": env.pg.dsn(db, role), **sections.get("database", {})},
                     restore=restore_cfg)
    path = tmp_path / "afbackup.toml"
    path.write_text(tomli_w.dumps(cfg))
    child_env = env.afbackup_env(airflow, extra)
    target_db = env.unique("pwtarget_")

    def afbackup(*args: str):
        watched = run_watched([sys.executable, "-m", "afbackup", "-v", "--config", str(path), *args],
                              env=child_env, cwd=tmp_path)
        assert watched.done.returncode == 0, f"{args[0]} ({how}): {watched.done.stderr[-3000:]}"
        assert watched.leaks(secret) == [], f"{args[0]} ({how}) leaked the password"
        return watched

    # WHEN every command that connects runs with it
    afbackup("backup")
    afbackup("verify", "--deep", "--scratch-dsn", env.pg.dsn("postgres", role))
    restored = afbackup("restore", "--target-dsn", env.pg.dsn(target_db, role), "--yes")
    afbackup("drill", "--scratch-dsn", env.pg.dsn("postgres", role))

    # THEN each passed, pg_dump / pg_restore / the agent really ran, and the secret is nowhere on disk
    assert any("pg_restore" in line for line in restored.cmdlines)
    assert "every connection and variable" in restored.done.stdout
    assert env.pg.execute(target_db, "SELECT count(*) FROM connection")[0][0] > 0
    assert files_containing(secret, [tmp_path, airflow.home, Path(os.environ["HOME"])],
                            exclude=[tmp_path / "secrets"]) == []
    env.pg.drop_database(target_db)
