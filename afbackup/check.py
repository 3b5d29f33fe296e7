"""``afbackup check``: preflight and freshness, for a Kubernetes probe or a cron monitor.

Preflight checks (any failure: exit 4): the database is reachable and holds
an Airflow schema; pg_dump and pg_restore are found and at least as new as
the server; every gpg recipient (and the signing key) is usable; the bucket
is reachable, listable and writable; the executor runs the Airflow agent; the
writer lock is not stale (a stale lock is only a warning: the next backup
takes it over); the signing key warns ``check.signer_expiry_warning`` ahead of
its expiry and fails once it can no longer sign. Freshness (exit 8 when no
preflight check failed): the newest trusted complete backup finished less
than ``max_age`` ago (untrusted ones never count).

Every check runs even when an earlier one failed, so one report shows every
problem. ``check`` writes to the store at most once per prefix: the write
probe is a create-only PUT of ``v1/probes/check.json``. The first check
creates it; afterwards the PUT is refused with "precondition failed", which S3
only answers to a request it has authorised, so write permission is proven
without writing, deleting, or piling up object versions (versioned and Object
Lock buckets), and without ``s3:DeleteObject``, which backup credentials
should not have.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from afbackup import manifest as mf
from afbackup.catalog import list_backups
from afbackup.config import Settings
from afbackup.config.model import Config
from afbackup.config.units import format_duration
from afbackup.crypto import Gpg
from afbackup.errors import AfbackupError, ExitCode, PreflightError
from afbackup.executors import open_executor
from afbackup.lock import describe_holder, is_stale, read_lock
from afbackup.sources.airflow import AirflowAgent, resolve_python
from afbackup.sources.airflow_schema import detect_schema
from afbackup.sources.postgres import check_dump_version, connect, database_password, read_catalog, tool_version
from afbackup.sources.scope import compute_scope
from afbackup.storage import open_store
from afbackup.storage.base import AlreadyExists, ObjectStore
from afbackup.trust import Trust, require_signing

logger = logging.getLogger(__name__)

PROBE_KEY = f"{mf.LAYOUT}/probes/check.json"
EXECUTOR_TIMEOUT = 120.0  # seconds: a probe must answer; exports get the full [airflow] timeout
CLOCK_SKEW = 300.0  # seconds a backup may look finished in the future before it is ignored
OK, WARN, FAIL = "ok", "warn", "fail"


@dataclasses.dataclass(frozen=True)
class CheckEntry:
    name: str
    kind: str  # preflight | freshness
    status: str  # ok | warn | fail
    detail: str

    @property
    def ok(self) -> bool:
        return self.status != FAIL


@dataclasses.dataclass
class CheckReport:
    max_age: float  # seconds
    entries: list[CheckEntry] = dataclasses.field(default_factory=list)
    newest: dict[str, Any] | None = None
    seconds: float = 0.0
    signing_key_expires_at: dt.datetime | None = None  # pushed as afbackup_signing_key_expiry_timestamp_seconds

    def add(self, name: str, status: str, detail: str, kind: str = "preflight") -> None:
        self.entries.append(CheckEntry(name, kind, status, detail))
        log = logger.warning if status != OK else logger.debug
        log("check %s: %s: %s", name, status, detail)

    @property
    def failed(self) -> list[str]:
        return [entry.name for entry in self.entries if not entry.ok]

    @property
    def exit_code(self) -> int:
        if any(not e.ok and e.kind == "preflight" for e in self.entries):
            return ExitCode.PREFLIGHT
        if any(not e.ok for e in self.entries):
            return ExitCode.INTEGRITY
        return ExitCode.OK

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.exit_code == 0, "exit_code": int(self.exit_code), "max_age_seconds": self.max_age,
                "newest": self.newest, "seconds": self.seconds,
                "signing_key_expires_at": mf.iso(self.signing_key_expires_at),
                "checks": [dict(dataclasses.asdict(e), ok=e.ok) for e in self.entries]}


def run_check(settings: Settings, max_age: float, *, now: Callable[[], dt.datetime] = mf.utcnow) -> CheckReport:
    """Run every check; failures are entries of the report (and its exit code), never raised."""
    started = time.monotonic()
    cfg = settings.config
    report = CheckReport(max_age)
    report.add("config", OK, f"{settings.path or 'no config file'} loaded (defaults < file < env < flags)")
    server_major = _attempt(report, "database", lambda: _check_database(cfg))
    for tool in ("pg_dump", "pg_restore"):
        _attempt(report, tool, functools.partial(_check_tool, cfg, tool, server_major))
    _attempt(report, "keys", lambda: _check_keys(cfg, report, now()))
    store = _attempt(report, "bucket", lambda: _check_bucket(cfg))
    _attempt(report, "executor", lambda: _check_executor(cfg))
    if store is None:
        report.add("lock", WARN, "unknown: the bucket is not readable")
        report.add("freshness", FAIL, "unknown: the bucket is not readable", kind="freshness")
    else:
        _attempt(report, "lock", lambda: _check_lock(store, now()))
        _attempt(report, "freshness", lambda: _check_freshness(store, cfg, max_age, now(), report),
                 kind="freshness")
    report.seconds = round(time.monotonic() - started, 3)
    return report


def _attempt(report: CheckReport, name: str, check: Callable[[], tuple[str, str, Any]],
             kind: str = "preflight") -> Any:
    """Run one check returning (status, detail, value); an AfbackupError is a failed entry. Returns value."""
    try:
        status, detail, value = check()
    except AfbackupError as exc:
        report.add(name, FAIL, exc.one_line(), kind)
        return None
    report.add(name, status, detail, kind)
    return value


def _check_database(cfg: Config) -> tuple[str, str, int]:
    db = cfg.database
    with connect(db.dsn, database_password(cfg), db.connect_timeout) as conn:
        catalog = read_catalog(conn, db.airflow_schema)
    schema = detect_schema(catalog.tables, catalog.revisions)
    scope = compute_scope(catalog.schema, catalog.tables, catalog.foreign_keys,
                          exclude_data=db.exclude_data, include=db.include)
    detail = (f"PostgreSQL {catalog.server_version}, database {catalog.database}, Airflow "
              f"{schema.release or f'{schema.major}.x'} schema (revision {schema.revision or 'none'}) in "
              f"{catalog.schema}: {len(scope.data_tables)} tables with rows, "
              f"{len(scope.schema_only_tables)} schema-only")
    return OK, detail, catalog.server_major


def _check_tool(cfg: Config, name: str, server_major: int | None) -> tuple[str, str, None]:
    tool = tool_version(name, cfg.database.pg_bin_dir)
    if server_major is None:
        return FAIL, f"{tool.text} at {tool.path}; the server version is unknown (database check failed)", None
    if name == "pg_dump":
        check_dump_version(tool, server_major)
    elif tool.major < server_major:
        raise PreflightError(f"{tool.path} is version {tool.major}, older than the PostgreSQL {server_major} server",
                             hint=f"install the PostgreSQL {server_major} client or set database.pg_bin_dir")
    return OK, f"{tool.text} at {tool.path} (server {server_major})", None


def _check_keys(cfg: Config, report: CheckReport, now: dt.datetime) -> tuple[str, str, None]:
    enc = cfg.encryption
    require_signing(enc)
    gpg = Gpg(enc)
    gpg.check_recipients(enc.recipients)
    detail = f"{len(enc.recipients)} recipient key(s) usable for encryption"
    if not enc.sign_with:
        return WARN, detail + "; backups are NOT signed (encryption.require_signature = false)", None
    gpg.check_signer(enc.sign_with)  # expired or revoked: it can no longer sign (fail)
    detail += f"; signing key {enc.sign_with} usable"
    expires = report.signing_key_expires_at = gpg.key_expires_at(enc.sign_with)
    if expires is None:
        return OK, detail + " (no expiry)", None
    left = (expires - now).total_seconds()
    when = f"expires {mf.iso(expires)}, in {format_duration(left, rough=True)}"
    if left <= cfg.check.signer_expiry_warning:
        return WARN, (f"{detail}, but it {when} (check.signer_expiry_warning "
                      f"{format_duration(cfg.check.signer_expiry_warning)}): extend it now "
                      f"(gpg --quick-set-expire {enc.sign_with} 2y) and re-export its public key to the readers"), None
    return OK, f"{detail} ({when})", None


def _check_bucket(cfg: Config) -> tuple[str, str, ObjectStore]:
    store = open_store(cfg.storage)
    next(iter(store.list(mf.BACKUPS)), None)  # reachable and listable
    probe = json.dumps({"written_by": "afbackup check", "host": socket.gethostname(),
                        "at": mf.iso(mf.utcnow())}).encode()
    try:
        store.put_bytes(PROBE_KEY, probe, create_only=True)
        how = f"created the write probe {PROBE_KEY}"
    except AlreadyExists:
        how = "the create-only write probe was authorised; nothing written"
    return OK, f"{store.describe()} reachable, listable and writable: {how}", store


def _check_executor(cfg: Config) -> tuple[str, str, None]:
    executor = open_executor(cfg.airflow)
    if executor is None:
        return OK, "executor = none: no Airflow exports to check", None
    agent = AirflowAgent(executor, resolve_python(cfg.airflow), timeout=min(cfg.airflow.timeout, EXECUTOR_TIMEOUT))
    info = agent.info()
    return OK, f"Airflow {info.get('airflow_version', '?')} answers on {executor.describe()}", None


def _check_lock(store: ObjectStore, now: dt.datetime) -> tuple[str, str, None]:
    holder = read_lock(store)
    if holder is None:
        return OK, "free", None
    if is_stale(holder, now):
        return WARN, (f"stale lock left by a dead run: {describe_holder(holder)}; the next backup or prune takes "
                      "it over (or run `afbackup break-lock --yes`)"), None
    return OK, f"held by a running {describe_holder(holder)}", None


def _check_freshness(store: ObjectStore, cfg: Config, max_age: float, now: dt.datetime,
                     report: CheckReport) -> tuple[str, str, None]:
    """The newest trusted complete backup by its manifest's finish time; future-dated ones are ignored."""
    every = list_backups(store, include_incomplete=True, now=now, trust=Trust.from_config(cfg))
    complete = [r for r in every if r.state == "complete"]
    untrusted = sum(1 for r in every if r.state in ("untrusted", "damaged"))
    future = [r for r in complete if (r.complete_manifest.finished_at - now).total_seconds() > CLOCK_SKEW]
    usable = [r for r in complete if r not in future]
    skew = f" (ignored {len(future)} finished in the future: clock skew?)" if future else ""
    if untrusted:
        skew += f" (ignored {untrusted} untrusted or damaged: `afbackup list --all`)"
    if not usable:
        return FAIL, f"no complete backup in {store.describe()}{skew}", None
    newest = usable[0]
    age = max(0.0, (now - newest.complete_manifest.finished_at).total_seconds())
    report.newest = {"backup_id": newest.backup_id, "finished_at": mf.iso(newest.finished_at),
                     "age_seconds": round(age, 3)}
    what = f"newest complete backup {newest.backup_id} finished {format_duration(age, rough=True)} ago"
    if age > max_age:
        return FAIL, f"{what}: older than the maximum age {format_duration(max_age)}{skew}", None
    return OK, f"{what} (maximum age {format_duration(max_age)}){skew}", None
