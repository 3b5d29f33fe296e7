"""Configuration: the reference file loads; precedence and sources; strict validation; `config show`.

Precedence is default < file < AFBACKUP_* env < flags, and every resolved
value remembers where it came from. Unknown keys and invalid values are
errors (exit 3) that name the key and where the bad value came from.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pydantic
import pytest

from afbackup.cli import run
from afbackup.config import iter_keys, load_settings
from afbackup.config.load import DEFAULT_PATH
from afbackup.errors import ConfigError

# DESIGN.md "Configuration", verbatim (its values already look real).
REFERENCE_TOML = '''
[database]
dsn = "postgresql://afbackup@airflow-db:5432/airflow"   # no password here
password_file = "/run/secrets/pg-password"             # optional; else PGPASSWORD / PGPASSFILE
exclude_data = ["log", "xcom", "_airflow_deleted__*"]  # the default: schema kept, rows skipped
# include = ["dag", "dag_run", "task_instance"]       # optional explicit scope, closed under foreign keys
lock_wait_timeout = "60s"

[airflow]
executor = "kubernetes"                 # "kubernetes" | "local" | "none"
command = ["airflow"]                   # the Airflow CLI, for "local"

[airflow.kubernetes]
namespace = "airflow"
target = "deployment/airflow-scheduler" # or "pod/NAME", or "selector:component=scheduler"
container = "scheduler"
context = ""                            # kubeconfig context; in-cluster when run in a pod

[storage]
url = "s3://airflow-backups/prod"       # or "file:///var/backups/afbackup"
endpoint_url = ""                       # for S3-compatible stores
region = "eu-west-1"
object_lock_mode = ""                   # "", "GOVERNANCE" or "COMPLIANCE"
object_lock_days = 0

[encryption]
recipients = ["0123456789ABCDEF0123456789ABCDEF01234567"]      # full fingerprints
gnupghome = "/etc/afbackup/gnupg"
sign_with = ""                          # optional signing key fingerprint
trusted_signers = []                    # signer fingerprints accepted by verify/restore
passphrase_file = ""                    # for the signing or decryption key, when it has one

[retention]
keep_last = 7
keep_daily = 14
keep_weekly = 8
keep_monthly = 12
keep_yearly = 2
min_keep = 3

[notify]
slack_webhook_url_file = ""
pushgateway_url = ""
'''

FPR = "0123456789ABCDEF0123456789ABCDEF01234567"


@pytest.fixture(autouse=True)
def _restore_logging():
    root = logging.getLogger("afbackup")
    saved = (list(root.handlers), root.level, root.propagate)
    yield
    root.handlers[:], root.level, root.propagate = saved


@pytest.fixture
def write(tmp_path):
    def _write(text: str, name: str = "afbackup.toml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path
    return _write


def load(path=None, env=None, overrides=None):
    return load_settings(path, environ=env or {}, overrides=overrides)


def config_error(path=None, env=None, overrides=None) -> str:
    with pytest.raises(ConfigError) as info:
        load(path, env, overrides)
    return info.value.one_line()


# -- the reference file ----------------------------------------------------------
def test_reference_file_from_design_loads_as_written(write):
    # GIVEN the reference TOML of DESIGN.md
    path = write(REFERENCE_TOML)
    # WHEN it is loaded
    settings = load(path)
    # THEN every value is the one written, in its parsed form
    cfg = settings.config
    assert cfg.database.dsn == "postgresql://afbackup@airflow-db:5432/airflow"
    assert cfg.database.exclude_data == ("log", "xcom", "_airflow_deleted__*")
    assert cfg.database.lock_wait_timeout == 60.0
    assert cfg.airflow.executor == "kubernetes"
    assert cfg.airflow.kubernetes.target == "deployment/airflow-scheduler"
    assert cfg.storage.url == "s3://airflow-backups/prod"
    assert cfg.storage.region == "eu-west-1"
    assert cfg.encryption.recipients == (FPR,)
    assert (cfg.retention.keep_last, cfg.retention.keep_daily, cfg.retention.keep_yearly) == (7, 14, 2)
    assert settings.path == path
    assert settings.source_of("retention.keep_weekly") == f"file {path}"
    assert settings.source_of("backup.compression_level") == "default"


def test_every_documented_key_is_a_schema_key(write):
    # GIVEN every leaf key the reference file sets
    import tomllib

    def leaves(doc, prefix=""):
        for name, value in doc.items():
            if isinstance(value, dict):
                yield from leaves(value, f"{prefix}{name}.")
            else:
                yield prefix + name

    # THEN the schema knows each of them (iter_keys is what `config show` prints)
    known = {key for key, _ in iter_keys()}
    assert set(leaves(tomllib.loads(REFERENCE_TOML))) <= known


# -- precedence and sources --------------------------------------------------------
def test_precedence_default_file_env_flag_with_sources(write):
    # GIVEN a file, env vars and flags that overlap
    path = write('[storage]\nurl = "s3://bucket/file"\nregion = "file-region"\n'
                 '[retention]\nkeep_last = 1\n[backup]\nname = "from-file"\n')
    env = {"AFBACKUP_STORAGE_REGION": "env-region", "AFBACKUP_RETENTION_KEEP_LAST": "2",
           "AFBACKUP_CHECK_MAX_AGE": "2h"}
    overrides = {"retention.keep_last": 3, "check.max_age": None}  # None = flag not given
    # WHEN resolved
    settings = load(path, env, overrides)
    cfg = settings.config
    # THEN each value comes from the strongest source that set it, and says so
    assert cfg.retention.keep_last == 3
    assert settings.source_of("retention.keep_last") == "flag"
    assert cfg.storage.region == "env-region"
    assert settings.source_of("storage.region") == "env AFBACKUP_STORAGE_REGION"
    assert cfg.check.max_age == 7200.0
    assert settings.source_of("check.max_age") == "env AFBACKUP_CHECK_MAX_AGE"
    assert cfg.backup.name == "from-file"
    assert settings.source_of("backup.name") == f"file {path}"
    assert cfg.storage.url == "s3://bucket/file"
    assert cfg.storage.upload_concurrency == 2
    assert settings.source_of("storage.upload_concurrency") == "default"
    assert settings.sources["storage.url"] == f"file {path}"


def test_config_path_from_afbackup_config_env(write):
    path = write('[backup]\nname = "via-env-path"\n')
    settings = load(None, {"AFBACKUP_CONFIG": str(path), "AFBACKUP_LOG_FORMAT": "json"})
    assert settings.path == path
    assert settings.config.backup.name == "via-env-path"


@pytest.mark.skipif(DEFAULT_PATH.exists(), reason="a real /etc/afbackup/config.toml exists here")
def test_no_file_means_defaults_only():
    settings = load(None, {})
    assert settings.path is None
    assert dict(settings.sources) == {}
    assert settings.config.database.exclude_data == ("log", "xcom", "_airflow_deleted__*")


def test_settings_are_frozen(write):
    settings = load(write(REFERENCE_TOML))
    with pytest.raises(pydantic.ValidationError):
        settings.config.storage.region = "elsewhere"  # type: ignore[misc]


# -- unknown keys ------------------------------------------------------------------
def test_unknown_key_in_file_names_the_key_and_the_file(write):
    path = write('[database]\ndsn = "postgresql://a@b/c"\nexclude = ["log"]\n')
    message = config_error(path)
    assert "database.exclude" in message and "unknown key" in message
    assert str(path) in message


def test_unknown_environment_variable_is_an_error():
    message = config_error(None, {"AFBACKUP_FOO": "1"})
    assert "AFBACKUP_FOO" in message


def test_invalid_toml_is_a_config_error(write):
    message = config_error(write('[storage\nurl = "x"\n'))
    assert "not valid TOML" in message


def test_a_section_given_as_a_value_is_a_config_error(write):
    path = write("database = 1\n")
    config_error(path, {"AFBACKUP_DATABASE_DSN": "postgresql://a@b/c"})


# -- invalid values name the key and the source -----------------------------------
@pytest.mark.parametrize(("toml", "key", "words"), [
    ('[airflow]\nexecutor = "docker"\n', "airflow.executor", "kubernetes"),
    ('[retention]\nkeep_last = -1\n', "retention.keep_last", "greater than or equal to 0"),
    ('[database]\nlock_wait_timeout = "5 minutes"\n', "database.lock_wait_timeout", "not a duration"),
    ('[storage]\npart_size = "16 MiBs"\n', "storage.part_size", "not a size"),
    ('[storage]\nobject_lock_days = -3\n', "storage.object_lock_days", "greater than or equal to 0"),
    ('[airflow.kubernetes]\ntarget = "scheduler"\n', "airflow.kubernetes.target", "deployment/NAME"),
])
def test_invalid_value_in_file_names_key_and_file(write, toml, key, words):
    path = write(toml)
    message = config_error(path)
    assert key in message and words in message
    assert f"from file {path}" in message


@pytest.mark.parametrize(("name", "value", "key"), [
    ("AFBACKUP_AIRFLOW_EXECUTOR", "docker", "airflow.executor"),
    ("AFBACKUP_RETENTION_KEEP_LAST", "-1", "retention.keep_last"),
    ("AFBACKUP_RETENTION_KEEP_LAST", "many", "retention.keep_last"),
    ("AFBACKUP_DATABASE_LOCK_WAIT_TIMEOUT", "soon", "database.lock_wait_timeout"),
    ("AFBACKUP_STORAGE_PART_SIZE", "big", "storage.part_size"),
])
def test_invalid_value_in_env_names_key_and_variable(name, value, key):
    message = config_error(None, {name: value})
    assert key in message
    assert f"from env {name}" in message


def test_invalid_flag_value_names_the_flag():
    message = config_error(None, {}, {"check.max_age": "whenever"})
    assert "check.max_age" in message and "from flag" in message


@pytest.mark.parametrize("toml", [
    '[bogus]\nx = 1\n',                                         # -> "(env AFBACKUP_BOGUS)"
    '[storage]\npart_size = "1MiB"\n',                           # -> "(env AFBACKUP_STORAGE)"
    '[encryption]\nrecipients = ["DEADBEEF"]\n',                 # -> "(env AFBACKUP_ENCRYPTION_RECIPIENTS_0)"
    '[encryption]\nsign_with = "DEADBEEF"\n',                    # -> "(env ..._SIGN_WITH_FUNCTION-AFTER[...])"
])
def test_every_invalid_value_from_the_file_is_blamed_on_the_file(write, toml):
    path = write(toml)
    message = config_error(path)
    assert f"from file {path}" in message
    assert "(env " not in message


# -- specific rules -----------------------------------------------------------------
@pytest.mark.parametrize("dsn", [
    "postgresql://afbackup:hunter2@airflow-db:5432/airflow",
    "host=airflow-db user=afbackup password=hunter2 dbname=airflow",
    "postgresql://afbackup@airflow-db/airflow?password=hunter2",
])
def test_dsn_with_a_password_is_refused_without_echoing_it(write, dsn):
    message = config_error(write(f'[database]\ndsn = "{dsn}"\n'))
    assert "database.dsn" in message and "password" in message
    assert "hunter2" not in message


def test_dsn_without_password_is_accepted(write):
    dsn = "postgresql://afbackup@airflow-db:5432/airflow?sslmode=require"
    assert load(write(f'[database]\ndsn = "{dsn}"\n')).config.database.dsn == dsn


def test_scratch_dsn_with_a_password_is_refused_too(write):
    config_error(write('[drill]\nscratch_dsn = "postgresql://scratch:hunter2@db/scratch"\n'))


@pytest.mark.parametrize("keyid", ["DEADBEEF", "0xDEADBEEF", "89ABCDEF01234567", FPR[:-1], FPR + "0", "Z" * 40])
def test_short_key_ids_and_non_fingerprints_are_refused(write, keyid):
    message = config_error(write(f'[encryption]\nrecipients = ["{keyid}"]\n'))
    assert "fingerprint" in message


def test_fingerprints_are_normalised_to_upper_case_without_spaces(write):
    spaced = "0123 4567 89ab cdef 0123  4567 89ab cdef 0123 4567"
    path = write(f'[encryption]\nrecipients = ["{spaced}"]\nsign_with = "{spaced.lower()}"\n'
                 f'trusted_signers = ["{FPR.lower()}"]\n')
    enc = load(path).config.encryption
    assert enc.recipients == (FPR,)
    assert enc.sign_with == FPR
    assert enc.trusted_signers == (FPR,)


@pytest.mark.parametrize("raw", ['["log", "xcom", "task_*"]', "log, xcom ,task_*,"])
def test_env_lists_take_a_json_array_or_a_comma_list(raw):
    settings = load(None, {"AFBACKUP_DATABASE_EXCLUDE_DATA": raw})
    assert settings.config.database.exclude_data == ("log", "xcom", "task_*")
    assert settings.source_of("database.exclude_data") == "env AFBACKUP_DATABASE_EXCLUDE_DATA"


def test_env_list_with_broken_json_is_an_error():
    message = config_error(None, {"AFBACKUP_DATABASE_EXCLUDE_DATA": '["log", '})
    assert "JSON array" in message


@pytest.mark.parametrize(("text", "seconds"), [("60s", 60), ("5m", 300), ("26h", 93600), ("7d", 604800),
                                                ("250ms", 0.25)])
def test_durations_parse(write, text, seconds):
    assert load(write(f'[database]\nlock_wait_timeout = "{text}"\n')).config.database.lock_wait_timeout \
        == pytest.approx(seconds)


@pytest.mark.parametrize(("text", "size"), [("16MiB", 16 * 2**20), ("1GiB", 2**30), ("8MB", 8_000_000)])
def test_sizes_parse(write, text, size):
    assert load(write(f'[storage]\npart_size = "{text}"\n')).config.storage.part_size == size


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_non_finite_duration_in_file_is_refused(write, value):
    config_error(write(f"[database]\nlock_wait_timeout = {value}\n"))


@pytest.mark.parametrize("size", ['"1MiB"', '"5MB"', "5242879"])
def test_part_size_below_five_mib_is_refused(write, size):
    message = config_error(write(f"[storage]\npart_size = {size}\n"))
    assert "part_size" in message and "5 MiB" in message


def test_part_size_of_exactly_five_mib_is_fine(write):
    assert load(write('[storage]\npart_size = "5MiB"\n')).config.storage.part_size == 5 * 2**20


def test_max_object_size_needing_over_10000_parts_is_refused(write):
    message = config_error(write('[storage]\npart_size = "5MiB"\nmax_object_size = "50GiB"\n'))
    assert "10,000 parts" in message


@pytest.mark.parametrize("toml", ['object_lock_mode = "GOVERNANCE"\n', "object_lock_days = 30\n"])
def test_object_lock_mode_and_days_go_together(write, toml):
    message = config_error(write("[storage]\n" + toml))
    assert "object_lock_mode" in message and "object_lock_days" in message


def test_object_lock_with_mode_and_days_is_fine(write):
    cfg = load(write('[storage]\nobject_lock_mode = "COMPLIANCE"\nobject_lock_days = 30\n')).config.storage
    assert (cfg.object_lock_mode, cfg.object_lock_days) == ("COMPLIANCE", 30)


def test_passphrase_file_and_command_together_are_refused(write):
    message = config_error(write('[encryption]\npassphrase_file = "/run/secrets/gpg"\n'
                                 'passphrase_command = ["pass", "show", "afbackup"]\n'))
    assert "passphrase_file" in message and "passphrase_command" in message


def test_passphrase_from_file_and_command_from_env_are_refused_too(write):
    path = write('[encryption]\npassphrase_file = "/run/secrets/gpg"\n')
    config_error(path, {"AFBACKUP_ENCRYPTION_PASSPHRASE_COMMAND": "pass,show,afbackup"})


@pytest.mark.parametrize("url", ["http://bucket/x", "s3://", "bucket/prefix"])
def test_storage_url_needs_a_known_scheme_and_a_bucket(write, url):
    assert "storage.url" in config_error(write(f'[storage]\nurl = "{url}"\n'))


def test_relative_file_url_is_refused_by_the_config(write):
    assert "storage.url" in config_error(write('[storage]\nurl = "file://var/backups/afbackup"\n'))


# -- afbackup config show ---------------------------------------------------------------
def test_config_show_prints_every_key_with_its_source_and_masks_credentials(write, capsys, monkeypatch):
    # GIVEN a config with credentials inside a URL, and an env override
    path = write('[storage]\nurl = "file:///var/backups/afbackup"\n'
                 '[notify]\npushgateway_url = "https://user:s3cret@push.example"\n')
    capsys.readouterr()
    monkeypatch.setenv("AFBACKUP_RETENTION_MIN_KEEP", "4")
    # WHEN `afbackup config show` runs
    code = run(["--config", str(path), "config", "show"])
    out, err = capsys.readouterr()
    # THEN every schema key is printed once with its source, and the secret is masked
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines() if line and not line.startswith("#")}
    assert set(rows) == {key for key, _ in iter_keys()}
    assert rows["storage.url"].endswith(f"# file {path}")
    assert rows["retention.min_keep"].endswith("# env AFBACKUP_RETENTION_MIN_KEEP")
    assert rows["storage.region"].endswith("# default")
    assert "https://user:***@push.example" in rows["notify.pushgateway_url"]
    assert "s3cret" not in out + err


def test_config_show_json_masks_credentials(write, capsys):
    path = write('[notify]\npushgateway_url = "https://user:s3cret@push.example"\n')
    capsys.readouterr()
    assert run(["--config", str(path), "config", "show", "--json"]) == 0
    out = capsys.readouterr().out
    doc = json.loads(out)
    values = {row["key"]: row for row in doc["values"]}
    assert values["notify.pushgateway_url"]["value"] == "https://user:***@push.example"
    assert values["notify.pushgateway_url"]["env"] == "AFBACKUP_NOTIFY_PUSHGATEWAY_URL"
    assert values["notify.pushgateway_url"]["source"] == f"file {path}"
    assert "s3cret" not in out
