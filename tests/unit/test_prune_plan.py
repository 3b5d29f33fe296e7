"""prune's planner and executor, pins and break-lock, on a filesystem store with synthetic backups (fast).

Object Lock and S3 behaviour are covered against moto in tests/e2e/test_prune.py;
here fakes wrap the LocalStore to inject locks, delete failures and interruptions.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os

import pytest

from afbackup import manifest as mf
from afbackup.catalog import list_backups
from afbackup.check import CheckEntry, CheckReport
from afbackup.cli import run
from afbackup.config.model import RetentionConfig
from afbackup.errors import ConfigError, IntegrityError, LockedError
from afbackup.lock import WRITER_LOCK, break_lock
from afbackup.pins import pin_backup, pin_key, unpin_backup
from afbackup.prune import DELETE, KEEP, REPORT, deletion_order, execute_prune, plan_prune
from afbackup.storage.base import DeleteFailure, Retention
from afbackup.storage.local import LocalStore
from tests.harness.clock import FakeClock
from tests.harness.manifests import manifest_doc

NOW = mf.utcnow().replace(microsecond=0)
# The CLI runs on NOW too: a long suite must not age the locks and backups the tests made around NOW.
CLOCK = FakeClock(NOW)
DAY = dt.timedelta(days=1)
POLICY = RetentionConfig(keep_last=2, min_keep=1)


@pytest.fixture(autouse=True)
def _restore_logging():
    """run() points the afbackup logger at this test's captured stderr; undo that afterwards."""
    root = logging.getLogger("afbackup")
    saved = (list(root.handlers), root.level, root.propagate)
    yield
    root.handlers[:], root.level, root.propagate = saved[0], saved[1], saved[2]


@pytest.fixture
def store(tmp_path) -> LocalStore:
    return LocalStore(f"file://{tmp_path}/store")


def _backup_id(started: dt.datetime, tag: str) -> str:
    return started.strftime("%Y%m%dT%H%M%SZ") + "-" + tag


def add(store: LocalStore, started: dt.datetime, tag: str, state: str = "complete") -> str:
    """A synthetic backup or attempt (objects as a real run leaves them), written ``started``."""
    backup_id = _backup_id(started, tag)
    store.put_bytes(mf.key_of(backup_id, mf.ATTEMPT_NAME), b"{}")
    if state != "incomplete":
        store.put_bytes(mf.key_of(backup_id, mf.ARCHIVE_NAME), b"ciphertext")
    if state == "failed":
        store.put_bytes(mf.key_of(backup_id, mf.FAILED_NAME), json.dumps({"error": "pg_dump: exited 73"}).encode())
    if state in ("complete", "damaged"):
        store.put_bytes(mf.key_of(backup_id, mf.SIGNATURE_NAME), b"sig")
        doc = manifest_doc(backup_id=backup_id, started_at=mf.iso(started),
                           finished_at=mf.iso(started + dt.timedelta(minutes=5)), archive_members=[],
                           objects=[{"key": mf.ARCHIVE_NAME, "size": 10, "sha256": "0" * 64}])
        store.put_bytes(mf.key_of(backup_id, mf.MANIFEST_NAME), b"{" if state == "damaged" else mf.dump_manifest(doc))
    for obj in store.list(mf.backup_prefix(backup_id)):
        stamp = started.timestamp()
        os.utime(store._path(obj.key), (stamp, stamp))
    return backup_id


def partial(store: LocalStore, backup_id: str, age: dt.timedelta) -> None:
    """A partial file of a killed upload (what LocalStore reports as a pending upload)."""
    path = store._path(mf.key_of(backup_id, f".{mf.ARCHIVE_NAME}.partial-0123456789ab"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"half")
    stamp = (NOW - age).timestamp()
    os.utime(path, (stamp, stamp))


def keys(store: LocalStore) -> set[str]:
    return {obj.key for obj in store.list("")}


def five_days(store: LocalStore) -> list[str]:
    """Five daily complete backups, newest first."""
    return [add(store, NOW - (i + 1) * DAY, f"c{i}") for i in range(5)]


class Wrapped:
    """A LocalStore with injected behaviour; records every delete call in order."""

    def __init__(self, inner: LocalStore, *, locked=(), failing=(), interrupt_after: int | None = None):
        self.inner, self.locked, self.failing, self.interrupt_after = inner, set(locked), set(failing), interrupt_after
        self.calls: list[list[str]] = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def delete(self, batch):
        if self.interrupt_after is not None and len(self.calls) >= self.interrupt_after:
            raise KeyboardInterrupt
        self.calls.append(list(batch))
        failing = [k for k in batch if k in self.failing]
        self.inner.delete([k for k in batch if k not in self.failing])
        return [DeleteFailure(k, "AccessDenied", "denied by policy") for k in failing]

    def locked_until(self, key):
        if key in self.locked:
            return Retention("COMPLIANCE", NOW + DAY)
        return None


# --- planning -------------------------------------------------------------------------------------


def test_plan_applies_the_policy_and_finds_leftovers(store):
    # GIVEN five daily backups, a failed attempt of 2 days ago, a young incomplete one, a damaged backup,
    # and two unfinished uploads (one old, one young)
    complete = five_days(store)
    failed = add(store, NOW - 2 * DAY, "f0", "failed")
    young = add(store, NOW - dt.timedelta(hours=1), "i0", "incomplete")
    damaged = add(store, NOW - 3 * DAY, "d0", "damaged")
    partial(store, failed, 2 * DAY)
    partial(store, young, dt.timedelta(minutes=5))
    # WHEN planning with keep_last 2
    plan = plan_prune(store, POLICY, NOW)
    # THEN the 2 newest are kept, the rest deleted, each with its reasons
    assert [(i.backup_id, i.action) for i in plan.backups] == [
        (complete[0], KEEP), (complete[1], KEEP), (complete[2], DELETE), (complete[3], DELETE), (complete[4], DELETE)]
    assert plan.backups[0].reasons == ("newest", "last 1/2", "min_keep 1/1")
    assert plan.backups[4].reasons == ("not kept by any rule",)
    # AND the old failed attempt goes, the young incomplete one stays, the damaged one is only reported
    attempts = {i.backup_id: (i.state, i.action) for i in plan.attempts}
    assert attempts == {failed: ("failed", DELETE), young: ("incomplete", KEEP)}
    assert "pg_dump: exited 73" in " ".join(next(i for i in plan.attempts if i.backup_id == failed).reasons)
    assert [(i.backup_id, i.action) for i in plan.damaged] == [(damaged, REPORT)]
    # AND only the old upload is aborted
    assert {u.upload.key.split("/")[2]: u.abort for u in plan.uploads} == {young: False, failed: True}
    # AND deletions go oldest backup first, then the leftovers
    assert [i.backup_id for i in plan.deletions] == [complete[4], complete[3], complete[2], failed]


def test_no_policy_is_refused(store):
    five_days(store)
    with pytest.raises(ConfigError, match="no retention policy"):
        plan_prune(store, RetentionConfig(min_keep=3), NOW)


def test_the_attempt_of_a_running_backup_is_never_cleaned_up(store):
    # GIVEN an old-looking incomplete attempt whose backup still holds a live lock
    running = add(store, NOW - 2 * DAY, "r0", "incomplete")
    older = add(store, NOW - 3 * DAY, "r1", "incomplete")
    lock = {"operation": "backup", "host": "h", "pid": 1, "started_at": mf.iso(NOW - 2 * DAY + dt.timedelta(seconds=2)),
            "expires_at": mf.iso(NOW + dt.timedelta(minutes=30)), "token": "t"}
    store.put_bytes(WRITER_LOCK, json.dumps(lock).encode())
    # WHEN planning
    plan = plan_prune(store, POLICY, NOW)
    # THEN it is "running" and kept; the older attempt is cleaned up
    assert {i.backup_id: (i.state, i.action) for i in plan.attempts} == {
        running: ("running", KEEP), older: ("incomplete", DELETE)}
    # AND once the lock is stale, it is an ordinary leftover
    lock["expires_at"] = mf.iso(NOW - dt.timedelta(seconds=1))
    store.put_bytes(WRITER_LOCK, json.dumps(lock).encode(), create_only=False)
    assert {i.action for i in plan_prune(store, POLICY, NOW).attempts} == {DELETE}


# --- execution ------------------------------------------------------------------------------------


def test_execute_deletes_exactly_the_plan_and_is_idempotent(store):
    complete = five_days(store)
    failed = add(store, NOW - 2 * DAY, "f0", "failed")
    damaged = add(store, NOW - 3 * DAY, "d0", "damaged")
    partial(store, failed, 2 * DAY)
    before = keys(store)
    plan = plan_prune(store, POLICY, NOW)
    planned = {k for item in plan.deletions for k in item.keys}
    # WHEN executing
    result = execute_prune(store, plan)
    # THEN exactly the planned objects are gone, the damaged backup is untouched, the partial file is removed
    assert result.ok and result.deleted == complete[:1:-1] and result.cleaned == [failed]
    assert keys(store) == before - planned and result.objects == len(planned)
    assert any(k.startswith(mf.backup_prefix(damaged)) for k in keys(store))
    assert store.pending_uploads(mf.BACKUPS) == []
    # AND planning again deletes nothing
    again = plan_prune(store, POLICY, NOW)
    assert again.deletions == [] and [i.backup_id for i in again.backups] == complete[:2]


def test_data_is_deleted_first_and_the_manifest_last_behind_a_tombstone(store):
    five_days(store)
    wrapped = Wrapped(store)
    execute_prune(wrapped, plan_prune(store, RetentionConfig(keep_last=4, min_keep=1), NOW))
    assert [[k.rsplit("/", 1)[1] for k in call] for call in wrapped.calls] == [
        [mf.ARCHIVE_NAME], [mf.SIGNATURE_NAME], [mf.ATTEMPT_NAME], [mf.MANIFEST_NAME], [mf.DELETING_NAME]]


@pytest.mark.parametrize("requests", [1, 3, 4])
def test_an_interrupted_prune_leaves_no_complete_backup_with_missing_data(store, requests):
    # GIVEN a prune interrupted after some of its delete requests for the oldest backup
    complete = five_days(store)
    with pytest.raises(KeyboardInterrupt):
        execute_prune(Wrapped(store, interrupt_after=requests), plan_prune(store, POLICY, NOW))
    # THEN that backup is no longer listed as complete; every complete one still has all its data
    listed = list_backups(store)
    assert complete[4] not in [r.backup_id for r in listed]
    assert all(mf.key_of(r.backup_id, mf.ARCHIVE_NAME) in r.keys for r in listed)
    # AND `list --all` shows it as being deleted, and the next prune finishes the job
    states = {r.backup_id: r.state for r in list_backups(store, include_incomplete=True)}
    assert states[complete[4]] == "deleting"
    plan = plan_prune(store, POLICY, NOW)
    assert [(i.backup_id, i.state, i.action) for i in plan.attempts] == [(complete[4], "deleting", DELETE)]
    execute_prune(store, plan)
    assert not any(k.startswith(mf.backup_prefix(complete[4])) for k in keys(store))


def test_backups_under_object_lock_are_skipped_reported_and_not_counted(store):
    complete = five_days(store)
    wrapped = Wrapped(store, locked={mf.key_of(complete[3], mf.ARCHIVE_NAME)})
    result = execute_prune(wrapped, plan_prune(store, POLICY, NOW))
    assert result.ok and result.deleted == [complete[4], complete[2]]
    assert [(x.backup_id, x.mode, x.keys) for x in result.locked] == [
        (complete[3], "COMPLIANCE", (mf.key_of(complete[3], mf.ARCHIVE_NAME),))]
    # AND the locked backup is still complete (its manifest was not touched)
    assert complete[3] in [r.backup_id for r in list_backups(store)]


def test_delete_failures_are_errors_after_the_rest_was_attempted(store):
    complete = five_days(store)
    bad = mf.key_of(complete[4], mf.ARCHIVE_NAME)
    result = execute_prune(Wrapped(store, failing={bad}), plan_prune(store, POLICY, NOW))
    assert not result.ok and [f.key for f in result.failures] == [bad]
    assert result.deleted == [complete[3], complete[2]]
    # AND the backup whose data could not go is still whole: it stays listed (its tombstone is reported as
    # unexpected, not obeyed), and the next prune, whose plan deletes it again, finishes the job
    assert complete[4] in [r.backup_id for r in list_backups(store)]
    again = plan_prune(store, POLICY, NOW)
    assert [i.backup_id for i in again.deletions] == [complete[4]]
    assert execute_prune(store, again).deleted == [complete[4]]


def test_a_backup_pinned_after_the_plan_is_not_deleted(store):
    complete = five_days(store)
    plan = plan_prune(store, POLICY, NOW)
    pin_backup(store, complete[4], reason="audit")
    result = execute_prune(store, plan)
    assert result.pinned == [complete[4]] and complete[4] not in result.deleted
    assert complete[4] in [r.backup_id for r in list_backups(store)]


# --- pins ------------------------------------------------------------------------------------------


def test_pin_and_unpin(store):
    complete = five_days(store)
    failed = add(store, NOW - 2 * DAY, "f0", "failed")
    first = pin_backup(store, complete[4], reason="legal hold")
    assert first.changed and first.record["reason"] == "legal hold" and "@" in first.record["pinned_by"]
    assert not pin_backup(store, complete[4]).changed  # pinning twice keeps the first pin
    assert pin_backup(store, "latest").backup_id == complete[0]
    assert {r.backup_id for r in list_backups(store) if r.pinned} == {complete[0], complete[4]}
    plan = plan_prune(store, POLICY, NOW)
    assert next(i for i in plan.backups if i.backup_id == complete[4]).reasons == ("pinned",)
    with pytest.raises(IntegrityError, match="is failed"):
        pin_backup(store, failed)
    assert unpin_backup(store, complete[4]).changed and not unpin_backup(store, complete[4]).changed
    assert store.head(pin_key(complete[4])) is None


# --- break-lock ------------------------------------------------------------------------------------


def _lock(store, expires: dt.datetime) -> dict:
    doc = {"operation": "backup", "host": "node-7", "pid": 4242, "started_at": mf.iso(NOW - DAY),
           "expires_at": mf.iso(expires), "token": "abc"}
    store.put_bytes(WRITER_LOCK, json.dumps(doc).encode(), create_only=False)
    return doc


def test_break_lock_removes_only_a_stale_lock_unless_forced(store):
    assert break_lock(store, yes=True, force=False, now=NOW).holder is None
    _lock(store, NOW - dt.timedelta(minutes=1))
    asked = break_lock(store, yes=False, force=False, now=NOW)
    assert asked.stale and not asked.removed and store.head(WRITER_LOCK)
    assert break_lock(store, yes=True, force=False, now=NOW).removed and store.head(WRITER_LOCK) is None
    _lock(store, NOW + dt.timedelta(minutes=10))
    with pytest.raises(LockedError, match="the lock is live"):
        break_lock(store, yes=True, force=False, now=NOW)
    forced = break_lock(store, yes=True, force=True, now=NOW)
    assert forced.removed and not forced.stale and store.head(WRITER_LOCK) is None


# --- the commands, in-process ---------------------------------------------------------------------


def _config(tmp_path, retention: str = "keep_last = 2\nmin_keep = 1\n"):
    path = tmp_path / f"afbackup-{len(retention)}.toml"
    path.write_text(f'[storage]\nurl = "file://{tmp_path}/store"\n[encryption]\nrequire_signature = false\n'
                    f'[retention]\n{retention}')
    return str(path)


def test_prune_commands_exit_codes(store, tmp_path, capsys):
    complete = five_days(store)
    config = _config(tmp_path)
    assert run(["--config", _config(tmp_path, ""), "prune"], clock=CLOCK) == 3
    assert run(["--config", config, "prune", "--dry-run", "--confirm"], clock=CLOCK) == 2
    before = keys(store)
    capsys.readouterr()
    assert run(["--config", config, "prune"], clock=CLOCK) == 0
    out = capsys.readouterr().out
    assert keys(store) == before and "dry run: would delete 3 of 5 backups" in out
    assert f"{complete[4]}" in out and "not kept by any rule" in out
    assert run(["--config", config, "pin", "no-such-backup"], clock=CLOCK) == 8
    assert run(["--config", config, "prune", "--confirm", "--json"], clock=CLOCK) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["dry_run"] is False and doc["result"]["deleted"] == complete[:1:-1]
    assert store.head(WRITER_LOCK) is None  # the prune's own lock is released


def test_break_lock_command(store, tmp_path, capsys):
    config = _config(tmp_path)
    _lock(store, NOW - dt.timedelta(minutes=1))
    assert run(["--config", config, "break-lock"], clock=CLOCK) == 2
    captured = capsys.readouterr()
    assert "stale lock held by backup by node-7 pid 4242" in captured.out and store.head(WRITER_LOCK)
    assert run(["--config", config, "break-lock", "--yes"], clock=CLOCK) == 0
    captured = capsys.readouterr()
    assert "removed stale lock held by backup by node-7 pid 4242" in captured.err
    assert store.head(WRITER_LOCK) is None
    _lock(store, NOW + dt.timedelta(minutes=10))
    assert run(["--config", config, "break-lock", "--yes"], clock=CLOCK) == 9
    assert run(["--config", config, "prune", "--confirm"], clock=CLOCK) == 9


# --- small pieces ---------------------------------------------------------------------------------


def test_deletion_order():
    names = [mf.key_of("b", n) for n in (mf.ATTEMPT_NAME, mf.ARCHIVE_NAME, mf.MANIFEST_NAME, mf.FAILED_NAME,
                                         mf.DELETING_NAME)]
    assert [[k.rsplit("/", 1)[1] for k in batch] for batch in deletion_order(names)] == [
        [mf.ARCHIVE_NAME, mf.FAILED_NAME], [mf.ATTEMPT_NAME], [mf.MANIFEST_NAME], [mf.DELETING_NAME]]


@pytest.mark.parametrize(("statuses", "code"), [
    ({"bucket": "ok", "freshness": "ok"}, 0),
    ({"lock": "warn", "freshness": "ok"}, 0),
    ({"bucket": "ok", "freshness": "fail"}, 8),
    ({"pg_dump": "fail", "freshness": "fail"}, 4),
])
def test_check_exit_code_prefers_preflight_over_freshness(statuses, code):
    entries = [CheckEntry(name, "freshness" if name == "freshness" else "preflight", status, "")
               for name, status in statuses.items()]
    assert CheckReport(60.0, entries).exit_code == code


def test_untrusted_manifests_are_reported_and_never_count_or_go(store):
    # GIVEN three real backups and two newer ones whose manifests fail the signature check
    real = [add(store, NOW - (i + 1) * DAY, f"c{i}") for i in range(3)]
    forged = [add(store, NOW - dt.timedelta(hours=h), f"x{h}") for h in (1, 2)]
    plan = plan_prune(store, POLICY, NOW, distrust=lambda r: "bad signature" if r.backup_id in forged else "")
    # THEN the forged ones are damaged (reported, kept) and keep_last 2 keeps the two newest real ones
    assert {i.backup_id: (i.action, i.reasons[0]) for i in plan.damaged} == {
        f: (REPORT, "untrusted: bad signature") for f in forged}
    assert [(i.backup_id, i.action) for i in plan.backups] == [(real[0], KEEP), (real[1], KEEP), (real[2], DELETE)]
