"""The manifest (what a backup is) and the versioned key layout (where it lives).

A backup is visible only through ``v1/backups/<id>/manifest.json``, written
last, after every data object is confirmed stored with the expected size and
checksum. The manifest is plaintext JSON with no secrets, so ``list``,
``show``, ``check`` and ``prune`` need no private key. It is signed (detached
``manifest.json.sig``, written before it) when a signing key is configured.
Manifests read back from storage are untrusted input and are validated.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from afbackup.errors import IntegrityError

LAYOUT = "v1"
BACKUPS = f"{LAYOUT}/backups/"
LOCKS = f"{LAYOUT}/locks/"
PINS = f"{LAYOUT}/pins/"
FORMAT = "afbackup-manifest"
FORMAT_VERSION = 1
ARCHIVE_NAME = "archive.tar.zst.gpg"
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.json.sig"
ATTEMPT_NAME = "attempt.json"
FAILED_NAME = "failed.json"
DELETING_NAME = "deleting.json"  # prune's tombstone: written first, deleted last
ARCHIVE_MANIFEST_MEMBER = "manifest.json"


def new_backup_id(now: dt.datetime) -> str:
    """Sortable and unique: ``20261124T040001Z-3f9a1c``. Ordering still uses finish times, not ids."""
    return now.astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def backup_prefix(backup_id: str) -> str:
    return f"{BACKUPS}{backup_id}/"


def key_of(backup_id: str, name: str) -> str:
    return backup_prefix(backup_id) + name


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def iso(moment: dt.datetime | None) -> str | None:
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z") \
        if moment else None


class Model(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class MemberInfo(Model):
    name: str
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class ObjectInfo(Model):
    key: str
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    etag: str = ""
    version_id: str = ""


class InFlightRecord(Model):
    """Work in flight in the dump's snapshot (afbackup/inflight.py); absent from backups before it existed."""

    task_instances: int = Field(ge=0)
    dag_runs: int = Field(ge=0)
    triggers: int = Field(ge=0)
    by_dag: dict[str, dict[str, Any]] = Field(default_factory=dict)
    tasks: list[dict[str, Any]] = Field(default_factory=list)  # at most inflight.LISTED_TASKS
    tasks_truncated: bool = False
    not_captured: list[str] = Field(default_factory=list)


class Manifest(Model):
    """The fields afbackup relies on; everything else is carried along unchanged."""

    format: str
    format_version: int
    backup_id: str
    status: str
    started_at: dt.datetime
    finished_at: dt.datetime
    members: list[MemberInfo] = Field(alias="archive_members")
    objects: list[ObjectInfo]
    scope: dict[str, Any]
    airflow: dict[str, Any]
    postgres: dict[str, Any]
    encryption: dict[str, Any]
    exports: dict[str, Any] | None = None
    in_flight: InFlightRecord | None = None
    active_dags: list[dict[str, Any]] | None = None  # schedules of the unpaused DAGs (afbackup/catchup.py)
    environment: dict[str, Any] | None = None  # what the DB does not hold (afbackup/sources/deployment.py)
    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)

    @property
    def raw(self) -> dict[str, Any]:
        """The manifest exactly as stored (for comparisons and display)."""
        return self._raw

    @property
    def archive(self) -> ObjectInfo:
        return self.objects[0]

    @property
    def row_counts(self) -> dict[str, int]:
        return dict(self.scope.get("row_counts", {}))

    def member(self, name: str) -> MemberInfo | None:
        return next((m for m in self.members if m.name == name), None)


def parse_manifest(data: bytes, where: str) -> Manifest:
    """Validate a stored manifest; damage is an integrity failure naming the object."""
    try:
        doc = json.loads(data)
        manifest = Manifest.model_validate(doc)
        manifest._raw = doc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"{where} is not valid JSON: {exc}", hint="the manifest is damaged") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise IntegrityError(f"{where} is not a valid manifest: {field}: {first['msg']}") from None
    if manifest.format != FORMAT or manifest.format_version > FORMAT_VERSION:
        raise IntegrityError(f"{where} has format {manifest.format} v{manifest.format_version}",
                             hint="upgrade afbackup to read it")
    if not manifest.objects:
        raise IntegrityError(f"{where} lists no stored objects")
    return manifest


def dump_manifest(doc: dict[str, Any]) -> bytes:
    """Canonical bytes (sorted keys): what is signed is exactly what is stored."""
    return json.dumps(doc, sort_keys=True, indent=2, default=str).encode("utf-8") + b"\n"
