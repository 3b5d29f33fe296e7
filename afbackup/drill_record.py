"""The drill's small result record in the store: ``v1/drills/<drill_id>.json``.

Written (create-only) at the end of every drill that got as far as opening the
store, passed or failed, so ``afbackup fleet status`` shows each deployment's
last drill without local report files. The record is a report, not a backup:
failing to write it is a warning and never changes the drill's result. Drill
ids sort like backup ids (``20261207T060001Z-3f9a1c``): the newest key is the
last drill. Records are never pruned (a quarterly drill adds four a year).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from typing import TYPE_CHECKING, Any

from afbackup import manifest as mf
from afbackup.errors import AfbackupError
from afbackup.storage.base import ObjectStore

if TYPE_CHECKING:  # pragma: no cover
    from afbackup.drill import DrillReport

logger = logging.getLogger(__name__)

DRILLS = f"{mf.LAYOUT}/drills/"
RECORD_LIMIT = 1 << 16


@dataclasses.dataclass(frozen=True)
class DrillRecord:
    drill_id: str
    ok: bool
    finished_at: dt.datetime | None
    backup_id: str = ""
    rto_seconds: float | None = None
    rto_live_seconds: float | None = None
    rpo_seconds: float | None = None
    rto_target: float = 0.0
    rpo_target: float = 0.0
    failed_checks: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "finished_at": mf.iso(self.finished_at),
                "failed_checks": list(self.failed_checks)}


def record_of(report: DrillReport, deployment: str, finished: dt.datetime) -> dict[str, Any]:
    started = dt.datetime.fromisoformat(report.started_at.replace("Z", "+00:00"))
    return {"drill_id": mf.new_backup_id(started), "deployment": deployment, "ok": report.ok,
            "started_at": report.started_at, "finished_at": mf.iso(finished), "backup_id": report.backup_id,
            "rto_seconds": report.rto_seconds, "rto_live_seconds": getattr(report, "rto_live_seconds", None),
            "rpo_seconds": report.rpo_seconds, "rto_target": report.rto_target, "rpo_target": report.rpo_target,
            "failed_checks": [check.name for check in report.checks if check.ok is False]}


def write_record(store: ObjectStore, report: DrillReport, deployment: str) -> str | None:
    """Store the record; return its key, or None (with one WARNING line) when the store refused it."""
    doc = record_of(report, deployment, mf.utcnow())
    key = f"{DRILLS}{doc['drill_id']}.json"
    try:
        store.put_bytes(key, mf.dump_manifest(doc), create_only=True)
    except AfbackupError as exc:
        logger.warning("could not store the drill record %s (fleet status will not see this drill): %s",
                       key, exc.one_line())
        return None
    return key


def latest_record(store: ObjectStore) -> DrillRecord | None:
    """The newest drill record (by id), or None when no drill was recorded. Raises on a damaged one."""
    keys = [obj.key for obj in store.list(DRILLS) if obj.key.endswith(".json")]
    if not keys:
        return None
    key = max(keys)
    return parse_record(store.get_bytes(key, limit=RECORD_LIMIT), key)


def parse_record(data: bytes, where: str) -> DrillRecord:
    from afbackup.errors import IntegrityError

    try:
        doc = json.loads(data)
        finished = doc.get("finished_at")
        return DrillRecord(
            drill_id=str(doc["drill_id"]), ok=bool(doc["ok"]),
            finished_at=dt.datetime.fromisoformat(finished.replace("Z", "+00:00")) if finished else None,
            backup_id=str(doc.get("backup_id") or ""), rto_seconds=_number(doc.get("rto_seconds")),
            rto_live_seconds=_number(doc.get("rto_live_seconds")), rpo_seconds=_number(doc.get("rpo_seconds")),
            rto_target=_number(doc.get("rto_target")) or 0.0, rpo_target=_number(doc.get("rpo_target")) or 0.0,
            failed_checks=tuple(str(name) for name in doc.get("failed_checks") or ()))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise IntegrityError(f"{where} is not a valid drill record: {exc}") from None


def _number(value: Any) -> float | None:
    return None if value is None else float(value)
