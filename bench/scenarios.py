"""What the benchmark runs: the seed script, the pg_dump floor, and afbackup itself.

The seed script is the bash backup afbackup replaces, reproduced faithfully:
``pg_dump -Fc -Z9`` of a hand-picked table list, the three Airflow CLI
exports to files, then ``tar czf - | gpg -e | aws s3 cp -`` to the same S3
endpoint afbackup uses.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from bench.measure import Measurement, run_measured, time_command
from tests.harness.airflow_env import AirflowInstance
from tests.harness.env import Environment

SEED_TABLES = ["dag", "dag_run", "task_instance", "connection", "variable", "slot_pool", "dataset",
               "dataset_event", "ab_*"]


def seed_script(env: Environment, airflow: AirflowInstance, db: str, bucket: str, awscli: str,
                workdir: Path) -> Measurement:
    tables = " ".join(f"-t {shlex.quote(t)}" for t in SEED_TABLES)
    out = workdir / "seed-out"
    script = f"""set -eo pipefail
rm -rf {out}; mkdir -p {out}
pg_dump -Fc -Z9 {tables} "{env.pg.dsn(db)}" > {out}/airflow.dump
{airflow.airflow} connections export - > {out}/connections.json
{airflow.airflow} variables export - > {out}/variables.json
(cd {out} && {airflow.airflow} pools export - > {out}/pools.json)
tar czf - -C {out} . | gpg --homedir {env.backup_keys.home} --batch --trust-model always \\
  -e -r {env.keys.fingerprints['backup']} \\
  | {awscli} --endpoint-url {env.s3.endpoint} s3 cp - s3://{bucket}/seed/backup.tar.gz.gpg
"""
    result = time_command("seed script", script, env=env.afbackup_env(airflow))
    check(result)
    head = env.s3.client().head_object(Bucket=bucket, Key="seed/backup.tar.gz.gpg")
    result.stdout = json.dumps({"archive_size": head["ContentLength"]})
    return result


def pg_dump_floor(env: Environment, db: str, scope_flags: list[str]) -> Measurement:
    """``pg_dump -Fc -Z0`` of afbackup's scope to /dev/null (through stdout: -f /dev/null fails on fsync)."""
    flags = " ".join(shlex.quote(flag) for flag in scope_flags)
    result = time_command("pg_dump -Z0 floor", f'pg_dump -Fc -Z0 {flags} "{env.pg.dsn(db)}" > /dev/null')
    check(result)
    return result


def afbackup(env: Environment, airflow: AirflowInstance, config: Path, *args: str,
             name: str = "afbackup backup") -> Measurement:
    argv = [sys.executable, "-m", "afbackup", "--config", str(config), *args]
    result = run_measured(name, argv, env=env.afbackup_env(airflow))
    check(result)
    return result


def check(result: Measurement) -> None:
    if result.returncode != 0:
        raise SystemExit(f"{result.name} failed ({result.returncode}):\n{result.stderr[-3000:]}")


def raw_download_decrypt(env: Environment, bucket: str, key: str, awscli: str) -> Measurement:
    """What verify must at least do: download, decrypt and decompress the object (output discarded)."""
    script = (f"set -o pipefail; {awscli} --endpoint-url {env.s3.endpoint} s3 cp s3://{bucket}/{key} - "
              f"| gpg --homedir {env.keys.home} --batch --quiet --decrypt | zstd -dc > /dev/null")
    result = time_command("download+decrypt+decompress", script, env=env.afbackup_env())
    check(result)
    return result
