"""The only composer of stream stages, one function per direction.

Backup:  tar chunks → zstd → gpg --encrypt → SHA-256/size count → object store
Restore: object store → SHA-256/size count → gpg --decrypt → zstd -d → tar reader

Restore is the exact inverse of backup and is chosen from the manifest, not
from today's configuration. Every hop is bounded (see ``streams``); a failure
anywhere cancels the others and the first, original error is raised.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterable, Iterator

from afbackup.compression import Decompressor, compress_chunks
from afbackup.crypto import Gpg, GpgStream
from afbackup.errors import AfbackupError, IntegrityError
from afbackup.storage.base import ObjectStore, Retention, StoredObject
from afbackup.streams import Cancelled, ChunkReader, HashingReader, Readable, reader_from_queue


@dataclasses.dataclass(frozen=True)
class UploadOutcome:
    stored: StoredObject
    sha256: str
    size: int


class BackupStream:
    """Runs ``tar chunks → zstd → gpg → store`` and joins every thread on the way out."""

    def __init__(self, gpg: Gpg, recipients: Iterable[str], *, level: int, threads: int,
                 on_bytes: Callable[[int], None] | None = None) -> None:
        self.cancel = threading.Event()
        self._gpg, self._recipients = gpg, list(recipients)
        self._level, self._threads, self._on_bytes = level, threads, on_bytes
        self._encrypt: GpgStream | None = None

    def upload(self, chunks: Iterable[bytes | memoryview], store: ObjectStore, key: str,
               retention: Retention | None = None) -> UploadOutcome:
        compressed = iter(compress_chunks(chunks, level=self._level, threads=self._threads))
        plain = ChunkReader(self._next_or_cancel(compressed))
        self._encrypt = GpgStream(self._gpg, plain, self.cancel, mode="encrypt", recipients=self._recipients)
        cipher = HashingReader(reader_from_queue(self._encrypt.output, on_eof=self._encrypt.check))
        try:
            stored = store.put_stream(key, _Counting(cipher, self._on_bytes), retention=retention)
        except BaseException:
            self.cancel.set()
            raise
        if stored.size != cipher.size:
            raise IntegrityError(f"{key} is {stored.size} bytes in storage but {cipher.size} were sent",
                                 hint="the store lost data; run the backup again", stage="upload")
        return UploadOutcome(stored, cipher.hexdigest(), cipher.size)

    def _next_or_cancel(self, iterator: Iterator[bytes]) -> Callable[[], bytes | None]:
        def next_chunk() -> bytes | None:
            if self.cancel.is_set():
                raise Cancelled()
            return next(iterator, None)

        return next_chunk

    def close(self, timeout: float = 60) -> None:
        """Join the encryption thread (call after the producer's process is gone)."""
        if self._encrypt:
            self._encrypt.join(timeout)


class _Counting:
    """Reports bytes as they pass to the store (for progress), nothing else."""

    def __init__(self, inner: Readable, on_bytes: Callable[[int], None] | None) -> None:
        self._inner, self._on_bytes = inner, on_bytes

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size)
        if self._on_bytes and data:
            self._on_bytes(len(data))
        return data


class RestoreStream:
    """``store → hash → gpg --decrypt → zstd -d``: ``reader`` yields the plaintext tar stream.

    When the consumer is done (or failed), ``conclude()`` gives the verdict in
    this order: a key that gpg could not use (crypto, exit 7); then the size
    and SHA-256 of every ciphertext byte against the manifest (integrity,
    exit 8); then gpg's own verdict (exit 7); then the consumer's error.
    Callers act on what they read only after ``conclude()`` returned.
    """

    def __init__(self, gpg: Gpg, source: Readable) -> None:
        self.cancel = threading.Event()
        self.cipher = HashingReader(source)
        self._decrypt = GpgStream(gpg, self.cipher, self.cancel, mode="decrypt")
        self.reader = Decompressor(reader_from_queue(self._decrypt.output), self.cancel).reader

    def conclude(self, expected_size: int, expected_sha256: str, what: str,
                 consumer_error: BaseException | None = None) -> None:
        if consumer_error is None:
            try:
                self.reader.read(-1)  # whatever follows the tar end marker
            except AfbackupError as exc:
                consumer_error = exc
        if consumer_error is not None:
            self.cancel.set()  # gpg drops the rest of its output instead of blocking on us
        crypto = self._decrypt.verdict()
        if crypto is not None and self._decrypt.key_problem:
            raise crypto
        self.cipher.drain()
        if self.cipher.size != expected_size:
            raise IntegrityError(f"{what} is {self.cipher.size} bytes, the manifest says {expected_size}",
                                 hint="the stored object is truncated or was replaced")
        if self.cipher.hexdigest() != expected_sha256:
            raise IntegrityError(f"{what} does not match the SHA-256 in its manifest",
                                 hint="the stored object is damaged or was altered")
        if crypto is not None:
            raise crypto
        if consumer_error is not None:
            raise consumer_error

    def abort(self) -> None:
        self.cancel.set()
        self._decrypt.join(30)
