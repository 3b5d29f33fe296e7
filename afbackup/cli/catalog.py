"""``afbackup list`` and ``afbackup show``: the catalog, newest first. No private key needed."""

from __future__ import annotations

import click

from afbackup.catalog import list_backups, resolve_backup
from afbackup.cli.context import AppContext, emit, emit_json, pass_app
from afbackup.config.units import format_bytes
from afbackup.manifest import iso
from afbackup.storage import open_store
from afbackup.trust import Trust


@click.command("list")
@click.option("--all", "show_all", is_flag=True,
              help="Also show untrusted and damaged backups (with the reason) and failed or incomplete attempts.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def list_command(app: AppContext, show_all: bool, as_json: bool) -> int:
    """List trusted complete backups, newest first (everything else too with --all)."""
    cfg = app.settings().config
    store, trust = open_store(cfg.storage), Trust.from_config(cfg)
    records = list_backups(store, include_incomplete=show_all, now=app.clock.now(), trust=trust)
    if as_json:
        emit_json([record.summary() for record in records])
        return 0
    if not records:
        emit(f"no backups in {store.describe()}")
        return 0
    emit(f"{'BACKUP ID':<24} {'STATE':<10} {'FINISHED':<24} {'SIZE':>10}  AIRFLOW  ROWS")
    for record in records:
        s = record.summary()
        size = format_bytes(s["size"]) if "size" in s else "-"
        pin = " (pinned)" if record.pinned else ""
        emit(f"{record.backup_id:<24} {record.state:<10} {s.get('finished_at') or '-':<24} {size:>10}  "
             f"{s.get('airflow') or '-':<8} {s.get('rows', '-')}{pin}"
             + (f"  {record.detail}" if record.detail else ""))
    return 0


@click.command()
@click.argument("backup_ref", metavar="BACKUP", default="latest")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@pass_app
def show(app: AppContext, backup_ref: str, as_json: bool) -> int:
    """Show the manifest of one trusted backup (an id or `latest`). It contains no secrets."""
    cfg = app.settings().config
    store = open_store(cfg.storage)
    record = resolve_backup(store, backup_ref, Trust.from_config(cfg))
    manifest = record.complete_manifest
    if as_json:
        emit_json(manifest.raw)
        return 0
    emit(f"backup     {manifest.backup_id}  ({manifest.status})")
    emit(f"started    {iso(manifest.started_at)}   finished {iso(manifest.finished_at)}")
    airflow, postgres = manifest.airflow, manifest.postgres
    emit(f"airflow    {airflow.cli_version or '?'} (schema {airflow.schema_revision}, Airflow {airflow.major}.x)")
    emit(f"postgres   server {postgres.server_version}, {postgres.pg_dump_version}")
    emit(f"archive    {manifest.archive.key}  {format_bytes(manifest.archive.size)}  sha256 {manifest.archive.sha256}")
    emit(f"deployment {manifest.deployment_name}")
    emit(f"encrypted  to {', '.join(manifest.encryption.recipients)}; signed by {manifest.encryption.signer or '-'}")
    if manifest.exports is not None:
        emit("exports    " + ", ".join(f"{k} {v}" for k, v in sorted(manifest.exports.as_dict().items())))
    missing = manifest.not_captured.missing()
    if missing:
        emit(f"NOT captured: {missing}")
    emit("tables (rows):")
    for table, count in sorted(manifest.row_counts.items()):
        emit(f"  {table:<40} {count:>12}")
    schema_only = manifest.scope.schema_only_tables
    if schema_only:
        emit(f"schema only: {', '.join(schema_only)}")
    return 0
