"""Small pure parts of smoke / drill --live: config validation, the canary's backoff, URLs, the live RTO target."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from afbackup.config.model import AirflowApiConfig
from afbackup.drill import DrillReport, _targets
from afbackup.errors import DrillFailed
from afbackup.live_airflow import sqlalchemy_url
from afbackup.smoke_canary import delays


def test_api_url_must_be_http_and_carry_no_credentials():
    assert AirflowApiConfig(url="https://airflow.example.com/").url == "https://airflow.example.com"
    with pytest.raises(ValidationError, match="http://HOST:PORT"):
        AirflowApiConfig(url="airflow.example.com")
    with pytest.raises(ValidationError, match="contains credentials"):
        AirflowApiConfig(url="https://admin:secret@airflow.example.com")


def test_only_one_credential_source():
    with pytest.raises(ValidationError, match="only one of airflow.api.password_file, airflow.api.token_env"):
        AirflowApiConfig(url="http://x", username="a", password_file="/p", token_env="T")


def test_canary_polling_backs_off_2_5_10_30_and_stays_within_its_budget():
    assert delays(100) == [2, 5, 10, 30, 30, 23]
    assert delays(5) == [2, 3]
    assert sum(delays(600)) == 600 and max(delays(600)) == 30


def test_sqlalchemy_url_has_no_password_and_keeps_sockets_and_sslmode():
    assert sqlalchemy_url("postgresql://afb@db.internal:6432/scratch?sslmode=require") == \
        "postgresql+psycopg2://afb@db.internal:6432/scratch?sslmode=require"
    assert sqlalchemy_url("host=/run/postgresql dbname=x user=u") == "postgresql+psycopg2://u@/x?host=/run/postgresql"


def _report(**kw) -> DrillReport:
    return DrillReport(rto_seconds=10.0, rpo_seconds=1.0, **kw)


def test_a_missed_live_rto_target_fails_the_drill_and_names_it():
    with pytest.raises(DrillFailed, match="RTO to the first successful task 95.0s > target 60s"):
        _targets(_report(live=True, rto_live_seconds=95.0, rto_live_target=60.0))
    assert "RTO to the first successful task 30.0s (target 60.0)" in _targets(
        _report(live=True, rto_live_seconds=30.0, rto_live_target=60.0))
    assert "first successful task" not in _targets(_report(rto_live_target=60.0))  # not live: no live figure


def test_canary_print_and_install(tmp_path, capsys):
    from afbackup.cli import run

    assert run(["canary", "print"]) == 0
    printed = capsys.readouterr().out
    assert 'dag_id="afbackup_canary"' in printed and "from airflow.sdk import" in printed
    assert run(["canary", "install", "--dags-folder", str(tmp_path / "dags")]) == 0
    assert (tmp_path / "dags" / "afbackup_canary.py").read_text() == printed
    assert not list((tmp_path / "dags").glob(".*"))  # no temporary file left behind


@pytest.fixture
def _restore_logging():
    """run() points the afbackup logger at this test's captured stderr; undo that afterwards."""
    import logging

    root = logging.getLogger("afbackup")
    saved = (list(root.handlers), root.level, root.propagate)
    yield
    root.handlers[:], root.level, root.propagate = saved[0], saved[1], saved[2]


def test_drill_live_without_an_airflow_cli_is_a_config_error_before_anything_runs(tmp_path, capsys,
                                                                                   _restore_logging):
    from afbackup.cli import run

    config = tmp_path / "afbackup.toml"
    config.write_text('[airflow]\nexecutor = "none"\n[storage]\nurl = "file:///nonexistent/store"\n')
    assert run(["--config", str(config), "drill", "--live", "--scratch-dsn", "postgresql://u@127.0.0.1:9/x"]) == 3
    err = capsys.readouterr().err
    assert "ERROR cli: drill --live needs a local Airflow CLI to start" in err and "[drill] airflow_command" in err

