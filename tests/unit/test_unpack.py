"""Reading a stored backup back (``unpack.read_archive``) into a real spool file, and each way that fails.

The archive and its manifest are written as ``backup`` writes them (tar with the manifest's copy inside,
zstd, gpg, a ``file://`` store, the manifest last); no PostgreSQL. On every failure the first error is
reported, no thread or child is left, and no plaintext is left on disk: the spool file is removed by the
sink's ``abort`` before ``private_dir`` even removes its directory.
"""

from __future__ import annotations

import errno
import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from afbackup import manifest as mf
from afbackup.archive import BLOCK, DUMP_BASENAME, TarWriter
from afbackup.config.model import EncryptionConfig
from afbackup.crypto import Gpg
from afbackup.errors import IntegrityError
from afbackup.pipeline import BackupStream
from afbackup.sinks import SpoolSink, private_dir
from afbackup.storage.local import LocalStore
from afbackup.unpack import read_archive
from tests.harness.gpgkeys import KeyRing, make_keyring
from tests.harness.leaks import Leaks
from tests.harness.manifests import manifest_doc

PART = 8 * BLOCK
BACKUP_ID = "20261124T040001Z-3f9a1c"
STARTED = "2026-11-24T04:00:01.000Z"


@pytest.fixture(scope="module")
def keys() -> Iterator[KeyRing]:
    ring = make_keyring(("backup",))
    try:
        yield ring
    finally:
        ring.cleanup()


@pytest.fixture
def gpg(keys) -> Gpg:
    return Gpg(EncryptionConfig(recipients=(keys.fingerprints["backup"],), gnupghome=str(keys.home)))


@pytest.fixture
def store(tmp_path) -> LocalStore:
    return LocalStore(f"file://{tmp_path / 'store'}")


@pytest.fixture
def leaks() -> Leaks:
    return Leaks.snapshot()


def write_backup(gpg: Gpg, store: LocalStore, dump: bytes) -> mf.Manifest:
    """Archive (with the manifest's copy inside) → zstd → gpg → store, then the manifest, like ``backup``."""
    writer = TarWriter(1_790_000_000)
    inner: dict = {}

    def chunks() -> Iterator[bytes]:
        yield from writer.add_parts(DUMP_BASENAME, io.BytesIO(dump).readinto, PART)
        members = [{"name": m.name, "size": m.size, "sha256": m.sha256} for m in writer.members]
        doc = manifest_doc(backup_id=BACKUP_ID, status="archived", started_at=STARTED, archive_members=members)
        inner.update({k: v for k, v in doc.items() if k not in mf.OUTER_ONLY})
        yield from writer.add_bytes(mf.ARCHIVE_MANIFEST_MEMBER, mf.dump_manifest(inner))
        yield writer.end()

    stream = BackupStream(gpg, gpg.cfg.recipients, level=3, threads=0)
    try:
        outcome = stream.upload(chunks(), store, mf.key_of(BACKUP_ID, mf.ARCHIVE_NAME))
    finally:
        stream.close()
    doc = dict(inner, status="complete", finished_at="2026-11-24T04:00:09.500Z", objects=[
        {"key": mf.ARCHIVE_NAME, "size": outcome.size, "sha256": outcome.sha256, "etag": "", "version_id": ""}])
    data = mf.dump_manifest(doc)
    store.put_bytes(mf.key_of(BACKUP_ID, mf.MANIFEST_NAME), data)
    return mf.parse_manifest(data, "manifest.json")


class FailingSink:
    """A dump sink that fails after ``after`` bytes (a full disk, a dead pg_restore)."""

    def __init__(self, after: int, fault: BaseException) -> None:
        self.left, self.fault = after, fault
        self.aborted = self.finished = False

    def write(self, data: bytes) -> None:
        self.left -= len(data)
        if self.left < 0:
            raise self.fault

    def finish(self) -> None:
        self.finished = True

    def abort(self) -> None:
        self.aborted = True


def files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()]


@pytest.mark.parametrize("size", [0, 1, PART, 3 * PART + 5], ids=["empty", "one-byte", "one-part", "multi-part"])
def test_the_dump_comes_back_into_the_spool_file(gpg, store, tmp_path, leaks, size):
    dump = bytes(range(256)) * (size // 256) + bytes(size % 256)
    manifest = write_backup(gpg, store, dump)
    with private_dir(str(tmp_path)) as spool:
        sink = SpoolSink(spool / "dump")
        contents = read_archive(store, manifest, gpg, [sink])
        assert (spool / "dump").read_bytes() == dump
        assert oct((spool / "dump").stat().st_mode & 0o777) == "0o600"
    assert contents.dump_size == size
    assert contents.json(mf.ARCHIVE_MANIFEST_MEMBER)["backup_id"] == BACKUP_ID
    assert files_under(tmp_path) == files_under(tmp_path / "store")  # the spool directory is gone
    leaks.assert_none_new()


@pytest.mark.parametrize("fault", [OSError(errno.ENOSPC, "No space left on device"),
                                   IntegrityError("pg_restore --list cannot read the dump")],
                         ids=["disk-full", "afbackup-error"])
def test_a_failing_sink_is_reported_and_no_plaintext_stays(gpg, store, tmp_path, leaks, fault):
    # GIVEN a backup of several parts, restored into a spool file and a sink that fails half way
    manifest = write_backup(gpg, store, bytes(5 * PART))
    with private_dir(str(tmp_path)) as spool:
        spooled, failing = SpoolSink(spool / "dump"), FailingSink(2 * PART, fault)
        # WHEN the archive is read
        with pytest.raises(type(fault)) as caught:
            read_archive(store, manifest, gpg, [spooled, failing])
        # THEN the sink's error is the one reported, every sink was aborted, and the spooled part is gone already
        assert caught.value is fault
        assert failing.aborted and not failing.finished
        assert not (spool / "dump").exists()
    leaks.assert_none_new()


def test_a_damaged_archive_is_an_integrity_error_and_no_plaintext_stays(gpg, store, tmp_path, leaks):
    # GIVEN one flipped bit in the stored archive
    manifest = write_backup(gpg, store, bytes(5 * PART))
    path = Path(store.root) / mf.key_of(BACKUP_ID, mf.ARCHIVE_NAME)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    # WHEN it is read into a spool file
    with private_dir(str(tmp_path)) as spool:
        sink = SpoolSink(spool / "dump")
        with pytest.raises(IntegrityError):
            read_archive(store, manifest, gpg, [sink])
        # THEN nothing that was decrypted before the damage was found stays on disk
        assert not (spool / "dump").exists()
    leaks.assert_none_new()


def test_a_manifest_whose_copy_inside_differs_is_refused_after_reading(gpg, store, tmp_path, leaks):
    # GIVEN a stored manifest altered after the backup (its archive copy says otherwise)
    manifest = write_backup(gpg, store, bytes(PART))
    doc = dict(manifest.raw, scope=dict(manifest.raw["scope"], data_tables=["forged"]))
    altered = mf.parse_manifest(mf.dump_manifest(doc), "manifest.json")
    with private_dir(str(tmp_path)) as spool:
        sink = SpoolSink(spool / "dump")
        with pytest.raises(IntegrityError, match="differ in 'scope'"):
            read_archive(store, altered, gpg, [sink])
        assert not (spool / "dump").exists()
    leaks.assert_none_new()
