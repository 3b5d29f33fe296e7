"""Which module may depend on which: pinned, so the tangles that were removed do not come back.

Imports are read from the source (every ``import`` statement, also inside functions and
``if TYPE_CHECKING:`` blocks): a dependency that only the type checker follows is still one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import afbackup

PACKAGE = Path(afbackup.__file__).parent


def imports_of(module: str) -> set[str]:
    """Every module named by an import statement of ``module`` (relative imports resolved)."""
    path = PACKAGE.joinpath(*module.split(".")[1:]).with_suffix(".py")
    if not path.exists():
        path = path.with_suffix("") / "__init__.py"
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(module.split(".")[: -node.level] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize(("module", "forbidden"), [
    ("afbackup.metrics", "afbackup.notify"),  # the Pushgateway client is below the notifier
    ("afbackup.check", "afbackup.prune"),  # durations are formatted by afbackup.config.units
    ("afbackup.cli.prune", "afbackup.lock.read_lock"),  # break-lock's store I/O is afbackup.lock.break_lock
    ("afbackup.cli.prune", "afbackup.lock.WRITER_LOCK"),
])
def test_forbidden_dependencies(module, forbidden):
    assert not {name for name in imports_of(module) if name == forbidden or name.startswith(forbidden + ".")}


def test_the_cli_does_not_reach_into_a_backup_run_s_thread_pool():
    # GIVEN every CLI module's source
    for path in sorted((PACKAGE / "cli").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        # THEN none touches a ``.pool`` attribute (BackupRun.close() shuts it down)
        touched = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Attribute) and node.attr == "pool"]
        assert not touched, f"{path.name} lines {touched}"
