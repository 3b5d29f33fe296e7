"""Shared fixtures: one embedded environment per test session (per xdist worker), hermetic env vars."""

from __future__ import annotations

import os

import pytest

from tests.harness.env import Environment


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


@pytest.fixture(scope="session")
def env(tmp_path_factory):
    """PostgreSQL + moto S3 + GPG keys; Airflow DBs are seeded on first use per version."""
    with Environment(str(tmp_path_factory.mktemp("env"))) as environment:
        yield environment


@pytest.fixture(params=["2", "3"], ids=["airflow2", "airflow3"])
def airflow_major(request) -> str:
    return request.param
