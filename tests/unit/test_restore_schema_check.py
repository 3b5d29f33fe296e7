"""The target Airflow's answer, decided: same schema, older (needs --migrate), newer (refused)."""

from __future__ import annotations

import pytest

from afbackup.errors import PreflightError
from afbackup.restore.airflow_steps import TargetAirflow, check_schema

TARGET = TargetAirflow("ccc", frozenset({"aaa", "bbb", "ccc"}), ("f1",), {"auth_manager": None})


def test_the_same_revision_restores_as_it_is_and_carries_the_targets_facts():
    check = check_schema(TARGET, "ccc", migrate=False)
    assert check.action == "same" and check.target_fingerprints == ("f1",) and check.environment == TARGET.environment


def test_an_older_revision_needs_migrate():
    with pytest.raises(PreflightError, match="older than the target Airflow's") as refused:
        check_schema(TARGET, "aaa", migrate=False)
    assert "--migrate" in (refused.value.hint or "")
    assert check_schema(TARGET, "aaa", migrate=True).action == "migrate"


def test_a_revision_the_target_does_not_know_is_a_newer_airflow_and_refused_even_with_migrate():
    with pytest.raises(PreflightError, match="newer Airflow"):
        check_schema(TARGET, "zzz", migrate=True)
