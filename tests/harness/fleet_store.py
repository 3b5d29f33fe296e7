"""Synthetic backup stores for ``fleet status`` tests and the fleet bench: manifests without archives' contents.

Each backup is written as the writer leaves it (attempt record, archive object,
manifest last), with the manifest object's time set to the backup's finish time,
as an S3 LastModified or a file's mtime would be. No data is real: the archive
is ``size`` zero bytes, which ``fleet status`` never opens.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from pathlib import Path

from afbackup import manifest as mf
from afbackup.drill_record import DRILLS
from afbackup.lock import WRITER_LOCK
from tests.harness.manifests import SHA
from tests.harness.manifests import manifest_doc as base_manifest_doc


def manifest_doc(backup_id: str, name: str, started: dt.datetime, finished: dt.datetime, size: int) -> dict:
    """A valid stored manifest (the shared test factory) for one synthetic backup of deployment ``name``."""
    return base_manifest_doc(
        backup_id=backup_id, name=name, deployment=name, labels={}, host="bench", started_at=mf.iso(started),
        finished_at=mf.iso(finished), exports=None,
        objects=[{"key": mf.ARCHIVE_NAME, "size": size, "sha256": SHA, "etag": "", "version_id": ""}])


def backup_id_at(started: dt.datetime) -> str:
    return started.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def _touch(root: Path, key: str, data: bytes, when: dt.datetime) -> None:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (when.timestamp(), when.timestamp()))


def write_backup(root: Path, name: str, started: dt.datetime, *, seconds: float = 90.0, size: int = 1 << 20,
                 complete: bool = True, failed: str = "") -> str:
    """One backup attempt under the file:// store at ``root``; returns its id."""
    backup_id = backup_id_at(started)
    finished = started + dt.timedelta(seconds=seconds)
    _touch(root, mf.key_of(backup_id, mf.ATTEMPT_NAME), b"{}", started)
    if failed:
        _touch(root, mf.key_of(backup_id, mf.FAILED_NAME),
               mf.dump_manifest({"backup_id": backup_id, "error": failed}), finished)
        return backup_id
    _touch(root, mf.key_of(backup_id, mf.ARCHIVE_NAME), b"", finished)
    os.truncate(root / mf.key_of(backup_id, mf.ARCHIVE_NAME), size)
    if complete:
        doc = manifest_doc(backup_id, name, started.replace(microsecond=0), finished, size)
        _touch(root, mf.key_of(backup_id, mf.MANIFEST_NAME), mf.dump_manifest(doc), finished)
    return backup_id


def write_drill(root: Path, name: str, finished: dt.datetime, *, ok: bool = True, rto: float = 600.0,
                rpo: float = 3600.0, failed_checks: tuple[str, ...] = ()) -> str:
    drill_id = backup_id_at(finished - dt.timedelta(seconds=rto))
    doc = {"drill_id": drill_id, "deployment": name, "ok": ok, "finished_at": mf.iso(finished),
           "backup_id": "", "rto_seconds": rto if ok else None, "rto_live_seconds": None, "rpo_seconds": rpo,
           "rto_target": 0, "rpo_target": 0, "failed_checks": list(failed_checks)}
    _touch(root, f"{DRILLS}{drill_id}.json", mf.dump_manifest(doc), finished)
    return drill_id


def write_lock(root: Path, now: dt.datetime, *, stale: bool = False) -> None:
    expires = now + dt.timedelta(seconds=-60 if stale else 1800)
    doc = {"operation": "backup", "host": "pod-1", "pid": 7, "started_at": mf.iso(now - dt.timedelta(minutes=5)),
           "expires_at": mf.iso(expires), "token": "t"}
    _touch(root, WRITER_LOCK, mf.dump_manifest(doc), now)


def daily_history(root: Path, name: str, now: dt.datetime, count: int, *, newest_age: float,
                  size: int = 1 << 20) -> list[str]:
    """``count`` daily backups, the newest finished ``newest_age`` seconds before ``now``."""
    ids = []
    for day in range(count - 1, -1, -1):
        started = now - dt.timedelta(seconds=newest_age + 90, days=day)
        ids.append(write_backup(root, name, started, size=size + day * 1000, seconds=90 + day % 7))
    return ids
