"""``afbackup restore``: the database and/or connections, variables and pools, right the first time.

Order, and why:
1. trust: resolve the backup, check the manifest's signature;
2. preflight, before anything is downloaded or touched: pg_restore present and
   not older than the dump's pg_dump, target state (empty / non-empty needs
   ``--clean``), the target Airflow's schema against the backup's revision;
3. ``--dry-run`` stops here and prints the plan; a destructive step asks for
   confirmation (or ``--yes``);
4. download, decrypt and check everything (ciphertext SHA-256, gpg, every
   member) while spooling the dump to a private directory — the target has not
   been touched yet;
5. pg_restore (stops at the first error), then row counts and sequences are
   compared with the manifest; ``--pause-dags``; ``--migrate``; the Fernet
   repair; or, with ``--only``, the imports and their checks.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable

from afbackup.config import Settings
from afbackup.crypto import Gpg
from afbackup.errors import ConfigError, IntegrityError, RestoreError, UsageError
from afbackup.progress import Progress
from afbackup.restore import airflow_steps, secrets_check, target
from afbackup.restore.plan import ALL_PARTS, RestoreContext, RestoreOptions, describe_plan, prepare_restore
from afbackup.sinks import SpoolSink, private_dir
from afbackup.spool import check_spool_space
from afbackup.storage import open_store
from afbackup.unpack import read_archive, trusted_manifest

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
    fernet: dict[str, Any] | None = None
    imported: dict[str, int] | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def run_restore(settings: Settings, options: RestoreOptions, *, confirm: Callable[[str], bool],
                progress: Progress) -> RestoreReport:
    started = time.monotonic()
    cfg = settings.config
    store, gpg = open_store(cfg.storage), Gpg(cfg.encryption)
    record = trusted_manifest(store, options.backup, gpg, cfg.encryption)
    ctx = prepare_restore(cfg, record.manifest, options)
    report = RestoreReport(record.backup_id, f"{ctx.state.dbname} on {ctx.state.server}", [])
    if options.dry_run:
        report.dry_run, report.plan = True, describe_plan(ctx)
        return report
    if ctx.destructive and not options.yes and not confirm(ctx.destructive):
        raise UsageError("restore cancelled: nothing was changed")
    with private_dir(cfg.restore.spool_dir, "the decrypted dump") as spool:
        if "db" in options.parts:
            check_spool_space(spool, record.manifest)  # before downloading anything
        sinks = [SpoolSink(spool / "airflow.pgdump")] if "db" in options.parts else []
        progress.stage("restore: download → gpg → zstd → spool")
        contents = read_archive(store, record.manifest, gpg, sinks, progress.advance)
        progress.close()
        ctx.schema_check()  # the target Airflow accepts this backup (checked while downloading)
        report.steps.append(f"verified {record.manifest.archive.key}: {contents.dump_size} dump bytes, "
                            f"{len(contents.members)} members")
        if "db" in options.parts:
            _restore_database(ctx, sinks[0].path, spool, report)
    if ctx.agent is not None:
        _airflow_steps(ctx, contents, report)
    report.plan = describe_plan(ctx)  # for --json: what was planned (the version check is done by now)
    report.seconds = time.monotonic() - started
    return report


def _restore_database(ctx: RestoreContext, dump, spool, report: RestoreReport) -> None:
    cfg, schema = ctx.cfg, ctx.manifest.postgres["schema"]
    toc = target.read_toc(ctx.pg_restore.path, dump)  # this pg_restore reads the dump: checked before any change
    created = target.prepare_target(ctx.state, ctx.password, schema, cfg.database.connect_timeout)
    try:
        target.load_dump(ctx.pg_restore.path, ctx.options.target_dsn, ctx.password, dump, toc, spool, schema,
                         ctx.jobs, cfg.database.connect_timeout)
    except RestoreError as exc:
        raise _partial(ctx, exc, created) from None
    report.steps.append(f"pg_restore into {ctx.state.dbname} ({ctx.jobs} job(s))")
    findings = _check(ctx, schema)
    if findings:
        raise IntegrityError(f"restored {ctx.state.dbname}, but it differs from the manifest: "
                             + "; ".join(str(f) for f in findings[:10])
                             + (f" (+{len(findings) - 10} more)" if len(findings) > 10 else ""),
                             hint="the backup or the load is incomplete; do not start Airflow on this database")
    report.steps.append(f"row counts of {len(ctx.manifest.row_counts)} tables and all sequences check out")
    if ctx.options.pause_dags:
        report.paused_dags = target.pause_dags(ctx.options.target_dsn, ctx.password, schema,
                                               cfg.database.connect_timeout)
        report.steps.append(f"paused {len(report.paused_dags)} active DAG(s)")


def _check(ctx: RestoreContext, schema: str):
    from afbackup.dbcheck import check_restored
    from afbackup.sources.postgres import connect

    with connect(ctx.options.target_dsn, ctx.password, ctx.cfg.database.connect_timeout) as conn:
        return check_restored(conn, schema, ctx.manifest.row_counts)


def _partial(ctx: RestoreContext, exc: RestoreError, created: bool) -> RestoreError:
    if ctx.jobs <= 1:
        dropped = " (its previous Airflow schema was dropped by --clean)" if ctx.state.tables else ""
        exc.hint = f"pg_restore ran as one transaction: {ctx.state.dbname} holds nothing of this backup{dropped}"
    elif created:
        target.drop_database(ctx.state, ctx.password, ctx.cfg.database.connect_timeout)
        exc.hint = f"{ctx.state.dbname} was half restored and has been dropped (afbackup had created it)"
    else:
        exc.hint = (f"{ctx.state.dbname} is PARTIALLY restored: do not start Airflow on it; "
                    "fix the cause and re-run with --clean")
    return exc


def _airflow_steps(ctx: RestoreContext, contents, report: RestoreReport) -> None:
    where = ctx.airflow
    if "db" in ctx.options.parts:
        if ctx.schema_action == "migrate":
            airflow_steps.migrate(ctx.agent, where)
            report.steps.append("airflow db migrate")
        if ctx.manifest.exports is None:
            logger.warning("backup %s was made without an executor: it carries no Fernet key or exports, so the "
                           "restored connections and variables were not checked", ctx.manifest.backup_id)
            return
        if secrets_check.target_has_source_keys(ctx.manifest, ctx.schema_check().target_fingerprints):
            counts = secrets_check.check_directly(
                ctx.options.target_dsn, ctx.password, ctx.manifest.postgres["schema"], contents,
                airflow_steps.expected_secrets(contents), ctx.cfg.database.connect_timeout)
            report.fernet = {"reencrypted": False, "checked": counts, "same_keys": True}
        else:
            report.fernet = airflow_steps.repair_fernet(ctx.agent, where, contents)
        what = "re-encrypted under" if report.fernet["reencrypted"] else "decrypts with"
        report.steps.append(f"every connection and variable {what} the target's Fernet key; values equal the backup")
        return
    parts = set(ctx.options.parts) - {"db"}
    if not parts:
        raise ConfigError("nothing to restore")
    report.imported = airflow_steps.import_parts(ctx.agent, where, contents, parts, ctx.cfg.airflow.tmp_dir)
    report.steps.append("imported " + ", ".join(f"{n} {k}" for k, n in report.imported.items()))
