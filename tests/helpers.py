"""Test helpers that open backups with standard tools only (gpg, zstd, tar, pg_restore)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from tests.harness.env import Environment


def s3_keys(env: Environment, bucket: str, prefix: str = "") -> list[str]:
    client = env.s3.client()
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def pending_uploads(env: Environment, bucket: str) -> list[dict]:
    return env.s3.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def manifests(env: Environment, bucket: str) -> list[str]:
    return [key for key in s3_keys(env, bucket) if key.endswith("/manifest.json")]


def download(env: Environment, bucket: str, key: str, dest: Path) -> Path:
    env.s3.client().download_file(bucket, key, str(dest))
    return dest


def open_with_standard_tools(env: Environment, ciphertext: Path, outdir: Path) -> Path:
    """gpg --decrypt | zstd -d | tar -x into ``outdir`` — exactly what a person would run."""
    outdir.mkdir(parents=True, exist_ok=True)
    script = (f"set -euo pipefail; gpg --homedir '{env.keys.home}' --batch --quiet --decrypt '{ciphertext}'"
              f" | zstd -dc | tar -xf - -C '{outdir}'")
    subprocess.run(["bash", "-c", script], check=True, capture_output=True)
    return outdir


def join_dump(outdir: Path) -> Path:
    """The dump parts, concatenated in order (what `tar -xO --wildcards 'db/airflow.pgdump.*'` gives)."""
    parts = sorted((outdir / "db").glob("airflow.pgdump.*"))
    target = outdir / "airflow.pgdump"
    with target.open("wb") as out:
        for part in parts:
            out.write(part.read_bytes())
    return target


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def stored_manifest(env: Environment, bucket: str, backup_id: str, prefix: str = "airflow") -> dict:
    body = env.s3.client().get_object(Bucket=bucket, Key=f"{prefix}/v1/backups/{backup_id}/manifest.json")["Body"]
    return json.loads(body.read())


def bucket_of(cfg: dict) -> str:
    return cfg["storage"]["url"].removeprefix("s3://").split("/")[0]


def table_digests(env: Environment, db: str, schema: str = "public") -> dict[str, tuple[int, str]]:
    """(row count, md5 of every row in a stable order) per table: equal digests mean equal rows."""
    tables = [row[0] for row in env.pg.execute(db, "SELECT tablename FROM pg_tables WHERE schemaname = %s",
                                                (schema,))]
    digests = {}
    for table in tables:
        count, digest = env.pg.execute(db, f'SELECT count(*), md5(coalesce(string_agg(t::text, E\'\\n\' '
                                           f'ORDER BY t::text), \'\')) FROM "{schema}"."{table}" t')[0]
        digests[table] = (count, digest)
    return digests


def restore_env_for(env: Environment, airflow, db: str):
    """An Airflow deployment pointed at ``db`` (same version and key as ``airflow``)."""
    from tests.harness.airflow_env import AirflowInstance

    return AirflowInstance(airflow.version, env.workdir / f"home-{db}", env.pg.sqlalchemy_url(db), airflow.fernet_key)
