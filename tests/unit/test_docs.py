"""The documentation keeps up with the code: every config key is documented, the exit-code table matches."""

from __future__ import annotations

import re
from pathlib import Path

from afbackup.config import iter_keys
from afbackup.errors import ExitCode

REPO = Path(__file__).resolve().parents[2]


def test_every_config_key_is_documented():
    doc = (REPO / "docs" / "configuration.md").read_text()
    sections = {}
    current = None
    for line in doc.splitlines():
        heading = re.match(r"^#+ `\[(.+)\]`", line)
        if heading:
            current = heading.group(1)
        row = re.match(r"^\| `([a-z_]+)` \|", line)
        if row and current:
            sections.setdefault(current, set()).add(row.group(1))
    documented = {f"{section}.{key}" for section, keys in sections.items() for key in keys}
    assert {key for key, _ in iter_keys()} == documented


def test_readme_exit_code_table_matches_the_code():
    readme = (REPO / "README.md").read_text()
    rows = dict(re.findall(r"^\| (\d+) \| (.+) \|$", readme, re.M))
    expected = {code.value for code in ExitCode if code not in (ExitCode.SIGNAL_BASE,)}
    assert {int(code) for code in rows} == expected


def test_readme_starts_with_the_two_commands():
    head = "\n".join((REPO / "README.md").read_text().splitlines()[:30])
    assert "make demo" in head and "make test" in head
    assert "make test" in (REPO / ".ci" / "run").read_text()
