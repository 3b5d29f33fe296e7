"""Stream plumbing between pipeline stages: bounded queues and file-like readers.

Every hop holds a bounded amount of data (``queue.Queue(maxsize=…)``), so the
peak memory of a backup is set by chunk sizes, never by the database size.
A cancelled pipeline unblocks every waiting producer and consumer, and a
producer's failure reaches the consumer as an exception from ``read()`` —
which is what makes s3transfer abort a multipart upload instead of
completing a truncated one.
"""

from __future__ import annotations

import collections
import hashlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol, cast

_EOF = object()
POLL_SECONDS = 0.2


class Readable(Protocol):
    """What every stage reads from: ``read(size)`` returns up to ``size`` bytes, ``b""`` at the end."""

    def read(self, size: int = -1, /) -> bytes: ...


class Cancelled(Exception):
    """The pipeline was cancelled because another stage failed first."""


class ChunkQueue:
    """A bounded hand-off of byte chunks between two threads, with cancellation."""

    def __init__(self, maxsize: int, cancel: threading.Event) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=maxsize)
        self._cancel = cancel

    def put(self, chunk: bytes) -> None:
        self._put(chunk)

    def _put(self, item: object) -> None:
        while True:
            if self._cancel.is_set():
                raise Cancelled()
            try:
                self._queue.put(item, timeout=POLL_SECONDS)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        """Mark the end of the stream (never blocks forever: gives up when cancelled)."""
        try:
            self._put(_EOF)
        except Cancelled:
            pass

    def get(self) -> bytes | None:
        """The next chunk, or None at the end of the stream."""
        while True:
            if self._cancel.is_set():
                raise Cancelled()
            try:
                item = self._queue.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue
            return None if item is _EOF else cast(bytes, item)  # only put() adds anything else


class ChunkReader:
    """File-like ``read(n)`` over a source of chunks, filling ``n`` bytes unless at EOF.

    ``next_chunk`` returns bytes, or None at the end. ``on_eof`` runs once at the
    end and may raise: that is how a consumer learns a producer failed after
    its data already ended (a truncated stream must never look complete).
    """

    def __init__(self, next_chunk: Callable[[], bytes | None], on_eof: Callable[[], None] | None = None) -> None:
        self._next = next_chunk
        self._on_eof = on_eof
        self._pending: collections.deque[memoryview] = collections.deque()  # chunks not yet read, in order
        self._buffered = 0
        self._done = False
        self._error: BaseException | None = None

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._error is not None:  # sticky: a failed stream never looks like a clean end later
            raise self._error
        while not self._done and (size < 0 or self._buffered < size):
            chunk = self._next()
            if chunk is None:
                self._finish()
                break
            if chunk:
                self._pending.append(memoryview(chunk))
                self._buffered += len(chunk)
        return self._take(self._buffered if size < 0 else min(size, self._buffered))

    def _take(self, size: int) -> bytes:
        """Exactly ``size`` buffered bytes, copied once (no shifting of a growing buffer)."""
        if len(self._pending) == 1 and len(self._pending[0]) == size:
            self._buffered = 0
            return self._pending.popleft().tobytes()
        pieces, left = [], size
        while left:
            head = self._pending[0]
            if len(head) <= left:
                pieces.append(self._pending.popleft())
                left -= len(head)
            else:
                pieces.append(head[:left])
                self._pending[0] = head[left:]
                left = 0
        self._buffered -= size
        return b"".join(pieces)

    def _finish(self) -> None:
        self._done = True
        if self._on_eof:
            on_eof, self._on_eof = self._on_eof, None
            try:
                on_eof()
            except BaseException as exc:
                self._error = exc
                raise

    def close(self) -> None:
        pass


def reader_from_iter(chunks: Iterable[bytes], on_eof: Callable[[], None] | None = None) -> ChunkReader:
    iterator: Iterator[bytes] = iter(chunks)
    return ChunkReader(lambda: next(iterator, None), on_eof)


def reader_from_queue(chunks: ChunkQueue, on_eof: Callable[[], None] | None = None) -> ChunkReader:
    return ChunkReader(chunks.get, on_eof)


class HashingReader:
    """Counts and SHA-256-hashes whatever passes through ``read``.

    Reads are serialized: python-gnupg's copy thread may still finish a read
    after gpg exited while our own ``drain()`` starts, and the hash must see
    the bytes in stream order.
    """

    def __init__(self, inner: Readable) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self.sha256 = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        with self._lock:
            data = self._inner.read(size)
            self.sha256.update(data)
            self.size += len(data)
        return data

    def drain(self, chunk: int = 1 << 20) -> None:
        """Read (and hash) whatever is left, e.g. after a consumer stopped early."""
        while self.read(chunk):
            pass

    def hexdigest(self) -> str:
        return self.sha256.hexdigest()

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close:
            close()
