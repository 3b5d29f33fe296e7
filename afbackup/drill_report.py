"""Drill reports for people and CI: JSON (everything), Markdown (the summary), JUnit XML (one case per check)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

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
        "| check | result | time | detail |",
        "|---|---|---|---|",
    ]
    for check in report.checks:
        result = {True: "pass", False: "**FAIL**", None: "skipped"}[check.ok]
        detail = check.detail.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {check.name} | {result} | {check.seconds:.1f} s | {detail} |")
    return "\n".join(lines) + "\n"


def junit(report: DrillReport) -> ET.Element:
    failures = sum(1 for c in report.checks if c.ok is False)
    skipped = sum(1 for c in report.checks if c.ok is None)
    suite = ET.Element("testsuite", name="afbackup drill", tests=str(len(report.checks)),
                       failures=str(failures), errors="0", skipped=str(skipped),
                       time=f"{sum(c.seconds for c in report.checks):.3f}", timestamp=report.started_at)
    props = ET.SubElement(suite, "properties")
    for name, value in (("backup_id", report.backup_id), ("rto_seconds", report.rto_seconds),
                        ("rto_live_seconds", report.rto_live_seconds), ("rpo_seconds", report.rpo_seconds)):
        ET.SubElement(props, "property", name=name, value=str(value))
    for check in report.checks:
        case = ET.SubElement(suite, "testcase", classname="afbackup.drill", name=check.name,
                             time=f"{check.seconds:.3f}")
        if check.ok is False:
            ET.SubElement(case, "failure", message=check.detail[:500]).text = check.detail
        elif check.ok is None:
            ET.SubElement(case, "skipped", message=check.detail)
        else:
            ET.SubElement(case, "system-out").text = check.detail
    return suite
