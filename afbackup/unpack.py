"""Reading a stored backup back: trust the manifest, then stream and check the archive.

Order of trust: the manifest is read once and its signature and deployment
are checked (``afbackup.trust``); the manifest then pins the stored object's size and SHA-256
and every member's size and SHA-256. While the archive streams, the dump goes
to the caller's sinks (a spool file, ``pg_restore --list``) and the small
members are kept in memory; nothing is *acted on* before ``read_archive``
returned, i.e. before every checksum, gpg's verdict and the member list
matched the manifest.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from afbackup import manifest as mf
from afbackup.archive import DUMP_BASENAME, TarReader
from afbackup.catalog import BackupRecord, resolve_backup
from afbackup.crypto import Gpg
from afbackup.errors import AfbackupError, IntegrityError
from afbackup.pipeline import RestoreStream
from afbackup.storage.base import ObjectStore
from afbackup.trust import Trust

logger = logging.getLogger(__name__)

SMALL_MEMBER_LIMIT = 256 << 20


class DumpSink(Protocol):
    def write(self, data: bytes) -> None: ...

    def finish(self) -> None: ...

    def abort(self) -> None: ...


@dataclasses.dataclass
class ArchiveContents:
    members: dict[str, bytes]  # every member except the dump parts
    dump_size: int

    def json(self, name: str) -> Any:
        return json.loads(self.members[name])


def trusted_manifest(store: ObjectStore, ref: str, trust: Trust) -> BackupRecord:
    """Resolve ``ref`` to a trusted backup: its manifest read once, its signature and deployment checked."""
    record = resolve_backup(store, ref, trust)
    if record.signer:
        logger.info("manifest of %s signed by trusted key %s%s", record.backup_id, record.signer,
                    f" (manifest version {record.manifest_version})" if record.manifest_version else "")
    else:
        logger.warning("backup %s has no checked signature; its manifest is trusted as stored "
                       "(encryption.require_signature = false)", record.backup_id)
    return record


def read_archive(store: ObjectStore, manifest: mf.Manifest, gpg: Gpg, sinks: Sequence[DumpSink],
                 on_bytes: Callable[[int], None] | None = None) -> ArchiveContents:
    """Stream, decrypt, decompress and check the archive; feed dump parts to ``sinks``."""
    key = mf.key_of(manifest.backup_id, manifest.archive.key)
    stream = RestoreStream(gpg, store.open_read(key, version_id=manifest.archive.version_id))
    reader = TarReader(stream.reader)
    contents = ArchiveContents({}, 0)
    try:
        try:
            _consume(reader, manifest, contents, sinks, on_bytes)
        except AfbackupError as exc:
            stream.conclude(manifest.archive.size, manifest.archive.sha256, key, consumer_error=exc)
            raise
        stream.conclude(manifest.archive.size, manifest.archive.sha256, key)
        _check_members(reader, manifest)
        _check_inner_manifest(contents, manifest)
        for sink in sinks:
            sink.finish()
    except BaseException:
        stream.abort()
        for sink in sinks:
            sink.abort()
        raise
    return contents


def _consume(reader: TarReader, manifest: mf.Manifest, contents: ArchiveContents, sinks: Sequence[DumpSink],
             on_bytes: Callable[[int], None] | None) -> None:
    expected = {m.name for m in manifest.members} | {mf.ARCHIVE_MANIFEST_MEMBER}  # the copy is checked by content
    next_part = 0
    for member in reader:
        if member.name not in expected:
            raise IntegrityError(f"the archive holds {member.name}, which its manifest does not list")
        if member.name.startswith(DUMP_BASENAME + "."):
            if member.name != f"{DUMP_BASENAME}.{next_part:05d}":
                raise IntegrityError(f"dump part {member.name} is out of order (expected part {next_part})")
            next_part += 1
            for chunk in member.chunks():
                contents.dump_size += len(chunk)
                for sink in sinks:
                    sink.write(chunk)
                if on_bytes:
                    on_bytes(len(chunk))
        else:
            contents.members[member.name] = member.read_all(SMALL_MEMBER_LIMIT)


def _check_members(reader: TarReader, manifest: mf.Manifest) -> None:
    found = {record.name: record for record in reader.records}
    if mf.ARCHIVE_MANIFEST_MEMBER not in found:
        raise IntegrityError("the archive holds no copy of its manifest", hint="the backup is incomplete")
    for member in manifest.members:
        got = found.get(member.name)
        if got is None:
            raise IntegrityError(f"archive member {member.name} is missing", hint="the backup is incomplete")
        if got.size != member.size or got.sha256 != member.sha256:
            raise IntegrityError(f"archive member {member.name} does not match its SHA-256/size in the manifest",
                                 hint="the archive was altered")


def _check_inner_manifest(contents: ArchiveContents, manifest: mf.Manifest) -> None:
    field = manifest.copy_differs(contents.json(mf.ARCHIVE_MANIFEST_MEMBER))
    if field is not None:
        raise IntegrityError(f"the stored manifest and the archive's copy differ in {field!r}",
                             hint="the stored manifest was altered")
