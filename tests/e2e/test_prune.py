"""``afbackup prune`` against S3 (moto over HTTP): dry run, --confirm, leftovers, pins and Object Lock.

One real backup is made per module; the other backups are copies of it under
new ids and finish times, their manifests signed again by the trusted signer
(prune reads manifests and checks their signatures, never the archive, so a
copy is a faithful stand-in and keeps the test fast).
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from afbackup import manifest as mf
from tests.helpers import bucket_of, pending_uploads, stored_manifest

# slow: real backups (module fixture, Object Lock) before each prune
pytestmark = [pytest.mark.airflow, pytest.mark.slow]

PREFIX = "airflow"
RETENTION = {"keep_last": 1, "keep_daily": 3, "min_keep": 2, "incomplete_after": "1s"}


@pytest.fixture(scope="module")
def source(env):
    """(db, bucket, backup id) of one real backup (no executor: prune never looks inside)."""
    _, db = env.airflow("3")
    cfg = env.config(db, private_keys=False)
    done = env.afbackup(env.write_config(cfg), "backup")
    assert done.returncode == 0, done.stderr
    return db, bucket_of(cfg), done.stdout.strip()


def _key(backup_id: str, name: str) -> str:
    return f"{PREFIX}/{mf.key_of(backup_id, name)}"


def clone(env, source, bucket: str, finished: dt.datetime, tag: str, *, signer: str = "signer") -> str:
    """A copy of the source backup that finished at ``finished``, its manifest signed by ``signer``."""
    _, src_bucket, src_id = source
    client = env.s3.client()
    backup_id = finished.strftime("%Y%m%dT%H%M%SZ") + "-" + tag
    for name in (mf.ATTEMPT_NAME, mf.ARCHIVE_NAME):
        body = client.get_object(Bucket=src_bucket, Key=_key(src_id, name))["Body"].read()
        client.put_object(Bucket=bucket, Key=_key(backup_id, name), Body=body)
    doc = stored_manifest(env, src_bucket, src_id)
    doc.update(backup_id=backup_id, started_at=mf.iso(finished - dt.timedelta(minutes=3)),
               finished_at=mf.iso(finished))
    data = mf.dump_manifest(doc)
    signature = env.keys.gpg("--local-user", env.keys.fingerprints[signer], "--detach-sign", input=data).stdout
    client.put_object(Bucket=bucket, Key=_key(backup_id, mf.SIGNATURE_NAME), Body=signature)
    client.put_object(Bucket=bucket, Key=_key(backup_id, mf.MANIFEST_NAME), Body=data)
    return backup_id


def failed_attempt(env, bucket: str, started: dt.datetime) -> str:
    """What a failed run leaves: attempt and failure records, and a multipart upload nobody aborted."""
    client = env.s3.client()
    backup_id = started.strftime("%Y%m%dT%H%M%SZ") + "-dead00"
    client.put_object(Bucket=bucket, Key=_key(backup_id, mf.ATTEMPT_NAME), Body=b"{}")
    client.put_object(Bucket=bucket, Key=_key(backup_id, mf.FAILED_NAME), Body=b'{"error": "pg_dump: exited 73"}')
    client.create_multipart_upload(Bucket=bucket, Key=_key(backup_id, mf.ARCHIVE_NAME))
    return backup_id


def snapshot(env, bucket: str) -> dict:
    """Every object (with ETag and LastModified), every version and every multipart upload of the bucket."""
    client = env.s3.client()
    objects = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    versions = client.list_object_versions(Bucket=bucket)
    return {"objects": sorted((o["Key"], o["ETag"], o["LastModified"].isoformat()) for o in objects),
            "versions": sorted((v["Key"], v["VersionId"]) for v in versions.get("Versions", [])),
            "markers": sorted(m["Key"] for m in versions.get("DeleteMarkers", [])),
            "uploads": sorted((u["Key"], u["UploadId"]) for u in pending_uploads(env, bucket))}


def _config(env, source, bucket: str, **retention):
    return env.write_config(env.config(source[0], bucket=bucket, private_keys=False,
                                       retention=dict(RETENTION, **retention)))


def _listed(env, path, *args) -> list[str]:
    return [r["backup_id"] for r in json.loads(env.afbackup(path, "list", "--json", *args).stdout)]


def test_dry_run_changes_nothing_and_confirm_deletes_exactly_the_plan(env, source):
    # GIVEN six daily backups (one old one pinned), a failed attempt and its unfinished multipart upload
    bucket = env.bucket()
    now = mf.utcnow()
    ids = [clone(env, source, bucket, now - dt.timedelta(days=day, hours=1), f"d{day}") for day in range(1, 7)]
    dead = failed_attempt(env, bucket, now - dt.timedelta(days=2))
    path = _config(env, source, bucket)
    assert env.afbackup(path, "pin", ids[4], "--reason", "audit").returncode == 0
    before = snapshot(env, bucket)
    # WHEN prune runs without --confirm
    dry = env.afbackup(path, "prune")
    planned = json.loads(env.afbackup(path, "prune", "--json").stdout)
    # THEN it prints the plan and the bucket is exactly as it was (objects, versions, uploads)
    assert dry.returncode == 0, dry.stderr
    assert snapshot(env, bucket) == before
    assert ("dry run: would delete 2 of 6 backups and 1 failed or killed attempt (10 objects), abort 1 upload"
            in dry.stdout)
    actions = {b["backup_id"]: b["action"] for b in planned["plan"]["backups"]}
    assert actions == {ids[0]: "keep", ids[1]: "keep", ids[2]: "keep", ids[3]: "delete", ids[4]: "keep",
                       ids[5]: "delete"}
    assert next(b for b in planned["plan"]["backups"] if b["backup_id"] == ids[4])["reasons"] == ["pinned"]
    doomed = {k for b in planned["plan"]["backups"] + planned["plan"]["attempts"] if b["action"] == "delete"
              for k in b["keys"]}
    # WHEN it runs with --confirm
    done = env.afbackup(path, "prune", "--confirm", "--json")
    # THEN exactly the planned objects are gone, the upload is aborted, and the lock is released
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)["result"]
    assert result["deleted"] == [ids[5], ids[3]] and result["cleaned"] == [dead]
    assert result["aborted_uploads"] == [mf.key_of(dead, mf.ARCHIVE_NAME)]
    after = snapshot(env, bucket)
    assert [o[0] for o in after["objects"]] == sorted(k for k, *_ in before["objects"]
                                                      if k.removeprefix(PREFIX + "/") not in doomed)
    assert after["uploads"] == []
    assert _listed(env, path) == [ids[0], ids[1], ids[2], ids[4]] == _listed(env, path, "--all")
    # AND a second prune deletes nothing
    again = json.loads(env.afbackup(path, "prune", "--confirm", "--json").stdout)["result"]
    assert again["deleted"] == [] and again["objects_deleted"] == 0


def test_object_lock_objects_carry_the_lock_and_prune_skips_them(env, source):
    # GIVEN an Object Lock bucket with a COMPLIANCE and a GOVERNANCE backup, then two newer unlocked ones
    bucket = env.bucket(object_lock=True)
    db = source[0]
    locked = {}
    for mode in ("COMPLIANCE", "GOVERNANCE"):
        cfg = env.config(db, bucket=bucket, private_keys=False, retention=RETENTION,
                         storage={"object_lock_mode": mode, "object_lock_days": 1})
        done = env.afbackup(env.write_config(cfg), "backup")
        assert done.returncode == 0, done.stderr
        locked[done.stdout.strip()] = mode
    now = mf.utcnow()
    # the unlocked copies must finish after the real backups (by a millisecond: manifests keep milliseconds),
    # and not in the future
    last_real = max(dt.datetime.fromisoformat(stored_manifest(env, bucket, backup_id)["finished_at"])
                    for backup_id in locked)
    older, newest = (clone(env, source, bucket, last_real + dt.timedelta(milliseconds=ms), f"u{ms}")
                     for ms in (1, 2))
    assert last_real + dt.timedelta(milliseconds=2) < now
    # THEN every object of a locked backup carries its mode and a retain-until date a day ahead
    client = env.s3.client()
    for backup_id, mode in locked.items():
        for name in (mf.ATTEMPT_NAME, mf.ARCHIVE_NAME, mf.SIGNATURE_NAME, mf.MANIFEST_NAME):
            head = client.head_object(Bucket=bucket, Key=_key(backup_id, name))
            assert head["ObjectLockMode"] == mode, name
            assert dt.timedelta(hours=23) < head["ObjectLockRetainUntilDate"] - now < dt.timedelta(hours=25)
    # WHEN prune --confirm keeps only the newest
    path = _config(env, source, bucket, keep_daily=0, min_keep=1)
    done = env.afbackup(path, "prune", "--confirm")
    # THEN the unlocked one is deleted, both locked ones are skipped and reported, and it is no error
    assert done.returncode == 0, done.stderr
    assert "deleted 1 backup and" in done.stdout and "2 skipped under Object Lock" in done.stdout
    for backup_id, mode in locked.items():
        assert f"NOT deleted, under Object Lock ({mode})" in done.stdout and backup_id in done.stdout
        assert f"not deleting {backup_id}" in done.stderr
    assert set(_listed(env, path)) == {newest, *locked}
    assert older not in _listed(env, path, "--all")
    # AND in this versioned bucket the deleted backup's objects only got delete markers (see README: Retention)
    markers = snapshot(env, bucket)["markers"]
    assert _key(older, mf.MANIFEST_NAME) in markers


def test_forged_manifests_never_push_real_backups_out(env, source):
    # GIVEN three real (trusted) backups and three newer manifests signed by an untrusted key
    bucket = env.bucket()
    now = mf.utcnow()
    real = [clone(env, source, bucket, now - dt.timedelta(days=d), f"r{d}") for d in (3, 4, 5)]
    forged = [clone(env, source, bucket, now - dt.timedelta(hours=h), f"x{h}", signer="stranger") for h in (1, 2, 3)]
    path = _config(env, source, bucket, keep_daily=0, min_keep=1, keep_last=2)
    # WHEN prune --confirm runs with keep_last 2
    done = env.afbackup(path, "prune", "--confirm", "--json")
    # THEN the forged ones are reported as damaged (untrusted) and left alone, and the 2 newest REAL backups stay
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert sorted(d["backup_id"] for d in doc["plan"]["damaged"]) == sorted(forged)
    assert all(d["reasons"][0].startswith("untrusted: the signature of") for d in doc["plan"]["damaged"])
    assert doc["result"]["deleted"] == [real[2]]
    assert {b["backup_id"] for b in doc["plan"]["backups"] if b["action"] == "keep"} == set(real[:2])
