"""The catalog: which backups exist, in which state, newest first.

A backup is complete only when its manifest exists and is trusted (see
``afbackup.trust``: read once, signed by a trusted key, of this deployment);
ordering and ``latest`` use the manifest's finish time, never key names or
storage timestamps. A manifest that is not trusted makes the backup
``untrusted`` (the reason is kept), one that does not parse ``damaged``.
Attempts without a manifest are ``failed`` (a failure record exists),
``running`` (the writer lock's holder), or ``incomplete`` (killed). A backup
whose archive is gone but whose prune tombstone (``deleting.json``) is there
is ``deleting`` (an interrupted prune; the next one finishes). A tombstone
next to a trusted manifest and its archive does not hide the backup: it stays
complete and the tombstone is reported as unexpected (``tombstone``).
Everything but complete backups is shown only by ``--all``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from typing import Any

from afbackup import manifest as mf
from afbackup.errors import AfbackupError, CryptoError, IntegrityError, NotFoundError, UsageError
from afbackup.lock import is_stale, read_lock
from afbackup.storage.base import ObjectStore
from afbackup.trust import ForeignBackupError, Trust, Trusted, unchecked

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class BackupRecord:
    backup_id: str
    state: str  # complete | untrusted | damaged | deleting | failed | running | incomplete
    manifest: mf.Manifest | None
    keys: tuple[str, ...]
    detail: str = ""
    started_at: dt.datetime | None = None
    pinned: bool = False
    tombstone: bool = False  # a deleting.json next to a complete backup: unexpected, ignored
    problem: AfbackupError | None = dataclasses.field(default=None, compare=False)  # why untrusted/damaged
    manifest_version: str = ""  # the version id of the manifest read (versioned buckets)
    signer: str = ""

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
                       labels=dict(m.labels), signed=bool(m.encryption.signer), deployment=m.deployment_name,
                       signer=self.signer or None)
        if self.tombstone:
            doc["tombstone"] = True
        if self.detail:
            doc["detail"] = self.detail
        return doc


def list_backups(store: ObjectStore, *, include_incomplete: bool = False,
                 now: dt.datetime | None = None, trust: Trust | None = None) -> list[BackupRecord]:
    """Complete (trusted) backups newest first; with ``include_incomplete`` also every other state.

    ``now`` (default: the system clock) decides whether the writer lock is still live.
    ``trust``: how manifests are judged (every command passes the configured one);
    None parses them without checking signatures or the deployment.
    """
    grouped: dict[str, list[str]] = {}
    for obj in store.list(mf.BACKUPS):
        backup_id, _, name = obj.key[len(mf.BACKUPS):].partition("/")
        if backup_id and name:
            grouped.setdefault(backup_id, []).append(name)
    pinned = {obj.key[len(mf.PINS):].removesuffix(".json") for obj in store.list(mf.PINS)}
    records = [_record(store, backup_id, names, backup_id in pinned, trust) for backup_id, names in grouped.items()]
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


def _record(store: ObjectStore, backup_id: str, names: list[str], pinned: bool,
            trust: Trust | None) -> BackupRecord:
    keys = tuple(mf.key_of(backup_id, name) for name in sorted(names))
    started = _started_from_id(backup_id)
    tombstone = mf.DELETING_NAME in names
    if tombstone and mf.ARCHIVE_NAME not in names:
        return BackupRecord(backup_id, "deleting", None, keys, "a prune began deleting it; the next prune finishes",
                            started, pinned)
    if mf.MANIFEST_NAME in names:
        try:
            trusted = trust.check(store, backup_id) if trust else unchecked(store, backup_id)
        except (CryptoError, ForeignBackupError) as exc:
            return BackupRecord(backup_id, "untrusted", None, keys, f"untrusted: {exc.one_line()}", started, pinned,
                                tombstone, exc)
        except IntegrityError as exc:  # a storage error (not a missing object) fails the command: a backup
            # that could not be read is not "damaged", and `latest` must not silently pick an older one
            return BackupRecord(backup_id, "damaged", None, keys, exc.one_line(), started, pinned, tombstone, exc)
        return _complete(backup_id, trusted, keys, pinned, tombstone)
    if mf.FAILED_NAME in names:
        detail = _failure_detail(store, backup_id)
        return BackupRecord(backup_id, "failed", None, keys, detail, started, pinned, tombstone)
    return BackupRecord(backup_id, "incomplete", None, keys, "no manifest: killed or still running", started, pinned,
                        tombstone)


def _complete(backup_id: str, trusted: Trusted, keys: tuple[str, ...], pinned: bool,
              tombstone: bool) -> BackupRecord:
    detail = ("an unexpected prune tombstone (deleting.json) is next to it: ignored, the backup stays"
              if tombstone else "")
    return BackupRecord(backup_id, "complete", trusted.manifest, keys, detail, trusted.manifest.started_at, pinned,
                        tombstone, None, trusted.version_id, trusted.signer)


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


def resolve_backup(store: ObjectStore, ref: str, trust: Trust | None = None) -> BackupRecord:
    """``latest`` (the newest trusted complete backup) or an id -> that backup; anything else is a clear error.

    An id that is untrusted raises why (exit 7 for a signature problem, 8 for
    another deployment or damage).
    """
    if ref in ("", "latest"):
        every = list_backups(store, include_incomplete=True, trust=trust)
        complete = [r for r in every if r.state == "complete"]
        if not complete:
            untrusted = sum(1 for r in every if r.state in ("untrusted", "damaged"))
            skipped = f" ({untrusted} untrusted or damaged: `afbackup list --all` says why)" if untrusted else ""
            raise NotFoundError(f"no complete backup in {store.describe()}{skipped}",
                                hint="run `afbackup backup` first")
        return complete[0]
    if "/" in ref or ref.startswith("."):
        raise UsageError(f"{ref!r} is not a backup id")
    names = [obj.key[len(mf.backup_prefix(ref)):] for obj in store.list(mf.backup_prefix(ref))]
    names = [name for name in names if name and "/" not in name]
    if not names:
        raise NotFoundError(f"backup {ref} does not exist in {store.describe()}",
                            hint="`afbackup list` shows the backups")
    pinned = store.head(f"{mf.PINS}{ref}.json") is not None
    record = _record(store, ref, names, pinned, trust)
    if record.state == "complete":
        return record
    if record.problem is not None:
        raise record.problem
    raise IntegrityError(f"backup {ref} is {record.state}: {record.detail}",
                         hint="choose a complete backup from `afbackup list`")
