"""Shared fixtures: one embedded environment per test session (per xdist worker), hermetic env vars.

Also the tiers (CONTRIBUTING.md, "Which tier to run when"): a test is ``integration`` when it lives in
tests/e2e, uses a fixture below that starts PostgreSQL or Airflow, or says so with
``@pytest.mark.integration``; every other test is in the unit tier. ``--unit`` (``make unit``) runs only
the unit tier and arms tests/harness/tier.py, so a unit test that starts PostgreSQL, Airflow, the
Pushgateway or a tool from the tools venv fails loudly instead of slowing the tier down.
"""

from __future__ import annotations

import logging
import os

import pytest

from afbackup.log import THIRD_PARTY_LOGGERS
from tests.harness import tier
from tests.harness.env import Environment

# Fixtures of this file that start a component the unit tier does not have.
INTEGRATION_FIXTURES = frozenset({"env", "airflow_major"})


def pytest_addoption(parser):
    parser.addoption("--unit", action="store_true", default=False,
                     help="run only the unit tier: no PostgreSQL server, Airflow venvs, tools venv or Pushgateway")


def pytest_configure(config):
    if config.getoption("--unit"):
        tier.enter_unit_tier()


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.parent.name == "e2e" or INTEGRATION_FIXTURES.intersection(item.fixturenames) \
                or item.get_closest_marker("airflow"):
            item.add_marker(pytest.mark.integration)
        if "airflow_major" in item.fixturenames:
            item.add_marker(pytest.mark.airflow)
    if config.getoption("--unit"):
        unit = [item for item in items if not item.get_closest_marker("integration")]
        config.hook.pytest_deselected(items=[item for item in items if item.get_closest_marker("integration")])
        items[:] = unit


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch, tmp_path):
    """No AFBACKUP_*/AWS_* from the developer's shell; fake AWS credentials; a private HOME."""
    for name in list(os.environ):
        if name.startswith(("AFBACKUP_", "AWS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))


@pytest.fixture(autouse=True)
def _afbackup_logger_reset():
    """Every test starts with logging as an import leaves it: an in-process CLI run (in a test or in a module
    fixture) gives the ``afbackup`` logger its own handler, no propagation, and silences third-party loggers,
    which would hide later tests' records from ``caplog`` depending on the order tests run in."""
    logger = logging.getLogger("afbackup")
    logger.handlers[:], logger.propagate = [], True
    logger.setLevel(logging.NOTSET)
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)
    yield


@pytest.fixture(scope="session")
def env(tmp_path_factory):
    """PostgreSQL + moto S3 + GPG keys; Airflow DBs are seeded on first use per version."""
    with Environment(str(tmp_path_factory.mktemp("env"))) as environment:
        yield environment


@pytest.fixture(params=["2", "3"], ids=["airflow2", "airflow3"])
def airflow_major(request) -> str:
    return request.param
