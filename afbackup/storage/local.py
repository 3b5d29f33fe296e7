"""A filesystem object store (``file:///path``): for VMs with a mounted backup volume, tests and drills.

Writes go to a hidden temporary file that is fsynced and then renamed (or,
for create-only objects, hard-linked, which fails atomically if the name
exists), so a reader never sees half an object. Temporary files left by a
killed run are reported as pending uploads, and ``prune`` removes them.

ETags are the SHA-256 of the content (small objects only: ``get_object`` and
``put_bytes`` compute them). Conditional replace and delete (``if_match``,
the lock's takeover, refresh and release) compare and act while holding an
exclusive ``flock`` on ``<root>/.afbackup-cas.lock``, so two runs can never
both replace the same version; create-only writes stay an atomic hard link.
"""

from __future__ import annotations

import builtins
import contextlib
import datetime as dt
import fcntl
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

from afbackup.errors import AfbackupError, NotFoundError, StorageError
from afbackup.storage.base import AlreadyExists, Conflict, DeleteFailure, PendingUpload, Retention, StoredObject
from afbackup.streams import Readable

PARTIAL = ".partial-"
COPY_CHUNK = 1 << 20
CAS_LOCK = ".afbackup-cas.lock"


def content_etag(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


class LocalStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self.root = Path(url.removeprefix("file://"))
        if not self.root.is_absolute():
            raise StorageError(f"{url} is not an absolute file:// URL", hint="use file:///absolute/path")

    def describe(self) -> str:
        return self.url

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise StorageError(f"refusing key {key!r} outside {self.root}")
        return path

    def _temp_for(self, path: Path) -> Path:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {path.parent}: {exc.strerror}", stage="storage") from None
        return path.with_name(f".{path.name}{PARTIAL}{uuid.uuid4().hex[:12]}")

    def put_stream(self, key: str, reader: Readable, *, retention: Retention | None = None) -> StoredObject:
        path = self._path(key)
        temp = self._temp_for(path)
        try:
            with open(temp, "xb") as out:
                shutil.copyfileobj(reader, out, COPY_CHUNK)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, path)
            _fsync_dir(path.parent)
        except AfbackupError:
            temp.unlink(missing_ok=True)
            raise
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise StorageError(f"writing {path} failed: {exc.strerror}", stage="storage") from None
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        stored = self.head(key)
        if stored is None:
            raise StorageError(f"{path} vanished right after it was written", stage="storage")
        return stored

    def put_bytes(self, key: str, data: bytes, *, create_only: bool = True,
                  retention: Retention | None = None, if_match: str = "") -> StoredObject:
        path = self._path(key)
        temp = self._temp_for(path)
        try:
            with open(temp, "xb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            if if_match:
                with self._cas():
                    self._require_etag(key, if_match)
                    os.replace(temp, path)
            elif create_only:
                os.link(temp, path)  # atomic create-only: fails if the name exists
            else:
                os.replace(temp, path)
            _fsync_dir(path.parent)
        except FileExistsError:
            raise AlreadyExists(f"{key} already exists", stage="storage") from None
        except OSError as exc:
            raise StorageError(f"writing {path} failed: {exc.strerror}", stage="storage") from None
        finally:
            temp.unlink(missing_ok=True)
        return StoredObject(key, len(data), content_etag(data))

    @contextlib.contextmanager
    def _cas(self) -> Iterator[None]:
        """Serialize compare-and-swap operations on this store (an exclusive flock)."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / CAS_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the flock

    def _require_etag(self, key: str, etag: str) -> None:
        try:
            current = content_etag(self._path(key).read_bytes())
        except FileNotFoundError:
            raise Conflict(f"{key} is gone since it was read", stage="storage") from None
        if current != etag:
            raise Conflict(f"{key} changed since it was read (ETag {etag})", stage="storage")

    def get_object(self, key: str, *, limit: int = 64 << 20) -> tuple[bytes, StoredObject]:
        data = self.get_bytes(key, limit=limit)
        return data, StoredObject(key, len(data), content_etag(data))

    def delete_if_match(self, key: str, etag: str) -> None:
        with self._cas():
            self._require_etag(key, etag)
            try:
                self._path(key).unlink()
            except OSError as exc:
                raise StorageError(f"deleting {key} failed: {exc.strerror}", stage="storage") from None

    def get_bytes(self, key: str, *, limit: int = 64 << 20) -> bytes:
        with self.open_read(key) as fh:
            data = fh.read(limit + 1)
        if len(data) > limit:
            raise StorageError(f"{key} is larger than {limit} bytes", stage="storage")
        return data

    def open_read(self, key: str, *, version_id: str = "") -> IO[bytes]:
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError:
            raise NotFoundError(f"{self.url}/{key} does not exist", stage="storage") from None
        except OSError as exc:
            raise StorageError(f"reading {self.url}/{key} failed: {exc.strerror}", stage="storage") from None

    def head(self, key: str) -> StoredObject | None:
        try:
            st = self._path(key).stat()
        except FileNotFoundError:
            return None
        return StoredObject(key, st.st_size, last_modified=dt.datetime.fromtimestamp(st.st_mtime, dt.UTC))

    def list(self, prefix: str) -> Iterator[StoredObject]:
        for path in sorted(self._walk(prefix)):
            key = path.relative_to(self.root).as_posix()
            if key.startswith(prefix) and PARTIAL not in path.name and key != CAS_LOCK:
                obj = self.head(key)
                if obj:
                    yield obj

    def _walk(self, prefix: str = "") -> Iterator[Path]:
        """Files under the deepest directory ``prefix`` names (``v1/drills/`` walks only that folder)."""
        start = self.root / prefix.rpartition("/")[0] if "/" in prefix else self.root
        if not start.is_dir():
            return
        for dirpath, _, names in os.walk(start):
            for name in names:
                yield Path(dirpath) / name

    def delete(self, keys: Sequence[str]) -> builtins.list[DeleteFailure]:
        failures = []
        for key in keys:
            try:
                self._path(key).unlink(missing_ok=True)
            except OSError as exc:
                failures.append(DeleteFailure(key, "OSError", exc.strerror or str(exc)))
        return failures

    def pending_uploads(self, prefix: str) -> builtins.list[PendingUpload]:
        pending = []
        for path in self._walk():
            key = path.relative_to(self.root).as_posix()
            if PARTIAL in path.name and key.startswith(prefix):
                started = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
                pending.append(PendingUpload(key, path.name, started))
        return pending

    def abort_upload(self, upload: PendingUpload) -> None:
        self._path(upload.key).unlink(missing_ok=True)

    def locked_until(self, key: str) -> Retention | None:
        return None  # a filesystem has no Object Lock


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
