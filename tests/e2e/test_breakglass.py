"""The README's break-glass restore, run exactly as written: aws, gpg, zstd, tar and the PostgreSQL tools only."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.helpers import bucket_of, table_digests

# slow: every test runs a backup, restore or drill through the CLI with Airflow
pytestmark = [pytest.mark.airflow, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
AWSCLI = REPO / ".cache" / "venvs" / "awscli" / "bin"


def readme_breakglass() -> str:
    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- break-glass:begin -->\s*```sh\n(.*?)```\s*<!-- break-glass:end -->", text, re.S)
    assert block, "README.md lost its break-glass block"
    return block.group(1)


def test_readme_breakglass_commands_restore_the_backup(env, tmp_path):
    if not (AWSCLI / "aws").exists():
        pytest.skip("the aws CLI is installed by `make awscli` (part of `make test`)")
    # GIVEN a backup in S3
    airflow, db = env.airflow("3")
    cfg = env.config(db, airflow=airflow)
    done = env.afbackup(env.write_config(cfg), "backup", airflow=airflow)
    assert done.returncode == 0, done.stderr
    workdir = tmp_path / "breakglass"
    workdir.mkdir()
    newdb = env.unique("breakglass_")
    shell_env = dict(os.environ, BUCKET=bucket_of(cfg), PREFIX="airflow", BACKUP_ID=done.stdout.strip(),
                     NEWDB=newdb, GNUPGHOME=str(env.keys.home), AWS_ENDPOINT_URL=env.s3.endpoint,
                     AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
                     PGHOST="127.0.0.1", PGPORT=str(env.pg.port), PGUSER=env.pg.user,
                     PATH=f"{AWSCLI}:{os.environ['PATH']}")
    # WHEN exactly the README's commands run
    run = subprocess.run(["bash", "-c", "set -euo pipefail\n" + readme_breakglass()], cwd=workdir,
                         env=shell_env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "checksum matches the manifest" in run.stdout
    # THEN the new database holds the source's rows (log and xcom are schema-only in a backup)
    source, restored = table_digests(env, db), table_digests(env, newdb)
    assert {t: v for t, v in restored.items() if t not in ("log", "xcom")} == \
        {t: v for t, v in source.items() if t not in ("log", "xcom")}
