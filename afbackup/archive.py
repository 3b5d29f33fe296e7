"""The tar layer: a streaming writer and a strict streaming reader.

Why members are split into parts: a tar header must state a member's size
before its data, and pg_dump's output size is unknown until it ends. Spooling
the dump to disk would put plaintext on disk, and holding it in memory would
make memory grow with the database. So the dump is cut into parts of a fixed
size (``db/airflow.pgdump.00000``, ``.00001``, …), each buffered once in
memory. Standard tools join them back: ``tar -xOf - --wildcards
'db/airflow.pgdump.*'`` writes the parts in order to stdout.

The reader never extracts to a path chosen by the archive: it yields members
to the caller, rejects absolute names, ``..``, links and special files, and
checks the end-of-archive marker.
"""

from __future__ import annotations

import dataclasses
import hashlib
import tarfile
from collections.abc import Callable, Iterator

from afbackup.errors import IntegrityError
from afbackup.streams import Readable

BLOCK = 512
END_OF_ARCHIVE = b"\0" * (2 * BLOCK)
DUMP_BASENAME = "db/airflow.pgdump"
READ_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class MemberRecord:
    name: str
    size: int
    sha256: str


def _header(name: str, size: int, mtime: float) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = int(mtime)
    info.mode = 0o600
    info.uname = info.gname = "afbackup"
    return info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")


def _padding(size: int) -> bytes:
    return b"\0" * (-size % BLOCK)


class TarWriter:
    """Yields tar bytes member by member and records each member's size and SHA-256."""

    def __init__(self, mtime: float) -> None:
        self.mtime = mtime
        self.members: list[MemberRecord] = []

    def add_bytes(self, name: str, data: bytes) -> Iterator[bytes]:
        self.members.append(MemberRecord(name, len(data), hashlib.sha256(data).hexdigest()))
        yield _header(name, len(data), self.mtime)
        yield data
        yield _padding(len(data))

    def add_parts(self, basename: str, readinto: Callable[[memoryview], int],
                  part_size: int) -> Iterator[bytes | memoryview]:
        """Split a stream into members ``basename.NNNNN`` of ``part_size`` bytes (the last shorter).

        ``readinto`` fills a buffer like ``RawIOBase.readinto``; 0 means EOF. The
        one buffer is reused: consumers must not keep the yielded views.
        """
        buffer = bytearray(part_size)
        view = memoryview(buffer)
        index = 0
        while True:
            filled = _fill(readinto, view)
            if filled == 0 and index > 0:
                return
            name = f"{basename}.{index:05d}"
            data = view[:filled]
            self.members.append(MemberRecord(name, filled, hashlib.sha256(data).hexdigest()))
            yield _header(name, filled, self.mtime)
            yield data
            yield _padding(filled)
            index += 1
            if filled < part_size:
                return

    def end(self) -> bytes:
        return END_OF_ARCHIVE


def _fill(readinto: Callable[[memoryview], int], view: memoryview) -> int:
    filled = 0
    while filled < len(view):
        got = readinto(view[filled:])
        if not got:
            break
        filled += got
    return filled


@dataclasses.dataclass
class Member:
    """A member being read: ``chunks()`` yields its data once, hashing as it goes."""

    name: str
    size: int
    _reader: TarReader

    def chunks(self) -> Iterator[bytes]:
        yield from self._reader._member_data(self)

    def read_all(self, limit: int) -> bytes:
        if self.size > limit:
            raise IntegrityError(f"archive member {self.name} is {self.size} bytes, more than expected")
        return b"".join(self.chunks())


class TarReader:
    """Strict streaming reader of the archives ``TarWriter`` makes."""

    def __init__(self, stream: Readable) -> None:
        self._stream = stream
        self.records: list[MemberRecord] = []
        self._pending: Member | None = None

    def __iter__(self) -> Iterator[Member]:
        while True:
            self._skip_pending()
            block = self._read_exact(BLOCK, "a tar header")
            if block == b"\0" * BLOCK:
                self._read_exact(BLOCK, "the end-of-archive marker")
                return
            member = self._parse(block)
            self._pending = member
            yield member

    def _parse(self, block: bytes) -> Member:
        try:
            info = tarfile.TarInfo.frombuf(block, "utf-8", "strict")
        except tarfile.HeaderError as exc:
            raise IntegrityError(f"the archive has a damaged tar header: {exc}") from None
        name = info.name
        if not info.isreg():
            raise IntegrityError(f"the archive holds a non-regular member {name!r}; refusing it")
        if name.startswith("/") or ".." in name.split("/") or "\\" in name:
            raise IntegrityError(f"the archive holds an unsafe member name {name!r}; refusing it")
        return Member(name=name, size=info.size, _reader=self)

    def _member_data(self, member: Member) -> Iterator[bytes]:
        if self._pending is not member:
            raise RuntimeError("tar members must be read in order, once")
        digest = hashlib.sha256()
        left = member.size
        while left:
            chunk = self._read_exact(min(READ_CHUNK, left), f"member {member.name}")
            digest.update(chunk)
            left -= len(chunk)
            yield chunk
        self._read_exact(-member.size % BLOCK, f"member {member.name} padding")
        self.records.append(MemberRecord(member.name, member.size, digest.hexdigest()))
        self._pending = None

    def _skip_pending(self) -> None:
        if self._pending is not None:
            for _ in self._pending.chunks():
                pass

    def _read_exact(self, size: int, what: str) -> bytes:
        data = self._stream.read(size) if size else b""
        if len(data) != size:
            raise IntegrityError(f"the archive ends early, inside {what}: the backup is truncated")
        return data
