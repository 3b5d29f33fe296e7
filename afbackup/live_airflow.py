"""Start a real, throwaway Airflow on a (restored) metadata database, and stop all of it on every exit path.

Airflow 3: ``api-server`` + ``scheduler`` + ``dag-processor``; Airflow 2: ``webserver`` + ``scheduler`` (which
parses DAGs itself). LocalExecutor, the canary DAG alone in a temporary DAGs folder, API and webserver on
127.0.0.1 and a free port, one random JWT secret / webserver secret key shared by every component. Its home
is a private (0700) directory under ``[drill] airflow_home`` (default ``[airflow] tmp_dir``, memory-backed):
the API password and the component logs live there, and it is deleted on stop.

Every component runs in its own process group: ``stop()`` sends SIGTERM to each group, waits, then SIGKILLs
what is left (task processes included). ``with LiveAirflow(...)`` stops it on any exception, including the
``Terminated`` that SIGTERM/SIGINT raise in afbackup's main thread.

Authentication: on Airflow 3 the SimpleAuthManager with one admin user ``afbackup`` whose random password is
in the private home (``POST /auth/token``); on Airflow 2 the API runs with ``auth_backends = default`` and
``AUTH_ROLE_PUBLIC = "Admin"`` (no user is written into the restored database) — acceptable only because
the server listens on 127.0.0.1 for the drill's lifetime.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from psycopg.conninfo import conninfo_to_dict

from afbackup import canary
from afbackup.airflow_api import AirflowApi, Credentials
from afbackup.errors import AfbackupError, AirflowApiError, SourceError

logger = logging.getLogger(__name__)
STOP_GRACE = 20.0
API_USER = "afbackup"


@dataclasses.dataclass(frozen=True)
class LiveSpec:
    command: tuple[str, ...]  # the Airflow CLI
    major: int
    dsn: str  # libpq DSN of the restored database (no password)
    password: str | None  # to PGPASSWORD of the components, never into a URL or argv
    fernet_keys: tuple[str, ...]
    home_parent: str = "/dev/shm"
    startup_timeout: float = 600.0
    extra_env: Mapping[str, str] = dataclasses.field(default_factory=dict)


def sqlalchemy_url(dsn: str) -> str:
    """A password-less SQLAlchemy URL (psycopg2) for a libpq DSN."""
    params = conninfo_to_dict(dsn)
    host, query = str(params.get("host") or "localhost"), []
    if host.startswith("/"):
        query.append(f"host={host}")
        host = ""
    if params.get("sslmode"):
        query.append(f"sslmode={params['sslmode']}")
    netloc = f"{params.get('user') or ''}@{host}" + (f":{params['port']}" if params.get("port") and host else "")
    if not params.get("user"):
        netloc = netloc.lstrip("@")
    return f"postgresql+psycopg2://{netloc}/{params.get('dbname') or ''}" + (f"?{'&'.join(query)}" if query else "")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveAirflow:
    def __init__(self, spec: LiveSpec) -> None:
        self.spec = spec
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.home: Path | None = None
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, IO[bytes]] = {}
        self._password = secrets.token_urlsafe(24)
        self._started_env: dict[str, str] = {}

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> LiveAirflow:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def components(self) -> tuple[str, ...]:
        if self.spec.major >= 3:
            return ("api-server", "scheduler", "dag-processor")
        return ("webserver", "scheduler")

    @property
    def dags_folder(self) -> Path:
        assert self.home is not None
        return self.home / "dags"

    def start(self) -> None:
        Path(self.spec.home_parent).mkdir(parents=True, exist_ok=True)
        self.home = Path(tempfile.mkdtemp(prefix="afbackup-live-", dir=self.spec.home_parent))
        os.chmod(self.home, 0o700)
        canary.install(self.dags_folder)
        (self.home / "logs").mkdir()
        env = self._started_env = self._env()
        if self.spec.major >= 3:
            secret_file = self.home / "passwords.json"
            secret_file.touch(mode=0o600)
            secret_file.write_text(json.dumps({API_USER: self._password}))
        else:
            (self.home / "webserver_config.py").write_text('AUTH_ROLE_PUBLIC = "Admin"\n')
        for name in self.components:
            self._spawn(name, env)
        logger.info("started Airflow %s (%s) on the restored database; API at %s", self.spec.major,
                    ", ".join(self.components), self.url)

    def _argv(self, name: str) -> list[str]:
        base = [*self.spec.command, name]
        if name == "api-server":
            return [*base, "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        if name == "webserver":
            return [*base, "--hostname", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        return base

    def _env(self) -> dict[str, str]:
        assert self.home is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_",
                                                                          "AFBACKUP_"))}
        shared_secret = secrets.token_urlsafe(32)
        env.update({
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sqlalchemy_url(self.spec.dsn),
            "AIRFLOW__CORE__FERNET_KEY": ",".join(self.spec.fernet_keys),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.home / "logs"),
            "AIRFLOW__SCHEDULER__DAG_DIR_LIST_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__SCHEDULER__PARSING_PROCESSES": "1",
            "PYTHONWARNINGS": "ignore",
        })
        if self.spec.major >= 3:
            env.update({
                "AIRFLOW__API_AUTH__JWT_SECRET": shared_secret,
                "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
                "AIRFLOW__API__BASE_URL": self.url,
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{API_USER}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.home / "passwords.json"),
            })
        else:
            env.update({
                "AIRFLOW__WEBSERVER__SECRET_KEY": shared_secret,
                "AIRFLOW__WEBSERVER__WORKERS": "1",
                "AIRFLOW__WEBSERVER__BASE_URL": self.url,
                "AIRFLOW__API__AUTH_BACKENDS": "airflow.api.auth.backend.default",
            })
        if self.spec.password:
            env["PGPASSWORD"] = self.spec.password
        env.update(self.spec.extra_env)
        return env

    def _spawn(self, name: str, env: dict[str, str]) -> None:
        assert self.home is not None
        if name in self._logs:
            self._logs.pop(name).close()
        log = (self.home / "logs" / f"{name}.log").open("ab")
        self._logs[name] = log
        try:
            self.processes[name] = subprocess.Popen(self._argv(name), env=env, stdin=subprocess.DEVNULL, stdout=log,
                                                    stderr=subprocess.STDOUT, start_new_session=True,
                                                    cwd=str(self.home))
        except OSError as exc:
            raise SourceError(f"cannot start `{' '.join(self.spec.command)} {name}`: {exc.strerror}",
                              hint="set [drill] airflow_command to the Airflow CLI of the backup's version") from None

    def start_component(self, name: str) -> None:
        """(Re)start one component that was stopped, with the environment of the first start."""
        if name in self.processes or not self._started_env:
            return
        self._spawn(name, self._started_env)

    def stop_component(self, name: str) -> None:
        """Stop one component (its whole process group)."""
        proc = self.processes.pop(name, None)
        if proc is not None:
            _stop_groups([proc])

    def stop(self) -> None:
        """Stop every component and delete the home; safe to call twice. SIGTERM/SIGINT wait until it is done
        (blocked meanwhile, delivered afterwards), so a second signal cannot leave half of Airflow running."""
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        try:
            self._stop_all()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def _stop_all(self) -> None:
        procs = list(self.processes.values())
        self.processes.clear()
        try:
            _stop_groups(procs)  # all at once: the slowest component's shutdown, not the sum of them
        except Exception as exc:
            logger.warning("could not stop every Airflow process: %s", exc)
        for log in self._logs.values():
            log.close()
        self._logs.clear()
        if self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)
            self.home = None

    # ------------------------------------------------------------------ readiness
    @property
    def api_user(self) -> tuple[str, str] | None:
        """(username, password) of the API on Airflow 3; None on Airflow 2 (no login)."""
        return (API_USER, self._password) if self.spec.major >= 3 else None

    def api(self, timeout: float = 30.0, retries: int = 3) -> AirflowApi:
        creds = Credentials(API_USER, self._password) if self.spec.major >= 3 else Credentials()
        return AirflowApi(self.url, creds, major=self.spec.major, timeout=timeout, retries=retries)

    def log_tail(self, name: str, lines: int = 15) -> str:
        if self.home is None:
            return ""
        path = self.home / "logs" / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return " | ".join(line.strip() for line in text.splitlines()[-lines:] if line.strip())

    def _check_alive(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                raise SourceError(f"Airflow's {name} exited with {proc.returncode} during start-up: "
                                  f"{self.log_tail(name)}", hint="see its log above; check [drill] airflow_command")

    def wait_ready(self) -> float:
        """Wait until the API answers and the scheduler (and DAG processor on 3) heartbeat; the seconds waited."""
        api = self.api(timeout=10, retries=0)
        started, delay = time.monotonic(), 1.0
        deadline = started + self.spec.startup_timeout
        required = ["metadatabase", "scheduler"] + (["dag_processor"] if self.spec.major >= 3 else [])
        last = "no answer yet"
        while True:
            self._check_alive()
            try:
                health = api.health()
                waiting = [c for c in required if (health.get(c) or {}).get("status") != "healthy"]
                if not waiting:
                    return time.monotonic() - started
                last = "waiting for " + ", ".join(waiting)
            except AirflowApiError as exc:
                last = exc.one_line()
            except AfbackupError:
                raise
            if time.monotonic() + delay > deadline:
                raise SourceError(f"the live Airflow did not become healthy within {self.spec.startup_timeout:g}s "
                                  f"({last}); scheduler log: {self.log_tail('scheduler', 5)}",
                                  hint="raise [drill] live_startup_timeout on a slow machine")
            time.sleep(delay)
            delay = min(delay * 1.5, 5.0)


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _stop_groups(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every group, wait up to STOP_GRACE, SIGKILL what is left; then SIGKILL each group again, so no
    child (gunicorn worker, task runner) outlives its leader."""
    for sig, grace in ((signal.SIGTERM, STOP_GRACE), (signal.SIGKILL, 10.0)):
        alive = [proc for proc in procs if proc.poll() is None]
        if not alive:
            break
        for proc in alive:
            _signal_group(proc, sig)
        deadline = time.monotonic() + grace
        for proc in alive:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
    for proc in procs:
        _signal_group(proc, signal.SIGKILL)
