"""Drill reports for people and CI: JSON (everything), Markdown (the summary), JUnit XML (one case per check)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from afbackup.check_report import junit_suite, markdown_table
from afbackup.drill import DrillReport, report_json

NAMES = {"json": "drill-report.json", "markdown": "drill-report.md", "junit": "drill-junit.xml"}


def write_reports(report: DrillReport, directory: str | Path) -> dict[str, Path]:
    """Write the three reports into ``directory`` (created if missing); returns their paths."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = {kind: out / name for kind, name in NAMES.items()}
    paths["json"].write_text(report_json(report) + "\n", encoding="utf-8")
    paths["markdown"].write_text(markdown(report), encoding="utf-8")
    ET.ElementTree(junit(report)).write(paths["junit"], encoding="utf-8", xml_declaration=True)
    return paths


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f} s" if value >= 1 else f"{value:.3f} s"


def markdown(report: DrillReport) -> str:
    verdict = "PASSED" if report.ok else "FAILED"
    lines = [
        f"# afbackup DR drill: {verdict}",
        "",
        f"- backup: `{report.backup_id or '-'}`",
        f"- started: {report.started_at}",
        f"- scratch database: {report.scratch or '-'}{' (kept)' if report.kept else ' (dropped)'}",
        f"- **RTO** (start → usable restored database): {_seconds(report.rto_seconds)}"
        f" — target {_seconds(report.rto_target) if report.rto_target else 'none'}",
        *([f"- **RTO live** (start → first successful task on the restored Airflow): "
           f"{_seconds(report.rto_live_seconds)} — target "
           f"{_seconds(report.rto_live_target) if report.rto_live_target else 'none'}"] if report.live else []),
        f"- **RPO** (age of the backup at the start): {_seconds(report.rpo_seconds)}"
        f" — target {_seconds(report.rpo_target) if report.rpo_target else 'none'}",
        "",
        *markdown_table(report.checks),
    ]
    return "\n".join(lines) + "\n"


def junit(report: DrillReport) -> ET.Element:
    return junit_suite("afbackup drill", "afbackup.drill", report.checks, report.started_at,
                       {"backup_id": report.backup_id, "rto_seconds": report.rto_seconds,
                        "rto_live_seconds": report.rto_live_seconds, "rpo_seconds": report.rpo_seconds})
