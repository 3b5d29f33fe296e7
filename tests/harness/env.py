"""The embedded environment: PostgreSQL + S3 (moto) + GPG keys + real Airflow, all on loopback.

Used by the test suite, ``make demo`` and ``make bench``; everything it
starts, it stops. Airflow metadata DBs are migrated and seeded once per
version and then copied with ``CREATE DATABASE … TEMPLATE`` (fast).
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import tomli_w

from tests.harness.airflow_env import AIRFLOW_VERSIONS, AirflowInstance
from tests.harness.gpgkeys import KeyRing, make_keyring
from tests.harness.pg import PostgresServer
from tests.harness.s3 import FAKE_CREDENTIALS, MotoServer

REPO = Path(__file__).resolve().parents[2]


class Environment:
    def __init__(self, workdir: str | None = None, *, min_part_size: int | None = 5 * 2**20) -> None:
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="afb-env-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pg = PostgresServer()
        self.s3 = MotoServer(min_part_size=min_part_size)
        self.keys: KeyRing | None = None
        self.backup_keys: KeyRing | None = None  # public recipient keys + signing key: what a backup pod holds
        self._templates: dict[str, AirflowInstance] = {}
        self._counter = 0

    def start(self) -> Environment:
        self.pg.start()
        self.s3.start()
        self.keys = make_keyring(("backup", "signer", "stranger"))
        self.backup_keys = self.keys.public_only_copy(["backup"])
        self.backup_keys.gpg("--import", input=self.keys.export_secret("signer"))
        self.backup_keys.fingerprints["signer"] = self.keys.fingerprints["signer"]
        return self

    def stop(self) -> None:
        for ring in (self.keys, self.backup_keys):
            if ring:
                ring.cleanup()
        self.s3.stop()
        self.pg.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Environment:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def unique(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}{self._counter}"

    def template(self, major: str) -> AirflowInstance:
        """The migrated, seeded template DB of Airflow ``major`` ("2" or "3")."""
        if major not in self._templates:
            version = AIRFLOW_VERSIONS[major]
            db = f"template_af{major}"
            self.pg.create_database(db)
            airflow = AirflowInstance(version, self.workdir / f"home-template-{major}", self.pg.sqlalchemy_url(db))
            airflow.migrate()
            airflow.seed()
            self._templates[major] = airflow
        return self._templates[major]

    def airflow(self, major: str, name: str | None = None, *, fernet_key: str | None = None,
                empty: bool = False) -> tuple[AirflowInstance, str]:
        """A fresh copy of the seeded DB (or an empty DB) and an Airflow pointed at it. Returns (airflow, db)."""
        template = self.template(major)
        db = name or self.unique(f"af{major}_")
        self.pg.create_database(db, template=None if empty else f"template_af{major}")
        airflow = AirflowInstance(template.version, self.workdir / f"home-{db}", self.pg.sqlalchemy_url(db),
                                  fernet_key or template.fernet_key)
        return airflow, db

    def bucket(self, name: str | None = None, *, object_lock: bool = False) -> str:
        return self.s3.create_bucket(name or self.unique("backups-"), object_lock=object_lock)

    def config(self, db: str, *, bucket: str | None = None, url: str | None = None,
               airflow: AirflowInstance | None = None, sign: bool = True, private_keys: bool = True,
               **sections: Any) -> dict[str, Any]:
        """A config dict (TOML-shaped) for backing up ``db``; ``sections`` override keys per table.

        ``private_keys`` gives the operator's keyring (can decrypt: verify/restore); without it, the
        backup pod's keyring (recipients' public keys and the signing key only).
        """
        assert self.backup_keys and self.keys
        cfg: dict[str, Any] = {
            "database": {"dsn": self.pg.dsn(db)},
            "airflow": {"executor": "local", "command": [airflow.airflow]} if airflow else {"executor": "none"},
            "storage": {"url": url or f"s3://{bucket or self.bucket()}/airflow", "endpoint_url": self.s3.endpoint,
                        "region": "us-east-1", "part_size": "5MiB"},
            "encryption": {"recipients": [self.keys.fingerprints["backup"]],
                           "gnupghome": str((self.keys if private_keys else self.backup_keys).home),
                           "sign_with": self.keys.fingerprints["signer"] if sign else "",
                           "trusted_signers": [self.keys.fingerprints["signer"]] if sign else [],
                           # unsigned backups must be trusted explicitly (the opt-out)
                           **({} if sign else {"require_signature": False})},
        }
        for section, values in sections.items():
            merged = copy.deepcopy(cfg.get(section, {}))
            merged.update(values)
            cfg[section] = merged
        return cfg

    def write_config(self, cfg: dict[str, Any], name: str | None = None) -> Path:
        path = self.workdir / (name or self.unique("config-") + ".toml")
        path.write_text(tomli_w.dumps(cfg))
        return path

    def afbackup_env(self, airflow: AirflowInstance | None = None, extra: dict[str, str] | None = None
                     ) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AFBACKUP_", "AWS_", "AIRFLOW"))}
        env = airflow.env(base) if airflow else base
        env.update(FAKE_CREDENTIALS)
        env.update(extra or {})
        return env

    def afbackup(self, config: Path, *args: str, airflow: AirflowInstance | None = None,
                 env: dict[str, str] | None = None, timeout: float = 600,
                 advance: float = 0) -> subprocess.CompletedProcess:
        """Run the real CLI in a child process (real exit codes, real signals).

        ``advance``: the child's clock runs that many seconds ahead (tests/harness/clock.py), as if the
        test had slept that long first.
        """
        entry = ["-m", "afbackup"]
        child_env = self.afbackup_env(airflow, env)
        if advance:
            entry = ["-m", "tests.harness.clock", str(advance)]
            child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), child_env.get("PYTHONPATH")]))
        return subprocess.run([sys.executable, *entry, "--config", str(config), *args],
                              capture_output=True, text=True, env=child_env, timeout=timeout, cwd=str(self.workdir))
