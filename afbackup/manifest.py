"""The manifest (what a backup is), its one typed model, and the versioned key layout (where it lives).

A backup is visible only through ``v1/backups/<id>/manifest.json``, written
last, after every data object is confirmed stored with the expected size and
checksum. The manifest is plaintext JSON with no secrets, so ``list``,
``show``, ``check`` and ``prune`` need no private key. It is signed (detached
``manifest.json.sig``, written before it) when a signing key is configured.
Manifests read back from storage are untrusted input and are validated.

The model: ``ManifestBody`` is what the archive carries as its own
``manifest.json`` member (status ``archived``); ``Manifest`` is the stored
manifest, the body plus ``finished_at`` and the stored ``objects``. The writer
(``afbackup.backup``) builds these models and every reader uses their typed
attributes; nothing outside this module reads the JSON by string keys.
``Manifest.raw`` is the document exactly as stored (for ``show --json`` and
the comparison with the archive's copy).

Versions: ``format_version`` 1 is what afbackup 0.1.0 wrote (the same shape,
no schema); 2 is this model. Both parse; a newer version is refused with an
IntegrityError asking to upgrade afbackup, because an older reader would
silently ignore what it does not know (for a restore: data it would drop).
Bump ``FORMAT_VERSION`` when a reader that ignores the new field would do the
wrong thing; a field that is only informative needs no bump. Unknown fields of
a manifest are kept (``extra="allow"``) and shown, never interpreted.

Adding a field, for example a ``deployment`` sub-model, is one line in
``ManifestBody``, optional with a default so that older manifests still parse::

    deployment: DeploymentInfo | None = None

plus the ``DeploymentInfo(Part)`` class, the writer setting it in
``afbackup.backup._manifest_body``, and a reader using ``manifest.deployment``.
The stored JSON is canonical (sorted keys, ``dump_manifest``): the bytes that
are signed are the bytes that are stored.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, PlainSerializer, PrivateAttr, ValidationError

import afbackup
from afbackup.errors import IntegrityError

LAYOUT = "v1"
BACKUPS = f"{LAYOUT}/backups/"
LOCKS = f"{LAYOUT}/locks/"
PINS = f"{LAYOUT}/pins/"
FORMAT = "afbackup-manifest"
FORMAT_VERSION = 2
READABLE_VERSIONS = range(1, FORMAT_VERSION + 1)
ARCHIVE_NAME = "archive.tar.zst.gpg"
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.json.sig"
ATTEMPT_NAME = "attempt.json"
FAILED_NAME = "failed.json"
DELETING_NAME = "deleting.json"  # prune's tombstone: written first, deleted last
ARCHIVE_MANIFEST_MEMBER = "manifest.json"
# Fields of the stored manifest that differ from the archive's copy (written after the archive).
OUTER_ONLY = frozenset({"status", "finished_at", "objects"})
DEFAULT_DEPLOYMENT = "airflow"  # the default of [backup] name


def new_backup_id(now: dt.datetime) -> str:
    """Sortable and unique: ``20261124T040001Z-3f9a1c``. Ordering still uses finish times, not ids."""
    return now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def backup_prefix(backup_id: str) -> str:
    return f"{BACKUPS}{backup_id}/"


def key_of(backup_id: str, name: str) -> str:
    return backup_prefix(backup_id) + name


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(moment: dt.datetime | None) -> str | None:
    return _iso(moment) if moment else None


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# A time zone-aware moment, stored as UTC with milliseconds ("2026-11-24T04:00:01.000Z").
Moment = Annotated[AwareDatetime, PlainSerializer(_iso, return_type=str)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class Part(BaseModel):
    """Base of every part of the manifest: immutable; unknown fields are kept, never interpreted."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)


class ToolInfo(Part):
    name: str
    version: str


class AirflowInfo(Part):
    major: int
    schema_revision: str
    schema_release: str | None = None
    fab_revision: str | None = None
    cli_version: str | None = None  # None without an executor (no Airflow CLI was run)
    executor: str
    fernet_fingerprints: list[str] = Field(default_factory=list)

    @property
    def release(self) -> str | None:
        """The Airflow version to show: the CLI's, else the first release with this schema."""
        return self.cli_version or self.schema_release


class PostgresInfo(Part):
    server_version: str
    server_major: int
    pg_dump_version: str
    database: str
    schema_name: str = Field(alias="schema")


class ScopeInfo(Part):
    data_tables: list[str]
    schema_only_tables: list[str]
    row_counts: dict[str, int]
    added_for_fk: dict[str, list[str]]
    exclude_data: list[str]
    include: list[str]


class ExportCounts(Part):
    """Entries in each export (``airflow/<kind>.json``) of the archive."""

    connections: int = Field(ge=0)
    variables: int = Field(ge=0)
    pools: int = Field(ge=0)

    def as_dict(self) -> dict[str, int]:
        return {kind: int(count) for kind, count in self.model_dump().items()}


class NotCaptured(Part):
    """What the backup does not hold; ``exports`` is set when no executor ran the exports."""

    exports: str | None = None
    connections_from_env: list[str] = Field(default_factory=list)
    variables_from_env: list[str] = Field(default_factory=list)
    secrets_backend: str | None = None

    def missing(self) -> dict[str, Any]:
        """Only what is actually missing (non-empty), for display."""
        return {name: value for name, value in self.model_dump().items() if value}


class MemberInfo(Part):
    name: str
    size: int = Field(ge=0)
    sha256: Sha256


class ArchiveFormat(Part):
    format: str
    compression: str
    compression_level: int
    encryption: str
    dump_part_size: int = Field(gt=0)


class EncryptionInfo(Part):
    recipients: list[str]
    signer: str | None = None
    fernet_recipients: list[str] | None = None  # who can open airflow/fernet.json.gpg, when it is sealed apart


class ExitCodes(Part):
    pg_dump: int | None
    gpg: int | None
    airflow_agent: int | None = None


class ObjectLock(Part):
    mode: str
    retain_until: Moment


class ObjectInfo(Part):
    key: str
    size: int = Field(ge=0)
    sha256: Sha256
    etag: str = ""
    version_id: str = ""


class InFlightRecord(Part):
    """Work in flight in the dump's snapshot (afbackup/inflight.py); absent from backups before it existed."""

    task_instances: int = Field(ge=0)
    dag_runs: int = Field(ge=0)
    triggers: int = Field(ge=0)
    by_dag: dict[str, dict[str, Any]] = Field(default_factory=dict)
    tasks: list[dict[str, Any]] = Field(default_factory=list)  # at most inflight.LISTED_TASKS
    tasks_truncated: bool = False
    not_captured: list[str] = Field(default_factory=list)


class ManifestBody(Part):
    """The manifest as the archive carries it (status ``archived``): everything known before the upload ends."""

    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    tool: ToolInfo
    backup_id: str
    name: str
    deployment: str | None = None  # format 2 (0.2); older manifests: ``name``, see ``deployment_name``
    labels: dict[str, str] = Field(default_factory=dict)
    status: str
    started_at: Moment
    host: str
    airflow: AirflowInfo
    postgres: PostgresInfo
    scope: ScopeInfo
    exports: ExportCounts | None
    not_captured: NotCaptured
    members: list[MemberInfo] = Field(alias="archive_members")
    archive_format: ArchiveFormat = Field(alias="archive")
    encryption: EncryptionInfo
    exit_codes: ExitCodes
    object_lock: ObjectLock | None = None
    in_flight: InFlightRecord | None = None
    active_dags: list[dict[str, Any]] | None = None  # schedules of the unpaused DAGs (afbackup/catchup.py)
    environment: dict[str, Any] | None = None  # what the DB does not hold (afbackup/sources/deployment.py)

    @property
    def row_counts(self) -> dict[str, int]:
        return dict(self.scope.row_counts)

    @property
    def deployment_name(self) -> str:
        """The deployment the backup belongs to: ``deployment``; older manifests: ``name``, else "airflow"."""
        return self.deployment or self.name or DEFAULT_DEPLOYMENT

    def member(self, name: str) -> MemberInfo | None:
        return next((m for m in self.members if m.name == name), None)

    def to_doc(self) -> dict[str, Any]:
        """The JSON document (stored field names), every field written, ``null`` included."""
        return self.model_dump(mode="json", by_alias=True)

    def completed(self, finished_at: dt.datetime, objects: list[ObjectInfo]) -> Manifest:
        """The stored manifest of this body, once every object in ``objects`` is stored."""
        fields = {name: getattr(self, name) for name in type(self).model_fields}
        fields.update(status="complete", finished_at=finished_at, objects=objects)
        return Manifest(**fields, **(self.model_extra or {}))


class Manifest(ManifestBody):
    """The stored manifest: the body, when the backup finished, and the stored objects (the archive first)."""

    finished_at: Moment
    objects: list[ObjectInfo]  # never empty: parse_manifest refuses that
    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)

    @property
    def deployment_name(self) -> str:
        """The deployment the backup belongs to: ``deployment``; older manifests: ``name``, else "airflow"."""
        return self.deployment or self.name or DEFAULT_DEPLOYMENT

    @property
    def raw(self) -> dict[str, Any]:
        """The manifest exactly as stored (for display and the comparison with the archive's copy)."""
        return self._raw or self.to_doc()

    @property
    def archive(self) -> ObjectInfo:
        """The stored archive object."""
        return self.objects[0]

    def copy_differs(self, inner: Mapping[str, Any]) -> str | None:
        """The first field in which the archive's copy ``inner`` differs from this stored manifest, if any."""
        outer = self.raw
        for field in sorted(set(inner) | set(outer)):
            if field in OUTER_ONLY:
                continue
            if _canonical(inner.get(field)) != _canonical(outer.get(field)):
                return field
        return None


class _Header(BaseModel):
    format: str
    format_version: int


def parse_manifest(data: bytes, where: str) -> Manifest:
    """Validate a stored manifest; damage is an integrity failure naming the object."""
    try:
        doc = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"{where} is not valid JSON: {exc}", hint="the manifest is damaged") from None
    try:
        header = _Header.model_validate(doc)
        _check_version(header, where)
        manifest = Manifest.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise IntegrityError(f"{where} is not a valid manifest: {field}: {first['msg']}") from None
    if not manifest.objects:
        raise IntegrityError(f"{where} lists no stored objects")
    manifest._raw = doc
    return manifest


def _check_version(header: _Header, where: str) -> None:
    if header.format != FORMAT:
        raise IntegrityError(f"{where} has format {header.format} v{header.format_version}, not {FORMAT}",
                             hint="it was not written by afbackup")
    if header.format_version not in READABLE_VERSIONS:
        newer = header.format_version > FORMAT_VERSION
        raise IntegrityError(
            f"{where} is manifest format version {header.format_version}; afbackup {afbackup.__version__} "
            f"reads versions {READABLE_VERSIONS.start} to {FORMAT_VERSION}",
            hint="upgrade afbackup to read it" if newer else "the manifest is damaged")


def dump_manifest(doc: Mapping[str, Any] | ManifestBody) -> bytes:
    """Canonical bytes (sorted keys): what is signed is exactly what is stored. Also used for the small records."""
    if isinstance(doc, ManifestBody):
        doc = doc.to_doc()
    return json.dumps(doc, sort_keys=True, indent=2, default=str).encode("utf-8") + b"\n"


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)
