"""``afbackup check``: preflight + freshness; exit 0 healthy, 4 preflight failed, 8 stale or missing backup."""

from __future__ import annotations

import click

from afbackup.check import CheckEntry, CheckReport, run_check
from afbackup.cli.context import AppContext, duration, emit, emit_json, pass_app
from afbackup.errors import ConfigError


@click.command()
@click.option("--max-age", metavar="DURATION", callback=duration,
              help="Fail (exit 8) when the newest complete backup is older (e.g. 26h). Default: [check] max_age.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_app
def check(app: AppContext, max_age: float | None, as_json: bool) -> int:
    """Preflight (tools, keys, bucket, database, executor, lock) and freshness of the newest backup."""
    try:
        settings = app.settings({"check.max_age": max_age} if max_age is not None else None)
    except ConfigError as exc:  # the config must load, like for every command: exit 3, still with a report
        report = CheckReport(max_age or 0.0, [CheckEntry("config", "preflight", "fail", exc.one_line())])
        _print(report, as_json)
        raise
    report = run_check(settings, settings.config.check.max_age, now=app.clock.now)
    if report.signing_key_expires_at is not None:
        app.record(extra={"signing_key_expiry_timestamp_seconds": report.signing_key_expires_at.timestamp()})
    _print(report, as_json)
    if report.exit_code:
        app.fail(f"check failed: {', '.join(report.failed)}", report.exit_code)
    return 0


def _print(report: CheckReport, as_json: bool) -> None:
    if as_json:
        doc = report.as_dict()
        if any(e.name == "config" and not e.ok for e in report.entries):
            doc.update(ok=False, exit_code=3)
        emit_json(doc)
        return
    for entry in report.entries:
        emit(f"{entry.status.upper() if entry.status != 'ok' else 'ok':<5} {entry.name:<11} {entry.detail}")
