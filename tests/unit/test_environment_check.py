"""The rule table of restore/environment_check.py: errors stop the restore, warnings are reported."""

from __future__ import annotations

import pytest

from afbackup.errors import PreflightError
from afbackup.restore.environment_check import compare_environment

SOURCE = {"auth_manager": "x.FabAuthManager", "providers": {"apache-airflow-providers-http": "5"},
          "connection_types": {"http": 2, "snowflake": 1}, "bundles": ["dags-folder", "team"]}
TARGET = {"auth_manager": "x.FabAuthManager", "providers": {"apache-airflow-providers-http": "5"},
          "connection_types": ["http"], "bundles": ["dags-folder"], "jwt_secret_set": True,
          "fab": {"head": "bbb", "revisions": ["aaa", "bbb"]}}


def test_a_newer_fab_schema_is_an_error():
    check = compare_environment(SOURCE, "zzz", TARGET, migrate=True)
    assert "newer" in check.errors[0]
    with pytest.raises(PreflightError):
        check.raise_errors()


def test_an_older_fab_schema_needs_migrate():
    assert "--migrate" in compare_environment(SOURCE, "aaa", TARGET, migrate=False).errors[0]
    check = compare_environment(SOURCE, "aaa", TARGET, migrate=True)
    assert check.errors == () and check.fab_action == "migrate"
    assert compare_environment(SOURCE, "bbb", TARGET, migrate=False).fab_action == "same"


def test_deployment_mismatches_are_warnings():
    target = dict(TARGET, auth_manager="y.SimpleAuthManager", providers={}, jwt_secret_set=False)
    check = compare_environment(SOURCE, None, target, migrate=False)
    text = " | ".join(check.warnings)
    assert check.errors == ()
    for expected in ("snowflake (1 connection(s))", "team", "auth manager differs", "jwt_secret",
                     "apache-airflow-providers-http"):
        assert expected in text


def test_nothing_to_compare_is_said():
    assert "not compared" in compare_environment(SOURCE, None, None, migrate=False).warnings[0]
    assert compare_environment(SOURCE, None, TARGET, migrate=False).warnings == (
        "connection type(s) with no provider on the target: snowflake (1 connection(s)): tasks using them fail; "
        "install the provider package(s)",
        "DAG bundle(s) named in the database but not configured on the target: team: their DAGs are not parsed "
        "nor run; add them to [dag_processor] dag_bundle_config_list")
