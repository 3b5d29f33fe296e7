"""``afbackup verify``: prove a backup restorable without touching production.

Checks, in order: the manifest's signature; the stored object's size and
SHA-256; gpg's decryption status; every archive member's size and SHA-256
and the member list; the dump's table of contents (``pg_restore --list``)
covers every table the manifest counted; the exports parse and hold as many
entries as the manifest says. ``--deep`` also restores into a scratch
database it creates (and always drops), then compares per-table row counts
with the manifest and checks every sequence.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import secrets
import time
from pathlib import Path
from typing import Any

from psycopg.conninfo import make_conninfo

from afbackup.config import Settings
from afbackup.config.model import Config
from afbackup.crypto import Gpg
from afbackup.dbcheck import check_restored
from afbackup.errors import AfbackupError, ConfigError, IntegrityError
from afbackup.manifest import Manifest
from afbackup.progress import Progress
from afbackup.restore import target
from afbackup.sinks import SpoolSink, TocSink, private_dir
from afbackup.sources.postgres import connect, target_password, tool_version
from afbackup.spool import check_spool_space
from afbackup.storage import open_store
from afbackup.trust import Trust
from afbackup.unpack import ArchiveContents, DumpSink, read_archive, trusted_manifest

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class VerifyReport:
    backup_id: str = ""
    ok: bool = False
    deep: bool = False
    checks: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    error: str = ""
    exit_code: int = 0
    seconds: float = 0.0

    def passed(self, name: str, detail: str) -> None:
        self.checks.append({"check": name, "ok": True, "detail": detail})

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def run_verify(settings: Settings, ref: str, *, deep: bool, scratch_dsn: str, progress: Progress,
               source_deployment: str = "") -> VerifyReport:
    """Verify one backup; failures are recorded in the report (``error``, ``exit_code``), not raised."""
    started = time.monotonic()
    report = VerifyReport(deep=deep)
    try:
        _verify(settings, ref, deep, scratch_dsn or settings.config.drill.scratch_dsn, progress, report,
                source_deployment)
        report.ok = True
    except AfbackupError as exc:
        report.error, report.exit_code = exc.one_line(), int(exc.exit_code)
        report.checks.append({"check": exc.stage or exc.kind, "ok": False, "detail": exc.one_line()})
    finally:
        progress.close()
    report.seconds = round(time.monotonic() - started, 3)
    return report


def _verify(settings: Settings, ref: str, deep: bool, scratch_dsn: str, progress: Progress,
            report: VerifyReport, source_deployment: str) -> None:
    cfg = settings.config
    if deep and not scratch_dsn:
        raise ConfigError("--deep needs --scratch-dsn (or [drill] scratch_dsn): a server for a scratch database")
    store, gpg = open_store(cfg.storage), Gpg(cfg.encryption)
    record = trusted_manifest(store, ref, Trust.from_config(cfg, source_deployment=source_deployment))
    manifest = record.complete_manifest
    report.backup_id = manifest.backup_id
    version = f", manifest version {record.manifest_version}" if record.manifest_version else ""
    report.passed("manifest", (f"signed by trusted key {record.signer}" if record.signer else "unsigned (trusted: "
                               "encryption.require_signature = false)") + f"; deployment {manifest.deployment_name}"
                  + version)
    pg_restore = tool_version("pg_restore", cfg.database.pg_bin_dir)
    toc = TocSink(pg_restore.path)
    with private_dir(cfg.restore.spool_dir, "the decrypted dump") if deep else contextlib.nullcontext() as spool:
        dump = SpoolSink(spool / "airflow.pgdump") if spool is not None else None
        if spool is not None:
            check_spool_space(spool, manifest)  # before downloading anything
        sinks: list[DumpSink] = [toc, dump] if dump is not None else [toc]
        progress.stage("verify: download → gpg → zstd → check")
        contents = read_archive(store, manifest, gpg, sinks, progress.advance)
        report.passed("object", f"{manifest.archive.key}: {manifest.archive.size} bytes, SHA-256 matches")
        report.passed("members", f"{len(manifest.members)} archive members match their SHA-256")
        check_toc(toc.toc, manifest, report)
        check_exports(contents, manifest, report)
        if dump is not None and spool is not None:  # --deep
            _deep(cfg, manifest, pg_restore.path, dump.path, spool, scratch_dsn, report)


def check_toc(toc: str, manifest: Manifest, report: VerifyReport) -> None:
    schema = manifest.postgres.schema_name
    missing = [t for t in manifest.row_counts if f" TABLE DATA {schema} {t} " not in toc]
    if missing:
        raise IntegrityError(f"the dump has no data for {', '.join(missing[:10])}", stage="pg_restore --list")
    report.passed("dump", f"pg_restore --list reads the dump; data of {len(manifest.row_counts)} tables present")


def check_exports(contents: ArchiveContents, manifest: Manifest, report: VerifyReport) -> None:
    if manifest.exports is None:
        return
    expected_counts = manifest.exports.as_dict()
    for kind, expected in expected_counts.items():
        name = f"airflow/{kind}.json"
        try:
            count = len(contents.json(name))
        except (KeyError, ValueError) as exc:
            raise IntegrityError(f"{name} is missing or not JSON: {exc}", stage="exports") from None
        if count != expected:
            raise IntegrityError(f"{name} holds {count} entries, the manifest says {expected}", stage="exports")
    exact = len(contents.json("airflow/variables_exact.json"))
    if exact != manifest.exports.variables:
        raise IntegrityError("airflow/variables_exact.json does not hold every variable", stage="exports")
    report.passed("exports", json.dumps(expected_counts, sort_keys=True))


def _deep(cfg: Config, manifest: Manifest, pg_restore: str, dump: Path, spool: Path, scratch_dsn: str,
          report: VerifyReport) -> None:
    password = target_password(cfg)
    name = f"afbackup_verify_{secrets.token_hex(4)}"
    dsn = make_conninfo(scratch_dsn, dbname=name)
    schema = manifest.postgres.schema_name
    state = target.inspect_target(dsn, password, schema, cfg.database.connect_timeout)
    target.prepare_target(state, password, schema, cfg.database.connect_timeout)
    try:
        toc = target.read_toc(pg_restore, dump)
        target.load_dump(pg_restore, dsn, password, dump, toc, spool, schema, cfg.restore.jobs,
                         cfg.database.connect_timeout)
        with connect(dsn, password, cfg.database.connect_timeout) as conn:
            findings = check_restored(conn, schema, manifest.row_counts)
        if findings:
            raise IntegrityError("the restored scratch database differs from the manifest: "
                                 + "; ".join(str(f) for f in findings[:10]), stage="deep")
        report.passed("deep", f"restored into {name} on {state.server}: {len(manifest.row_counts)} tables, "
                              f"{sum(manifest.row_counts.values())} rows and all sequences match")
    finally:
        target.drop_database(state, password, cfg.database.connect_timeout)
