"""Pins: backups that ``prune`` never deletes (like WAL-G's "permanent" backups).

A pin is a small object ``v1/pins/<backup id>.json`` recording who pinned the
backup, when and why; the catalog reads the ``v1/pins/`` listing to mark
backups ``pinned``. Only a complete backup can be pinned. Pins are not taken
under the writer lock (pinning must work while a long backup runs); instead
``prune`` looks for a pin again right before it deletes each backup, so a pin
added after the plan was printed still wins.
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import logging
import socket

from afbackup import manifest as mf
from afbackup.catalog import resolve_backup
from afbackup.errors import StorageError, UsageError
from afbackup.log import event
from afbackup.storage.base import AlreadyExists, ObjectStore
from afbackup.trust import Trust

logger = logging.getLogger(__name__)


def pin_key(backup_id: str) -> str:
    return f"{mf.PINS}{backup_id}.json"


@dataclasses.dataclass(frozen=True)
class PinOutcome:
    backup_id: str
    changed: bool  # False: it was already pinned (pin) / was not pinned (unpin)
    record: dict


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for the uid (common in containers)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def is_pinned(store: ObjectStore, backup_id: str) -> bool:
    """Ask the store now (not the catalog's earlier listing)."""
    return store.head(pin_key(backup_id)) is not None


def read_pin(store: ObjectStore, backup_id: str) -> dict:
    try:
        return json.loads(store.get_bytes(pin_key(backup_id), limit=1 << 16))
    except (ValueError, StorageError):
        return {}


def pin_backup(store: ObjectStore, ref: str, *, reason: str = "", trust: Trust | None = None) -> PinOutcome:
    """Pin a complete trusted backup (an id or ``latest``); pinning twice keeps the first pin."""
    record = resolve_backup(store, ref, trust)  # missing -> exit 8; failed/incomplete/damaged -> exit 8
    doc = {"backup_id": record.backup_id, "pinned_at": mf.iso(mf.utcnow()), "pinned_by": _who(),
           "reason": reason}
    try:
        store.put_bytes(pin_key(record.backup_id), json.dumps(doc, indent=1).encode(), create_only=True)
    except AlreadyExists:
        return PinOutcome(record.backup_id, False, read_pin(store, record.backup_id))
    logger.info("pinned backup %s: prune will never delete it", record.backup_id,
                extra=event(action="pin", backup_id=record.backup_id, state="complete"))
    return PinOutcome(record.backup_id, True, doc)


def unpin_backup(store: ObjectStore, backup_id: str) -> PinOutcome:
    """Remove a pin (by id; the backup itself need not be complete any more)."""
    if not backup_id or "/" in backup_id or backup_id.startswith(".") or backup_id == "latest":
        raise UsageError(f"{backup_id!r} is not a backup id", hint="unpin takes the id shown by `afbackup list`")
    if not is_pinned(store, backup_id):
        return PinOutcome(backup_id, False, {})
    record = read_pin(store, backup_id)
    failures = store.delete([pin_key(backup_id)])
    if failures:
        raise StorageError(f"could not remove the pin of {backup_id}: {failures[0].code} {failures[0].message}")
    logger.info("unpinned backup %s (pinned by %s at %s)", backup_id, record.get("pinned_by", "?"),
                record.get("pinned_at", "?"), extra=event(action="unpin", backup_id=backup_id, state="complete"))
    return PinOutcome(backup_id, True, record)
