"""``afbackup smoke`` reports: Markdown (also the text output), JSON, JUnit XML (one case per check)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from afbackup.check_report import junit_suite, markdown_table
from afbackup.smoke import SmokeReport

NAMES = {"json": "smoke-report.json", "markdown": "smoke-report.md", "junit": "smoke-junit.xml"}


def markdown(report: SmokeReport) -> str:
    verdict = "PASSED" if report.ok else "FAILED"
    lines = [f"# afbackup smoke test: {verdict}", "",
             f"- Airflow: {report.url} (Airflow {report.airflow_major or '?'})",
             f"- backup: `{report.backup_id or '-'}`", f"- started: {report.started_at}"]
    if report.canary:
        lines.append(f"- canary run: `{report.canary.get('run_id')}` {report.canary.get('state')}"
                     f" in {report.canary.get('seconds')} s")
    lines += ["", *markdown_table(report.checks)]
    if report.stuck:
        lines += ["", "## Stuck work", "", "| state | DAG | task | run | pool | since |", "|---|---|---|---|---|---|"]
        lines += [f"| {s.state} | {s.dag_id} | {s.task_id} | {s.run_id} | {s.pool} | {s.since} |" for s in report.stuck]
    if report.import_errors:
        lines += ["", "## Import errors", "", *(f"- `{name}`" for name in report.import_errors)]
    return "\n".join(lines) + "\n"


def junit(report: SmokeReport) -> ET.Element:
    return junit_suite("afbackup smoke", "afbackup.smoke", report.checks, report.started_at,
                       {"url": report.url, "airflow_major": report.airflow_major, "backup_id": report.backup_id})


def write_reports(report: SmokeReport, directory: str | Path) -> dict[str, Path]:
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = {kind: out / name for kind, name in NAMES.items()}
    paths["json"].write_text(report.to_json() + "\n", encoding="utf-8")
    paths["markdown"].write_text(markdown(report), encoding="utf-8")
    ET.ElementTree(junit(report)).write(paths["junit"], encoding="utf-8", xml_declaration=True)
    return paths
