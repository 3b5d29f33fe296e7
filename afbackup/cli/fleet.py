"""``afbackup fleet status``: one line per deployment of the config file, worst first; exit with the worst code."""

from __future__ import annotations

import click

from afbackup.cli.context import AppContext, emit, emit_json, pass_app
from afbackup.config import load_fleet
from afbackup.config.load import select_fleet
from afbackup.config.units import format_bytes
from afbackup.fleet import DeploymentStatus, fleet_status, worst


@click.group()
def fleet() -> None:
    """Every deployment of the configuration at once."""


@fleet.command("status")
@click.option("--json", "as_json", is_flag=True, help='Print {"deployments": [...], "exit_code"}.')
@click.option("--workers", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Deployments read in parallel.")
@pass_app
def status(app: AppContext, as_json: bool, workers: int) -> int:
    """Newest trusted backup and its age, backup size/duration trend, last drill, lock, problems."""
    fleet_settings = select_fleet(load_fleet(app.config_path), app.deployment)
    statuses = fleet_status(fleet_settings, app.clock.now(), workers=workers)
    code = worst(s.exit_code for s in statuses)
    if as_json:
        emit_json({"deployments": [s.as_dict() for s in statuses], "exit_code": code})
    else:
        for line in render_text(statuses):
            emit(line)
    failing = [s.facts.name for s in statuses if not s.ok]
    if failing:
        app.fail(f"fleet status: {len(failing)} of {len(statuses)} deployment(s) failing: {', '.join(failing)}",
                 code)
    return 0


def render_text(statuses: list[DeploymentStatus]) -> list[str]:
    width = max([len(s.facts.name) for s in statuses] + [10])
    lines = [f"{'STATE':<8} {'DEPLOYMENT':<{width}} {'NEWEST BACKUP':<26} {'AGE':>7} {'MAX':>6} {'SIZE':>10} "
             f"{'TREND':>6} {'DURATION':>8} {'DRILL':<24} {'LOCK':<6} PROBLEMS"]
    for s in statuses:
        d = s.as_dict()
        newest = s.facts.history[0] if s.facts.history else None
        state = "ok" if s.ok else f"FAIL({s.exit_code})"
        lines.append(" ".join([
            f"{state:<8}", f"{s.facts.name:<{width}}", f"{d['newest_backup_id'] or '-':<26}",
            f"{_hours(d['age_seconds']):>7}", f"{_hours(d['max_age_seconds']):>6}",
            f"{format_bytes(newest.size) if newest and newest.size is not None else '-':>10}",
            f"{_percent(d['size_trend']):>6}",
            f"{_seconds(newest.duration_seconds if newest else None):>8}",
            f"{_drill(s):<24}", f"{_lock(d['lock']):<6}",
            "; ".join(d["problems"] + d["warnings"]) or "-"]))
    return lines


def _hours(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 3600:.1f}h"


def _seconds(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.0f}s"


def _percent(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:+.0%}"


def _drill(s: DeploymentStatus) -> str:
    drill = s.facts.drill
    if drill is None:
        return "none"
    rto = "-" if drill.rto_seconds is None else f"{drill.rto_seconds:.0f}s"
    live = "-" if drill.rto_live_seconds is None else f"{drill.rto_live_seconds:.0f}s"
    rpo = "-" if drill.rpo_seconds is None else _hours(drill.rpo_seconds)
    return f"{'ok' if drill.ok else 'FAILED'} rto {rto}/{live} rpo {rpo}"


def _lock(lock: dict) -> str:
    if not lock["held"]:
        return "free"
    return "stale" if lock["stale"] else "held"
