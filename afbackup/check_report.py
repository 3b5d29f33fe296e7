"""Named checks and their reports: the Markdown table and the JUnit XML suite (``afbackup smoke``)."""

from __future__ import annotations

import dataclasses
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable

from afbackup.errors import AfbackupError, ExitCode


@dataclasses.dataclass
class Check:
    name: str
    ok: bool | None  # None: skipped (in a drill: an earlier check failed)
    detail: str
    seconds: float = 0.0


def run_check(checks: list[Check], name: str, step: Callable[[], str], *, skip: str = "") -> bool:
    """Run ``step`` as the check ``name``: its return is the detail; an AfbackupError fails it (a credentials
    error, exit 3, is re-raised: no check can pass with a wrong configuration)."""
    if skip:
        checks.append(Check(name, None, skip))
        return False
    started = time.monotonic()
    try:
        detail, ok = step(), True
    except AfbackupError as exc:
        if exc.exit_code == ExitCode.CONFIG:
            raise
        detail, ok = exc.one_line(), False
    checks.append(Check(name, ok, detail, round(time.monotonic() - started, 3)))
    return ok


def markdown_table(checks: list[Check]) -> list[str]:
    lines = ["| check | result | time | detail |", "|---|---|---|---|"]
    for check in checks:
        result = {True: "pass", False: "**FAIL**", None: "skipped"}[check.ok]
        detail = check.detail.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {check.name} | {result} | {check.seconds:.1f} s | {detail} |")
    return lines


def junit_suite(name: str, classname: str, checks: list[Check], timestamp: str,
                properties: dict[str, object]) -> ET.Element:
    failures = sum(1 for c in checks if c.ok is False)
    skipped = sum(1 for c in checks if c.ok is None)
    suite = ET.Element("testsuite", name=name, tests=str(len(checks)), failures=str(failures), errors="0",
                       skipped=str(skipped), time=f"{sum(c.seconds for c in checks):.3f}", timestamp=timestamp)
    props = ET.SubElement(suite, "properties")
    for key, value in properties.items():
        ET.SubElement(props, "property", name=key, value=str(value))
    for check in checks:
        case = ET.SubElement(suite, "testcase", classname=classname, name=check.name, time=f"{check.seconds:.3f}")
        if check.ok is False:
            ET.SubElement(case, "failure", message=check.detail[:500]).text = check.detail
        elif check.ok is None:
            ET.SubElement(case, "skipped", message=check.detail)
        else:
            ET.SubElement(case, "system-out").text = check.detail
    return suite
