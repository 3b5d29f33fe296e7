"""``afbackup restore-cleanup``: drop the previous/staging databases a restore left, reopen a closed target."""

from __future__ import annotations

import sys

import click

from afbackup.cli.context import AppContext, dsn_option, emit, emit_json, pass_app
from afbackup.errors import UsageError
from afbackup.restore.cleanup import restore_cleanup as run_cleanup


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        raise UsageError("restore-cleanup drops databases: it needs --yes when not run interactively",
                         hint=question)
    return click.confirm(question, default=False, err=True)


@click.command("restore-cleanup")
@click.option("--target-dsn", required=True, metavar="DSN", callback=dsn_option,
              help="The database given to `afbackup restore`.")
@click.option("--yes", is_flag=True, help="Do not ask before dropping.")
@click.option("--dry-run", is_flag=True, help="List what would be dropped; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report.")
@pass_app
def restore_cleanup(app: AppContext, target_dsn: str, yes: bool, dry_run: bool, as_json: bool) -> int:
    """Drop the databases restore kept or left for a target (previous, staging); reopen a closed target."""
    report = run_cleanup(app.settings().config, target_dsn, yes=yes, dry_run=dry_run, confirm=_confirm)
    if as_json:
        emit_json(report.as_dict())
        return 0
    for item in report.found:
        state = ("would drop" if report.dry_run else "dropped" if item["name"] in report.dropped
                 else "kept (in use)")
        emit(f"  - {item['kind']} database {item['name']}: {state}")
    if report.target_closed:
        emit(f"{report.target} is closed to new connections: "
             + ("reopened" if report.reopened else "would reopen" if report.dry_run else "left closed"))
    if not report.found and not report.target_closed:
        emit(f"nothing to clean up for {report.target} on {report.server}")
    if report.kept:
        app.fail(f"kept {', '.join(report.kept)}: in use", 4)
    return 0
