"""S3 credentials and configuration sources, end to end, each secret a canary.

Rows (each one backup, ``verify --deep`` and ``list`` against the moto server, no executor):
- S3 credentials from environment keys, with the configuration from a TOML file only;
- a shared credentials file with a named profile (AWS_SHARED_CREDENTIALS_FILE + AWS_PROFILE), with the
  configuration from AFBACKUP_* variables only (no file at all);
- a web identity token (AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN, as IRSA sets them) exchanged at moto's
  STS (AWS_ENDPOINT_URL_STS: botocore's own per-service endpoint variable), with a file, AFBACKUP_*
  variables over it, and flags over both.
No other AWS credentials exist in these runs (no keys in the environment, an empty HOME), so a success
proves the row's source was the one used. Every secret must stay out of logs, argv and disk.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path

import pytest
import tomli_w

from afbackup.config import env_name
from tests.harness.canary import files_containing, run_watched

pytestmark = pytest.mark.slow


def _flatten(cfg: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in cfg.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def _as_env(cfg: dict) -> dict[str, str]:
    """The config as AFBACKUP_* variables: lists as JSON arrays."""
    return {env_name(key): json.dumps(value) if isinstance(value, list) else str(value)
            for key, value in _flatten(cfg).items()}


def _aws(row: str, env, vault: Path) -> tuple[dict[str, str], list[str]]:
    """(AWS environment, canary secrets) for one way of giving S3 credentials."""
    key_id, secret = "AKIA" + secrets.token_hex(8).upper(), f"canary-s3-{secrets.token_hex(12)}"
    base = {"AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    if row == "env_keys":
        return {**base, "AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret}, [secret]
    if row == "shared_file_profile":
        path = vault / "credentials"
        path.write_text(f"[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n\n"
                        f"[afbackup]\naws_access_key_id = {key_id}\naws_secret_access_key = {secret}\n")
        return {**base, "AWS_SHARED_CREDENTIALS_FILE": str(path), "AWS_PROFILE": "afbackup"}, [secret]
    token = f"canary-jwt-{secrets.token_hex(16)}"
    path = vault / "token"
    path.write_text(token)
    return {**base, "AWS_WEB_IDENTITY_TOKEN_FILE": str(path), "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/afb",
            "AWS_ROLE_SESSION_NAME": "afbackup", "AWS_ENDPOINT_URL_STS": env.s3.endpoint}, [token]


@pytest.mark.parametrize("row, config_source", [
    ("env_keys", "file"), ("shared_file_profile", "env"), ("web_identity", "flags_over_env_over_file"),
])
def test_s3_credentials_and_config_sources(env, tmp_path, row, config_source):
    # GIVEN a database, a bucket, S3 credentials given one documented way and the config from one source
    _, db = env.airflow("3")
    vault = tmp_path / "secrets"
    vault.mkdir(mode=0o700)
    aws, canaries = _aws(row, env, vault)
    cfg = env.config(db)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AFBACKUP_", "PG"))}
    run_env = {**base, **aws}
    config_args: list[str] = []
    scratch: list[str] = []
    if config_source == "file":
        (tmp_path / "afbackup.toml").write_text(tomli_w.dumps(cfg))
        config_args = ["--config", str(tmp_path / "afbackup.toml")]
        scratch = ["--scratch-dsn", env.pg.dsn()]
    elif config_source == "env":
        run_env.update(_as_env({**cfg, "drill": {"scratch_dsn": env.pg.dsn()}}))
    else:  # a file with a wrong bucket and scratch server; env fixes the bucket; the flag fixes the server
        right_url = cfg["storage"]["url"]
        wrong = {**cfg, "storage": {**cfg["storage"], "url": "s3://no-such-bucket/airflow"},
                 "drill": {"scratch_dsn": "postgresql://nobody@127.0.0.1:9/postgres"}}
        (tmp_path / "afbackup.toml").write_text(tomli_w.dumps(wrong))
        run_env.update({"AFBACKUP_CONFIG": str(tmp_path / "afbackup.toml"), "AFBACKUP_STORAGE_URL": right_url,
                        "AFBACKUP_DRILL_SCRATCH_DSN": "postgresql://nobody@127.0.0.1:8/postgres"})
        scratch = ["--scratch-dsn", env.pg.dsn()]

    def afbackup(*args: str):
        watched = run_watched([sys.executable, "-m", "afbackup", "-v", *config_args, *args], env=run_env,
                              cwd=tmp_path)
        assert watched.done.returncode == 0, f"{args[0]} ({row}, {config_source}): {watched.done.stderr[-3000:]}"
        for canary in canaries:
            assert watched.leaks(canary) == [], f"{args[0]} ({row}) leaked a secret"
        return watched

    # WHEN a backup is made, verified deeply and listed
    backup_id = afbackup("backup").done.stdout.strip()
    afbackup("verify", "--deep", *scratch)
    listed = afbackup("list", "--json").done.stdout
    shown = afbackup("config", "show", "--json").done.stdout
    # THEN the backup is there, the values came from where the row says, and no secret is on disk
    assert backup_id in listed
    sources = {item["key"]: item["source"] for item in json.loads(shown)["values"]}
    if config_source == "file":
        assert sources["storage.url"].startswith("file ")
    elif config_source == "env":
        assert sources["storage.url"] == "env AFBACKUP_STORAGE_URL" and json.loads(shown)["file"] is None
    else:
        assert sources["storage.url"] == "env AFBACKUP_STORAGE_URL"
        assert sources["database.dsn"].startswith("file ")
    for canary in canaries:
        assert files_containing(canary, [tmp_path, Path(os.environ["HOME"])], exclude=[vault]) == []
