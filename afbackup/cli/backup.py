"""``afbackup backup``: one backup; prints its id (or a JSON summary) on stdout."""

from __future__ import annotations

import logging
from typing import Any

import click

from afbackup.backup import BackupRun, prepare_backup, run_backup
from afbackup.cli.context import AppContext, emit, emit_json, pass_app
from afbackup.config.units import format_bytes
from afbackup.errors import AfbackupError, UsageError
from afbackup.log import redact
from afbackup.progress import Progress
from afbackup.sources.postgres import pg_dump_argv


def _labels(values: tuple[str, ...]) -> dict[str, str]:
    labels = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--label {item!r} is not KEY=VALUE")
        labels[key] = value
    return labels


@click.command()
@click.option("--dry-run", is_flag=True, help="Check everything and print the plan; write nothing.")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="Attach a label (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary instead of the backup id.")
@pass_app
def backup(app: AppContext, dry_run: bool, labels: tuple[str, ...], as_json: bool) -> int:
    """Back up the Airflow metadata DB, connections, variables and pools."""
    settings = app.settings()
    run = prepare_backup(settings, labels=_labels(labels), progress=Progress("backup"), start_exports=not dry_run)
    if dry_run:
        run.close()
        plan = _plan(run)
        emit_json(plan) if as_json else emit(_plan_text(plan))
        return 0
    result = run_backup(run)
    app.record(backup_id=result.backup_id, bytes=result.archive_size,
               rows=sum(result.manifest.row_counts.values()),
               extra={"max_age_seconds": settings.config.check.max_age, **_key_expiry(run)})
    if as_json:
        emit_json({"backup_id": result.backup_id, "size": result.archive_size,
                   "duration_seconds": round(result.duration, 3), "manifest": result.manifest.raw})
    else:
        emit(result.backup_id)
    return 0


def _key_expiry(run: BackupRun) -> dict[str, float]:
    """The signing key's expiry, for the AfbackupSigningKeyExpiring alert (also pushed by `check`)."""
    signer = run.cfg.encryption.sign_with
    if not signer:
        return {}
    try:
        expires = run.gpg.key_expires_at(signer)
    except AfbackupError as exc:  # the backup is done; a metric must not change its result
        logging.getLogger(__name__).warning("could not read the signing key's expiry: %s", exc.one_line())
        return {}
    return {"signing_key_expiry_timestamp_seconds": expires.timestamp()} if expires else {}


def _plan(run: BackupRun) -> dict[str, Any]:
    scope, plan = run.plan.scope, run.plan
    argv = pg_dump_argv(plan.pg_dump.path, plan.dsn, scope, lock_wait_timeout=run.cfg.database.lock_wait_timeout,
                        snapshot="<exported snapshot>")
    return {
        "backup_id": run.backup_id, "storage": run.store.describe(),
        "airflow": plan.schema.as_dict(), "database": plan.catalog.database, "schema": scope.schema,
        "data_tables": list(scope.data_tables), "schema_only_tables": list(scope.schema_only_tables),
        "added_for_fk": {k: list(v) for k, v in scope.added_for_fk.items()},
        "pg_dump": redact(" ".join(argv)), "exports": run.agent is not None,
        "recipients": list(run.cfg.encryption.recipients), "signer": run.cfg.encryption.sign_with or None,
    }


def _plan_text(plan: dict[str, Any]) -> str:
    lines = [
        f"would back up {plan['database']} (schema {plan['schema']}) to {plan['storage']}",
        f"  tables with rows ({len(plan['data_tables'])}): {', '.join(plan['data_tables'])}",
        f"  schema only ({len(plan['schema_only_tables'])}): {', '.join(plan['schema_only_tables']) or '-'}",
    ]
    for parent, children in plan["added_for_fk"].items():
        lines.append(f"  added {parent} (referenced by {', '.join(children)})")
    lines.append(f"  exports through the executor: {'yes' if plan['exports'] else 'no (executor = none)'}")
    lines.append(f"  encrypted to: {', '.join(plan['recipients'])}; signed by: {plan['signer'] or '-'}")
    lines.append(f"  {plan['pg_dump']}")
    return "\n".join(lines)


__all__ = ["backup", "format_bytes"]
