"""``afbackup prune``: apply the retention policy and clean up what failed runs left.

``plan_prune`` reads the store and decides (no writes): complete backups are
kept or deleted by the pure planner ``afbackup.retention``; failed and
incomplete attempts (no manifest) older than ``[retention] incomplete_after``
are deleted, except the attempt of a backup holding a live writer lock
("running"); multipart uploads (on a filesystem: partial files) older than
that are aborted; untrusted backups (see ``afbackup.trust``) and damaged ones
(a manifest that does not parse) are reported, never deleted or counted.

Tombstones: a ``deleting.json`` makes prune delete a backup only when the
plan of THIS prune deletes it (the tombstone is then written again) or when
the backup's archive is already gone (an interrupted prune: state
"deleting"). A tombstone next to a backup that is kept is reported as
unexpected and ignored: left in place as evidence, never acted on.

``execute_prune`` deletes, one backup at a time, under the writer lock the
caller holds, in two phases: first a tombstone (``deleting.json``) is written,
which takes the backup out of ``list``, ``latest`` and restore at once; then
the data, the signature, ``attempt.json``, the manifest LAST, and the
tombstone. An interrupted or failing prune therefore never leaves a backup
that looks complete but is not: it leaves one in state "deleting", which the
next prune finishes (the two-phase delete of RELIABILITY D.29).

Object Lock: every object is HEADed first; if any is still under retention
the whole backup is skipped and reported (it stays complete and restorable),
not counted as deleted, and deleted by a later prune once the lock expired.
In a versioned bucket (Object Lock implies versioning) a DELETE without a
version id only adds a delete marker: the data stays as a noncurrent version
until a ``NoncurrentVersionExpiration`` lifecycle rule removes it. A
``DeleteFailure`` is an error (exit 6), reported after the rest was attempted.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Iterable
from typing import Any

from afbackup import manifest as mf
from afbackup.catalog import BackupRecord, list_backups
from afbackup.config.model import RetentionConfig
from afbackup.config.units import format_duration
from afbackup.errors import AfbackupError, ConfigError, NotFoundError
from afbackup.lock import StoreLock, describe_holder, is_stale, read_lock
from afbackup.log import event
from afbackup.pins import is_pinned
from afbackup.retention import Candidate, Policy, plan_retention
from afbackup.storage.base import DeleteFailure, ObjectStore, PendingUpload
from afbackup.trust import Trust

logger = logging.getLogger(__name__)

KEEP, DELETE, REPORT = "keep", "delete", "report"
DAMAGED_HINT = ("never deleted automatically: `afbackup list --all` says why; inspect its objects, "
                "then remove them by hand")


@dataclasses.dataclass(frozen=True)
class Item:
    """One backup or attempt and what prune does with it (``keep``, ``delete`` or ``report``)."""

    backup_id: str
    state: str  # complete | failed | incomplete | running | deleting | damaged | untrusted
    action: str
    reasons: tuple[str, ...]
    keys: tuple[str, ...] = ()
    finished_at: dt.datetime | None = None
    pinned: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"backup_id": self.backup_id, "state": self.state, "action": self.action,
                "reasons": list(self.reasons), "keys": list(self.keys), "finished_at": mf.iso(self.finished_at),
                "pinned": self.pinned}


@dataclasses.dataclass(frozen=True)
class UploadItem:
    upload: PendingUpload
    abort: bool
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.upload.key, "upload_id": self.upload.upload_id,
                "initiated": mf.iso(self.upload.initiated), "action": "abort" if self.abort else KEEP,
                "reason": self.reason}


@dataclasses.dataclass(frozen=True)
class PrunePlan:
    now: dt.datetime
    policy: Policy
    incomplete_after: float  # seconds
    backups: tuple[Item, ...]  # complete backups, newest first
    attempts: tuple[Item, ...]  # failed / incomplete / running attempts, newest first
    damaged: tuple[Item, ...]
    uploads: tuple[UploadItem, ...]
    holder: dict[str, Any] | None  # the live writer lock, if any
    unexpected_tombstones: tuple[str, ...] = ()  # kept backups with a deleting.json no plan of ours wrote

    @property
    def deletions(self) -> list[Item]:
        """What execute_prune deletes: backups first (oldest first), then leftovers."""
        doomed = [item for item in self.backups if item.action == DELETE]
        return doomed[::-1] + [item for item in self.attempts if item.action == DELETE]

    def as_dict(self) -> dict[str, Any]:
        return {"now": mf.iso(self.now), "policy": dataclasses.asdict(self.policy),
                "incomplete_after_seconds": self.incomplete_after,
                "backups": [i.as_dict() for i in self.backups], "attempts": [i.as_dict() for i in self.attempts],
                "damaged": [i.as_dict() for i in self.damaged], "uploads": [u.as_dict() for u in self.uploads],
                "lock_holder": describe_holder(self.holder) if self.holder else None,
                "unexpected_tombstones": list(self.unexpected_tombstones)}


@dataclasses.dataclass(frozen=True)
class LockedBackup:
    """A backup prune would delete but could not: objects still under Object Lock."""

    backup_id: str
    keys: tuple[str, ...]
    mode: str
    until: dt.datetime

    def as_dict(self) -> dict[str, Any]:
        return {"backup_id": self.backup_id, "keys": list(self.keys), "mode": self.mode, "until": mf.iso(self.until)}


@dataclasses.dataclass
class PruneResult:
    deleted: list[str] = dataclasses.field(default_factory=list)  # complete backups removed
    cleaned: list[str] = dataclasses.field(default_factory=list)  # failed/incomplete attempts removed
    objects: int = 0  # objects deleted
    aborted: list[str] = dataclasses.field(default_factory=list)  # keys of aborted uploads
    locked: list[LockedBackup] = dataclasses.field(default_factory=list)
    pinned: list[str] = dataclasses.field(default_factory=list)  # pinned after the plan was made
    failures: list[DeleteFailure] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        return {"deleted": self.deleted, "cleaned": self.cleaned, "objects_deleted": self.objects,
                "aborted_uploads": self.aborted, "locked": [x.as_dict() for x in self.locked],
                "skipped_pinned": self.pinned,
                "failures": [dataclasses.asdict(f) for f in self.failures]}



def plan_prune(store: ObjectStore, cfg: RetentionConfig, now: dt.datetime, lock: StoreLock | None = None,
               distrust: Callable[[BackupRecord], str] | None = None, *, trust: Trust | None = None) -> PrunePlan:
    """Decide everything prune would do; reads the store, writes nothing. ``now`` is tz-aware.

    ``lock``: the writer lock this prune holds (then no backup can be running).
    ``trust``: how manifests are judged (the command passes the configured one): untrusted
    backups are reported, never counted or deleted. ``distrust``: an extra check of a
    complete backup ("" if nothing is wrong), for tests.
    """
    policy = require_policy(cfg)
    records = [_trusted(r, distrust) for r in list_backups(store, include_incomplete=True, now=now, trust=trust)]
    holder = read_lock(store)
    ours = lock is not None and holder is not None and holder.get("token") == lock.token
    live = holder if holder and not ours and not is_stale(holder, now) else None
    running = next((r.backup_id for r in records if r.state == "running"), None)
    complete = [r for r in records if r.state == "complete"]
    candidates = [Candidate(r.backup_id, r.complete_manifest.finished_at, r.pinned) for r in complete]
    retention = plan_retention(candidates, policy, now)
    by_id = {r.backup_id: r for r in complete}
    backups = tuple(Item(d.backup_id, "complete", KEEP if d.keep else DELETE, d.reasons, by_id[d.backup_id].keys,
                         by_id[d.backup_id].finished_at, by_id[d.backup_id].pinned) for d in retention.decisions)
    written = _newest_write(store)
    attempts = tuple(_attempt_item(r, running, live, written.get(r.backup_id), now, cfg.incomplete_after)
                     for r in records if r.state in ("failed", "incomplete", "running"))
    attempts += tuple(Item(r.backup_id, "deleting", DELETE, ("an earlier prune was interrupted while deleting it",),
                           r.keys, pinned=r.pinned) for r in records if r.state == "deleting")
    damaged = tuple(Item(r.backup_id, r.state, REPORT, (r.detail, DAMAGED_HINT), r.keys, pinned=r.pinned)
                    for r in records if r.state in ("damaged", "untrusted"))
    uploads = tuple(_upload_item(u, running, now, cfg.incomplete_after) for u in store.pending_uploads(mf.BACKUPS))
    doomed = {item.backup_id for item in backups + attempts if item.action == DELETE}
    unexpected = tuple(r.backup_id for r in records if r.tombstone and r.backup_id not in doomed)
    for backup_id in unexpected:
        logger.warning("backup %s has a prune tombstone (deleting.json) that this prune's plan did not write: "
                       "ignored, the backup is kept", backup_id,
                       extra=event(action="prune", backup_id=backup_id, state="unexpected-tombstone"))
    return PrunePlan(now, policy, cfg.incomplete_after, backups, attempts, damaged, uploads, live, unexpected)


def _trusted(record: BackupRecord, distrust: Callable[[BackupRecord], str] | None) -> BackupRecord:
    problem = distrust(record) if distrust and record.state == "complete" else ""
    if not problem:
        return record
    return dataclasses.replace(record, state="damaged", manifest=None, detail=f"untrusted: {problem}")


def require_policy(cfg: RetentionConfig) -> Policy:
    """The policy of ``[retention]``; none configured means no prune at all (restic does the same)."""
    policy = Policy.from_config(cfg)
    if policy.is_empty:
        raise ConfigError("no retention policy configured, refusing to prune",
                          hint="set keep_last / keep_daily / … in [retention]")
    return policy


def _newest_write(store: ObjectStore) -> dict[str, dt.datetime]:
    """backup id -> when its newest object was written (the store's clock)."""
    newest: dict[str, dt.datetime] = {}
    for obj in store.list(mf.BACKUPS):
        backup_id = obj.key[len(mf.BACKUPS):].partition("/")[0]
        if obj.last_modified and (backup_id not in newest or obj.last_modified > newest[backup_id]):
            newest[backup_id] = obj.last_modified
    return newest


def _attempt_item(record: BackupRecord, running: str | None, holder: dict[str, Any] | None,
                  written: dt.datetime | None, now: dt.datetime, limit: float) -> Item:
    """Keep or delete one failed/incomplete attempt.

    Its age counts from the later of its start (from the id: the backup host's
    clock) and its newest object (the store's clock), so a skewed clock on
    either side never makes a recent attempt look old.
    """
    base: dict[str, Any] = dict(backup_id=record.backup_id, keys=record.keys, pinned=record.pinned)
    if record.backup_id == running:
        return Item(state="running", action=KEEP, reasons=(f"its backup is running: {describe_holder(holder or {})}",),
                    **base)
    if record.pinned:
        return Item(state=record.state, action=KEEP, reasons=("pinned",), **base)
    moments = [m for m in (record.started_at, written) if m is not None]
    if not moments:
        return Item(state=record.state, action=KEEP, reasons=("age unknown",), **base)
    age = (now - max(moments)).total_seconds()
    why = f"{record.state} attempt, {format_duration(age, rough=True)} old"
    detail = (f"{record.detail}",) if record.detail else ()
    if age >= limit:
        return Item(state=record.state, action=DELETE,
                    reasons=(f"{why} (incomplete_after {format_duration(limit)})", *detail), **base)
    return Item(state=record.state, action=KEEP,
                reasons=(f"{why}, younger than incomplete_after {format_duration(limit)}", *detail), **base)


def _upload_item(upload: PendingUpload, running: str | None, now: dt.datetime, limit: float) -> UploadItem:
    backup_id = upload.key[len(mf.BACKUPS):].partition("/")[0] if upload.key.startswith(mf.BACKUPS) else ""
    if running and backup_id == running:
        return UploadItem(upload, False, "its backup is running")
    age = (now - upload.initiated).total_seconds()
    started = f"started {format_duration(age, rough=True)} ago"
    if age >= limit:
        return UploadItem(upload, True, f"{started} (incomplete_after {format_duration(limit)})")
    return UploadItem(upload, False, f"{started}, younger than incomplete_after")



def execute_prune(store: ObjectStore, plan: PrunePlan, *, lock: StoreLock | None = None) -> PruneResult:
    """Delete what ``plan`` says; never raises for a single item (see ``PruneResult.failures``).

    The caller holds the writer lock (``lock``); it is checked before every
    backup, so a lost lock stops the prune (LockedError) instead of deleting unlocked.
    """
    result = PruneResult()
    for item in plan.deletions:
        if lock is not None:
            lock.check()
        _delete_item(store, item, result)
    for entry in plan.uploads:
        if entry.abort:
            _abort(store, entry.upload, result)
    return result


def _delete_item(store: ObjectStore, item: Item, result: PruneResult) -> None:
    if is_pinned(store, item.backup_id):  # pinned since the plan was made: the pin wins
        logger.warning("not deleting %s: it was pinned after the plan was made", item.backup_id,
                       extra=event(action="prune", backup_id=item.backup_id, state="skip"))
        result.pinned.append(item.backup_id)
        return
    locked = _locked(store, item, result)
    if locked is None:
        return
    if locked:
        _report_locked(item, locked, result)
        return
    keys, ours = list(item.keys), set()
    if item.state == "complete":
        try:
            ours.add(_tombstone(store, item))
            keys += ours
        except AfbackupError as exc:
            result.failures.append(DeleteFailure(item.backup_id, exc.kind, exc.one_line()))
            logger.error("prune could not mark %s for deletion: %s", item.backup_id, exc.one_line())
            return
    for batch in deletion_order(keys):
        failures = _delete_batch(store, batch)
        if failures:
            result.failures += failures
            logger.error("prune could not delete %s of %s: %s", ", ".join(f.key for f in failures), item.backup_id,
                         "; ".join(f"{f.code} {f.message}".strip() for f in failures),
                         extra=event(action="prune", backup_id=item.backup_id, state="failed"))
            return
        result.objects += len(set(batch) - ours)  # our own tombstone is not one of the backup's objects
    (result.deleted if item.state == "complete" else result.cleaned).append(item.backup_id)
    logger.info("deleted %s %s (%d objects): %s", "backup" if item.state == "complete" else f"{item.state} attempt",
                item.backup_id, len(item.keys), "; ".join(item.reasons),
                extra=event(action="prune", backup_id=item.backup_id, state="delete", objects=len(item.keys)))


def deletion_order(keys: Iterable[str]) -> list[list[str]]:
    """Batches in the order they are deleted: data, signature, attempt record, manifest, tombstone.

    The tombstone (``deleting.json``, written before the first delete) hides the
    backup from list/restore/latest while it is being deleted, so the data can
    go first and the manifest last without an interrupted prune ever leaving a
    backup that looks complete but is not; the next prune finishes the job.
    Each batch is its own request: S3 does not order the keys of one DeleteObjects call.
    """
    ranks = {mf.SIGNATURE_NAME: 1, mf.ATTEMPT_NAME: 2, mf.MANIFEST_NAME: 3, mf.DELETING_NAME: 4}
    batches: list[list[str]] = [[], [], [], [], []]
    for key in sorted(keys):
        batches[ranks.get(key.rsplit("/", 1)[-1], 0)].append(key)
    return [batch for batch in batches if batch]


def _tombstone(store: ObjectStore, item: Item) -> str:
    """Mark a backup as being deleted (catalog state "deleting"); returns the tombstone's key."""
    key = mf.key_of(item.backup_id, mf.DELETING_NAME)
    store.put_bytes(key, mf.dump_manifest({"backup_id": item.backup_id, "deleting_since": mf.iso(mf.utcnow()),
                                           "reasons": list(item.reasons)}), create_only=False)
    return key


def _locked(store: ObjectStore, item: Item, result: PruneResult) -> list[tuple[str, Any]] | None:
    """(key, Retention) of each object still under Object Lock; None if that could not be read."""
    held = []
    for key in item.keys:
        try:
            retention = store.locked_until(key)
        except NotFoundError:
            continue  # already gone
        except AfbackupError as exc:
            result.failures.append(DeleteFailure(key, exc.kind, exc.one_line()))
            logger.error("prune could not read the Object Lock of %s: %s", key, exc.one_line())
            return None
        if retention:
            held.append((key, retention))
    return held


def _report_locked(item: Item, locked: list[tuple[str, Any]], result: PruneResult) -> None:
    until = max(retention.until for _, retention in locked)
    modes = sorted({retention.mode for _, retention in locked})
    entry = LockedBackup(item.backup_id, tuple(key for key, _ in locked), "/".join(modes), until)
    result.locked.append(entry)
    logger.warning("not deleting %s: %d of its objects are under Object Lock (%s) until %s; a later prune "
                   "deletes it", item.backup_id, len(entry.keys), entry.mode, mf.iso(until),
                   extra=event(action="prune", backup_id=item.backup_id, state="locked"))


def _delete_batch(store: ObjectStore, keys: list[str]) -> list[DeleteFailure]:
    try:
        return store.delete(keys)
    except AfbackupError as exc:  # the whole request failed: every key in it is a failure
        return [DeleteFailure(key, exc.kind, exc.one_line()) for key in keys]


def _abort(store: ObjectStore, upload: PendingUpload, result: PruneResult) -> None:
    try:
        store.abort_upload(upload)
    except AfbackupError as exc:
        result.failures.append(DeleteFailure(upload.key, exc.kind, exc.one_line()))
        logger.error("prune could not abort the upload of %s: %s", upload.key, exc.one_line())
        return
    result.aborted.append(upload.key)
    logger.info("aborted the unfinished upload of %s (started %s)", upload.key, mf.iso(upload.initiated),
                extra=event(action="prune", key=upload.key, state="abort"))


