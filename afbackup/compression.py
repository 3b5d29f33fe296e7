"""Compression: zstd, once, in the stream (pg_dump runs with ``-Z0`` and gpg with no compression).

Compressing three times (pg_dump -Z9, tar z, gpg's own zlib) costs most of
a naive backup's time and gains nothing. zstd at a low level is several
times faster than gzip -9 and compresses Airflow data at least as well.
Multithreaded zstd (``threads``) keeps the compressor off the critical path
on machines with spare cores.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from typing import IO, cast

import zstandard

from afbackup.errors import IntegrityError
from afbackup.streams import ChunkQueue, ChunkReader, Readable

CODEC = "zstd"
EXTENSION = ".zst"
READ_SIZE = 1 << 20
QUEUE_CHUNKS = 16


def default_threads() -> int:
    """Worker threads for zstd: none below 4 cores (pg_dump, the server and gpg need them), else cores - 2."""
    cores = os.cpu_count() or 1
    return 0 if cores < 4 else min(cores - 2, 4)


def compress_chunks(chunks: Iterable[bytes | memoryview], *, level: int, threads: int) -> Iterator[bytes]:
    """Compress a stream of chunks into one zstd frame, yielding output as it is produced."""
    compressor = zstandard.ZstdCompressor(level=level, threads=threads, write_checksum=True)
    stream = compressor.compressobj()
    for chunk in chunks:
        out = stream.compress(chunk)
        if out:
            yield out
    tail = stream.flush()
    if tail:
        yield tail


class Decompressor:
    """zstd decompression in its own thread, so it runs in parallel with the reader's hashing.

    ``reader`` yields the decompressed stream; at its end it raises whatever
    failed in the thread (a damaged frame is an ``IntegrityError``).
    zstandard and hashlib both release the GIL, so the two really overlap.
    """

    def __init__(self, source: Readable, cancel: threading.Event, *, chunk: int = READ_SIZE) -> None:
        self._source, self._chunk = source, chunk
        self._queue = ChunkQueue(QUEUE_CHUNKS, cancel)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="zstd-decompress", daemon=True)
        self._thread.start()
        self.reader = ChunkReader(self._queue.get, self._check)

    def _run(self) -> None:
        try:
            source = cast(IO[bytes], self._source)  # zstandard only calls read()
            chunks = zstandard.ZstdDecompressor().read_to_iter(source, read_size=self._chunk, write_size=self._chunk)
            for out in chunks:  # each at most write_size bytes, however well the data compressed
                self._queue.put(out)
        except zstandard.ZstdError as exc:
            self._error = IntegrityError(f"the archive does not decompress: {exc}", hint="the backup is damaged")
        except BaseException as exc:  # handed to the reader at the end of the stream
            self._error = exc
        finally:
            self._queue.close()

    def _check(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error
