"""``afbackup verify``: integrity check of one backup; ``--deep`` also restores it into a scratch DB."""

from __future__ import annotations

import click

from afbackup.cli.context import AppContext, dsn_option, emit, emit_json, pass_app
from afbackup.progress import Progress
from afbackup.verify import run_verify


@click.command()
@click.argument("backup_ref", metavar="[BACKUP]", default="latest")
@click.option("--deep", is_flag=True, help="Also restore into a scratch database and compare (dropped afterwards).")
@click.option("--scratch-dsn", metavar="DSN", default="", callback=dsn_option,
              help="Server for --deep's scratch database.")
@click.option("--source-deployment", metavar="NAME", default="",
              help="Accept a backup of this deployment ([backup] name of its source): a deliberate migration.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report.")
@pass_app
def verify(app: AppContext, backup_ref: str, deep: bool, scratch_dsn: str, as_json: bool,
           source_deployment: str) -> int:
    """Prove a backup restorable: checksums, decryption, every member, the dump, the exports."""
    report = run_verify(app.settings(), backup_ref, deep=deep, scratch_dsn=scratch_dsn, progress=Progress("verify"),
                        source_deployment=source_deployment)
    app.record(backup_id=report.backup_id or None)
    if as_json:
        emit_json(report.as_dict())
    else:
        for check in report.checks:
            emit(f"{'ok  ' if check['ok'] else 'FAIL'} {check['check']:<9} {check['detail']}")
        emit(f"backup {report.backup_id or backup_ref}: {'VERIFIED' if report.ok else 'FAILED'} "
             f"in {report.seconds:.1f}s")
    if not report.ok:
        app.fail(report.error, report.exit_code)
    return 0
