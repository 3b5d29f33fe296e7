"""``afbackup unpause``: after a full restore, unpause exactly the DAGs that were active (operator's call)."""

from __future__ import annotations

import sys

import click

from afbackup.cli.context import AppContext, dsn_option, emit, emit_json, pass_app
from afbackup.errors import PreflightError, UsageError
from afbackup.restore.pause import read_record, unpause_recorded
from afbackup.sources.postgres import target_password


@click.command()
@click.option("--target-dsn", required=True, metavar="DSN", callback=dsn_option,
              help="The restored database.")
@click.option("--yes", is_flag=True, help="Do not ask before unpausing.")
@click.option("--dry-run", is_flag=True, help="Show which DAGs would be unpaused; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report.")
@pass_app
def unpause(app: AppContext, target_dsn: str, yes: bool, dry_run: bool, as_json: bool) -> int:
    """Unpause the DAGs a restore paused (those active at backup time), and nothing else."""
    cfg = app.settings().config
    password = target_password(cfg)
    timeout = cfg.database.connect_timeout
    record = read_record(target_dsn, password, timeout)
    if record is None:
        raise PreflightError("this database holds no record of DAGs paused by a restore",
                             hint="it was not restored by afbackup with paused DAGs, or was already unpaused")
    pending = [dag for dag in record.dags if dag not in record.already_active]
    unpaused: list[str] = []
    if not dry_run:
        question = (f"Unpause {len(pending)} DAG(s) (active at backup {record.backup_id}): the scheduler starts "
                    "their runs, including the catch-up shown by the restore plan. Continue?")
        if not yes and not _confirm(question):
            raise UsageError("unpause cancelled: nothing was changed")
        unpaused = unpause_recorded(target_dsn, password, timeout)
    if as_json:
        emit_json({"backup_id": record.backup_id, "paused_at": record.paused_at, "dags": pending,
                   "missing": list(record.missing), "already_active": list(record.already_active),
                   "unpaused": unpaused, "dry_run": dry_run})
        return 0
    shown = pending if dry_run else unpaused
    emit(f"{'would unpause' if dry_run else 'unpaused'} {len(shown)} DAG(s) recorded by the restore of backup "
         f"{record.backup_id}: {', '.join(shown) or '-'}")
    if record.missing:
        emit(f"  not in the database any more (skipped): {', '.join(record.missing)}")
    return 0


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        raise UsageError("unpause needs --yes when not run interactively", hint=question)
    return click.confirm(question, default=False, err=True)
