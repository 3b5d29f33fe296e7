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
import io
import logging
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import IO, Any, cast

import afbackup
from afbackup import manifest as mf
from afbackup.archive import DUMP_BASENAME, MemberRecord, TarWriter
from afbackup.compression import CODEC, default_threads
from afbackup.config import Settings
from afbackup.config.model import Config, StorageConfig
from afbackup.crypto import Gpg
from afbackup.errors import AfbackupError, SourceError
from afbackup.executors import open_executor
from afbackup.fernet_escrow import audience, seal
from afbackup.lock import StoreLock
from afbackup.log import event, redact
from afbackup.pipeline import BackupStream, UploadOutcome
from afbackup.preflight import SourcePlan, plan_source
from afbackup.procs import ChildProcess, child_env
from afbackup.progress import Progress
from afbackup.sources.airflow import AirflowAgent, AirflowExports, check_export_counts, export_all, resolve_python
from afbackup.sources.deployment import environment_record, fill_catchup_default, read_snapshot_facts
from afbackup.sources.postgres import Snapshot, connect, database_password, pg_dump_argv, pg_dump_hint
from afbackup.storage import open_store
from afbackup.storage.base import ObjectStore, Retention
from afbackup.trust import require_signing

logger = logging.getLogger(__name__)

DUMP_PART_SIZE = 8 << 20
PIPE_SIZE = 1 << 20
F_SETPIPE_SZ = 1031


@dataclasses.dataclass(frozen=True)
class BackupResult:
    backup_id: str
    manifest: mf.Manifest
    archive_size: int
    duration: float


@dataclasses.dataclass
class BackupRun:
    """Everything one run needs, resolved once by ``prepare_backup``; ``close()`` it if it is not run."""

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
    exports: concurrent.futures.Future[AirflowExports] | None  # the Airflow exports, started before everything else
    snapshot: Snapshot | None  # the dump's snapshot, taken first: the exports and row counts read it too

    def close(self) -> None:
        """Stop the run's worker threads and its progress display (``run_backup`` does it; safe twice)."""
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.progress.close()


def prepare_backup(settings: Settings, *, labels: Mapping[str, str], progress: Progress,
                   start_exports: bool = True) -> BackupRun:
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
        require_signing(cfg.encryption)
        gpg = Gpg(cfg.encryption)
        gpg.check_recipients(cfg.encryption.recipients)
        if audience(cfg.encryption):
            gpg.check_recipients(audience(cfg.encryption))
        if cfg.encryption.sign_with:
            gpg.check_signer(cfg.encryption.sign_with)
        plan = plan_source(cfg)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        if snapshot:
            snapshot.close()
        raise
    started = mf.utcnow()
    return BackupRun(cfg, store, gpg, plan, agent, mf.new_backup_id(started), started, dict(labels),
                     object_retention(cfg.storage, started), progress, pool, exports, snapshot)


def object_retention(cfg: StorageConfig, now: dt.datetime) -> Retention | None:
    if not cfg.object_lock_mode:
        return None
    return Retention(cfg.object_lock_mode, now + dt.timedelta(days=cfg.object_lock_days))


def run_backup(run: BackupRun) -> BackupResult:
    clock = time.monotonic()
    try:
        with StoreLock(run.store, "backup", ttl=run.cfg.backup.lock_ttl) as lock:
            _put_record(run, mf.ATTEMPT_NAME, {"backup_id": run.backup_id, "started_at": mf.iso(run.started),
                                                "host": socket.gethostname(), "tool_version": afbackup.__version__})
            try:
                manifest = _stream_and_commit(run, lock)
            except BaseException as exc:
                _record_failure(run, exc)
                raise
    finally:
        if run.snapshot:
            run.snapshot.close()  # also when the lock is held by another run
    duration = time.monotonic() - clock
    size = manifest.archive.size
    logger.info("backup %s complete: %d bytes stored in %.1fs", run.backup_id, size, duration,
                extra=event(action="backup", backup_id=run.backup_id, state="complete", bytes=size,
                            seconds=round(duration, 2)))
    return BackupResult(run.backup_id, manifest, size, duration)


def _stream_and_commit(run: BackupRun, lock: StoreLock) -> mf.Manifest:
    outcome, inner = _stream_archive(run, lock)
    manifest = inner.completed(mf.utcnow(), [mf.ObjectInfo(
        key=mf.ARCHIVE_NAME, size=outcome.size, sha256=outcome.sha256,
        etag=outcome.stored.etag, version_id=outcome.stored.version_id)])
    data = mf.dump_manifest(manifest)
    signer = run.cfg.encryption.sign_with
    if signer:
        signature = run.gpg.sign_detached(data, signer)
        run.store.put_bytes(mf.key_of(run.backup_id, mf.SIGNATURE_NAME), signature, retention=run.retention)
    lock.check()
    run.store.put_bytes(mf.key_of(run.backup_id, mf.MANIFEST_NAME), data, retention=run.retention)
    return manifest


def _stream_archive(run: BackupRun, lock: StoreLock) -> tuple[UploadOutcome, mf.ManifestBody]:
    cfg, plan = run.cfg, run.plan
    threads = cfg.backup.compression_threads or default_threads()
    stream = BackupStream(run.gpg, cfg.encryption.recipients, level=cfg.backup.compression_level,
                          threads=threads, on_bytes=run.progress.advance)
    snapshot = run.snapshot
    assert snapshot is not None, "prepare_backup(start_exports=True) takes the snapshot"
    inner: list[mf.ManifestBody] = []  # set by _archive_chunks just before the archive's last member
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
        run.close()
    return outcome, inner[0]


def _archive_chunks(run: BackupRun, dump: ChildProcess,
                    counts: concurrent.futures.Future[tuple[dict[str, int], dict[str, Any]]],
                    exports: concurrent.futures.Future[AirflowExports] | None, lock: StoreLock,
                    inner: list[mf.ManifestBody]) -> Iterator[bytes | memoryview]:
    """The tar stream; runs in gpg's input thread, so every failure here aborts the upload."""
    writer = TarWriter(run.started.timestamp())
    stdout = cast(io.BufferedReader, dump.stdout)  # Popen(stdout=PIPE) with the default buffering
    yield from writer.add_parts(DUMP_BASENAME, stdout.readinto, DUMP_PART_SIZE)
    dump.finish()
    row_counts, facts = counts.result()
    exported: AirflowExports | None = exports.result() if exports else None
    if exported:
        check_export_counts(exported, row_counts)
        secret = seal(exported.secret_members, run.cfg.encryption, run.gpg)
        for name, data in {**exported.files, **secret}.items():
            yield from writer.add_bytes(f"airflow/{name}", data)
    lock.check()
    body = _manifest_body(run, row_counts, exported, writer.members, facts)
    inner.append(body)
    yield from writer.add_bytes(mf.ARCHIVE_MANIFEST_MEMBER, mf.dump_manifest(body))
    yield writer.end()


def _count_rows(snapshot: Snapshot, plan: SourcePlan) -> tuple[dict[str, int], dict[str, Any]]:
    """Row counts, then the in-flight work, schedules and deployment facts: all in the dump's snapshot."""
    import psycopg

    try:
        counts = snapshot.count_rows(plan.scope.schema, plan.scope.data_tables)
    except psycopg.Error as exc:
        raise SourceError(f"counting rows failed: {str(exc).strip()}", stage="row counts") from None
    return counts, read_snapshot_facts(snapshot.conn, plan.scope.schema, plan.catalog.tables,
                                       plan.scope.data_tables)


def _widen_pipe(pipe: IO[bytes] | None) -> None:
    """Fewer, larger reads from pg_dump (Linux only; harmless elsewhere)."""
    try:
        import fcntl

        if pipe is not None:
            fcntl.fcntl(pipe.fileno(), F_SETPIPE_SZ, PIPE_SIZE)
    except (ImportError, OSError):
        pass


def _manifest_body(run: BackupRun, row_counts: dict[str, int], exported: AirflowExports | None,
                   members: Sequence[MemberRecord], facts: Mapping[str, Any]) -> mf.ManifestBody:
    plan, cfg = run.plan, run.cfg
    info = dict(exported.info) if exported else {}
    environment = environment_record(facts, info if exported else None)
    scope = plan.scope
    return mf.ManifestBody(
        tool=mf.ToolInfo(name="afbackup", version=afbackup.__version__),
        backup_id=run.backup_id, name=cfg.backup.name, deployment=cfg.backup.name, labels=dict(run.labels),
        status="archived", started_at=run.started, host=socket.gethostname(),
        airflow=mf.AirflowInfo(
            major=plan.schema.major, schema_revision=plan.schema.revision, schema_release=plan.schema.release or None,
            fab_revision=plan.schema.fab_revision or None, cli_version=info.get("airflow_version"),
            executor=cfg.airflow.executor, fernet_fingerprints=info.get("fernet_fingerprints", [])),
        postgres=mf.PostgresInfo(
            server_version=plan.catalog.server_version, server_major=plan.catalog.server_major,
            pg_dump_version=plan.pg_dump.text, database=plan.catalog.database, schema_name=plan.catalog.schema),
        scope=mf.ScopeInfo(
            data_tables=list(scope.data_tables), schema_only_tables=list(scope.schema_only_tables),
            row_counts=row_counts, added_for_fk={k: list(v) for k, v in scope.added_for_fk.items()},
            exclude_data=list(cfg.database.exclude_data), include=list(cfg.database.include)),
        exports=mf.ExportCounts(**exported.counts) if exported else None,
        not_captured=_not_captured(info, exported is not None),
        in_flight=facts.get("in_flight"), environment=environment,
        active_dags=fill_catchup_default(facts.get("active_dags"), environment["catchup_by_default"]),
        members=[mf.MemberInfo(name=m.name, size=m.size, sha256=m.sha256) for m in members],
        archive_format=mf.ArchiveFormat(format="tar", compression=CODEC, compression_level=cfg.backup.compression_level,
                                        encryption="openpgp", dump_part_size=DUMP_PART_SIZE),
        encryption=mf.EncryptionInfo(recipients=list(cfg.encryption.recipients),
                                     signer=cfg.encryption.sign_with or None,
                                     fernet_recipients=list(audience(cfg.encryption)) or None),
        exit_codes=mf.ExitCodes(pg_dump=0, gpg=0, airflow_agent=0 if exported else None),
        object_lock=mf.ObjectLock(mode=run.retention.mode, retain_until=run.retention.until)
        if run.retention and run.retention.until else None,
    )


def _not_captured(info: Mapping[str, Any], exported: bool) -> mf.NotCaptured:
    if not exported:
        return mf.NotCaptured(
            exports="no executor configured: connections, variables and pools are only in the database dump")
    return mf.NotCaptured(connections_from_env=info.get("env_connections", []),
                          variables_from_env=info.get("env_variables", []),
                          secrets_backend=info.get("secrets_backend") or None)


def _put_record(run: BackupRun, name: str, doc: dict[str, Any]) -> None:
    run.store.put_bytes(mf.key_of(run.backup_id, name), mf.dump_manifest(doc), retention=run.retention)


def _record_failure(run: BackupRun, exc: BaseException) -> None:
    """Best effort: ``list --all`` shows why an attempt failed. Never hides the original error."""
    message = exc.one_line() if isinstance(exc, AfbackupError) else f"{type(exc).__name__}: {exc}"
    try:
        _put_record(run, mf.FAILED_NAME, {"backup_id": run.backup_id, "failed_at": mf.iso(mf.utcnow()),
                                          "error": redact(message), "stage": getattr(exc, "stage", "") or None})
    except Exception as record_error:  # the store may be what failed
        logger.debug("could not record the failure: %s", record_error)
