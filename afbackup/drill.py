"""``afbackup drill``: a disaster-recovery rehearsal that proves a backup restores into a usable Airflow DB.

One download does it all: the archive is verified (signature, checksums, gpg,
members, the dump's TOC, the exports) while the dump is spooled; it is then
restored into a scratch database created for the drill, and checked: row
counts and sequences against the manifest, the real Airflow CLI reading the
restored database (through the executor), and a restored connection decrypting
with the source Fernet key (the escrowed key when given as a secret input,
else the key carried in the archive). RTO is the wall time from the start to a
usable restored database; RPO is the backup's age when the drill started.
Every step is a check in the report; a failed check or a missed target makes
the drill exit 10. The scratch database is dropped unless ``--keep``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from psycopg.conninfo import make_conninfo

from afbackup import manifest as mf
from afbackup.catalog import BackupRecord
from afbackup.check_report import Check
from afbackup.config import Settings
from afbackup.config.model import Config
from afbackup.crypto import Gpg
from afbackup.dbcheck import check_restored
from afbackup.drill_record import write_record
from afbackup.errors import AfbackupError, ConfigError, DrillFailed, IntegrityError, SourceError
from afbackup.executors import open_executor
from afbackup.fernet_escrow import MEMBER, FernetKeyUnreadable, unseal
from afbackup.progress import Progress
from afbackup.restore import airflow_steps, target
from afbackup.sinks import SpoolSink, TocSink, private_dir
from afbackup.sources.airflow import AirflowAgent, resolve_python
from afbackup.sources.postgres import connect, password_from_file, target_password, tool_version
from afbackup.spool import check_spool_space
from afbackup.storage import open_store
from afbackup.storage.base import ObjectStore
from afbackup.trust import Trust
from afbackup.unpack import ArchiveContents, read_archive, trusted_manifest
from afbackup.verify import VerifyReport, check_exports, check_toc

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class DrillReport:
    backup_id: str = ""
    started_at: str = ""
    scratch: str = ""
    rto_seconds: float | None = None
    rpo_seconds: float | None = None
    rto_target: float = 0.0
    rpo_target: float = 0.0
    checks: list[Check] = dataclasses.field(default_factory=list)
    kept: bool = False
    live: bool = False
    rto_live_seconds: float | None = None  # drill --live: from the start to the canary's successful task
    rto_live_target: float = 0.0
    smoke: dict[str, Any] = dataclasses.field(default_factory=dict)  # drill --live: stuck work, canary run

    @property
    def ok(self) -> bool:
        return all(check.ok is not False for check in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "ok": self.ok}


@dataclasses.dataclass(frozen=True)
class DrillOptions:
    backup: str = "latest"
    scratch_dsn: str = ""
    keep: bool = False
    rto_target: float | None = None
    rpo_target: float | None = None
    fernet_key_file: str = ""
    source_deployment: str = ""
    live: bool = False
    rto_live_target: float | None = None


class _Steps:
    """Runs named steps; after the first failure the rest are recorded as skipped."""

    def __init__(self, report: DrillReport) -> None:
        self.report = report

    def run(self, name: str, step: Callable[[], str]) -> bool:
        if not self.report.ok:
            self.report.checks.append(Check(name, None, "skipped: an earlier check failed"))
            return False
        started = time.monotonic()
        try:
            detail, ok = step(), True
        except AfbackupError as exc:
            detail, ok = exc.one_line(), False
        self.report.checks.append(Check(name, ok, detail, round(time.monotonic() - started, 3)))
        return ok


def run_drill(settings: Settings, options: DrillOptions, progress: Progress) -> DrillReport:
    cfg = settings.config
    scratch_dsn = options.scratch_dsn or cfg.drill.scratch_dsn
    if not scratch_dsn:
        raise ConfigError("the drill needs a scratch server: --scratch-dsn or [drill] scratch_dsn")
    if options.live:  # a missing Airflow CLI is a config error before anything is downloaded
        from afbackup.drill_live import airflow_command

        airflow_command(cfg)
    clock, started = time.monotonic(), mf.utcnow()
    report = DrillReport(started_at=mf.iso(started) or "", rto_target=_target(options.rto_target, cfg.drill.rto_target),
                         rpo_target=_target(options.rpo_target, cfg.drill.rpo_target), live=options.live,
                         rto_live_target=_target(options.rto_live_target, cfg.drill.rto_live_target))
    steps, state = _Steps(report), dict[str, Any]()
    store, gpg = open_store(cfg.storage), Gpg(cfg.encryption)
    password = target_password(cfg)
    # An untrusted backup (signature, deployment) is refused outright (exit 7/8), not rehearsed.
    record = trusted_manifest(store, options.backup,
                              Trust.from_config(cfg, source_deployment=options.source_deployment))
    steps.run("select backup", lambda: _select(record, started, report, state))
    with private_dir(cfg.restore.spool_dir, "the decrypted dump") as spool:
        if "manifest" in state:  # a spool too small is a preflight failure (exit 4), before any download
            check_spool_space(spool, state["manifest"])
        steps.run("verify", lambda: _verify(store, gpg, cfg, spool, progress, state))
        name = f"afbackup_drill_{secrets.token_hex(4)}"
        state["dsn"] = make_conninfo(scratch_dsn, dbname=name)
        try:
            steps.run("restore", lambda: _restore(cfg, state, password, spool, report))
            steps.run("database checks", lambda: _db_checks(cfg, state, password))
            steps.run("airflow reads the database", lambda: _airflow_checks(cfg, state, password, options))
            if report.ok:
                report.rto_seconds = round(time.monotonic() - clock, 3)
            if options.live:
                from afbackup.drill_live import run_live

                run_live(cfg, state, password, options, report, steps, started)
        finally:
            _cleanup(state, password, cfg, options.keep, report)
    steps.run("targets", lambda: _targets(report))
    write_record(store, report, cfg.backup.name)
    return report


def _target(flag: float | None, configured: float) -> float:
    return configured if flag is None else flag


def _select(record: BackupRecord, started: dt.datetime, report: DrillReport, state: dict[str, Any]) -> str:
    manifest = record.complete_manifest
    state["manifest"] = manifest
    report.backup_id = manifest.backup_id
    report.rpo_seconds = round((started - manifest.finished_at).total_seconds(), 3)
    return f"backup {manifest.backup_id}, finished {mf.iso(manifest.finished_at)}"


def _verify(store: ObjectStore, gpg: Gpg, cfg: Config, spool: Path, progress: Progress, state: dict[str, Any]) -> str:
    manifest = state["manifest"]
    state["pg_restore"] = tool_version("pg_restore", cfg.database.pg_bin_dir).path
    toc, dump = TocSink(state["pg_restore"]), SpoolSink(spool / "airflow.pgdump")
    progress.stage("drill: download → gpg → zstd → verify")
    state["contents"] = read_archive(store, manifest, gpg, [toc, dump], progress.advance)
    try:
        unseal(state["contents"].members, gpg)
    except FernetKeyUnreadable as exc:
        state["fernet_unreadable"] = exc.message
    progress.close()
    state["dump"] = dump.path
    scratch = VerifyReport()
    check_toc(toc.toc, manifest, scratch)
    check_exports(state["contents"], manifest, scratch)
    return "; ".join(check["detail"] for check in scratch.checks)


def _restore(cfg: Config, state: dict[str, Any], password: str | None, spool: Path, report: DrillReport) -> str:
    schema = state["manifest"].postgres.schema_name
    timeout = cfg.database.connect_timeout
    scratch = target.inspect_target(state["dsn"], password, schema, timeout)
    target.prepare_target(scratch, password, schema, timeout)
    state["scratch"] = scratch
    report.scratch = f"{scratch.dbname} on {scratch.server}"
    toc = target.read_toc(state["pg_restore"], state["dump"])
    target.load_dump(state["pg_restore"], state["dsn"], password, state["dump"], toc, spool, schema,
                     cfg.restore.jobs, timeout)
    return f"restored into {report.scratch} with pg_restore ({cfg.restore.jobs} jobs)"


def _db_checks(cfg: Config, state: dict[str, Any], password: str | None) -> str:
    manifest = state["manifest"]
    with connect(state["dsn"], password, cfg.database.connect_timeout) as conn:
        findings = check_restored(conn, manifest.postgres.schema_name, manifest.row_counts)
    if findings:
        raise IntegrityError("; ".join(str(f) for f in findings[:10]))
    return f"{len(manifest.row_counts)} tables, {sum(manifest.row_counts.values())} rows and all sequences match"


def _airflow_checks(cfg: Config, state: dict[str, Any], password: str | None, options: DrillOptions) -> str:
    executor = open_executor(cfg.airflow)
    if executor is None:
        return "skipped: no executor configured (the restored database was not opened by Airflow)"
    agent = AirflowAgent(executor, resolve_python(cfg.airflow), timeout=cfg.airflow.timeout)
    where = airflow_steps.airflow_target(state["dsn"], password, "target")
    contents = state["contents"]
    if "airflow/connections.json" not in contents.members:  # a backup made without an executor
        return _migrations_only(agent, where, "the backup carries no exports to decrypt")
    keys, source = _fernet_keys(options, contents)
    if keys is None:
        return _migrations_only(agent, where, "the Fernet check was SKIPPED: the source Fernet key is sealed to "
                                f"encryption.fernet_recipients and this keyring cannot read it "
                                f"({state.get('fernet_unreadable', 'no key')}); pass --fernet-key-file to check it")
    expected = airflow_steps.expected_secrets(contents)
    migrations, secrets_check = agent.call(
        [{"op": "cli", "argv": ["db", "check-migrations", "-t", "20"]},
         {"op": "secrets_check", "expected": {"connections": expected["connections"]}}],
        env={**where.env, "AIRFLOW__CORE__FERNET_KEY": ",".join(keys)}, database=where.database,
        stage="airflow checks")
    if migrations["exit_code"] != 0:
        raise SourceError(f"airflow db check-migrations exited with {migrations['exit_code']} on the restored DB")
    airflow_steps.require_equal(secrets_check, f"with the {source}")
    count = secrets_check["counts"]["connections"]
    if not count:
        return "airflow db check-migrations passed; no connection to decrypt"
    return f"airflow db check-migrations passed; {count} connections decrypt with the {source}, values equal"


def _migrations_only(agent: AirflowAgent, where: airflow_steps.AirflowTarget, why: str) -> str:
    done = agent.call([{"op": "cli", "argv": ["db", "check-migrations", "-t", "20"]}], env=where.env,
                      database=where.database, stage="airflow checks")[0]
    if done["exit_code"] != 0:
        raise SourceError(f"airflow db check-migrations exited with {done['exit_code']} on the restored DB")
    return f"airflow db check-migrations passed; {why}"


def _fernet_keys(options: DrillOptions, contents: ArchiveContents | None) -> tuple[list[str] | None, str]:
    """The source Fernet key(s) to check with: the escrowed one, else the archive's; None when unreadable."""
    if options.fernet_key_file:
        key = password_from_file(options.fernet_key_file, "--fernet-key-file")
        return [key or ""], "escrowed source Fernet key"
    if contents is None or MEMBER not in contents.members:
        return None, ""
    return contents.json(MEMBER).get("keys", []), "source Fernet key carried in the archive"


def _targets(report: DrillReport) -> str:
    missed = []
    if report.rto_target and (report.rto_seconds or 0) > report.rto_target:
        missed.append(f"RTO {report.rto_seconds:.1f}s > target {report.rto_target:g}s")
    if report.rpo_target and (report.rpo_seconds or 0) > report.rpo_target:
        missed.append(f"RPO {report.rpo_seconds:.1f}s > target {report.rpo_target:g}s")
    if report.live and report.rto_live_target and (report.rto_live_seconds or 0) > report.rto_live_target:
        missed.append(f"RTO to the first successful task {report.rto_live_seconds:.1f}s > target "
                      f"{report.rto_live_target:g}s")
    if missed:
        raise DrillFailed("; ".join(missed))
    live = f", RTO to the first successful task {report.rto_live_seconds}s (target " \
           f"{report.rto_live_target or '-'})" if report.live else ""
    return f"RTO {report.rto_seconds}s (target {report.rto_target or '-'}){live}, RPO {report.rpo_seconds}s " \
           f"(target {report.rpo_target or '-'})"


def _cleanup(state: dict[str, Any], password: str | None, cfg: Config, keep: bool, report: DrillReport) -> None:
    scratch = state.get("scratch")
    if scratch is None:
        return
    if keep:
        report.kept = True
        logger.info("kept the scratch database %s (--keep)", report.scratch)
        return
    try:
        target.drop_database(scratch, password, cfg.database.connect_timeout)
    except AfbackupError as exc:
        logger.warning("could not drop the scratch database %s: %s", report.scratch, exc.one_line())


def report_json(report: DrillReport) -> str:
    return json.dumps(report.as_dict(), indent=2, sort_keys=True, default=str)
