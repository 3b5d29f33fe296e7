"""Compression: zstd, once, in the stream (pg_dump runs with ``-Z0`` and gpg with no compression).

Compressing three times (pg_dump -Z9, tar z, gpg's own zlib) costs most of
a naive backup's time and gains nothing. zstd at a low level is several
times faster than gzip -9 and compresses Airflow data at least as well.
Multithreaded zstd (``threads``) keeps the compressor off the critical path
on machines with spare cores.
"""

from __future__ import annotations

import os
from typing import Iterable, Iterator

import zstandard

from afbackup.errors import IntegrityError

CODEC = "zstd"
EXTENSION = ".zst"
READ_SIZE = 1 << 20


def default_threads() -> int:
    """Worker threads for zstd: none below 4 cores (pg_dump, the server and gpg need them), else cores - 2."""
    cores = os.cpu_count() or 1
    return 0 if cores < 4 else min(cores - 2, 4)


def compress_chunks(chunks: Iterable[bytes], *, level: int, threads: int) -> Iterator[bytes]:
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


class DecompressingReader:
    """File-like reader of decompressed data over a compressed ``read()``-able source."""

    def __init__(self, source) -> None:
        self._source = source
        self._reader = zstandard.ZstdDecompressor().stream_reader(source, read_size=READ_SIZE, read_across_frames=True)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        try:
            if size < 0:
                return self._reader.readall()
            data = self._reader.read(size)
            if len(data) == size or not data:
                return data
            chunks = [data]
            size -= len(data)
            while size > 0:
                data = self._reader.read(size)
                if not data:
                    break
                chunks.append(data)
                size -= len(data)
            return b"".join(chunks)
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"the archive does not decompress: {exc}", hint="the backup is damaged") from None

    def close(self) -> None:
        self._reader.close()
