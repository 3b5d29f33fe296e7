"""The configuration schema: one frozen model per TOML section.

Every key documented in docs/configuration.md is a field here; unknown keys and
invalid values are rejected (exit 3). Secrets never live in these values: they
come from files, commands, or the client chains (PGPASSFILE, AWS, kubeconfig).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from afbackup.config.units import ByteSize, Duration

_FPR = re.compile(r"^[0-9A-F]{40}$")
S3_MAX_PARTS = 10_000
S3_MIN_PART = 5 * 2**20


def _fingerprint(value: str) -> str:
    cleaned = value.replace(" ", "").upper()
    if not _FPR.match(cleaned):
        raise ValueError(f"{value!r} is not a full 40-hex OpenPGP fingerprint (short key ids are refused)")
    return cleaned


Fingerprint = Annotated[str, AfterValidator(_fingerprint)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def no_password(dsn: str) -> str:
    """A libpq DSN without a password (secrets are never plain config values)."""
    if not dsn:
        return dsn
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(dsn)
    except Exception as exc:  # psycopg raises ProgrammingError with a readable message
        raise ValueError(f"not a valid PostgreSQL connection string: {exc}") from None
    if params.get("password"):
        raise ValueError("contains a password; use a password file, PGPASSWORD or PGPASSFILE")
    return dsn


PasswordlessDsn = Annotated[str, AfterValidator(no_password)]


class DatabaseConfig(Section):
    dsn: PasswordlessDsn = ""
    password_file: str = ""
    exclude_data: tuple[str, ...] = ("log", "xcom", "_airflow_deleted__*")
    include: tuple[str, ...] = ()
    lock_wait_timeout: Duration = 60.0
    airflow_schema: str = Field("", alias="schema")
    pg_bin_dir: str = ""
    connect_timeout: Duration = 10.0


class KubernetesConfig(Section):
    namespace: str = "airflow"
    target: str = "deployment/airflow-scheduler"
    container: str = "scheduler"
    context: str = ""
    kubeconfig: str = ""
    # In-cluster credentials: the directory holding the pod's service account token and ca.crt.
    service_account_dir: str = "/var/run/secrets/kubernetes.io/serviceaccount"

    @field_validator("target")
    @classmethod
    def _target_form(cls, target: str) -> str:
        kinds = ("deployment/", "statefulset/", "pod/", "selector:")
        if not target.startswith(kinds) or target.endswith(("/", ":")):
            raise ValueError("use deployment/NAME, statefulset/NAME, pod/NAME or selector:KEY=VALUE[,…]")
        return target


class AirflowApiConfig(Section):
    """``[airflow.api]``: the REST API of a running Airflow (``afbackup smoke``). Credentials come from a
    file or an environment variable named here, never from a flag or a plain value."""

    url: str = ""
    version: Literal["auto", "2", "3"] = "auto"
    username: str = ""
    password_file: str = ""
    password_env: str = ""
    token_file: str = ""
    token_env: str = ""
    timeout: Duration = 30.0
    retries: int = Field(5, ge=0, le=20)
    verify_tls: bool = True

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if url and not url.startswith(("http://", "https://")):
            raise ValueError("use http://HOST:PORT or https://HOST (the Airflow webserver / api-server)")
        if "@" in url.split("//", 1)[-1].split("/", 1)[0]:
            raise ValueError("contains credentials; use username with password_file or password_env")
        return url.rstrip("/")

    @model_validator(mode="after")
    def _one_credential_source(self) -> AirflowApiConfig:
        sources = [name for name in ("password_file", "password_env", "token_file", "token_env") if getattr(self, name)]
        if len(sources) > 1:
            raise ValueError(f"set only one of airflow.api.{', airflow.api.'.join(sources)}")
        return self


class AirflowConfig(Section):
    executor: Literal["kubernetes", "local", "none"] = "local"
    command: tuple[str, ...] = ("airflow",)
    python: tuple[str, ...] = ()
    tmp_dir: str = "/dev/shm"
    timeout: Duration = 600.0
    kubernetes: KubernetesConfig = KubernetesConfig()
    api: AirflowApiConfig = AirflowApiConfig()

    @field_validator("command")
    @classmethod
    def _command_not_empty(cls, command: tuple[str, ...]) -> tuple[str, ...]:
        if not command:
            raise ValueError("must name the Airflow CLI, e.g. [\"airflow\"]")
        return command


class StorageConfig(Section):
    url: str = ""
    endpoint_url: str = ""
    region: str = ""
    object_lock_mode: Literal["", "GOVERNANCE", "COMPLIANCE"] = ""
    object_lock_days: int = Field(0, ge=0)
    part_size: ByteSize = 16 * 2**20
    upload_concurrency: int = Field(2, ge=1, le=16)
    max_object_size: ByteSize = 0
    request_checksum_calculation: Literal["when_supported", "when_required"] = "when_supported"
    response_checksum_validation: Literal["when_supported", "when_required"] = "when_supported"
    retries: int = Field(5, ge=0, le=20)

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, url: str) -> str:
        if url and not url.startswith(("s3://", "file:///")):
            raise ValueError("use s3://BUCKET/PREFIX or file:///ABSOLUTE/PATH")
        if url.startswith("s3://") and len(url) <= len("s3://"):
            raise ValueError("names no bucket")
        return url.rstrip("/")

    @model_validator(mode="after")
    def _parts_fit(self) -> StorageConfig:
        if self.part_size < S3_MIN_PART:
            raise ValueError(f"storage.part_size must be at least {S3_MIN_PART} bytes (5 MiB, the S3 minimum)")
        if self.max_object_size and self.max_object_size > self.part_size * S3_MAX_PARTS:
            raise ValueError(
                "storage.max_object_size needs more than 10,000 parts of storage.part_size; "
                "raise part_size to at least max_object_size / 10000"
            )
        if bool(self.object_lock_mode) != bool(self.object_lock_days):
            raise ValueError("set storage.object_lock_mode and storage.object_lock_days together")
        return self


class EncryptionConfig(Section):
    recipients: tuple[Fingerprint, ...] = ()
    gnupghome: str = ""
    sign_with: Fingerprint | Literal[""] = ""
    trusted_signers: tuple[Fingerprint, ...] = ()
    require_signature: bool | None = None
    fernet_recipients: tuple[Fingerprint, ...] = ()
    passphrase_file: str = ""
    passphrase_command: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _one_passphrase_source(self) -> EncryptionConfig:
        if self.passphrase_file and self.passphrase_command:
            raise ValueError("set only one of encryption.passphrase_file and encryption.passphrase_command")
        return self

    @property
    def signatures_required(self) -> bool:
        """Manifests must carry a trusted signature: always, unless ``require_signature = false``."""
        return self.require_signature is not False

    @property
    def signers(self) -> tuple[str, ...]:
        """The keys whose manifest signatures are trusted: ``trusted_signers``, else ``sign_with``."""
        if self.trusted_signers:
            return self.trusted_signers
        return (self.sign_with,) if self.sign_with else ()


class RetentionConfig(Section):
    keep_last: int | None = Field(None, ge=0)
    keep_hourly: int | None = Field(None, ge=0)
    keep_daily: int | None = Field(None, ge=0)
    keep_weekly: int | None = Field(None, ge=0)
    keep_monthly: int | None = Field(None, ge=0)
    keep_yearly: int | None = Field(None, ge=0)
    min_keep: int = Field(3, ge=1)
    incomplete_after: Duration = 24 * 3600.0


class NotifyConfig(Section):
    slack_webhook_url_file: str = ""
    slack_on_success: bool = False
    pushgateway_url: str = ""
    pushgateway_job: str = "afbackup"
    timeout: Duration = 10.0


class BackupConfig(Section):
    compression_level: int = Field(1, ge=1, le=19)
    compression_threads: int = Field(0, ge=0, le=64)
    lock_ttl: Duration = 1800.0
    name: str = "airflow"


class RestoreConfig(Section):
    spool_dir: str = ""
    jobs: int = Field(2, ge=1, le=32)
    password_file: str = ""
    airflow_db: Literal["target", "own"] = "target"
    lock_timeout: Duration = 30.0


class DrillConfig(Section):
    scratch_dsn: PasswordlessDsn = ""
    rto_target: Duration = 0.0
    rpo_target: Duration = 0.0
    rto_live_target: Duration = 0.0
    airflow_command: tuple[str, ...] = ()
    airflow_home: str = ""
    live_startup_timeout: Duration = 600.0


class SmokeConfig(Section):
    """``[smoke]``: what ``afbackup smoke`` (and ``drill --live``) checks."""

    queued_threshold: Duration = 600.0
    heartbeat_timeout: Duration = 300.0
    optional_components: tuple[Literal["triggerer", "dag_processor"], ...] = ()
    canary_dag: str = "afbackup_canary"
    canary_connection: str = ""
    canary_variable: str = ""
    canary_timeout: Duration = 600.0


class CheckConfig(Section):
    max_age: Duration = 26 * 3600.0
    signer_expiry_warning: Duration = 30 * 86400.0


class Config(Section):
    database: DatabaseConfig = DatabaseConfig()
    airflow: AirflowConfig = AirflowConfig()
    storage: StorageConfig = StorageConfig()
    encryption: EncryptionConfig = EncryptionConfig()
    retention: RetentionConfig = RetentionConfig()
    notify: NotifyConfig = NotifyConfig()
    backup: BackupConfig = BackupConfig()
    restore: RestoreConfig = RestoreConfig()
    drill: DrillConfig = DrillConfig()
    smoke: SmokeConfig = SmokeConfig()
    check: CheckConfig = CheckConfig()
    # PGPASSWORD as found when the configuration was resolved (load_settings). Not a config key and
    # never shown: libpq's own variable, handed explicitly to the children that connect
    # (pg_dump, pg_restore, the restore agent), which otherwise get an environment without it.
    _pgpassword: str | None = PrivateAttr(default=None)

    @property
    def pgpassword(self) -> str | None:
        """The PGPASSWORD of afbackup's environment, if any (see ``sources.postgres.database_password``)."""
        return self._pgpassword
