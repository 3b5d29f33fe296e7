"""``afbackup smoke``: check that a running (restored) Airflow works, against the backup it came from."""

from __future__ import annotations

import click

from afbackup.cli.context import AppContext, duration, emit, emit_json, pass_app
from afbackup.errors import ExitCode


@click.command()
@click.argument("backup_ref", metavar="[BACKUP]", default="latest")
@click.option("--url", default="", help="The Airflow webserver / api-server URL ([airflow.api] url).")
@click.option("--no-backup", is_flag=True, help="Do not read the backup (the DAG count is then not compared).")
@click.option("--dsn", default="", metavar="DSN",
              help="The restored metadata database, for task heartbeats (default: [database] dsn).")
@click.option("--canary", is_flag=True, help="Also trigger the canary DAG and wait for its run.")
@click.option("--queued-threshold", callback=duration, metavar="DURATION",
              help="Queued longer than this is stuck ([smoke] queued_threshold, default 10m).")
@click.option("--heartbeat-timeout", callback=duration, metavar="DURATION",
              help="Running without a heartbeat this long is stuck ([smoke] heartbeat_timeout, default 5m).")
@click.option("--report", "report_dir", metavar="DIR", help="Write smoke-report.json, .md and smoke-junit.xml here.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report.")
@pass_app
def smoke(app: AppContext, backup_ref: str, url: str, no_backup: bool, dsn: str, canary: bool,
          queued_threshold: float | None, heartbeat_timeout: float | None, report_dir: str | None,
          as_json: bool) -> int:
    """Check a running Airflow: health, DAGs, stuck work, canary; exit 10 when a check fails."""
    from afbackup.airflow_api import AirflowApi
    from afbackup.smoke import run_smoke
    from afbackup.smoke_options import options_from
    from afbackup.smoke_report import markdown, write_reports

    settings = app.settings()
    options = options_from(settings.config, backup_ref=None if no_backup else backup_ref, dsn=dsn, canary=canary,
                           queued_threshold=queued_threshold, heartbeat_timeout=heartbeat_timeout)
    api = AirflowApi.from_config(settings.config.airflow.api, url=url)
    try:
        report = run_smoke(api, options)
    finally:
        api.close()
    app.record(backup_id=report.backup_id or None)
    if report_dir:
        write_reports(report, report_dir)
    emit_json(report.as_dict()) if as_json else emit(markdown(report))
    if not report.ok:
        failed = next(check for check in report.checks if check.ok is False)
        app.fail(f"smoke test failed: {failed.name}: {failed.detail}", ExitCode.DRILL_FAILED)
    return 0
