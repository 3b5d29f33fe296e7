"""``afbackup restore``: the database and/or connections, variables and pools, right the first time.

Order, and why:
1. the target's Airflow is asked (through the executor's agent) for its schema
   revisions, Fernet key fingerprints and deployment facts: it takes seconds
   to start, so this runs beside everything up to the first seconds of the load;
   then trust: resolve the backup, check the manifest's signature;
2. preflight, before anything is downloaded or touched: pg_restore present and
   not older than the dump's pg_dump, target state (empty / non-empty needs
   ``--clean``), privileges, other sessions;
3. ``--dry-run`` stops here and prints the plan; a destructive step asks for
   confirmation (or ``--yes``);
4. download, decrypt and check everything (ciphertext SHA-256, gpg, every
   member) while spooling the dump to a private directory — the target has not
   been touched yet;
5. close the target to new connections, create a NEW staging database and
   start pg_restore into it (stops at the first error). Meanwhile the version
   check and the deployment comparison are awaited: a refusal stops the load.
   Only then are other sessions ended (``--terminate-sessions``). In the
   staging database, row counts and sequences are compared with the manifest,
   the DAGs are paused and the in-flight work reconciled
   (afbackup.restore.handover), ``--migrate`` and the Fernet repair run; then
   it is swapped in by rename (afbackup.restore.swap), the previous one kept.
   Any failure or signal before the swap drops the staging database and
   reopens the target: it is exactly as it was.
   With ``--only``, the imports and their checks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from afbackup.config import Settings
from afbackup.crypto import Gpg
from afbackup.errors import AfbackupError, ConfigError, IntegrityError, Interrupted, UsageError
from afbackup.fernet_escrow import unseal
from afbackup.manifest import Manifest
from afbackup.progress import Progress
from afbackup.restore import airflow_steps, handover, secrets_check, swap, target
from afbackup.restore.plan import (
    ALL_PARTS,
    RestoreContext,
    RestoreOptions,
    describe_plan,
    prepare_restore,
    probe_target,
)
from afbackup.sinks import SpoolSink, private_dir
from afbackup.sources.airflow import AirflowAgent
from afbackup.spool import check_spool_space
from afbackup.storage import open_store
from afbackup.storage.base import ObjectStore
from afbackup.trust import Trust
from afbackup.unpack import ArchiveContents, read_archive, trusted_manifest

if TYPE_CHECKING:
    from afbackup.dbcheck import Finding

logger = logging.getLogger(__name__)

__all__ = ["ALL_PARTS", "RestoreOptions", "run_restore"]


@dataclasses.dataclass
class RestoreReport:
    backup_id: str
    target: str
    plan: list[str]
    dry_run: bool = False
    steps: list[str] = dataclasses.field(default_factory=list)
    paused_dags: list[str] = dataclasses.field(default_factory=list)
    in_flight: dict[str, Any] | None = None  # as counted at backup time (afbackup/inflight.py)
    reconciled: dict[str, Any] | None = None  # what --in-flight changed
    catchup: list[dict[str, Any]] | None = None  # runs due per DAG active at backup time
    environment: dict[str, Any] | None = None  # restore/environment_check.py: errors, warnings
    fernet: dict[str, Any] | None = None
    imported: dict[str, int] | None = None
    previous_database: str | None = None  # the replaced database, kept until `afbackup restore-cleanup`
    terminated_sessions: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    timings: dict[str, float] = dataclasses.field(default_factory=dict)  # seconds per step
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @contextlib.contextmanager
    def timed(self, step: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.timings[step] = round(self.timings.get(step, 0.0) + time.monotonic() - started, 3)


def run_restore(settings: Settings, options: RestoreOptions, *, confirm: Callable[[str], bool],
                progress: Progress) -> RestoreReport:
    started = time.monotonic()
    cfg = settings.config
    report = RestoreReport("", "", [])
    with report.timed("preflight"):
        probe = probe_target(cfg, options)  # first: the target's Airflow answers while the rest goes on
        store, gpg = open_store(cfg.storage), Gpg(cfg.encryption)
        record = trusted_manifest(store, options.backup,
                                  Trust.from_config(cfg, source_deployment=options.source_deployment))
        manifest = record.complete_manifest
        ctx = prepare_restore(cfg, manifest, options, probe)
    report.backup_id, report.target = manifest.backup_id, f"{ctx.state.dbname} on {ctx.state.server}"
    if options.dry_run:
        report.dry_run = True
        if "db" in options.parts:
            handover.record(ctx, report)
        report.plan = describe_plan(ctx) + (handover.plan_lines(ctx, report) if "db" in options.parts else [])
        return report
    if ctx.destructive and not options.yes and not confirm(ctx.destructive):
        raise UsageError("restore cancelled: nothing was changed")
    load = (swap.AtomicLoad(ctx.state, ctx.password, cfg.database.connect_timeout, cfg.restore.lock_timeout)
            if "db" in options.parts else None)
    try:
        _run(ctx, manifest, store, gpg, load, report, progress)
    except KeyboardInterrupt as exc:  # SIGTERM/SIGINT (afbackup.cli.Terminated carries the signal number)
        if load is None:
            raise
        interrupted = Interrupted(int(getattr(exc, "signum", signal.SIGINT)))
        interrupted.hint = _roll_back(load)
        raise interrupted from None
    except Exception as exc:
        if load is not None:
            state = _roll_back(load)
            if isinstance(exc, AfbackupError):
                exc.hint = state + (f"; {exc.hint}" if exc.hint else "")
            else:
                logger.error("the restore failed unexpectedly: %s", state)
        raise
    report.plan = describe_plan(ctx)  # for --json: what was planned (the version check is done by now)
    if "db" in options.parts:
        report.plan += handover.plan_lines(ctx, report)
    report.seconds = time.monotonic() - started
    return report


def _run(ctx: RestoreContext, manifest: Manifest, store: ObjectStore, gpg: Gpg, load: swap.AtomicLoad | None,
         report: RestoreReport, progress: Progress) -> None:
    cfg, options = ctx.cfg, ctx.options
    with private_dir(cfg.restore.spool_dir, "the decrypted dump") as spool:
        if "db" in options.parts:
            check_spool_space(spool, manifest)  # before downloading anything
        sinks = [SpoolSink(spool / "airflow.pgdump")] if "db" in options.parts else []
        progress.stage("restore: download → gpg → zstd → spool")
        with report.timed("download"):
            contents = read_archive(store, manifest, gpg, sinks, progress.advance)
        progress.close()
        if unseal(contents.members, gpg):  # the Fernet key sealed to encryption.fernet_recipients, in memory
            report.steps.append("decrypted the source Fernet key (sealed to encryption.fernet_recipients)")
        report.steps.append(f"verified {manifest.archive.key}: {contents.dump_size} dump bytes, "
                            f"{len(contents.members)} members")
        if load is not None:
            _restore_database(ctx, load, sinks[0].path, spool, report)
    if load is None:
        _airflow_steps(ctx, ctx.airflow, ctx.options.target_dsn, contents, report)
        return
    own = cfg.restore.airflow_db == "own"  # the agent's Airflow reaches the target by its final name only
    if ctx.agent is not None and not own:
        with report.timed("airflow_steps"):
            _airflow_steps(ctx, airflow_steps.airflow_target(load.load_dsn, ctx.password, cfg.restore.airflow_db),
                           load.load_dsn, contents, report)
    with report.timed("swap"):
        load.commit()
    report.steps.append(_swapped(load))
    report.previous_database = load.previous or None
    if ctx.agent is not None and own:
        with report.timed("airflow_steps"):
            _airflow_steps(ctx, ctx.airflow, ctx.options.target_dsn, contents, report)
    load.phase = "done"  # from here on, nothing undoes the restore
    if load.previous and (options.drop_previous or not load.state.tables):  # an empty one is not worth keeping
        with report.timed("drop_previous"):
            if load.drop_previous():
                why = "--drop-previous" if options.drop_previous else "it held no tables"
                report.steps.append(f"dropped the previous database {load.previous} ({why})")
                report.previous_database = None


def _swapped(load: swap.AtomicLoad) -> str:
    if not load.previous:
        return f"renamed the checked database to {load.target}"
    return f"swapped the checked database in as {load.target}; the previous one is now {load.previous}"


def _roll_back(load: swap.AtomicLoad) -> str:
    """Undo whatever this restore did to the target; return what is now true of it."""
    failed_phase = load.phase
    try:
        load.rollback()
    except Exception as exc:  # the original failure stays the error; say exactly what could not be undone
        logger.error("could not undo the restore (%s): %s", failed_phase, exc)
        return (f"the restore failed in phase {failed_phase!r} and undoing it failed too: check {load.target} "
                f"and {load.staging}; `afbackup restore-cleanup` drops what afbackup left")
    return load.real_state(failed_phase)


def _restore_database(ctx: RestoreContext, load: swap.AtomicLoad, dump: Path, spool: Path,
                      report: RestoreReport) -> None:
    cfg, schema = ctx.cfg, ctx.manifest.postgres.schema_name
    assert ctx.pg_restore is not None  # planned whenever the database is restored
    with report.timed("read_toc"):
        toc = target.read_toc(ctx.pg_restore.path, dump)  # this pg_restore reads the dump: checked before any change
    with report.timed("quiesce"):
        load.begin(terminate=ctx.options.terminate_sessions)
    if load.state.exists:
        report.steps.append(f"closed {load.target} to new connections; created {load.staging}"
                            + (f" ({'; '.join(load.carried)})" if load.carried else ""))
    for statement in load.not_carried:
        report.steps.append(f"NOT carried to the restored database (run it after the restore): {statement}")
    with target.start_load(ctx.pg_restore.path, load.load_dsn, ctx.password, dump, toc, spool, schema,
                           ctx.jobs, cfg.database.connect_timeout) as loading:
        # While pg_restore loads the staging database: the gates that were started at preflight. A refusal
        # stops the load and drops the staging database: the target is as it was, no session was ended.
        with report.timed("airflow_version_check"):
            ctx.schema_check()  # the target Airflow accepts this backup
            handover.record(ctx, report)  # and the target deployment can take it (exit 4 if not)
        with report.timed("quiesce"):
            load.terminate()  # --terminate-sessions: only now that the restore goes ahead
        report.terminated_sessions = [s.as_dict() for s in load.terminated]
        if load.terminated:
            report.steps.append(f"terminated {len(load.terminated)} session(s) on {load.target} "
                                "(--terminate-sessions)")
        loading.wait()
    report.timings["pg_restore"] = round(loading.seconds, 3)  # from its start: overlaps the two steps above
    load.phase = "loaded"
    report.steps.append(f"pg_restore into {load.staging} ({ctx.jobs} job(s))")
    with report.timed("checks"):
        findings = _check(ctx, load.load_dsn, schema)
    if findings:
        raise IntegrityError(f"restored {load.staging}, but it differs from the manifest: "
                             + "; ".join(str(f) for f in findings[:10])
                             + (f" (+{len(findings) - 10} more)" if len(findings) > 10 else ""),
                             hint="the backup or the load is incomplete")
    report.steps.append(f"row counts of {len(ctx.manifest.row_counts)} tables and all sequences check out")
    with report.timed("pause_and_reconcile"):
        handover.settle(ctx, report, load.load_dsn)  # paused, in-flight work reconciled: before the swap


def _check(ctx: RestoreContext, dsn: str, schema: str) -> list[Finding]:
    from afbackup.dbcheck import check_restored
    from afbackup.sources.postgres import connect

    with connect(dsn, ctx.password, ctx.cfg.database.connect_timeout) as conn:
        return check_restored(conn, schema, ctx.manifest.row_counts)


def _airflow_steps(ctx: RestoreContext, where: airflow_steps.AirflowTarget, dsn: str, contents: ArchiveContents,
                   report: RestoreReport) -> None:
    """The Airflow-side steps, against ``where``/``dsn``: the staging database before the swap, or the target."""
    agent: AirflowAgent | None = ctx.agent
    if agent is None:  # no executor: the plan allowed only a database restore, whose checks are done
        return
    if "db" in ctx.options.parts:
        if ctx.schema_action == "migrate":
            airflow_steps.migrate(agent, where)
            report.steps.append("airflow db migrate")
        if (report.environment or {}).get("fab_action") == "migrate":
            airflow_steps.migrate(agent, where, ("fab-db", "migrate"))
            report.steps.append("airflow fab-db migrate")
        if ctx.manifest.exports is None:
            logger.warning("backup %s was made without an executor: it carries no Fernet key or exports, so the "
                           "restored connections and variables were not checked", ctx.manifest.backup_id)
            return
        if secrets_check.target_has_source_keys(ctx.manifest, ctx.schema_check().target_fingerprints):
            counts = secrets_check.check_directly(
                dsn, ctx.password, ctx.manifest.postgres.schema_name, contents,
                airflow_steps.expected_secrets(contents), ctx.cfg.database.connect_timeout)
            report.fernet = {"reencrypted": False, "checked": counts, "same_keys": True}
        else:
            report.fernet = airflow_steps.repair_fernet(agent, where, contents)
        what = "re-encrypted under" if report.fernet["reencrypted"] else "decrypts with"
        report.steps.append(f"every connection and variable {what} the target's Fernet key; values equal the backup")
        return
    parts = set(ctx.options.parts) - {"db"}
    if not parts:
        raise ConfigError("nothing to restore")
    report.imported = airflow_steps.import_parts(agent, where, contents, parts, ctx.cfg.airflow.tmp_dir)
    report.steps.append("imported " + ", ".join(f"{n} {k}" for k, n in report.imported.items()))
