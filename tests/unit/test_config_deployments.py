"""Deployments in one config file: overlays, precedence, selection, shared prefixes, `config show`.

Precedence: defaults < file top level < file [deployments.X] < AFBACKUP_* env < flags,
and every value names its source (``file F [deployments.X]``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from afbackup.cli import run
from afbackup.config import load_fleet, load_settings
from afbackup.errors import ConfigError

FLEET = '''
[database]
dsn = "postgresql://afbackup@db-shared:5432/airflow"
[storage]
url = "s3://backups/shared"
region = "eu-west-1"
[retention]
keep_last = 7
[check]
max_age = "26h"

[deployments.team-a.storage]
url = "s3://backups/team-a"
[deployments.team-a.retention]
keep_last = 3

[deployments.team-b]
storage = { url = "s3://backups/team-b", region = "us-east-1" }
database = { dsn = "postgresql://afbackup@db-b:5432/airflow" }
'''


@pytest.fixture(autouse=True)
def _restore_logging():
    yield
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)


@pytest.fixture
def fleet_file(tmp_path: Path) -> Path:
    path = tmp_path / "fleet.toml"
    path.write_text(FLEET)
    return path


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_a_deployment_overrides_the_shared_keys_and_keeps_the_rest(fleet_file):
    # WHEN team-a is selected
    settings = load_settings(fleet_file, environ={}, deployment="team-a")
    cfg = settings.config
    # THEN its own keys win, the shared ones fill in, and its name is its backup.name
    assert cfg.storage.url == "s3://backups/team-a"
    assert cfg.retention.keep_last == 3
    assert cfg.storage.region == "eu-west-1"
    assert cfg.database.dsn == "postgresql://afbackup@db-shared:5432/airflow"
    assert cfg.backup.name == "team-a"
    assert settings.deployment == "team-a"
    assert settings.source_of("storage.url") == f"file {fleet_file} [deployments.team-a]"
    assert settings.source_of("backup.name") == f"file {fleet_file} [deployments.team-a]"
    assert settings.source_of("storage.region") == f"file {fleet_file}"
    assert settings.source_of("retention.keep_daily") == "default"


def test_inline_tables_overlay_like_sections(fleet_file):
    cfg = load_settings(fleet_file, environ={}, deployment="team-b").config
    assert (cfg.storage.url, cfg.storage.region) == ("s3://backups/team-b", "us-east-1")
    assert cfg.database.dsn == "postgresql://afbackup@db-b:5432/airflow"
    assert cfg.retention.keep_last == 7  # shared


def test_precedence_defaults_file_overlay_env_flag(fleet_file):
    env = {"AFBACKUP_DEPLOYMENT": "team-a", "AFBACKUP_RETENTION_KEEP_LAST": "5", "AFBACKUP_STORAGE_REGION": "env-r"}
    settings = load_settings(fleet_file, environ=env, overrides={"check.max_age": 3600.0})
    cfg = settings.config
    assert settings.deployment == "team-a"  # selected by the environment
    assert cfg.retention.keep_last == 5  # env beats the overlay
    assert settings.source_of("retention.keep_last") == "env AFBACKUP_RETENTION_KEEP_LAST"
    assert cfg.storage.region == "env-r"  # env beats the top level
    assert cfg.check.max_age == 3600.0 and settings.source_of("check.max_age") == "flag"
    # the argument beats AFBACKUP_DEPLOYMENT
    assert load_settings(fleet_file, environ=env, deployment="team-b").config.backup.name == "team-b"


def test_no_selection_is_an_error_listing_the_names(fleet_file):
    with pytest.raises(ConfigError) as caught:
        load_settings(fleet_file, environ={})
    line = caught.value.one_line()
    assert "none is selected" in line and "team-a, team-b" in line and "--deployment" in line
    assert caught.value.exit_code == 3


def test_unknown_deployment_is_an_error_listing_the_names(fleet_file):
    with pytest.raises(ConfigError) as caught:
        load_settings(fleet_file, environ={}, deployment="team-z")
    assert "'team-z' is not declared" in caught.value.one_line() and "team-a, team-b" in caught.value.one_line()


def test_selecting_a_deployment_in_a_file_without_any_is_an_error(tmp_path):
    path = write(tmp_path, '[storage]\nurl = "s3://b/p"\n')
    with pytest.raises(ConfigError, match="declares no"):
        load_settings(path, environ={}, deployment="team-a")
    # and without a selection the file works as before
    assert load_settings(path, environ={}).deployment is None


@pytest.mark.parametrize("first, second", [
    ("s3://backups/same", "s3://backups/same"),
    ("s3://backups/team", "s3://backups/team/a"),
    ("s3://backups/team/", "s3://backups/team"),
])
def test_deployments_sharing_a_storage_prefix_are_refused(tmp_path, first, second):
    path = write(tmp_path, f'[deployments.a.storage]\nurl = "{first}"\n[deployments.b.storage]\nurl = "{second}"\n')
    with pytest.raises(ConfigError, match="deployments a .* and b .* share a storage prefix") as caught:
        load_settings(path, environ={}, deployment="a")
    assert caught.value.exit_code == 3
    with pytest.raises(ConfigError, match="share a storage prefix"):
        load_fleet(path, environ={})


def test_a_shared_url_inherited_from_the_top_level_is_a_shared_prefix(tmp_path):
    path = write(tmp_path, '[storage]\nurl = "s3://backups/all"\n[deployments.a.retention]\nkeep_last = 1\n'
                           '[deployments.b.retention]\nkeep_last = 2\n')
    with pytest.raises(ConfigError, match="share a storage prefix"):
        load_settings(path, environ={}, deployment="a")


def test_similar_but_not_nested_prefixes_and_other_endpoints_are_fine(tmp_path):
    path = write(tmp_path, '[deployments.a.storage]\nurl = "s3://backups/team"\n'
                           '[deployments.b.storage]\nurl = "s3://backups/team-b"\n'
                           '[deployments.c.storage]\nurl = "s3://backups/team"\nendpoint_url = "http://minio:9000"\n')
    assert sorted(load_fleet(path, environ={})) == ["a", "b", "c"]


@pytest.mark.parametrize("text, words", [
    ('[deployments.a.backup]\nname = "other"\n[deployments.a.storage]\nurl = "s3://b/a"\n', "differs"),
    ('[backup]\nname = "x"\n[deployments.a.storage]\nurl = "s3://b/a"\n', "top level"),
    ('[deployments.Team_A.storage]\nurl = "s3://b/a"\n', "not valid"),
    ('deployments = 3\n', "must be tables"),
    ('[deployments]\na = 3\n', "must be a table"),
])
def test_bad_deployment_tables_are_config_errors(tmp_path, text, words):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=words):
        load_fleet(path, environ={})


def test_backup_name_equal_to_the_deployment_is_accepted(tmp_path):
    path = write(tmp_path, '[deployments.a.backup]\nname = "a"\n[deployments.a.storage]\nurl = "s3://b/a"\n')
    assert load_settings(path, environ={}, deployment="a").config.backup.name == "a"


def test_env_cannot_rename_a_selected_deployment(fleet_file):
    with pytest.raises(ConfigError, match="differs from the selected deployment 'team-a'"):
        load_settings(fleet_file, environ={"AFBACKUP_BACKUP_NAME": "other"}, deployment="team-a")


def test_an_invalid_overlay_value_is_blamed_on_the_deployment(tmp_path):
    path = write(tmp_path, '[deployments.a.retention]\nkeep_last = -1\n[deployments.a.storage]\nurl = "s3://b/a"\n')
    with pytest.raises(ConfigError, match=r"retention.keep_last.*\[deployments.a\]"):
        load_settings(path, environ={}, deployment="a")


def test_unknown_key_in_an_overlay_is_refused(tmp_path):
    path = write(tmp_path, '[deployments.a.storage]\nurl = "s3://b/a"\nbucket = "x"\n')
    with pytest.raises(ConfigError, match=r"storage.bucket: unknown key.*\[deployments.a\]"):
        load_settings(path, environ={}, deployment="a")


def test_load_fleet_returns_every_deployment_and_a_plain_file_as_one(fleet_file, tmp_path):
    fleet = load_fleet(fleet_file, environ={})
    assert list(fleet) == ["team-a", "team-b"]
    assert fleet["team-b"].config.storage.url == "s3://backups/team-b"
    plain = write(tmp_path, '[backup]\nname = "solo"\n')
    assert list(load_fleet(plain, environ={})) == ["solo"]


def test_overlays_do_not_leak_between_deployments(fleet_file):
    fleet = load_fleet(fleet_file, environ={})
    assert fleet["team-a"].config.retention.keep_last == 3
    assert fleet["team-b"].config.retention.keep_last == 7


def test_config_show_with_deployment_names_each_source(fleet_file, capsys, monkeypatch):
    monkeypatch.delenv("AFBACKUP_DEPLOYMENT", raising=False)
    assert run(["--config", str(fleet_file), "config", "show", "--deployment", "team-a", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    rows = {row["key"]: row for row in doc["values"]}
    assert doc["deployment"] == "team-a"
    assert rows["storage.url"]["source"] == f"file {fleet_file} [deployments.team-a]"
    assert rows["storage.region"]["source"] == f"file {fleet_file}"
    assert rows["backup.name"]["value"] == "team-a"
    # the root option serves too, and the text form says which deployment it shows
    assert run(["--config", str(fleet_file), "--deployment", "team-b", "config", "show"]) == 0
    out = capsys.readouterr().out
    assert "# deployment: team-b" in out and "[deployments.team-b]" in out


def test_a_command_without_selection_exits_3_listing_the_names(fleet_file, capsys, monkeypatch):
    monkeypatch.delenv("AFBACKUP_DEPLOYMENT", raising=False)
    assert run(["--config", str(fleet_file), "config", "show"]) == 3
    assert run(["--config", str(fleet_file), "list"]) == 3


def test_an_environment_url_for_every_deployment_is_a_shared_prefix_for_the_fleet(fleet_file):
    with pytest.raises(ConfigError, match="with the AFBACKUP_\\* environment: deployments team-a .* share"):
        load_fleet(fleet_file, environ={"AFBACKUP_STORAGE_URL": "s3://one/prefix"})
    # one selected deployment may still take its URL from the environment
    assert load_settings(fleet_file, environ={"AFBACKUP_STORAGE_URL": "s3://one/prefix"},
                         deployment="team-a").config.storage.url == "s3://one/prefix"
