"""The unit tier is enforced: a test that starts PostgreSQL or Airflow without saying so fails loudly there.

Runs a throwaway test file in a child pytest with ``--unit`` and this repository's conftest and settings,
exactly as ``make unit`` would collect it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROBE = '''
import pytest

from tests.harness.airflow_env import ensure_airflow
from tests.harness.pg import PostgresServer


def test_starts_postgres_but_is_not_marked():
    with PostgresServer():
        pass


def test_installs_airflow_but_is_not_marked():
    ensure_airflow("3.3.2")


def test_uses_the_environment(env):
    raise AssertionError("must be deselected in the unit tier, never run")


@pytest.mark.integration
def test_marked_integration():
    raise AssertionError("must be deselected in the unit tier, never run")


def test_pure():
    assert True
'''


def run_unit_tier(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "-c", str(REPO / "pyproject.toml"), "-p", "tests.conftest",
                           "-p", "no:cacheprovider", "-p", "no:xdist", "-q", "--unit", "-rA", str(path)],
                          capture_output=True, text=True, cwd=REPO, timeout=120)


def test_unit_tier_deselects_integration_tests_and_fails_loudly_on_heavy_components(tmp_path):
    # GIVEN a test file mixing a pure test, marked/fixture-selected integration tests, and two unmarked
    # tests that start PostgreSQL and install Airflow
    probe = tmp_path / "test_probe.py"
    probe.write_text(textwrap.dedent(PROBE))
    # WHEN it runs in the unit tier
    done = run_unit_tier(probe)
    out = done.stdout + done.stderr
    # THEN the integration tests were deselected, the pure one passed, and each unmarked heavy test failed
    # with a message saying what it needed and what to do
    assert "2 failed, 1 passed, 2 deselected" in out, out
    assert "PASSED ::test_pure" in out
    assert "FAILED ::test_starts_postgres_but_is_not_marked - tests.harness.tier.TierVio" in out
    assert "FAILED ::test_installs_airflow_but_is_not_marked - tests.harness.tier.TierVio" in out
    assert "needs a PostgreSQL server, which the unit tier (make unit) does not start" in out
    assert "needs the Airflow 3.3.2 virtualenv" in out
    assert "mark it @pytest.mark.integration" in out
    assert done.returncode == 1
