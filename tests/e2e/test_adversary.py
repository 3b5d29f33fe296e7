"""The adversary suite: a writer with the backup pod's bucket credentials but none of our private keys.

Real S3 over HTTP (moto), real gpg, the real CLI. Each test states the attack
(GIVEN/WHEN) and the outcome afbackup guarantees (THEN). One real signed
backup is made per module; every test copies its objects into a bucket of its
own, and the attacker then writes there with plain S3 calls.
"""

from __future__ import annotations

import datetime as dt
import json
import threading

import pytest

from afbackup import manifest as mf
from afbackup.config.model import EncryptionConfig, StorageConfig
from afbackup.crypto import Gpg
from afbackup.errors import LockedError
from afbackup.lock import WRITER_LOCK, StoreLock, read_lock
from afbackup.storage.local import LocalStore
from afbackup.storage.s3 import S3Store
from tests.harness.faultproxy import FaultProxy, get_key
from tests.harness.gpgkeys import KeyRing, make_keyring, new_home
from tests.helpers import bucket_of, open_with_standard_tools, s3_keys, stored_manifest, table_digests

pytestmark = pytest.mark.airflow

PREFIX = "airflow"


@pytest.fixture(scope="module")
def real(env):
    """(db, bucket, backup id) of one real backup, made by the backup pod (signing key, public recipient key)."""
    _, db = env.airflow("3")
    cfg = env.config(db, private_keys=False)
    done = env.afbackup(env.write_config(cfg), "backup")
    assert done.returncode == 0, done.stderr
    return db, bucket_of(cfg), done.stdout.strip()


def _key(backup_id: str, name: str) -> str:
    return f"{PREFIX}/{mf.key_of(backup_id, name)}"


def _copy(env, src: str, backup_id: str, bucket: str) -> None:
    client = env.s3.client()
    for key in s3_keys(env, src, f"{PREFIX}/{mf.backup_prefix(backup_id)}"):
        client.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": src, "Key": key})


def _bucket_with(env, real, *, versioned: bool = False) -> str:
    bucket = env.bucket()
    if versioned:
        env.s3.client().put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    _copy(env, real[1], real[2], bucket)
    return bucket


def _forge(env, real, bucket: str, finished: dt.datetime, tag: str, *, ring: KeyRing | None = None,
           signer: str = "") -> str:
    """What the attacker writes: a copy of the real archive under a new id with a newer manifest."""
    _, src, real_id = real
    client = env.s3.client()
    backup_id = finished.strftime("%Y%m%dT%H%M%SZ") + "-" + tag
    for name in (mf.ATTEMPT_NAME, mf.ARCHIVE_NAME):
        body = client.get_object(Bucket=src, Key=_key(real_id, name))["Body"].read()
        client.put_object(Bucket=bucket, Key=_key(backup_id, name), Body=body)
    doc = stored_manifest(env, src, real_id)
    doc.update(backup_id=backup_id, started_at=mf.iso(finished - dt.timedelta(minutes=3)),
               finished_at=mf.iso(finished))
    data = mf.dump_manifest(doc)
    if ring is not None:
        signature = ring.gpg("--local-user", ring.fingerprints[signer], "--detach-sign", input=data).stdout
        client.put_object(Bucket=bucket, Key=_key(backup_id, mf.SIGNATURE_NAME), Body=signature)
    client.put_object(Bucket=bucket, Key=_key(backup_id, mf.MANIFEST_NAME), Body=data)
    return backup_id


def _json(done) -> object:
    assert done.stdout, done.stderr
    return json.loads(done.stdout)


def _captured(digests: dict) -> dict:
    """Every table but the ones whose rows are excluded by default (log, xcom: schema only)."""
    return {table: digest for table, digest in digests.items() if table not in ("log", "xcom")}


def _exists(env, db: str) -> bool:
    return bool(env.pg.execute("postgres", "SELECT 1 FROM pg_database WHERE datname = %s", (db,)))


def test_a_forged_newer_backup_is_never_latest_never_counted_never_deleted(env, real):
    # GIVEN the real signed backup, and an attacker who plants two NEWER backups: one unsigned, one signed by a
    # key of its own (it has no private key of ours)
    db, _, real_id = real
    bucket = _bucket_with(env, real)
    mallory = make_keyring(("mallory",))
    try:
        now = mf.utcnow()
        unsigned = _forge(env, real, bucket, now - dt.timedelta(minutes=1), "f00001")
        self_signed = _forge(env, real, bucket, now - dt.timedelta(minutes=2), "f00002", ring=mallory,
                             signer="mallory")
    finally:
        mallory.cleanup()
    path = env.write_config(env.config(db, bucket=bucket, retention={"keep_last": 1, "min_keep": 1}))
    planted = set(s3_keys(env, bucket)) - set(s3_keys(env, bucket, _key(real_id, "")))
    # WHEN the operator lists, checks, prunes and restores `latest`
    listed = _json(env.afbackup(path, "list", "--json"))
    every = {r["backup_id"]: r for r in _json(env.afbackup(path, "list", "--all", "--json"))}
    check = _json(env.afbackup(path, "check", "--json"))
    prune = env.afbackup(path, "prune", "--confirm", "--json")
    target = env.unique("restored_")
    restore = env.afbackup(path, "restore", "latest", "--target-dsn", env.pg.dsn(target), "--yes")
    # THEN only the real backup is listed, latest and counted; the forged ones are untrusted, with the reason
    assert [r["backup_id"] for r in listed] == [real_id]
    assert every[unsigned]["state"] == every[self_signed]["state"] == "untrusted"
    assert "is not signed" in every[unsigned]["detail"]
    assert "signed by an unknown key" in every[self_signed]["detail"]  # mallory's key is not ours
    assert check["newest"]["backup_id"] == real_id and "2 untrusted" in json.dumps(check["checks"])
    # AND prune (keep_last 1) keeps the real backup and deletes nothing of the forged ones
    assert prune.returncode == 0, prune.stderr
    plan = json.loads(prune.stdout)
    assert plan["result"]["deleted"] == [] and {d["backup_id"] for d in plan["plan"]["damaged"]} == {
        unsigned, self_signed}
    assert planted <= set(s3_keys(env, bucket))
    # AND restore latest restores the real newest backup, with data equal to the source
    assert restore.returncode == 0, restore.stderr
    assert f"restored backup {real_id}" in restore.stdout
    assert _captured(table_digests(env, target)) == _captured(table_digests(env, db))


def test_a_planted_tombstone_deletes_nothing_and_hides_nothing(env, real):
    # GIVEN the only backup, keep_last 7 / min_keep 3, and an attacker who plants prune's tombstone in its folder
    db, _, real_id = real
    bucket = _bucket_with(env, real)
    tombstone = _key(real_id, mf.DELETING_NAME)
    env.s3.client().put_object(Bucket=bucket, Key=tombstone, Body=json.dumps(
        {"backup_id": real_id, "deleting_since": mf.iso(mf.utcnow()), "reasons": ["planted"]}).encode())
    path = env.write_config(env.config(db, bucket=bucket, retention={"keep_last": 7, "min_keep": 3}))
    before = s3_keys(env, bucket)
    # WHEN the operator lists and prunes (--confirm)
    listed = _json(env.afbackup(path, "list", "--json"))
    every = _json(env.afbackup(path, "list", "--all", "--json"))
    prune = env.afbackup(path, "prune", "--confirm", "--json")
    # THEN the backup is still listed and latest (the tombstone is reported, not obeyed) ...
    assert [r["backup_id"] for r in listed] == [real_id]
    assert every[0]["tombstone"] is True and "unexpected prune tombstone" in every[0]["detail"]
    # ... prune deletes nothing of it and reports the tombstone as unexpected (ignored: left as evidence)
    assert prune.returncode == 0, prune.stderr
    doc = json.loads(prune.stdout)
    assert doc["result"]["deleted"] == [] and doc["result"]["objects_deleted"] == 0
    assert doc["plan"]["unexpected_tombstones"] == [real_id] and "did not write" in prune.stderr
    assert s3_keys(env, bucket) == before
    # AND the backup still verifies
    verify = env.afbackup(path, "verify", "latest")
    assert verify.returncode == 0, verify.stderr


def test_a_manifest_swapped_between_reads_is_refused(env, real):
    # GIVEN a versioned bucket, and an attacker who plants an altered manifest and puts the real one back the
    # moment afbackup has read it (so a second read, for the signature check, would see the signed bytes)
    db, _, real_id = real
    bucket = _bucket_with(env, real, versioned=True)
    client = env.s3.client()
    key = _key(real_id, mf.MANIFEST_NAME)
    genuine = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    forged_doc = json.loads(genuine)
    forged_doc["scope"]["row_counts"]["dag_run"] += 1
    forged = mf.dump_manifest(forged_doc)

    def attack(proxy: FaultProxy) -> None:
        client.put_object(Bucket=bucket, Key=key, Body=forged)
        proxy.after.append((get_key(f"/{key}"), lambda: client.put_object(Bucket=bucket, Key=key, Body=genuine)))

    target = env.unique("untouched_")
    with FaultProxy(env.s3.endpoint) as proxy:
        path = env.write_config(env.config(db, bucket=bucket, storage={"endpoint_url": proxy.endpoint}))
        # WHEN verify and restore read that backup
        attack(proxy)
        verify = env.afbackup(path, "verify", real_id)
        verify_reads = [s for s in proxy.seen if s == f"GET /{bucket}/{key}"]
        attack(proxy)
        restore = env.afbackup(path, "restore", real_id, "--target-dsn", env.pg.dsn(target), "--yes")
    # THEN the manifest was read once, and the bytes read are the bytes checked: refused (exit 7), target untouched
    assert len(verify_reads) == 1
    assert verify.returncode == 7 and "signature" in verify.stderr, verify.stderr
    assert restore.returncode == 7 and "signature" in restore.stderr, restore.stderr
    assert not _exists(env, target)
    # AND with the genuine manifest back, verify passes and names the manifest version it read
    done = env.afbackup(env.write_config(env.config(db, bucket=bucket)), "verify", real_id, "--json")
    assert done.returncode == 0, done.stderr
    version = client.head_object(Bucket=bucket, Key=key)["VersionId"]
    assert f"manifest version {version}" in _json(done)["checks"][0]["detail"]


def test_a_replayed_backup_of_another_deployment_is_refused(env, real):
    # GIVEN staging, signed by the same key, whose real backup an attacker copies into production's prefix
    db, _, real_id = real
    staging_cfg = env.config(db, private_keys=False, backup={"name": "staging"})
    made = env.afbackup(env.write_config(staging_cfg), "backup")
    assert made.returncode == 0, made.stderr
    staging_id = made.stdout.strip()
    bucket = _bucket_with(env, real)
    _copy(env, bucket_of(staging_cfg), staging_id, bucket)
    path = env.write_config(env.config(db, bucket=bucket))  # production: [backup] name = "airflow"
    target = env.unique("untouched_")
    # WHEN production verifies, restores and drills it (it is also the newest backup)
    verify = env.afbackup(path, "verify", staging_id)
    restore = env.afbackup(path, "restore", staging_id, "--target-dsn", env.pg.dsn(target), "--yes")
    drill = env.afbackup(path, "drill", staging_id, "--scratch-dsn", env.pg.dsn("postgres"))
    listed = _json(env.afbackup(path, "list", "--json"))
    # THEN every one refuses it (exit 8) naming both deployments, and the target is untouched
    for done in (verify, restore, drill):
        assert done.returncode == 8, done.stderr
        assert f"backup {staging_id} belongs to deployment staging, this is airflow" in done.stderr
    assert not _exists(env, target)
    # AND latest stays production's own backup
    assert [r["backup_id"] for r in listed] == [real_id]
    # AND a deliberate migration names the source deployment explicitly
    migrate = env.afbackup(path, "verify", staging_id, "--source-deployment", "staging")
    assert migrate.returncode == 0, migrate.stderr


def test_unsigned_backups_are_refused_by_default_and_stay_restorable_with_the_explicit_opt_out(env, real):
    # GIVEN a backup configuration without a signing key, and an old backup made before signing (no signature)
    db, _, real_id = real
    bucket = _bucket_with(env, real)
    env.s3.client().delete_object(Bucket=bucket, Key=_key(real_id, mf.SIGNATURE_NAME))
    unsigned = env.config(db, bucket=bucket, sign=False)
    strict = dict(unsigned, encryption={k: v for k, v in unsigned["encryption"].items() if k != "require_signature"})
    # WHEN a backup runs without the opt-out, and the old backup is verified with and without it
    refused = env.afbackup(env.write_config(strict), "backup")
    no_signer = env.afbackup(env.write_config(strict), "verify", real_id)
    untrusted = env.afbackup(env.write_config(env.config(db, bucket=bucket)), "verify", real_id)
    opted_out = env.afbackup(env.write_config(unsigned), "verify", real_id)
    # THEN the unsigned backup configuration is refused (exit 3) and nothing is written
    assert refused.returncode == 3 and "sign_with is not set" in refused.stderr, refused.stderr
    assert not [k for k in s3_keys(env, bucket) if mf.key_of(real_id, "") not in k]
    # AND a reader that names no trusted signer is refused too (exit 3); with one, the unsigned backup is
    # untrusted (exit 7) unless require_signature = false, which warns on every run
    assert no_signer.returncode == 3 and "no trusted signing key" in no_signer.stderr
    assert untrusted.returncode == 7 and "not signed" in untrusted.stderr
    assert opted_out.returncode == 0, opted_out.stderr
    assert "require_signature = false: unsigned manifests are trusted" in opted_out.stderr


def _gen_key(ring: KeyRing, uid: str, expire: str, at: dt.datetime | None = None) -> str:
    faked = ["--faked-system-time", f"{int(at.timestamp())}!"] if at else []
    ring.gpg(*faked, "--passphrase", "", "--pinentry-mode", "loopback", "--quick-gen-key", uid, "ed25519", "sign",
             expire)
    out = ring.gpg("--with-colons", "--list-keys", uid).stdout.decode()
    return next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))


def test_an_expired_signer_still_verifies_old_backups_and_check_warns_first(env, real):
    # GIVEN a signing key created 3 days ago that expired yesterday, whose signature of the backup's manifest was
    # made while it was valid; and a second signing key that expires tomorrow
    db, _, real_id = real
    bucket = _bucket_with(env, real)
    ring = KeyRing(new_home(), {})
    ring.gpg("--import", input=env.keys.export_secret("backup"))
    try:
        created = mf.utcnow() - dt.timedelta(days=3)
        expired = _gen_key(ring, "afbackup expired <expired@afbackup.invalid>", "2d", at=created)
        soon = _gen_key(ring, "afbackup soon <soon@afbackup.invalid>", "1d")
        data = env.s3.client().get_object(Bucket=bucket, Key=_key(real_id, mf.MANIFEST_NAME))["Body"].read()
        signature = ring.gpg("--faked-system-time", f"{int((created + dt.timedelta(hours=1)).timestamp())}!",
                             "--local-user", expired, "--detach-sign", input=data).stdout
        env.s3.client().put_object(Bucket=bucket, Key=_key(real_id, mf.SIGNATURE_NAME), Body=signature)
        enc = {"gnupghome": str(ring.home), "sign_with": "", "trusted_signers": [expired]}
        reader = env.write_config(env.config(db, bucket=bucket, encryption=enc))
        warn = env.write_config(env.config(db, bucket=bucket, encryption=dict(
            enc, sign_with=soon, trusted_signers=[expired, soon])))
        dead = env.write_config(env.config(db, bucket=bucket, encryption=dict(enc, sign_with=expired)))
        # WHEN the backup is verified and listed after its signer expired, and `check` runs with each signer
        verify = env.afbackup(reader, "verify", real_id, "--json")
        listed = _json(env.afbackup(reader, "list", "--json"))
        warned, failed = env.afbackup(warn, "check", "--json"), env.afbackup(dead, "check", "--json")
    finally:
        ring.cleanup()
    # THEN the old backup still verifies and is listed (its signature predates the expiry)
    assert verify.returncode == 0, verify.stderr
    assert f"signed by trusted key {expired}" in _json(verify)["checks"][0]["detail"]
    assert [r["backup_id"] for r in listed] == [real_id]
    # AND check warns (exit 0) while the signer expires within check.signer_expiry_warning, and fails once it
    # can no longer sign (exit 4)
    keys = {c["name"]: c for c in _json(warned)["checks"]}["keys"]
    assert warned.returncode == 0 and keys["status"] == "warn" and "expires" in keys["detail"], warned.stdout
    assert failed.returncode == 4 and {c["name"]: c for c in _json(failed)["checks"]}["keys"]["status"] == "fail"


class _SeesTheStaleLock:
    """A store whose first read of the lock waits until both runs have read it (both judge it stale)."""

    def __init__(self, inner, barrier: threading.Barrier) -> None:
        self.inner, self.barrier, self.waited = inner, barrier, threading.local()
        self.armed = True

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def get_object(self, key, **kwargs):
        result = self.inner.get_object(key, **kwargs)
        if self.armed and key == WRITER_LOCK and not getattr(self.waited, "done", False):
            self.waited.done = True
            self.barrier.wait(timeout=30)
        return result


@pytest.mark.parametrize("kind", ["s3", "file"])
def test_two_runs_taking_over_one_stale_lock_exactly_one_proceeds(env, tmp_path, kind):
    # GIVEN a stale lock left by a dead run
    if kind == "s3":
        store = S3Store(StorageConfig(url=f"s3://{env.bucket()}/{PREFIX}", endpoint_url=env.s3.endpoint,
                                      region="us-east-1"))
    else:
        store = LocalStore(f"file://{tmp_path}/store")
    dead = {"operation": "backup", "host": "gone", "pid": 1, "started_at": "2026-01-01T00:00:00.000Z",
            "expires_at": mf.iso(mf.utcnow() - dt.timedelta(hours=1)), "token": "dead"}
    store.put_bytes(WRITER_LOCK, json.dumps(dead).encode())
    # WHEN two runs both read it, judge it stale, and take it over at the same time
    barrier = threading.Barrier(2)
    racing = _SeesTheStaleLock(store, barrier)
    locks = [StoreLock(racing, "prune", ttl=600) for _ in range(2)]
    outcomes: dict[int, str] = {}

    def take(i: int) -> None:
        try:
            locks[i].acquire()
            outcomes[i] = "proceeds"
        except LockedError as exc:
            outcomes[i] = exc.one_line()

    threads = [threading.Thread(target=take, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    racing.armed = False
    # THEN exactly one proceeds, holding the lock; the other exits 9 saying another run took it over first
    winners = [i for i, outcome in outcomes.items() if outcome == "proceeds"]
    assert len(winners) == 1, outcomes
    loser = 1 - winners[0]
    assert "another run took over the stale lock first" in outcomes[loser]
    assert read_lock(store)["token"] == locks[winners[0]].token
    # AND the loser's release leaves the winner's lock alone; the winner's release removes it
    locks[loser].release()
    assert read_lock(store)["token"] == locks[winners[0]].token
    locks[winners[0]].release()
    assert read_lock(store) is None


@pytest.mark.slow
def test_a_drill_keyring_cannot_read_the_production_fernet_key(env, tmp_path):
    # GIVEN backups whose source Fernet key is sealed to its own recipient (encryption.fernet_recipients), and a
    # CI drill keyring that can decrypt the archive but holds no key of that audience
    airflow, db = env.airflow("3")
    fernet_audience = env.keys.fingerprints["stranger"]
    cfg = env.config(db, airflow=airflow, encryption={"fernet_recipients": [fernet_audience]})
    done = env.afbackup(env.write_config(cfg), "backup", airflow=airflow)
    assert done.returncode == 0, done.stderr
    backup_id = done.stdout.strip()
    drill_ring = KeyRing(new_home(), {})
    drill_ring.gpg("--import", input=env.keys.export_secret("backup"))
    drill_ring.gpg("--import", input=env.keys.export_public("signer"))
    try:
        drill_cfg = env.write_config(env.config(db, airflow=airflow, bucket=bucket_of(cfg),
                                                encryption={"gnupghome": str(drill_ring.home)}))
        # WHEN CI drills it without the escrowed key
        drill = env.afbackup(drill_cfg, "drill", "--scratch-dsn", env.pg.dsn(), "--json", airflow=airflow)
    finally:
        drill_ring.cleanup()
    # THEN the archive holds the Fernet key only sealed, the drill passes every other check and says the Fernet
    # check was skipped
    archive = tmp_path / "archive.gpg"
    env.s3.client().download_file(bucket_of(cfg), _key(backup_id, mf.ARCHIVE_NAME), str(archive))
    opened = open_with_standard_tools(env, archive, tmp_path / "opened")
    assert (opened / "airflow" / "fernet.json.gpg").exists() and not (opened / "airflow" / "fernet.json").exists()
    assert stored_manifest(env, bucket_of(cfg), backup_id)["encryption"]["fernet_recipients"] == [fernet_audience]
    assert drill.returncode == 0, drill.stderr
    detail = {c["name"]: c for c in _json(drill)["checks"]}["airflow reads the database"]["detail"]
    assert "Fernet check was SKIPPED" in detail and "--fernet-key-file" in detail
    # AND a keyring of that audience reads the source key (what restore does, in memory)
    sealed = (opened / "airflow" / "fernet.json.gpg").read_bytes()
    plain = Gpg(EncryptionConfig(gnupghome=str(env.keys.home))).decrypt_bytes(sealed, "the sealed Fernet key")
    assert airflow.fernet_key in json.loads(plain)["keys"]
