"""Two deployments in one config file, against real PostgreSQL and S3 (moto over HTTP): each backs up and
prunes only under its own prefix, its manifests record its name, and `fleet status` sees both."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

RETENTION = {"keep_last": 1, "min_keep": 1, "incomplete_after": "1s"}


@pytest.fixture(scope="module")
def fleet(env):
    """A fleet file: shared keys, endpoint and retention; team-a and team-b with their own DB and prefix."""
    _, db_a = env.airflow("3")
    _, db_b = env.airflow("3")
    bucket = env.bucket()
    shared = env.config(db_a, bucket=bucket)
    del shared["database"]
    shared["storage"].pop("url")
    shared["retention"] = RETENTION
    shared["check"] = {"max_age": "1h"}
    shared["deployments"] = {
        "team-a": {"database": {"dsn": env.pg.dsn(db_a)}, "storage": {"url": f"s3://{bucket}/fleet/team-a"}},
        "team-b": {"database": {"dsn": env.pg.dsn(db_b)}, "storage": {"url": f"s3://{bucket}/fleet/team-b"}},
    }
    return env.write_config(shared), bucket


def keys(env, bucket: str, prefix: str) -> list[str]:
    pages = env.s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


def test_two_deployments_back_up_and_prune_only_their_own_prefix(env, fleet):
    path, bucket = fleet
    # a command that needs a deployment and has none: exit 3, naming the choices
    unselected = env.afbackup(path, "backup")
    assert unselected.returncode == 3 and "team-a, team-b" in unselected.stderr
    # GIVEN two backups of team-a (root option) and one of team-b (AFBACKUP_DEPLOYMENT)
    a_ids = []
    for _ in range(2):
        done = env.afbackup(path, "--deployment", "team-a", "backup")
        assert done.returncode == 0, done.stderr
        a_ids.append(done.stdout.strip())
    done = env.afbackup(path, "backup", env={"AFBACKUP_DEPLOYMENT": "team-b"})
    assert done.returncode == 0, done.stderr
    b_id = done.stdout.strip()
    # THEN every object of each lies under its own prefix, and each manifest records its deployment's name
    everything = keys(env, bucket, "")
    a_keys, b_keys = keys(env, bucket, "fleet/team-a/"), keys(env, bucket, "fleet/team-b/")
    assert set(everything) == set(a_keys) | set(b_keys)
    assert all(a_id not in key for key in b_keys for a_id in a_ids) and all(b_id not in key for key in a_keys)
    manifest = env.s3.client().get_object(Bucket=bucket, Key=f"fleet/team-b/v1/backups/{b_id}/manifest.json")
    assert json.loads(manifest["Body"].read())["name"] == "team-b"
    # WHEN team-a prunes (keep_last = 1) and team-b prunes (one backup: nothing to delete)
    pruned = env.afbackup(path, "--deployment", "team-a", "prune", "--confirm", "--json")
    assert pruned.returncode == 0, pruned.stderr
    assert env.afbackup(path, "--deployment", "team-b", "prune", "--confirm").returncode == 0
    # THEN team-a lost its older backup, and team-b's objects are exactly as they were
    listed = json.loads(env.afbackup(path, "--deployment", "team-a", "list", "--json").stdout)
    assert [r["backup_id"] for r in listed] == [a_ids[1]]
    assert keys(env, bucket, "fleet/team-b/") == b_keys
    assert not any(a_ids[0] in key for key in keys(env, bucket, ""))
    # AND fleet status shows both deployments fresh, with no drill recorded yet
    status = env.afbackup(path, "fleet", "status", "--json")
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)
    rows = {d["name"]: d for d in doc["deployments"]}
    assert doc["exit_code"] == 0 and set(rows) == {"team-a", "team-b"}
    assert rows["team-a"]["newest_backup_id"] == a_ids[1] and rows["team-b"]["newest_backup_id"] == b_id
    assert rows["team-a"]["backups"][0]["size"] > 0 and rows["team-b"]["warnings"] == ["no drill recorded"]
