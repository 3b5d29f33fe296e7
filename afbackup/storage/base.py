"""The object store interface: what the pipeline, catalog, lock and prune need.

Keys are relative to the configured prefix (``s3://bucket/prefix`` or
``file:///root``). Implementations translate their own errors into
``StorageError`` (exit 6) / ``NotFoundError`` at this boundary.
"""

from __future__ import annotations

import builtins
import dataclasses
import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Protocol

from afbackup.errors import StorageError
from afbackup.streams import Readable


@dataclasses.dataclass(frozen=True)
class StoredObject:
    """An object as stored: what a manifest records about it."""

    key: str
    size: int
    etag: str = ""
    version_id: str = ""
    last_modified: dt.datetime | None = None


@dataclasses.dataclass(frozen=True)
class PendingUpload:
    """A multipart upload that was started and neither completed nor aborted."""

    key: str
    upload_id: str
    initiated: dt.datetime


@dataclasses.dataclass(frozen=True)
class DeleteFailure:
    key: str
    code: str
    message: str


@dataclasses.dataclass(frozen=True)
class Retention:
    """Object Lock settings for new objects (mode "" means none)."""

    mode: str = ""
    until: dt.datetime | None = None


class AlreadyExists(StorageError):
    """A create-only write found the key taken (e.g. a lock held by another run)."""


class Conflict(StorageError):
    """A conditional write or delete (``if_match``) found the object changed or gone."""


class ObjectStore(Protocol):
    url: str

    def describe(self) -> str: ...

    def put_stream(self, key: str, reader: Readable, *, retention: Retention | None = None) -> StoredObject:
        """Stream ``reader`` to ``key`` (multipart). On any failure nothing stays visible at ``key``."""

    def put_bytes(self, key: str, data: bytes, *, create_only: bool = True,
                  retention: Retention | None = None, if_match: str = "") -> StoredObject:
        """Write a small object; with ``create_only`` raise ``AlreadyExists`` if ``key`` exists;
        with ``if_match`` replace it only if its ETag is still that (else ``Conflict``)."""

    def get_bytes(self, key: str, *, limit: int = 64 << 20) -> bytes: ...

    def get_object(self, key: str, *, limit: int = 64 << 20) -> tuple[bytes, StoredObject]:
        """One read: the bytes and, from the same response, the object's ETag and version id."""

    def delete_if_match(self, key: str, etag: str) -> None:
        """Delete ``key`` only if its ETag is still ``etag``; raise ``Conflict`` otherwise."""

    def open_read(self, key: str, *, version_id: str = "") -> Readable: ...

    def head(self, key: str) -> StoredObject | None: ...

    def list(self, prefix: str) -> Iterator[StoredObject]: ...

    def delete(self, keys: Sequence[str]) -> builtins.list[DeleteFailure]:
        """Delete keys; return the ones that could not be deleted (e.g. under Object Lock)."""

    def pending_uploads(self, prefix: str) -> builtins.list[PendingUpload]: ...

    def abort_upload(self, upload: PendingUpload) -> None: ...

    def locked_until(self, key: str) -> Retention | None:
        """The Object Lock retention of ``key``, if any is still in force."""
