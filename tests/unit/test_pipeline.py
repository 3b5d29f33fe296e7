"""The data path, stage by stage (wal-e style): tar → zstd → gpg → store, and back.

Real gpg with throwaway keys, real zstd, a real ``file://`` store; no PostgreSQL. The backup side is
driven exactly as ``backup._stream_archive`` drives it (``BackupStream.upload`` then ``close`` in a
``finally``), the restore side as ``unpack.read_archive`` does (``RestoreStream``, a ``TarReader``
consumer, ``conclude`` with the consumer's error, ``abort`` on any failure). Faults are injected with
fakes (an exploding producer, a chunk zstd cannot take, an unusable recipient, a store or a stored
object that breaks after some bytes, a consumer that raises), never by patching our code. Every
failure must (1) report the first, original error, (2) leave no thread and no child process behind
and (3) commit nothing: no object, visible or partial, in the store.
"""

from __future__ import annotations

import hashlib
import io
import random
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO

import pytest

from afbackup.archive import BLOCK, DUMP_BASENAME, TarReader, TarWriter
from afbackup.config.model import EncryptionConfig
from afbackup.crypto import Gpg
from afbackup.errors import AfbackupError, CryptoError, IntegrityError, StorageError
from afbackup.pipeline import BackupStream, RestoreStream, UploadOutcome
from afbackup.storage.base import Retention, StoredObject
from afbackup.storage.local import LocalStore
from tests.harness.gpgkeys import KeyRing, make_keyring
from tests.harness.leaks import Leaks

PART = 8 * BLOCK  # dump part size: small, so multi-part payloads stay small
MTIME = 1_790_000_000
KEY = "v1/backups/20261124T040001Z-3f9a1c/archive.tar.zst.gpg"


class Explosion(Exception):
    """A fault injected into one stage."""


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keys() -> Iterator[KeyRing]:
    ring = make_keyring(("backup",))
    try:
        yield ring
    finally:
        ring.cleanup()


@pytest.fixture(scope="module")
def public_keys(keys) -> Iterator[KeyRing]:
    """What a backup pod holds: the recipient's public key only (cannot decrypt)."""
    ring = keys.public_only_copy(["backup"])
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


# -- fakes ----------------------------------------------------------------------------------------
def payload(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def tar_chunks(dump: bytes, members: dict[str, bytes] | None = None) -> Iterator[bytes]:
    """The archive's chunks as ``backup._archive_chunks`` yields them (dump parts, small members, end)."""
    writer = TarWriter(MTIME)
    yield from writer.add_parts(DUMP_BASENAME, io.BytesIO(dump).readinto, PART)
    for name, data in (members or {}).items():
        yield from writer.add_bytes(name, data)
    yield writer.end()


def exploding(chunks: Iterable[bytes], after: int, fault: BaseException | object) -> Iterator[bytes]:
    """Yields ``after`` chunks, then raises ``fault`` (an exception) or yields it (a bad chunk)."""
    for index, chunk in enumerate(chunks):
        if index == after:
            if isinstance(fault, BaseException):
                raise fault
            yield fault  # type: ignore[misc]
            return
        yield chunk
    raise AssertionError("the stream ended before the fault")


class BreakingReader:
    """A byte stream that raises ``fault`` once ``after`` bytes were read, and on every read after that."""

    def __init__(self, inner: IO[bytes], after: int, fault: Callable[[], BaseException]) -> None:
        self._inner, self._left, self._fault = inner, after, fault
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._left <= 0:
            raise self._fault()
        data = self._inner.read(self._left if size < 0 else min(size, self._left))
        self._left -= len(data)
        self.read_bytes += len(data)
        return data

    def close(self) -> None:
        self._inner.close()


class BreakingStore(LocalStore):
    """A ``file://`` store whose upload connection breaks after ``after`` bytes (the store side fails)."""

    def __init__(self, url: str, after: int) -> None:
        super().__init__(url)
        self.after = after
        self.uploads: list[BreakingReader] = []

    def put_stream(self, key: str, reader: IO[bytes], *, retention: Retention | None = None) -> StoredObject:
        broken = BreakingReader(reader, self.after,
                                lambda: StorageError("uploading failed: connection reset by peer", stage="storage"))
        self.uploads.append(broken)
        return super().put_stream(key, broken, retention=retention)  # type: ignore[arg-type]


# -- the two directions, driven as production drives them -----------------------------------------
def backup(gpg: Gpg, store: LocalStore, chunks: Iterable[bytes], *, level: int = 3) -> UploadOutcome:
    stream = BackupStream(gpg, gpg.cfg.recipients, level=level, threads=0)
    try:
        return stream.upload(chunks, store, KEY)
    finally:
        stream.close()


def restore(gpg: Gpg, source: IO[bytes], size: int, sha256: str,
            consume: Callable[[str, bytes], None] | None = None) -> dict[str, bytes]:
    """Every member's bytes, after ``conclude`` accepted the stream (as ``read_archive`` does)."""
    stream = RestoreStream(gpg, source)
    members: dict[str, bytes] = {}
    try:
        try:
            for member in TarReader(stream.reader):
                members[member.name] = b"".join(member.chunks())
                if consume:
                    consume(member.name, members[member.name])
        except AfbackupError as exc:
            stream.conclude(size, sha256, KEY, consumer_error=exc)
            raise
        stream.conclude(size, sha256, KEY)
    except BaseException:
        stream.abort()
        raise
    return members


def dump_of(members: dict[str, bytes]) -> bytes:
    parts = sorted(name for name in members if name.startswith(DUMP_BASENAME + "."))
    return b"".join(members[name] for name in parts)


def nothing_stored(store: LocalStore) -> None:
    """Nothing committed: no visible object and no partial upload; at most empty directories."""
    assert list(store.list("")) == []
    assert store.pending_uploads("") == []
    assert [p for p in Path(store.root).rglob("*") if p.is_file()] == []


# -- round trips ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("size", "parts"), [
    (0, 1),              # empty dump: one empty part, never zero
    (1, 1),              # one byte
    (PART, 1),           # exactly one part: no empty trailing part
    (3 * PART + 7, 4),   # several parts, the last one short
], ids=["empty", "one-byte", "exactly-one-part", "multi-part"])
def test_round_trip_through_the_backup_and_restore_streams(gpg, store, leaks, size, parts):
    # GIVEN a dump of `size` bytes and a small member after it
    dump = payload(size)
    # WHEN it goes through tar → zstd → gpg → the store, and back
    outcome = backup(gpg, store, tar_chunks(dump, {"manifest.json": b'{"a": 1}'}))
    stored = store.get_bytes(KEY)
    members = restore(gpg, store.open_read(KEY), outcome.size, outcome.sha256)
    # THEN the store holds exactly what was counted and hashed, nothing else
    assert outcome.size == len(stored) == outcome.stored.size
    assert outcome.sha256 == hashlib.sha256(stored).hexdigest()
    assert [o.key for o in store.list("")] == [KEY]
    # AND the plaintext comes back byte for byte, in the expected parts
    assert dump_of(members) == dump
    assert [n for n in members if n.startswith(DUMP_BASENAME)] == [f"{DUMP_BASENAME}.{i:05d}" for i in range(parts)]
    assert members["manifest.json"] == b'{"a": 1}'
    # AND the stored bytes are ciphertext, not the dump
    assert size < 64 or dump[:64] not in stored
    leaks.assert_none_new()


def test_progress_sees_every_stored_byte(gpg, store):
    seen: list[int] = []
    stream = BackupStream(gpg, gpg.cfg.recipients, level=3, threads=0, on_bytes=seen.append)
    try:
        outcome = stream.upload(tar_chunks(payload(2 * PART)), store, KEY)
    finally:
        stream.close()
    assert sum(seen) == outcome.size > 0


# -- backup: each stage fails in turn ---------------------------------------------------------------
def test_producer_failure_is_reported_and_nothing_is_committed(gpg, store, leaks):
    # GIVEN a tar producer (pg_dump's side) that fails after some of its chunks went out
    chunks = exploding(tar_chunks(payload(6 * PART)), after=5, fault=Explosion("pg_dump died"))
    # WHEN the backup streams it
    with pytest.raises(Explosion, match="pg_dump died"):
        backup(gpg, store, chunks)
    # THEN that error, not a gpg or store error, is the one reported; nothing stays behind
    nothing_stored(store)
    leaks.assert_none_new()


def test_producer_failure_before_any_data_is_reported(gpg, store, leaks):
    with pytest.raises(Explosion, match="no snapshot"):
        backup(gpg, store, exploding(tar_chunks(b""), after=0, fault=Explosion("no snapshot")))
    nothing_stored(store)
    leaks.assert_none_new()


def test_compression_failure_mid_stream_is_reported(gpg, store, leaks):
    # GIVEN a chunk zstd cannot compress, after good ones
    chunks = exploding(tar_chunks(payload(6 * PART)), after=5, fault="not bytes")
    # WHEN the backup streams it
    with pytest.raises(TypeError, match="bytes-like object is required"):
        backup(gpg, store, chunks)
    # THEN zstd's own error is reported (not gpg's view of a short input, not a store error)
    nothing_stored(store)
    leaks.assert_none_new()


def test_compression_failure_at_the_start_is_reported(gpg, store, leaks):
    # GIVEN a compression level zstd refuses (the compressor fails before the first byte)
    with pytest.raises(ValueError, match="level must be less than"):
        backup(gpg, store, tar_chunks(payload(PART)), level=99)
    nothing_stored(store)
    leaks.assert_none_new()


def test_gpg_failure_is_a_crypto_error_and_nothing_is_committed(keys, store, leaks):
    # GIVEN a recipient whose key is not in the keyring (gpg refuses to encrypt)
    gpg = Gpg(EncryptionConfig(recipients=("0123456789ABCDEF0123456789ABCDEF01234567",),
                               gnupghome=str(keys.home)))
    # WHEN the backup streams
    with pytest.raises(CryptoError) as caught:
        backup(gpg, store, tar_chunks(payload(4 * PART)))
    # THEN gpg's failure is reported as such (exit 7, stage gpg), not the broken pipe it caused upstream
    assert caught.value.stage == "gpg"
    assert "encryption failed" in str(caught.value)
    nothing_stored(store)
    leaks.assert_none_new()


@pytest.mark.parametrize("after", [0, 700], ids=["at-the-first-byte", "mid-upload"])
def test_store_failure_is_reported_cancels_the_other_stages_and_commits_nothing(gpg, tmp_path, leaks, after):
    # GIVEN a store whose connection breaks after `after` bytes
    store = BreakingStore(f"file://{tmp_path / 'store'}", after=after)
    # WHEN a backup bigger than every buffer in between streams to it
    with pytest.raises(StorageError, match="connection reset by peer"):
        backup(gpg, store, tar_chunks(payload(300 * PART)))
    # THEN the store's error is reported, the producer stopped early, and nothing stays behind
    assert store.uploads[0].read_bytes == after
    nothing_stored(store)
    leaks.assert_none_new()


def test_a_producer_that_is_still_producing_stops_when_the_store_fails(gpg, tmp_path, leaks):
    # GIVEN an endless producer of incompressible data
    produced = []
    rng = random.Random(7)

    def endless() -> Iterator[bytes]:
        while True:
            block = rng.randbytes(64 << 10)
            produced.append(len(block))
            yield block

    store = BreakingStore(f"file://{tmp_path / 'store'}", after=100_000)
    # WHEN the store fails
    with pytest.raises(StorageError):
        backup(gpg, store, endless())
    # THEN the producer is not drained to the end of the world: it stopped within the pipeline's buffers
    assert sum(produced) < 64 << 20
    nothing_stored(store)
    leaks.assert_none_new()


# -- restore: each stage fails in turn --------------------------------------------------------------
@pytest.fixture
def stored(gpg, store) -> UploadOutcome:
    """A good archive of several parts in the store."""
    return backup(gpg, store, tar_chunks(payload(5 * PART), {"manifest.json": b"{}"}))


def test_a_read_failure_of_the_stored_object_is_reported(gpg, store, stored, leaks):
    # GIVEN a download that breaks half way (and stays broken)
    source = BreakingReader(store.open_read(KEY), stored.size // 2,
                            lambda: StorageError("reading the archive failed: connection reset", stage="storage"))
    # WHEN it is restored
    with pytest.raises(StorageError, match="connection reset"):
        restore(gpg, source, stored.size, stored.sha256)
    # THEN the read error is reported, not the truncated tar or gpg's complaint about a short input
    leaks.assert_none_new()


def test_a_missing_secret_key_is_a_crypto_error(public_keys, store, stored, leaks):
    gpg = Gpg(EncryptionConfig(recipients=(public_keys.fingerprints["backup"],), gnupghome=str(public_keys.home)))
    with pytest.raises(CryptoError, match="decryption failed"):
        restore(gpg, store.open_read(KEY), stored.size, stored.sha256)
    leaks.assert_none_new()


def test_a_damaged_object_is_an_integrity_error(gpg, store, stored, leaks):
    # GIVEN one flipped bit in the middle of the stored ciphertext
    data = bytearray(store.get_bytes(KEY))
    data[len(data) // 2] ^= 0x01
    # WHEN it is restored against the manifest's size and SHA-256
    with pytest.raises(IntegrityError, match="does not match the SHA-256"):
        restore(gpg, io.BytesIO(bytes(data)), stored.size, stored.sha256)
    leaks.assert_none_new()


def test_a_truncated_object_is_an_integrity_error(gpg, store, stored, leaks):
    data = store.get_bytes(KEY)[:-100]
    with pytest.raises(IntegrityError, match=f"is {stored.size - 100} bytes, the manifest says {stored.size}"):
        restore(gpg, io.BytesIO(data), stored.size, stored.sha256)
    leaks.assert_none_new()


def test_decompression_failure_is_an_integrity_error(gpg, keys, leaks):
    # GIVEN an object that decrypts fine but is not zstd (the decompression stage fails)
    ciphertext = gpg.new_context().encrypt(payload(50_000), [keys.fingerprints["backup"]], armor=False,
                                           always_trust=True).data
    sha = hashlib.sha256(ciphertext).hexdigest()
    # WHEN it is restored
    with pytest.raises(IntegrityError, match="does not decompress"):
        restore(gpg, io.BytesIO(ciphertext), len(ciphertext), sha)
    leaks.assert_none_new()


@pytest.mark.parametrize("fault", [IntegrityError("the dump part is out of order"), Explosion("the disk is full")],
                         ids=["afbackup-error", "other-error"])
def test_a_consumer_failure_is_reported_and_stops_the_stream(gpg, store, stored, leaks, fault):
    # GIVEN a consumer (the tar reader's sinks) that fails at the first dump part
    def consume(name: str, data: bytes) -> None:
        raise fault

    # WHEN the archive is restored
    with pytest.raises(type(fault), match=str(fault)):
        restore(gpg, store.open_read(KEY), stored.size, stored.sha256, consume)
    # THEN the consumer's error is reported and gpg/zstd stopped though the stream was not read to the end
    leaks.assert_none_new()


def test_a_good_stream_is_still_checked_to_its_last_byte_when_the_consumer_stops_early(gpg, store, stored, leaks):
    # GIVEN a consumer that stops reading after the first member without an error of its own
    stream = RestoreStream(gpg, store.open_read(KEY))
    first = next(iter(TarReader(stream.reader)))
    assert first.name == f"{DUMP_BASENAME}.00000"
    # WHEN it concludes with a (consumer) error, the whole ciphertext is still hashed and checked
    with pytest.raises(Explosion):
        stream.conclude(stored.size, stored.sha256, KEY, consumer_error=Explosion("stopped"))
    assert stream.cipher.size == stored.size and stream.cipher.hexdigest() == stored.sha256
    stream.abort()
    leaks.assert_none_new()
