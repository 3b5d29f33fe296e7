"""``afbackup drill``: verify + restore into a scratch DB + checks + RTO/RPO, with reports for CI."""

from __future__ import annotations

import click

from afbackup.cli.context import AppContext, dsn_option, duration, emit, emit_json, pass_app
from afbackup.drill import DrillOptions, run_drill
from afbackup.drill_report import markdown, write_reports
from afbackup.errors import ExitCode
from afbackup.progress import Progress


@click.command()
@click.argument("backup_ref", metavar="[BACKUP]", default="latest")
@click.option("--scratch-dsn", metavar="DSN", default="", callback=dsn_option,
              help="Server for the scratch database ([drill] scratch_dsn).")
@click.option("--report", "report_dir", metavar="DIR", help="Write drill-report.json, .md and drill-junit.xml here.")
@click.option("--rto-target", callback=duration, metavar="DURATION", help="Fail when recovery takes longer.")
@click.option("--rpo-target", callback=duration, metavar="DURATION", help="Fail when the backup is older.")
@click.option("--live", is_flag=True,
              help="Start Airflow on the restored database and run the smoke test with the canary DAG.")
@click.option("--rto-live-target", callback=duration, metavar="DURATION",
              help="With --live: fail when the first successful task comes later.")
@click.option("--fernet-key-file", metavar="FILE", default="",
              help="The escrowed source Fernet key: a restored connection must decrypt with it.")
@click.option("--keep", is_flag=True, help="Keep the scratch database (default: drop it).")
@click.option("--source-deployment", metavar="NAME", default="",
              help="Accept a backup of this deployment ([backup] name of its source): a deliberate migration.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report.")
@pass_app
def drill(app: AppContext, backup_ref: str, scratch_dsn: str, report_dir: str | None, rto_target: float | None,
          rpo_target: float | None, live: bool, rto_live_target: float | None, fernet_key_file: str, keep: bool,
          as_json: bool, source_deployment: str) -> int:
    """Rehearse a disaster recovery; exit 10 when a check fails or a target is missed."""
    options = DrillOptions(backup=backup_ref, scratch_dsn=scratch_dsn, keep=keep, rto_target=rto_target,
                           rpo_target=rpo_target, fernet_key_file=fernet_key_file, live=live,
                           rto_live_target=rto_live_target, source_deployment=source_deployment)
    report = run_drill(app.settings(), options, Progress("drill"))
    measured = (("rto_seconds", report.rto_seconds), ("rpo_seconds", report.rpo_seconds),
                ("rto_live_seconds", report.rto_live_seconds), ("rto_target_seconds", report.rto_target),
                ("rto_live_target_seconds", report.rto_live_target))
    app.record(backup_id=report.backup_id or None, extra={k: v for k, v in measured if v is not None})
    if report_dir:
        write_reports(report, report_dir)
    emit_json(report.as_dict()) if as_json else emit(markdown(report))
    if not report.ok:
        failed = next(check for check in report.checks if check.ok is False)
        app.fail(f"drill failed: {failed.name}: {failed.detail}", ExitCode.DRILL_FAILED)
    return 0
