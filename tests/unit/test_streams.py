"""Stream plumbing: readers fill exactly, EOF hooks run once, queues are bounded and cancellable."""

from __future__ import annotations

import hashlib
import random
import threading
import time

import pytest

from afbackup.errors import SourceError
from afbackup.streams import Cancelled, ChunkQueue, ChunkReader, HashingReader, reader_from_iter, reader_from_queue

WAIT = 2.0  # seconds: upper bound for things that should happen "promptly" (POLL_SECONDS is 0.2)


def chunked(data: bytes, sizes) -> list[bytes]:
    out, pos = [], 0
    for size in sizes:
        out.append(data[pos:pos + size])
        pos += size
    out.append(data[pos:])
    return out


# -- ChunkReader ------------------------------------------------------------------------
def test_read_n_fills_exactly_n_bytes_across_chunks_until_eof():
    # GIVEN chunks of odd sizes, including an empty one in the middle
    data = bytes(range(256)) * 4
    reader = reader_from_iter(chunked(data, [1, 0, 300, 7, 500]))
    # WHEN reading in fixed sizes
    pieces = [reader.read(100) for _ in range(10)]
    # THEN every read is exactly 100 bytes until the data runs out, then short, then empty
    assert [len(p) for p in pieces] == [100] * 10
    assert reader.read(100) == data[1000:]
    assert len(data[1000:]) == 24
    assert reader.read(100) == b""
    assert b"".join(pieces) + data[1000:] == data


def test_read_minus_one_reads_everything():
    data = random.Random(3).randbytes(10_000)
    reader = reader_from_iter(chunked(data, [10, 4000, 1]))
    assert reader.read(5) == data[:5]
    assert reader.read(-1) == data[5:]
    assert reader.read() == b""


def test_read_zero_returns_empty_without_consuming():
    chunks = iter([b"abc"])
    reader = ChunkReader(lambda: next(chunks, None))
    assert reader.read(0) == b""
    assert reader.read() == b"abc"


def test_on_eof_is_called_exactly_once():
    calls = []
    reader = reader_from_iter([b"ab", b"cd"], on_eof=lambda: calls.append("eof"))
    assert reader.read(2) == b"ab"
    assert calls == []  # not before the end
    assert reader.read(10) == b"cd"
    for _ in range(3):
        assert reader.read(10) == b""
    assert calls == ["eof"]


def test_on_eof_exception_propagates_to_the_reader():
    # GIVEN a producer whose data ended but which then reports a failure
    def producer_failed():
        raise SourceError("pg_dump exited with 1", stage="pg_dump")

    reader = reader_from_iter([b"partial dump"], on_eof=producer_failed)
    # WHEN the consumer reads to the end
    # THEN it gets the producer's error, not a clean EOF
    with pytest.raises(SourceError, match="pg_dump exited with 1"):
        reader.read(-1)


def test_on_eof_exception_propagates_even_when_data_fills_the_request():
    # the failing EOF hook is reached by the read that discovers the end, whatever its size
    reader = reader_from_iter([b"12345"], on_eof=lambda: (_ for _ in ()).throw(SourceError("late failure")))
    assert reader.read(5) == b"12345"
    with pytest.raises(SourceError):
        reader.read(5)


# -- ChunkQueue --------------------------------------------------------------------------
def start(target) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def run():
        try:
            outcome["value"] = target()
        except BaseException as exc:  # recorded for the test to inspect
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_put_blocks_when_the_queue_is_full():
    # GIVEN a queue of two chunks, full
    q = ChunkQueue(2, threading.Event())
    q.put(b"1")
    q.put(b"2")
    # WHEN a third put is attempted
    thread, outcome = start(lambda: q.put(b"3"))
    thread.join(0.3)
    # THEN it waits until a consumer takes one
    assert thread.is_alive()
    assert q.get() == b"1"
    thread.join(WAIT)
    assert not thread.is_alive() and "error" not in outcome
    assert [q.get(), q.get()] == [b"2", b"3"]


def test_close_marks_the_end():
    q = ChunkQueue(4, threading.Event())
    q.put(b"x")
    q.close()
    reader = reader_from_queue(q)
    assert reader.read() == b"x"


def test_cancel_unblocks_a_waiting_put():
    cancel = threading.Event()
    q = ChunkQueue(1, cancel)
    q.put(b"fill")
    thread, outcome = start(lambda: q.put(b"blocked"))
    thread.join(0.3)
    assert thread.is_alive()
    # WHEN the pipeline is cancelled
    cancel.set()
    thread.join(WAIT)
    # THEN the producer stops with Cancelled
    assert not thread.is_alive()
    assert isinstance(outcome.get("error"), Cancelled)


def test_cancel_unblocks_a_waiting_get():
    cancel = threading.Event()
    q = ChunkQueue(1, cancel)
    thread, outcome = start(q.get)
    thread.join(0.3)
    assert thread.is_alive()
    cancel.set()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert isinstance(outcome.get("error"), Cancelled)


def test_close_after_cancel_does_not_block():
    cancel = threading.Event()
    q = ChunkQueue(1, cancel)
    q.put(b"fill")
    cancel.set()
    started = time.monotonic()
    q.close()  # must give up, not wait for a consumer that is gone
    assert time.monotonic() - started < WAIT


def test_a_producer_thread_hands_all_data_through_a_small_queue():
    data = random.Random(5).randbytes(300_000)
    q = ChunkQueue(2, threading.Event())

    def produce():
        for pos in range(0, len(data), 4096):
            q.put(data[pos:pos + 4096])
        q.close()

    thread, outcome = start(produce)
    assert reader_from_queue(q).read() == data
    thread.join(WAIT)
    assert outcome == {"value": None}


# -- HashingReader -------------------------------------------------------------------------
def test_hashing_reader_counts_and_hashes_what_passes():
    data = random.Random(11).randbytes(50_000)
    reader = HashingReader(reader_from_iter(chunked(data, [1, 999, 20_000])))
    assert reader.read(10) == data[:10]
    reader.drain(chunk=777)
    assert reader.size == len(data)
    assert reader.hexdigest() == hashlib.sha256(data).hexdigest()
    assert reader.read(1) == b""


class SlowSource:
    """Hands out chunks in order but yields the GIL between taking and returning one,
    so unserialized readers would hash them out of order."""

    def __init__(self, data: bytes, size: int) -> None:
        self._chunks = [data[i:i + size] for i in range(0, len(data), size)]
        self._lock = threading.Lock()
        self.closed = False

    def read(self, size: int = -1) -> bytes:
        with self._lock:
            chunk = self._chunks.pop(0) if self._chunks else b""
        time.sleep(0.0005 if len(self._chunks) % 3 else 0)
        return chunk

    def close(self) -> None:
        self.closed = True


def test_reads_from_two_threads_are_serialized():
    # GIVEN a hashing reader shared by two threads (python-gnupg's copy thread and our drain())
    data = random.Random(13).randbytes(200 * 512)
    source = SlowSource(data, 512)
    reader = HashingReader(source)
    seen: list[bytes] = []

    def consume():
        while True:
            chunk = reader.read(512)
            if not chunk:
                return
            seen.append(chunk)

    threads = [threading.Thread(target=consume) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    # THEN the hash is the hash of the stream in stream order, and every byte was counted once
    assert reader.size == len(data)
    assert reader.hexdigest() == hashlib.sha256(data).hexdigest()
    assert sorted(seen) == sorted(data[i:i + 512] for i in range(0, len(data), 512))
    reader.close()
    assert source.closed
