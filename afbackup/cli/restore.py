"""``afbackup restore``: the database and/or connections, variables and pools, from a verified backup."""

from __future__ import annotations

import sys

import click

from afbackup.catchup import describe_catchup
from afbackup.cli.context import AppContext, dsn_option, emit, emit_json, pass_app
from afbackup.errors import UsageError
from afbackup.inflight import DEFAULT_POLICY, POLICIES, describe_in_flight
from afbackup.progress import Progress
from afbackup.restore import RestoreOptions, run_restore
from afbackup.restore.plan import parse_parts


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        raise UsageError("a destructive restore needs --yes when not run interactively", hint=question)
    return click.confirm(question, default=False, err=True)


@click.command()
@click.argument("backup_ref", metavar="[BACKUP]", default="latest")
@click.option("--target-dsn", required=True, metavar="DSN", callback=dsn_option,
              help="Database to restore into (created if missing).")
@click.option("--only", "only", metavar="PART,…", help="db, connections, variables, pools (default: all).")
@click.option("--clean", is_flag=True, help="Allow a non-empty target: replace it (atomic swap, previous kept).")
@click.option("--yes", is_flag=True, help="Do not ask before destructive steps.")
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option("--pause-dags/--no-pause-dags", default=True, show_default=True,
              help="Leave every DAG paused and record the active ones for `afbackup unpause` (the default).")
@click.option("--in-flight", "in_flight", type=click.Choice(POLICIES), default=DEFAULT_POLICY, show_default=True,
              help="What to do with work in flight at backup time (docs/restore.md).")
@click.option("--migrate", is_flag=True, help="Run `airflow db migrate` when the backup's schema is older.")
@click.option("--jobs", type=click.IntRange(1, 32), default=None, help="Parallel pg_restore jobs ([restore] jobs).")
@click.option("--source-deployment", metavar="NAME", default="",
              help="Accept a backup of this deployment ([backup] name of its source): a deliberate migration.")
@click.option("--terminate-sessions", is_flag=True, help="End other sessions on the target instead of refusing.")
@click.option("--drop-previous", is_flag=True, help="Drop the replaced database after a successful swap.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report.")
@pass_app
def restore(app: AppContext, backup_ref: str, target_dsn: str, only: str | None, clean: bool, yes: bool,
            dry_run: bool, pause_dags: bool, in_flight: str, migrate: bool, jobs: int | None, source_deployment: str,
            terminate_sessions: bool, drop_previous: bool, as_json: bool) -> int:
    """Restore a backup (an id or `latest`): verified before anything reaches the target."""
    options = RestoreOptions(backup=backup_ref, target_dsn=target_dsn, parts=parse_parts(only), clean=clean,
                             yes=yes, dry_run=dry_run, pause_dags=pause_dags, migrate=migrate, jobs=jobs,
                             in_flight=in_flight, source_deployment=source_deployment,
                             terminate_sessions=terminate_sessions, drop_previous=drop_previous)
    report = run_restore(app.settings(), options, confirm=_confirm, progress=Progress("restore"))
    if as_json:
        emit_json(report.as_dict())
        return 0
    if report.dry_run:
        emit("plan (--dry-run, nothing changed):")
        for line in report.plan:
            emit(f"  - {line}")
        return 0
    for line in report.steps:
        emit(f"  - {line}")
    if report.reconciled is not None:
        for line in describe_in_flight(report.in_flight, options.in_flight) + describe_catchup(
                report.catchup, options.pause_dags):
            emit(f"  {line}")
    for warning in (report.environment or {}).get("warnings", []):
        emit(f"  WARNING: {warning}")
    if report.previous_database:
        emit(f"the previous database is kept as {report.previous_database}: drop it with "
             "`afbackup restore-cleanup --target-dsn … --yes` once the restore is accepted")
    if report.paused_dags:
        emit(f"paused DAGs that were active: {', '.join(report.paused_dags)} (`afbackup unpause --target-dsn "
             f"DSN` unpauses exactly these)")
    emit(f"restored backup {report.backup_id} into {report.target} in {report.seconds:.1f}s")
    return 0
