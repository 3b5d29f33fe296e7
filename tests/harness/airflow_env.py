"""Real Airflow CLIs (2.x and 3.x from PyPI, each in its own venv) and seeded metadata DBs.

The venvs live in ``.cache/venvs/airflow-<version>`` (git-ignored, reused
between runs); ``ensure_airflow`` installs one when missing (about 30 s).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENVS = Path(os.environ.get("AFBACKUP_VENVS", REPO / ".cache" / "venvs"))
AIRFLOW_VERSIONS = {"2": "2.11.2", "3": "3.3.2"}
DAGS = Path(__file__).parent / "dags"
SEED_SCRIPT = Path(__file__).parent / "seed_airflow.py"
AIRFLOW2_SHIM = Path(__file__).parent / "airflow2_shim"  # cryptography >= 45 vs Airflow 2: see its docstring
PROBE_SCRIPT = Path(__file__).parent / "airflow_probe.py"

# Must never appear on local disk or in logs. Random per process, so not even this source file holds it.
CANARY_PASSWORD = "CANARY-" + secrets.token_hex(12)
VARIABLES = {
    "plain": "hello",
    "json_string": '"hello"',
    "compact_json": '{"a":1,"b":[1,2]}',
    "spaced_json": '{"a": 1}',
    "multiline": "line one\nline two",
    "unicode": "žluťoučký kůň 🐎",
}


def venv_dir(version: str) -> Path:
    return VENVS / f"airflow-{version}"


def ensure_airflow(version: str) -> Path:
    """The venv of Airflow ``version``, installed from PyPI if missing."""
    venv = venv_dir(version)
    stamp = venv / ".afbackup-ready"
    if stamp.exists():
        return venv
    VENVS.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
                    f"apache-airflow[postgres]=={version}"], check=True)
    stamp.write_text(version + "\n")
    return venv


def new_fernet_key(seed: bytes | None = None) -> str:
    return base64.urlsafe_b64encode((seed or os.urandom(32)).ljust(32, b"\0")[:32]).decode()


class AirflowInstance:
    """One Airflow "deployment": a version, a home directory, a metadata DB URL and a Fernet key."""

    def __init__(self, version: str, home: Path, sql_alchemy_url: str, fernet_key: str | None = None) -> None:
        self.version = version
        self.major = int(version.split(".")[0])
        self.venv = ensure_airflow(version)
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.sql_alchemy_url = sql_alchemy_url
        self.fernet_key = fernet_key or new_fernet_key()

    @property
    def airflow(self) -> str:
        return str(self.venv / "bin" / "airflow")

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        env.update({
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.sql_alchemy_url,
            "AIRFLOW__CORE__FERNET_KEY": self.fernet_key,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.home / "logs"),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "3600",
            "PYTHONWARNINGS": "ignore",
        })
        if self.major == 2:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(AIRFLOW2_SHIM), env.get("PYTHONPATH", "")) if p)
        return env

    def cli(self, *args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        done = subprocess.run([self.airflow, *args], capture_output=True, text=True, env=self.env(env))
        if check and done.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
        return done

    def probe(self) -> dict:
        """Connections, variables and pools as this deployment's Airflow reads them (its own API and key)."""
        done = subprocess.run([self.python, str(PROBE_SCRIPT)], capture_output=True, text=True, env=self.env())
        if done.returncode != 0:
            raise RuntimeError(f"probing Airflow {self.version} failed: {done.stderr[-3000:]}")
        return json.loads(done.stdout)

    def migrate(self) -> None:
        self.cli("db", "migrate")

    def run_batch(self, commands: list[list[str]], connections: list[dict] | None = None) -> None:
        """Run many CLI commands in one interpreter (Airflow starts once); create ``connections`` via the ORM."""
        spec = json.dumps({"commands": commands, "connections": connections or []})
        done = subprocess.run([self.python, str(SEED_SCRIPT)], input=spec, capture_output=True, text=True,
                              env=self.env())
        if done.returncode != 0:
            raise RuntimeError(f"seeding Airflow {self.version} failed: {done.stderr[-3000:]}")

    def seed(self, *, runs: tuple[str, ...] = ("2026-02-01", "2026-02-02")) -> None:
        """DAGs, DAG runs with task instances and XComs, connections (one canary), variables, pools."""
        commands: list[list[str]] = [["dags", "reserialize"]]
        commands += [
            ["pools", "set", "etl", "4", "ETL pool"],
            ["pools", "set", "reporting", "2", "Reporting pool"],
            ["connections", "add", "http_api", "--conn-uri", "https://user:api-token-77@api.example.com:8443/v1"],
            ["connections", "add", "no_secret", "--conn-type", "http", "--conn-host", "example.org"],
        ]
        for key, value in VARIABLES.items():
            commands.append(["variables", "set", key, value])
        commands.append(["variables", "set", "described", "with description", "--description", "a described var"])
        for day in runs:
            commands.append(["dags", "test", "sample_etl", day])
        commands.append(["dags", "test", "reporting", runs[0]])
        canary = {"conn_id": "canary_db", "conn_type": "postgres", "host": "db.internal", "login": "svc",
                  "password": CANARY_PASSWORD, "port": 5432,
                  "extra": '{"sslmode":"require","options":"-c search_path=x"}'}
        self.run_batch(commands, connections=[canary])
