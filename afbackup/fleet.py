"""``afbackup fleet status``: every deployment's health, from the fewest reads that prove it.

Per deployment the reader makes one listing of ``v1/backups/`` (the keys, with
their sizes and times: no manifest is downloaded for the history), reads and
verifies only the newest complete backup's manifest (its signature when
``trusted_signers`` is set; an untrusted one is reported and the next one
tried), the newest drill record (``v1/drills/``) and the writer lock.

What the listing gives without a download, per complete backup: the archive's
stored size (the object's size, which the manifest also records) and the run's
duration (the manifest object's time minus the start time in the backup id,
to the second). The listing is a hint for the history; the verified newest
manifest is the truth for freshness. The writer lock makes backups of one
prefix sequential, so the newest by id (start time) is the newest by finish
time; the verified manifest's ``finished_at`` gives the age.

``assess`` is pure: facts in, a status (exit code, problems) out.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime as dt
import json
import logging
import statistics
from collections.abc import Callable, Mapping
from typing import Any, cast

from afbackup import manifest as mf
from afbackup.config import Settings
from afbackup.drill_record import DrillRecord, latest_record
from afbackup.errors import AfbackupError, ExitCode
from afbackup.lock import describe_holder, is_stale, read_lock
from afbackup.storage.base import ObjectStore, StoredObject

logger = logging.getLogger(__name__)

HISTORY = 10  # backups shown with their size and duration, newest first
MAX_UNTRUSTED = 5  # manifests tried before giving up on finding a trusted newest backup
SHRINK_WARNING = 0.5  # warn when the newest archive is this much smaller than the median before it
CLOCK_SKEW = 300.0
DRILL_DUE = 100 * 86400.0  # the drill CronJob is quarterly; like the AfbackupDrillMissed alert
# Worst first: a stale or missing backup (the RPO is at risk) outranks everything.
SEVERITY: dict[int, int] = {ExitCode.INTEGRITY: 6, ExitCode.STORAGE: 5, ExitCode.UNEXPECTED: 5, ExitCode.CRYPTO: 4,
            ExitCode.DRILL_FAILED: 3, ExitCode.CONFIG: 2, ExitCode.OK: 0}


@dataclasses.dataclass(frozen=True)
class BackupFact:
    backup_id: str
    size: int | None
    duration_seconds: float | None


@dataclasses.dataclass(frozen=True)
class DeploymentFacts:
    """What the reader found for one deployment (all times UTC)."""

    name: str
    max_age: float
    history: tuple[BackupFact, ...] = ()  # complete backups by the listing, newest first
    newest_id: str = ""
    newest_finished_at: dt.datetime | None = None
    untrusted: tuple[tuple[str, str], ...] = ()  # (backup id, why) of newer manifests that failed verification
    last_failure: tuple[str, str] | None = None  # (attempt id, error) when the newest attempt failed
    drill: DrillRecord | None = None
    lock: Mapping[str, Any] | None = None
    error: str = ""
    error_code: int = 0


@dataclasses.dataclass(frozen=True)
class Problem:
    exit_code: int  # 0: a warning, shown but not failing
    text: str


@dataclasses.dataclass(frozen=True)
class DeploymentStatus:
    facts: DeploymentFacts
    age_seconds: float | None
    problems: tuple[Problem, ...]

    @property
    def exit_code(self) -> int:
        return worst(p.exit_code for p in self.problems)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def as_dict(self) -> dict[str, Any]:
        f = self.facts
        lock = dict(f.lock) if f.lock else None
        return {
            "name": f.name, "ok": self.ok, "exit_code": self.exit_code, "newest_backup_id": f.newest_id or None,
            "finished_at": mf.iso(f.newest_finished_at), "age_seconds": _round(self.age_seconds),
            "max_age_seconds": f.max_age, "backups": [dataclasses.asdict(b) for b in f.history],
            "size_trend": _round(trend([b.size for b in f.history])),
            "duration_trend": _round(trend([b.duration_seconds for b in f.history])),
            "last_drill": f.drill.as_dict() if f.drill else None,
            "lock": {"held": lock is not None, "stale": bool(lock and lock.get("stale")),
                     "holder": lock.get("holder") if lock else None},
            "problems": [p.text for p in self.problems if p.exit_code],
            "warnings": [p.text for p in self.problems if not p.exit_code],
        }


def worst(codes: Any) -> int:
    return max((int(c) for c in codes), key=lambda c: (SEVERITY.get(c, 1), c), default=0)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def trend(values: list[float | int | None]) -> float | None:
    """The newest value relative to the median of the ones before it: +0.10 is 10 % more."""
    known = [float(v) for v in values if v is not None]
    if len(known) < 2:
        return None
    base = statistics.median(known[1:])
    return None if base <= 0 else known[0] / base - 1


def assess(facts: DeploymentFacts, now: dt.datetime) -> DeploymentStatus:
    """The pure planner: what is wrong with one deployment, and its exit code."""
    problems: list[Problem] = []
    if facts.error:
        return DeploymentStatus(facts, None, (Problem(facts.error_code or ExitCode.UNEXPECTED, facts.error),))
    for backup_id, why in facts.untrusted:
        problems.append(Problem(ExitCode.CRYPTO, f"backup {backup_id} is not trusted: {why}"))
    age = None
    if facts.newest_finished_at is None:
        problems.append(Problem(ExitCode.INTEGRITY, "no trusted complete backup"))
    else:
        age = max(0.0, (now - facts.newest_finished_at).total_seconds())
        if age > facts.max_age:
            problems.append(Problem(ExitCode.INTEGRITY, f"newest backup is {_hours(age)} old, over max_age "
                                                        f"{_hours(facts.max_age)}"))
    if facts.last_failure:
        problems.append(Problem(0, f"last backup attempt {facts.last_failure[0]} failed: {facts.last_failure[1]}"))
    shrink = trend([b.size for b in facts.history])
    if shrink is not None and shrink < -SHRINK_WARNING:
        problems.append(Problem(0, f"newest archive is {-shrink:.0%} smaller than the median of the ones before"))
    problems.extend(_drill_problems(facts.drill, now))
    if facts.lock and facts.lock.get("stale"):
        problems.append(Problem(0, f"stale writer lock: {facts.lock.get('holder')}; the next backup takes it over"))
    return DeploymentStatus(facts, age, tuple(problems))


def _drill_problems(drill: DrillRecord | None, now: dt.datetime) -> list[Problem]:
    if drill is None:
        return [Problem(0, "no drill recorded")]
    age = (now - drill.finished_at).total_seconds() if drill.finished_at else None
    if drill.ok:
        return [] if age is None or age <= DRILL_DUE else [Problem(0, f"last drill is {age / 86400:.0f} days old")]
    failed = ", ".join(drill.failed_checks) or "a check"
    return [Problem(ExitCode.DRILL_FAILED, f"last drill {drill.drill_id} failed: {failed}")]


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f}h"


def order(statuses: list[DeploymentStatus]) -> list[DeploymentStatus]:
    """Worst first, then by name."""
    return sorted(statuses, key=lambda s: (-SEVERITY.get(s.exit_code, 1), -s.exit_code, s.facts.name))


# --------------------------------------------------------------------------- reader
def read_facts(settings: Settings, name: str, now: dt.datetime,
               open_store: Callable[[Any], ObjectStore] | None = None) -> DeploymentFacts:
    """Everything ``assess`` needs for one deployment; a failure to read is in the facts, never raised."""
    opened = _open(settings, name, open_store)
    return opened if isinstance(opened, DeploymentFacts) else _guarded(opened, settings, name, now)


def _open(settings: Settings, name: str, open_store: Callable[[Any], ObjectStore] | None,
          session: Any = None) -> ObjectStore | DeploymentFacts:
    def guarded() -> ObjectStore:
        if open_store is not None:
            return open_store(settings.config.storage)
        from afbackup.storage import open_store as default_opener

        return default_opener(settings.config.storage, session=session)
    return _catching(guarded, settings, name)


def _guarded(store: ObjectStore, settings: Settings, name: str, now: dt.datetime) -> DeploymentFacts:
    return cast(DeploymentFacts, _catching(lambda: _read(store, settings, name, now), settings, name))


def _catching(action: Callable[[], Any], settings: Settings, name: str) -> Any:
    max_age = settings.config.check.max_age
    try:
        return action()
    except AfbackupError as exc:
        return DeploymentFacts(name, max_age, error=exc.one_line(), error_code=int(exc.exit_code))
    except Exception as exc:  # one deployment's surprise must not hide the others
        logger.debug("fleet status of %s", name, exc_info=True)
        return DeploymentFacts(name, max_age, error=f"unexpected error: {type(exc).__name__}: {exc}",
                               error_code=ExitCode.UNEXPECTED)


def _read(store: ObjectStore, settings: Settings, name: str, now: dt.datetime) -> DeploymentFacts:
    cfg = settings.config
    grouped: dict[str, dict[str, StoredObject]] = {}
    for obj in store.list(mf.BACKUPS):
        backup_id, _, member = obj.key[len(mf.BACKUPS):].partition("/")
        if backup_id and member:
            grouped.setdefault(backup_id, {})[member] = obj
    complete = sorted((bid for bid, objs in grouped.items()
                       if mf.MANIFEST_NAME in objs and mf.DELETING_NAME not in objs), reverse=True)
    history = tuple(_fact(bid, grouped[bid]) for bid in complete[:HISTORY])
    newest_id, finished, untrusted = _trusted_newest(store, settings, complete, now)
    failure = _last_failure(store, grouped, complete[0] if complete else "")
    holder = read_lock(store)
    lock = None if holder is None else {"holder": describe_holder(holder), "stale": is_stale(holder, now)}
    return DeploymentFacts(name, cfg.check.max_age, history, newest_id, finished, tuple(untrusted), failure,
                           latest_record(store), lock)


def _fact(backup_id: str, objects: Mapping[str, StoredObject]) -> BackupFact:
    archive = objects.get(mf.ARCHIVE_NAME)
    started = _started(backup_id)
    written = objects[mf.MANIFEST_NAME].last_modified
    duration = (written - started).total_seconds() if started and written else None
    return BackupFact(backup_id, archive.size if archive else None,
                      round(duration, 3) if duration is not None and duration >= 0 else None)


def _started(backup_id: str) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(backup_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return None


def _trusted_newest(store: ObjectStore, settings: Settings, complete: list[str],
                    now: dt.datetime) -> tuple[str, dt.datetime | None, list[tuple[str, str]]]:
    """The newest backup that afbackup trusts (signature, deployment: see ``afbackup.trust``)."""
    from afbackup.catalog import resolve_backup
    from afbackup.errors import CryptoError, IntegrityError
    from afbackup.trust import Trust

    trust = Trust.from_config(settings.config)
    untrusted: list[tuple[str, str]] = []
    for backup_id in complete[:MAX_UNTRUSTED]:
        try:
            manifest = resolve_backup(store, backup_id, trust).complete_manifest
        except (CryptoError, IntegrityError) as exc:
            untrusted.append((backup_id, exc.one_line()))
            continue
        finished = manifest.finished_at
        if finished is not None and (finished - now).total_seconds() > CLOCK_SKEW:
            untrusted.append((backup_id, f"finished in the future ({mf.iso(finished)}): clock skew?"))
            continue
        return backup_id, finished, untrusted
    return "", None, untrusted


def _last_failure(store: ObjectStore, grouped: Mapping[str, Mapping[str, StoredObject]],
                  newest_complete: str) -> tuple[str, str] | None:
    """The newest attempt, when it is newer than the newest complete backup and failed."""
    newer = sorted((bid for bid in grouped if bid > newest_complete), reverse=True)
    for backup_id in newer:
        objects = grouped[backup_id]
        if mf.FAILED_NAME in objects:
            return backup_id, _failure_error(store, backup_id)
        if mf.DELETING_NAME in objects:
            continue
        return None  # running or killed: the lock and the age tell the rest
    return None


def _failure_error(store: ObjectStore, backup_id: str) -> str:
    try:
        doc = json.loads(store.get_bytes(mf.key_of(backup_id, mf.FAILED_NAME), limit=1 << 16))
        return str(doc.get("error") or "no error recorded")
    except (AfbackupError, ValueError, AttributeError):
        return "failure record unreadable"


def fleet_status(fleet: Mapping[str, Settings], now: dt.datetime, *, workers: int = 8,
                 open_store: Callable[[Any], ObjectStore] | None = None) -> list[DeploymentStatus]:
    """Read every deployment and assess it; worst first.

    The stores are opened one after the other in this thread, from one shared boto3
    session (its service models load once, not once per deployment); the reads, a
    few requests each, then run in parallel.
    """
    names = sorted(fleet)
    session = _shared_session(fleet) if open_store is None else None
    opened = {name: _open(fleet[name], name, open_store, session) for name in names}

    def read(name: str) -> DeploymentFacts:
        store = opened[name]
        return store if isinstance(store, DeploymentFacts) else _guarded(store, fleet[name], name, now)

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(workers, len(names) or 1)),
                                               thread_name_prefix="fleet") as pool:
        facts = list(pool.map(read, names))
    return order([assess(f, now) for f in facts])


def _shared_session(fleet: Mapping[str, Settings]) -> Any:
    if not any(s.config.storage.url.startswith("s3://") for s in fleet.values()):
        return None
    import boto3

    return boto3.session.Session()
