"""One backup, end to end: preflight, lock, stream, verify, commit the manifest last.

Stages (each failure names its stage and maps to its exit code):
preflight (keys, DB, scope, pg_dump version) → lock → attempt record →
[pg_dump ∥ row counts in the same snapshot ∥ Airflow exports] → tar → zstd →
gpg → upload → size check → signature → manifest. A failed run leaves at most
an attempt record, a failure record and no manifest; the multipart upload is
aborted by s3transfer when any producer raises.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime as dt
import logging
import socket
import time
from typing import Any, Iterator, Mapping

import afbackup
from afbackup import manifest as mf
from afbackup.archive import DUMP_BASENAME, TarWriter
from afbackup.compression import CODEC, default_threads
from afbackup.config import Settings
from afbackup.config.model import Config, StorageConfig
from afbackup.crypto import Gpg
from afbackup.errors import AfbackupError, SourceError
from afbackup.executors import open_executor
from afbackup.lock import StoreLock
from afbackup.log import event, redact
from afbackup.pipeline import BackupStream, UploadOutcome
from afbackup.preflight import SourcePlan, plan_source
from afbackup.procs import ChildProcess, child_env
from afbackup.progress import Progress
from afbackup.sources.airflow import AirflowAgent, AirflowExports, check_export_counts, export_all, resolve_python
from afbackup.sources.postgres import Snapshot, connect, database_password, pg_dump_argv, pg_dump_hint
from afbackup.storage import open_store
from afbackup.storage.base import ObjectStore, Retention

logger = logging.getLogger(__name__)

DUMP_PART_SIZE = 8 << 20
PIPE_SIZE = 1 << 20
F_SETPIPE_SZ = 1031


@dataclasses.dataclass(frozen=True)
class BackupResult:
    backup_id: str
    manifest: dict[str, Any]
    archive_size: int
    duration: float


@dataclasses.dataclass
class _Run:
    """Everything one run needs, resolved once."""

    cfg: Config
    store: ObjectStore
    gpg: Gpg
    plan: SourcePlan
    agent: AirflowAgent | None
    backup_id: str
    started: dt.datetime
    labels: Mapping[str, str]
    retention: Retention | None
    progress: Progress
    pool: concurrent.futures.ThreadPoolExecutor
    exports: concurrent.futures.Future | None  # the Airflow exports, started before everything else
    snapshot: Snapshot | None  # the dump's snapshot, taken first: the exports and row counts read it too


def prepare_backup(settings: Settings, *, labels: Mapping[str, str], progress: Progress,
                   start_exports: bool = True) -> _Run:
    """Every check that needs no lock and writes nothing (also the whole of ``--dry-run``).

    The dump's snapshot is taken first, then the Airflow exports start (``start_exports``):
    they read in that snapshot, so exports, row counts and dump describe one moment, and
    the Airflow interpreter's start-up (the longest single task of a backup) overlaps with
    the preflight and the dump instead of trailing them.
    """
    cfg = settings.config
    agent = None
    executor = open_executor(cfg.airflow)
    if executor is not None:
        agent = AirflowAgent(executor, resolve_python(cfg.airflow), timeout=cfg.airflow.timeout)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="backup")
    snapshot = Snapshot(connect(cfg.database.dsn, database_password(cfg), cfg.database.connect_timeout,
                                autocommit=False), cfg.database.lock_wait_timeout) if start_exports else None
    exports = pool.submit(export_all, agent, cfg.airflow.tmp_dir, snapshot=snapshot.snapshot_id) \
        if agent and snapshot else None
    try:
        store = open_store(cfg.storage)
        gpg = Gpg(cfg.encryption)
        gpg.check_recipients(cfg.encryption.recipients)
        if cfg.encryption.sign_with:
            gpg.check_signer(cfg.encryption.sign_with)
        plan = plan_source(cfg)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        if snapshot:
            snapshot.close()
        raise
    started = mf.utcnow()
    return _Run(cfg, store, gpg, plan, agent, mf.new_backup_id(started), started, dict(labels),
                object_retention(cfg.storage, started), progress, pool, exports, snapshot)


def object_retention(cfg: StorageConfig, now: dt.datetime) -> Retention | None:
    if not cfg.object_lock_mode:
        return None
    return Retention(cfg.object_lock_mode, now + dt.timedelta(days=cfg.object_lock_days))


def run_backup(run: _Run) -> BackupResult:
    clock = time.monotonic()
    try:
        with StoreLock(run.store, "backup", ttl=run.cfg.backup.lock_ttl) as lock:
            _put_record(run, mf.ATTEMPT_NAME, {"backup_id": run.backup_id, "started_at": mf.iso(run.started),
                                                "host": socket.gethostname(), "tool_version": afbackup.__version__})
            try:
                doc = _stream_and_commit(run, lock)
            except BaseException as exc:
                _record_failure(run, exc)
                raise
    finally:
        if run.snapshot:
            run.snapshot.close()  # also when the lock is held by another run
    duration = time.monotonic() - clock
    size = doc["objects"][0]["size"]
    logger.info("backup %s complete: %d bytes stored in %.1fs", run.backup_id, size, duration,
                extra=event(action="backup", backup_id=run.backup_id, state="complete", bytes=size,
                            seconds=round(duration, 2)))
    return BackupResult(run.backup_id, doc, size, duration)


def _stream_and_commit(run: _Run, lock: StoreLock) -> dict[str, Any]:
    outcome, inner = _stream_archive(run, lock)
    doc = dict(inner, status="complete", finished_at=mf.iso(mf.utcnow()), objects=[{
        "key": mf.ARCHIVE_NAME, "size": outcome.size, "sha256": outcome.sha256,
        "etag": outcome.stored.etag, "version_id": outcome.stored.version_id}])
    data = mf.dump_manifest(doc)
    signer = run.cfg.encryption.sign_with
    if signer:
        signature = run.gpg.sign_detached(data, signer)
        run.store.put_bytes(mf.key_of(run.backup_id, mf.SIGNATURE_NAME), signature, retention=run.retention)
    lock.check()
    run.store.put_bytes(mf.key_of(run.backup_id, mf.MANIFEST_NAME), data, retention=run.retention)
    return doc


def _stream_archive(run: _Run, lock: StoreLock) -> tuple[UploadOutcome, dict[str, Any]]:
    cfg, plan = run.cfg, run.plan
    threads = cfg.backup.compression_threads or default_threads()
    stream = BackupStream(run.gpg, cfg.encryption.recipients, level=cfg.backup.compression_level,
                          threads=threads, on_bytes=run.progress.advance)
    snapshot = run.snapshot
    assert snapshot is not None, "prepare_backup(start_exports=True) takes the snapshot"
    inner: dict[str, Any] = {}
    try:
        counts = run.pool.submit(_count_rows, snapshot, plan)
        argv = pg_dump_argv(plan.pg_dump.path, plan.dsn, plan.scope,
                            lock_wait_timeout=cfg.database.lock_wait_timeout, snapshot=snapshot.snapshot_id)
        env = child_env({"PGPASSWORD": plan.password} if plan.password else {})
        run.progress.stage("backup: dump → zstd → gpg → upload")
        with ChildProcess(argv, stage="pg_dump", env=env, hint_for=pg_dump_hint) as dump:
            _widen_pipe(dump.stdout)
            chunks = _archive_chunks(run, dump, counts, run.exports, lock, inner)
            outcome = stream.upload(chunks, run.store, mf.key_of(run.backup_id, mf.ARCHIVE_NAME), run.retention)
    finally:
        stream.close()
        snapshot.close()
        run.pool.shutdown(wait=True, cancel_futures=True)
        run.progress.close()
    return outcome, inner


def _archive_chunks(run: _Run, dump: ChildProcess, counts, exports, lock: StoreLock,
                    inner: dict[str, Any]) -> Iterator[bytes]:
    """The tar stream; runs in gpg's input thread, so every failure here aborts the upload."""
    writer = TarWriter(run.started.timestamp())
    yield from writer.add_parts(DUMP_BASENAME, dump.stdout.readinto, DUMP_PART_SIZE)
    dump.finish()
    row_counts = counts.result()
    exported: AirflowExports | None = exports.result() if exports else None
    if exported:
        check_export_counts(exported, row_counts)
        for name, data in {**exported.files, **exported.secret_members}.items():
            yield from writer.add_bytes(f"airflow/{name}", data)
    lock.check()
    inner.update(_manifest_doc(run, row_counts, exported, [m.as_dict() for m in writer.members]))
    yield from writer.add_bytes(mf.ARCHIVE_MANIFEST_MEMBER, mf.dump_manifest(inner))
    yield writer.end()


def _count_rows(snapshot: Snapshot, plan: SourcePlan) -> dict[str, int]:
    import psycopg

    try:
        return snapshot.count_rows(plan.scope.schema, plan.scope.data_tables)
    except psycopg.Error as exc:
        raise SourceError(f"counting rows failed: {str(exc).strip()}", stage="row counts") from None


def _widen_pipe(pipe) -> None:
    """Fewer, larger reads from pg_dump (Linux only; harmless elsewhere)."""
    try:
        import fcntl

        fcntl.fcntl(pipe.fileno(), F_SETPIPE_SZ, PIPE_SIZE)
    except (ImportError, OSError):
        pass


def _manifest_doc(run: _Run, row_counts: dict[str, int], exported: AirflowExports | None,
                  members: list[dict]) -> dict[str, Any]:
    plan, cfg = run.plan, run.cfg
    info = dict(exported.info) if exported else {}
    return {
        "format": mf.FORMAT, "format_version": mf.FORMAT_VERSION,
        "tool": {"name": "afbackup", "version": afbackup.__version__},
        "backup_id": run.backup_id, "name": cfg.backup.name, "labels": dict(run.labels),
        "status": "archived", "started_at": mf.iso(run.started), "host": socket.gethostname(),
        "airflow": {**plan.schema.as_dict(), "cli_version": info.get("airflow_version"),
                    "executor": cfg.airflow.executor, "fernet_fingerprints": info.get("fernet_fingerprints", [])},
        "postgres": {"server_version": plan.catalog.server_version, "server_major": plan.catalog.server_major,
                     "pg_dump_version": plan.pg_dump.text, "database": plan.catalog.database,
                     "schema": plan.catalog.schema},
        "scope": {"data_tables": list(plan.scope.data_tables), "schema_only_tables": list(plan.scope.schema_only_tables),
                  "row_counts": row_counts, "added_for_fk": {k: list(v) for k, v in plan.scope.added_for_fk.items()},
                  "exclude_data": list(cfg.database.exclude_data), "include": list(cfg.database.include)},
        "exports": dict(exported.counts) if exported else None,
        "not_captured": _not_captured(info, exported is not None),
        "archive_members": members,
        "archive": {"format": "tar", "compression": CODEC, "compression_level": cfg.backup.compression_level,
                    "encryption": "openpgp", "dump_part_size": DUMP_PART_SIZE},
        "encryption": {"recipients": list(cfg.encryption.recipients), "signer": cfg.encryption.sign_with or None},
        "exit_codes": {"pg_dump": 0, "gpg": 0, "airflow_agent": 0 if exported else None},
        "object_lock": {"mode": run.retention.mode, "retain_until": mf.iso(run.retention.until)}
        if run.retention else None,
    }


def _not_captured(info: Mapping[str, Any], exported: bool) -> dict[str, Any]:
    if not exported:
        return {"exports": "no executor configured: connections, variables and pools are only in the database dump"}
    return {"connections_from_env": info.get("env_connections", []),
            "variables_from_env": info.get("env_variables", []),
            "secrets_backend": info.get("secrets_backend") or None}


def _put_record(run: _Run, name: str, doc: dict[str, Any]) -> None:
    run.store.put_bytes(mf.key_of(run.backup_id, name), mf.dump_manifest(doc), retention=run.retention)


def _record_failure(run: _Run, exc: BaseException) -> None:
    """Best effort: ``list --all`` shows why an attempt failed. Never hides the original error."""
    message = exc.one_line() if isinstance(exc, AfbackupError) else f"{type(exc).__name__}: {exc}"
    try:
        _put_record(run, mf.FAILED_NAME, {"backup_id": run.backup_id, "failed_at": mf.iso(mf.utcnow()),
                                          "error": redact(message), "stage": getattr(exc, "stage", "") or None})
    except Exception as record_error:  # the store may be what failed
        logger.debug("could not record the failure: %s", record_error)
