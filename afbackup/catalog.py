"""The catalog: which backups exist, in which state, newest first.

A backup is complete only when its manifest exists and no prune has started
deleting it (``deleting``: prune's tombstone is there); ordering and
``latest`` use the manifest's finish time, never key names or storage
timestamps. Attempts without a manifest are ``failed`` (a failure record
exists), ``running`` (the writer lock's holder), or ``incomplete`` (killed),
and are shown only by ``--all``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from typing import Any

from afbackup import manifest as mf
from afbackup.errors import AfbackupError, IntegrityError, NotFoundError, UsageError
from afbackup.lock import is_stale, read_lock
from afbackup.storage.base import ObjectStore

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class BackupRecord:
    backup_id: str
    state: str  # complete | failed | running | incomplete | deleting | damaged
    manifest: mf.Manifest | None
    keys: tuple[str, ...]
    detail: str = ""
    started_at: dt.datetime | None = None
    pinned: bool = False

    @property
    def finished_at(self) -> dt.datetime | None:
        return self.manifest.finished_at if self.manifest else None

    @property
    def complete_manifest(self) -> mf.Manifest:
        """The manifest of a complete backup (what ``resolve_backup`` and ``list_backups`` return)."""
        if self.manifest is None:
            raise IntegrityError(f"backup {self.backup_id} is {self.state}: {self.detail or 'no manifest'}",
                                 hint="choose a complete backup from `afbackup list`")
        return self.manifest

    def summary(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"backup_id": self.backup_id, "state": self.state,
                               "started_at": mf.iso(self.started_at), "pinned": self.pinned}
        if self.manifest:
            m = self.manifest
            doc.update(finished_at=mf.iso(m.finished_at), size=m.archive.size,
                       airflow=m.airflow.release, schema_revision=m.airflow.schema_revision,
                       rows=sum(m.row_counts.values()), exports=m.exports.as_dict() if m.exports else None,
                       labels=dict(m.labels), signed=bool(m.encryption.signer))
        if self.detail:
            doc["detail"] = self.detail
        return doc


def list_backups(store: ObjectStore, *, include_incomplete: bool = False,
                 now: dt.datetime | None = None) -> list[BackupRecord]:
    """Complete backups newest first; with ``include_incomplete`` also failed/incomplete attempts.

    ``now`` (default: the system clock) decides whether the writer lock is still live.
    """
    grouped: dict[str, list[str]] = {}
    for obj in store.list(mf.BACKUPS):
        backup_id, _, name = obj.key[len(mf.BACKUPS):].partition("/")
        if backup_id and name:
            grouped.setdefault(backup_id, []).append(name)
    pinned = {obj.key[len(mf.PINS):].removesuffix(".json") for obj in store.list(mf.PINS)}
    records = [_record(store, backup_id, names, backup_id in pinned) for backup_id, names in grouped.items()]
    complete = sorted((r for r in records if r.state == "complete"), key=lambda r: r.complete_manifest.finished_at,
                      reverse=True)
    if not include_incomplete:
        return complete
    others = sorted((r for r in records if r.state != "complete"), key=lambda r: r.backup_id, reverse=True)
    running = running_attempt(others, read_lock(store), now or mf.utcnow())
    others = [dataclasses.replace(r, state="running", detail="its backup holds the writer lock")
              if r.backup_id == running else r for r in others]
    return complete + others


def running_attempt(records: list[BackupRecord], holder: dict[str, Any] | None, now: dt.datetime) -> str | None:
    """The attempt of the backup that holds a live writer lock, if any.

    The lock names no backup id, but a backup takes its id before the lock and
    writes ``attempt.json`` right after it: its attempt is the newest
    incomplete one that started no later than the lock. Erring here only keeps
    an old attempt one prune longer.
    """
    if not holder or holder.get("operation") != "backup" or is_stale(holder, now):
        return None
    locked_at = _parse_time(holder.get("started_at"))
    candidates = [r for r in records if r.state == "incomplete"
                  and (locked_at is None or r.started_at is None or r.started_at <= locked_at)]
    if not candidates:
        return None
    oldest = dt.datetime.min.replace(tzinfo=dt.UTC)
    return max(candidates, key=lambda r: (r.started_at or oldest, r.backup_id)).backup_id


def _parse_time(text: Any) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None


def _record(store: ObjectStore, backup_id: str, names: list[str], pinned: bool) -> BackupRecord:
    keys = tuple(mf.key_of(backup_id, name) for name in sorted(names))
    started = _started_from_id(backup_id)
    if mf.DELETING_NAME in names:
        return BackupRecord(backup_id, "deleting", None, keys, "a prune began deleting it; the next prune finishes",
                            started, pinned)
    if mf.MANIFEST_NAME in names:
        try:
            manifest = read_manifest(store, backup_id)
        except AfbackupError as exc:
            return BackupRecord(backup_id, "damaged", None, keys, exc.one_line(), started, pinned)
        return BackupRecord(backup_id, "complete", manifest, keys, "", manifest.started_at, pinned)
    if mf.FAILED_NAME in names:
        detail = _failure_detail(store, backup_id)
        return BackupRecord(backup_id, "failed", None, keys, detail, started, pinned)
    return BackupRecord(backup_id, "incomplete", None, keys, "no manifest: killed or still running", started, pinned)


def _started_from_id(backup_id: str) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(backup_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return None


def _failure_detail(store: ObjectStore, backup_id: str) -> str:
    try:
        return json.loads(store.get_bytes(mf.key_of(backup_id, mf.FAILED_NAME), limit=1 << 16)).get("error", "")
    except (AfbackupError, ValueError):
        return "failure record unreadable"


def read_manifest(store: ObjectStore, backup_id: str) -> mf.Manifest:
    key = mf.key_of(backup_id, mf.MANIFEST_NAME)
    manifest = mf.parse_manifest(store.get_bytes(key), key)
    if manifest.backup_id != backup_id:
        raise IntegrityError(f"{key} describes backup {manifest.backup_id}, not {backup_id}",
                             hint="the manifest was moved or replaced")
    return manifest


def resolve_backup(store: ObjectStore, ref: str) -> BackupRecord:
    """``latest`` or an id -> the complete backup; anything else is a clear error."""
    if ref in ("", "latest"):
        complete = list_backups(store)
        if not complete:
            raise NotFoundError(f"no complete backup in {store.describe()}", hint="run `afbackup backup` first")
        return complete[0]
    if "/" in ref or ref.startswith("."):
        raise UsageError(f"{ref!r} is not a backup id")
    manifest_key = mf.key_of(ref, mf.MANIFEST_NAME)
    if store.head(manifest_key) is not None and store.head(mf.key_of(ref, mf.DELETING_NAME)) is None:
        manifest = read_manifest(store, ref)  # the common case: two HEADs and a GET, no listing
        pinned = store.head(f"{mf.PINS}{ref}.json") is not None
        return BackupRecord(ref, "complete", manifest, (manifest_key,), "", manifest.started_at, pinned)
    record = next((r for r in list_backups(store, include_incomplete=True) if r.backup_id == ref), None)
    if record is None:
        raise NotFoundError(f"backup {ref} does not exist in {store.describe()}",
                            hint="`afbackup list` shows the backups")
    if record.state != "complete":
        raise IntegrityError(f"backup {ref} is {record.state}: {record.detail}",
                             hint="choose a complete backup from `afbackup list`")
    return record
