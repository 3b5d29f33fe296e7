"""A throwaway PostgreSQL server for tests, the demo and the benchmark.

PostgreSQL refuses to run as root, so when we are root the cluster is created
and run as the ``postgres`` user (``runuser``); otherwise as ourselves. The
server listens on 127.0.0.1 on a free port, with fsync off (test data only).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import psycopg.sql

from tests.harness import tier

PG_BIN_CANDIDATES = ("/usr/lib/postgresql/{major}/bin",)


def find_pg_bin() -> Path:
    """The directory with initdb/pg_ctl/postgres: $PG_BIN, PATH, or Debian's layout (newest major)."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    initdb = shutil.which("initdb")
    if initdb:
        return Path(os.path.realpath(initdb)).parent
    root = Path("/usr/lib/postgresql")
    majors = sorted((p for p in root.glob("*/bin") if (p / "initdb").exists()), key=lambda p: int(p.parent.name))
    if not majors:
        raise RuntimeError("PostgreSQL server binaries not found: install postgresql or set PG_BIN")
    return majors[-1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """``with PostgresServer() as pg: pg.create_database("x"); pg.dsn("x")``"""

    def __init__(self, base_dir: str | None = None, port: int | None = None) -> None:
        self.bin = find_pg_bin()
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="afb-pg-", dir=base_dir))
        self.data = self.root / "data"
        self.run_as = "postgres" if os.geteuid() == 0 else None
        self.user = "postgres"

    def _cmd(self, *argv: str) -> list[str]:
        return ["runuser", "-u", self.run_as, "--", *argv] if self.run_as else list(argv)

    def start(self) -> PostgresServer:
        tier.require("a PostgreSQL server")
        if self.run_as:
            owner = pwd.getpwnam(self.run_as)
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        subprocess.run(self._cmd(str(self.bin / "initdb"), "-D", str(self.data), "-U", self.user, "--auth=trust",
                                 "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"),
                       check=True, capture_output=True)
        options = (f"-k {self.root} -p {self.port} -c listen_addresses=127.0.0.1 -c fsync=off "
                   f"-c synchronous_commit=off -c full_page_writes=off -c max_connections=200 "
                   f"-c shared_buffers=256MB -c max_wal_size=4GB")
        subprocess.run(self._cmd(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options,
                                 "-l", str(self.root / "server.log"), "-w", "-t", "60", "start"),
                       check=True, capture_output=True)
        return self

    def stop(self) -> None:
        if self.data.exists():
            subprocess.run(self._cmd(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"),
                           capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def dsn(self, database: str = "postgres", user: str | None = None) -> str:
        return f"postgresql://{user or self.user}@127.0.0.1:{self.port}/{database}"

    def sqlalchemy_url(self, database: str) -> str:
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/{database}"

    @contextlib.contextmanager
    def connect(self, database: str = "postgres", autocommit: bool = True):
        with psycopg.connect(self.dsn(database), autocommit=autocommit) as conn:
            yield conn

    def execute(self, database: str, statement: str, params=None) -> list[tuple]:
        with self.connect(database) as conn:
            cur = conn.execute(statement, params)
            return cur.fetchall() if cur.description else []

    def create_database(self, name: str, template: str | None = None) -> str:
        tmpl = f' TEMPLATE "{template}"' if template else ""
        for attempt in range(20):
            try:
                self.execute("postgres", f'CREATE DATABASE "{name}"{tmpl}')
                break
            except psycopg.errors.ObjectInUse:  # the template still has a session closing
                time.sleep(0.25 * (attempt + 1))
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        self.execute("postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    PASSWORD_GROUP = "afb_password_login"

    def password_role(self, name: str, password: str) -> str:
        """A superuser that must authenticate with ``password`` (scram-sha-256) over TCP; returns its name.

        Every other role keeps trust auth. The pg_hba.conf rule matches members of one group role,
        so it is written once and every password role joins the group.
        """
        hba = self.data / "pg_hba.conf"
        rule = f"host all +{self.PASSWORD_GROUP} 127.0.0.1/32 scram-sha-256\n"
        if rule not in hba.read_text():
            self.execute("postgres", f'CREATE ROLE "{self.PASSWORD_GROUP}" NOLOGIN')
            hba.write_text(rule + hba.read_text())
            self.execute("postgres", "SELECT pg_reload_conf()")
        with self.connect() as conn:
            conn.execute("SET password_encryption = 'scram-sha-256'")
            conn.execute(psycopg.sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {} IN ROLE {}").format(
                psycopg.sql.Identifier(name), psycopg.sql.Literal(password),
                psycopg.sql.Identifier(self.PASSWORD_GROUP)))
        return name

    def create_role(self, name: str, password: str | None = None, *, superuser: bool = False) -> None:
        attrs = "LOGIN" + (" SUPERUSER" if superuser else "")
        if password:
            attrs += f" PASSWORD '{password}'"
        self.execute("postgres", f'CREATE ROLE "{name}" {attrs}')
