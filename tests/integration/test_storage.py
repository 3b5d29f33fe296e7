"""Object stores: S3 through a real moto server over HTTP, and the filesystem store, same contract.

The contract (storage/base.py): a streamed object is either complete at its
key or absent — a failing producer leaves no visible object, no multipart
upload and no partial file; create-only writes refuse to overwrite.
"""

from __future__ import annotations

import hashlib
import http.client
import http.server
import io
import itertools
import logging
import os
import random
import threading
import urllib.parse

import pytest

from afbackup.config.model import StorageConfig
from afbackup.errors import NotFoundError, SourceError, StorageError
from afbackup.storage import open_store
from afbackup.storage.base import AlreadyExists
from afbackup.storage.local import LocalStore
from afbackup.storage.reader import ResumingReader
from afbackup.storage.s3 import S3Store
from afbackup.streams import reader_from_iter
from tests.harness.s3 import MotoServer

MIB = 1 << 20
PART = 5 * MIB
_names = itertools.count()


@pytest.fixture(scope="module")
def moto():
    with MotoServer(min_part_size=PART) as server:
        yield server


@pytest.fixture(scope="module")
def s3_store(moto):
    """One S3Store for the module (building a boto3 client costs ~0.4 s); each test empties its bucket."""
    bucket = moto.create_bucket("store-test")
    cfg = StorageConfig(url=f"s3://{bucket}/prefix", endpoint_url=moto.endpoint, region="us-east-1",
                        part_size=PART, retries=1)
    s3 = open_store(cfg)
    assert isinstance(s3, S3Store)
    s3.raw = moto.client()  # type: ignore[attr-defined]
    return s3


def empty_bucket(s3: S3Store) -> None:
    raw = s3.raw  # type: ignore[attr-defined]
    for upload in raw.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", []):
        raw.abort_multipart_upload(Bucket=s3.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    keys = [item["Key"] for item in raw.list_objects_v2(Bucket=s3.bucket).get("Contents", [])]
    if keys:
        raw.delete_objects(Bucket=s3.bucket, Delete={"Objects": [{"Key": key} for key in keys]})


@pytest.fixture(params=["s3", "file"])
def store(request, tmp_path):
    if request.param == "s3":
        s3 = request.getfixturevalue("s3_store")
        empty_bucket(s3)
        return s3
    local = open_store(StorageConfig(url=f"file://{tmp_path}/store"))
    assert isinstance(local, LocalStore)
    return local


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def stream_of(data: bytes, chunk: int = MIB):
    """A non-seekable reader, like the encrypted pipeline output."""
    return reader_from_iter(data[pos:pos + chunk] for pos in range(0, len(data), chunk))


def read_back(store, key: str) -> bytes:
    reader = store.open_read(key)
    try:
        out = bytearray()
        while chunk := reader.read(MIB):
            out += chunk
        return bytes(out)
    finally:
        reader.close()


def multipart_uploads(store) -> list:
    if isinstance(store, S3Store):
        return store.raw.list_multipart_uploads(Bucket=store.bucket).get("Uploads", [])  # type: ignore[attr-defined]
    return []


def partial_files(store) -> list[str]:
    if isinstance(store, LocalStore):
        return [name for _, _, names in os.walk(store.root) for name in names if ".partial-" in name]
    return []


# -- streaming writes and reads -------------------------------------------------------------
@pytest.mark.parametrize("size", [0, 1, 12 * MIB + 3], ids=["empty", "one-byte", "multipart"])
def test_put_stream_round_trips(store, size):
    # GIVEN a non-seekable stream (12 MiB needs three 5 MiB parts on S3)
    data = payload(size)
    # WHEN streamed to a key and read back
    stored = store.put_stream("v1/backups/b1/archive.tar.zst.gpg", stream_of(data))
    # THEN the object is there, complete and identical
    assert stored.size == size
    assert store.head("v1/backups/b1/archive.tar.zst.gpg").size == size
    assert hashlib.sha256(read_back(store, "v1/backups/b1/archive.tar.zst.gpg")).digest() == \
        hashlib.sha256(data).digest()
    assert multipart_uploads(store) == [] and partial_files(store) == []


def test_failing_producer_leaves_nothing_behind(store):
    # GIVEN a producer that fails after 11 MiB (two S3 parts already uploaded)
    error = SourceError("pg_dump exited with 1", stage="pg_dump")

    def chunks():
        for index in range(11):
            yield payload(MIB, seed=index)
        raise error

    # WHEN the stream is uploaded
    with pytest.raises(SourceError) as info:
        store.put_stream("v1/backups/b2/archive.tar.zst.gpg", reader_from_iter(chunks()))
    # THEN the producer's own error comes out, unchanged
    assert info.value is error
    # AND nothing is visible, no multipart upload remains, no partial file is left
    assert store.head("v1/backups/b2/archive.tar.zst.gpg") is None
    assert list(store.list("v1/")) == []
    assert multipart_uploads(store) == []
    assert store.pending_uploads("") == []
    assert partial_files(store) == []


def test_failing_producer_before_the_first_part_leaves_nothing(store):
    error = SourceError("failed at once")
    with pytest.raises(SourceError) as info:
        store.put_stream("k", reader_from_iter(_raise_after([b"abc"], error)))
    assert info.value is error
    assert store.head("k") is None and multipart_uploads(store) == [] and partial_files(store) == []


def _raise_after(chunks, error):
    yield from chunks
    raise error


# -- small objects --------------------------------------------------------------------------
def test_put_bytes_create_only_refuses_a_second_write(store):
    store.put_bytes("v1/locks/backup.json", b'{"holder": "a"}')
    with pytest.raises(AlreadyExists):
        store.put_bytes("v1/locks/backup.json", b'{"holder": "b"}')
    assert store.get_bytes("v1/locks/backup.json") == b'{"holder": "a"}'
    assert partial_files(store) == []


def test_put_bytes_may_replace_when_not_create_only(store):
    store.put_bytes("note", b"one")
    store.put_bytes("note", b"two", create_only=False)
    assert store.get_bytes("note") == b"two"


def test_get_bytes_enforces_its_limit(store):
    store.put_bytes("big", b"x" * 100)
    assert store.get_bytes("big", limit=100) == b"x" * 100
    with pytest.raises(StorageError, match="larger than"):
        store.get_bytes("big", limit=99)


def test_delete_then_head_is_none(store):
    store.put_bytes("v1/backups/b3/manifest.json", b"{}")
    assert store.head("v1/backups/b3/manifest.json").size == 2
    assert store.delete(["v1/backups/b3/manifest.json", "v1/backups/b3/never-existed"]) == []
    assert store.head("v1/backups/b3/manifest.json") is None


def test_missing_object_is_not_found(store):
    with pytest.raises(NotFoundError):
        store.open_read("v1/backups/none/archive.tar.zst.gpg").read(1)
    with pytest.raises(NotFoundError):
        store.get_bytes("v1/backups/none/manifest.json")


def test_list_returns_keys_under_a_prefix_relative_to_the_store(store):
    for key in ("v1/backups/a/manifest.json", "v1/backups/a/archive", "v1/backups/b/manifest.json",
                "v1/locks/backup.json"):
        store.put_bytes(key, key.encode())
    listed = sorted((obj.key, obj.size) for obj in store.list("v1/backups/"))
    assert listed == [("v1/backups/a/archive", 20), ("v1/backups/a/manifest.json", 26),
                      ("v1/backups/b/manifest.json", 26)]
    assert [obj.key for obj in store.list("v1/locks/")] == ["v1/locks/backup.json"]
    assert list(store.list("v2/")) == []


# -- pending uploads -------------------------------------------------------------------------
def make_pending(store, key: str) -> None:
    """What a killed run leaves: a started multipart upload, or a hidden partial file."""
    if isinstance(store, S3Store):
        store.raw.create_multipart_upload(Bucket=store.bucket, Key=store._key(key))  # type: ignore[attr-defined]
    else:
        path = store.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / f".{path.name}.partial-0123456789ab").write_bytes(b"half")


def test_pending_uploads_are_listed_and_aborted(store):
    make_pending(store, "v1/backups/killed/archive.tar.zst.gpg")
    make_pending(store, "elsewhere/x")
    pending = store.pending_uploads("v1/backups/")
    assert len(pending) == 1
    assert pending[0].key.startswith("v1/backups/killed/")
    assert list(store.list("v1/")) == []  # never visible as an object
    store.abort_upload(pending[0])
    assert store.pending_uploads("v1/backups/") == []
    assert len(store.pending_uploads("")) == 1


# -- S3 specifics --------------------------------------------------------------------------------
def test_s3_keys_live_under_the_configured_prefix(moto):
    bucket = moto.create_bucket(f"store-test-{next(_names)}")
    s3 = S3Store(StorageConfig(url=f"s3://{bucket}/airflow/prod", endpoint_url=moto.endpoint, part_size=PART))
    s3.put_bytes("v1/backups/x/manifest.json", b"{}")
    raw = moto.client().list_objects_v2(Bucket=bucket)["Contents"]
    assert [item["Key"] for item in raw] == ["airflow/prod/v1/backups/x/manifest.json"]


def test_s3_unreachable_endpoint_is_a_storage_error():
    s3 = S3Store(StorageConfig(url="s3://nowhere/p", endpoint_url="http://127.0.0.1:9", part_size=PART, retries=0))
    with pytest.raises(StorageError) as info:
        s3.head("k")
    assert info.value.exit_code == 6


def test_s3_missing_bucket_is_a_storage_error(moto):
    s3 = S3Store(StorageConfig(url="s3://no-such-bucket/p", endpoint_url=moto.endpoint, part_size=PART, retries=0))
    with pytest.raises(StorageError):
        s3.put_stream("k", stream_of(b"data"))


def test_local_store_refuses_keys_outside_its_root(tmp_path):
    local = LocalStore(f"file://{tmp_path}/store")
    with pytest.raises(StorageError, match="outside"):
        local.put_bytes("../escape", b"x")


# -- ResumingReader --------------------------------------------------------------------------------
class Body:
    """A response body whose connection is reset once `fail_at` bytes have arrived.

    Like urllib3: read(n) returns what arrived up to the reset, then raises;
    read() (all) raises and loses what it had buffered.
    """

    def __init__(self, data: bytes, fail_at: int | None) -> None:
        self._stream = io.BytesIO(data)
        self._fail_at = fail_at
        self.closed = False

    def read(self, size=None):
        if self._fail_at is None:
            return self._stream.read(-1 if size is None else size)
        left = self._fail_at - self._stream.tell()
        if size is None or left <= 0:
            raise ConnectionResetError(104, "Connection reset by peer")
        return self._stream.read(min(size, left))

    def close(self):
        self.closed = True


class Source:
    """The object behind the fetch function: serves ranges, checks If-Match, records requests."""

    def __init__(self, data: bytes, failures: list[int | None], etag: str = '"etag-1"') -> None:
        self.data, self.failures, self.etag = data, list(failures), etag
        self.requests: list[tuple[int, str]] = []
        self.bodies: list[Body] = []

    def fetch(self, offset: int, if_match: str):
        self.requests.append((offset, if_match))
        if if_match and if_match != self.etag:
            raise RuntimeError("412 PreconditionFailed")
        fail_at = self.failures.pop(0) if self.failures else None
        body = Body(self.data[offset:], None if fail_at is None else fail_at - offset)
        self.bodies.append(body)
        return body, self.etag


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def reader_log():
    logger = logging.getLogger("afbackup.storage.reader")
    handler = ListHandler()
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def resuming(source: Source, retries: int = 3) -> ResumingReader:
    sleeps: list[float] = []
    reader = ResumingReader(source.fetch, retries=retries, describe="s3://bucket/archive",
                            translate=lambda exc: StorageError(f"translated: {exc}"), sleep=sleeps.append)
    reader.sleeps = sleeps  # type: ignore[attr-defined]
    return reader


def test_resuming_reader_continues_at_the_right_offset_pinned_by_etag(reader_log):
    # GIVEN an object whose first connection is reset after 300,001 bytes
    data = payload(1_000_000, seed=3)
    source = Source(data, failures=[300_001])
    reader = resuming(source)
    # WHEN it is read in 64 KiB pieces
    out = bytearray()
    while chunk := reader.read(65536):
        out += chunk
    # THEN the data is complete and exact, the second request started at the reset point with If-Match
    assert bytes(out) == data
    assert source.requests == [(0, ""), (300_001, '"etag-1"')]
    assert reader.resumptions == 1 and reader.offset == len(data)
    assert source.bodies[0].closed
    assert reader.sleeps and all(0 < s <= 8 for s in reader.sleeps)
    # AND the resumption was logged as a warning naming the offset
    warnings = [r for r in reader_log.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "300001" in warnings[0].getMessage() and "ConnectionResetError" in warnings[0].getMessage()


def test_resuming_reader_read_all_after_resets():
    data = payload(50_000, seed=4)
    source = Source(data, failures=[0, 10_000])
    reader = resuming(source)
    assert reader.read() == data
    assert [offset for offset, _ in source.requests] == [0, 0, 0]  # read() made no progress before a reset
    assert reader.resumptions == 2


def test_too_many_failures_is_a_storage_error(reader_log):
    data = payload(10_000)
    source = Source(data, failures=[100, 200, 300, 400])
    reader = resuming(source, retries=2)
    with pytest.raises(StorageError) as info:
        reader.read()
    assert "failed at byte" in info.value.one_line()
    assert len(source.requests) == 3  # the first request and two resumptions
    assert len([r for r in reader_log.records if r.levelno == logging.WARNING]) == 2


def test_a_replaced_object_is_not_spliced(reader_log):
    # GIVEN the object changes (new ETag) between the first read and the resumption
    source = Source(payload(10_000), failures=[5_000])
    reader = resuming(source)
    assert len(reader.read(4_000)) == 4_000
    assert len(reader.read(4_000)) == 1_000  # what arrived before the reset
    source.etag = '"etag-2"'
    # THEN the resumed request fails its If-Match and the error is translated, not retried into a splice
    with pytest.raises(StorageError, match="translated: 412"):
        reader.read(4_000)
    assert source.requests[-1] == (5_000, '"etag-1"')


class CuttingProxy:
    """An HTTP proxy in front of moto that cuts the first GET body after `cut` bytes and drops
    the connection (Content-Length still promises the whole object), like a reset mid-download."""

    def __init__(self, upstream: str, cut: int) -> None:
        self.upstream = urllib.parse.urlparse(upstream)
        self.cut, self.cuts_left = cut, 1
        self.gets: list[dict] = []
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _relay(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=30)
                conn.request(self.command, self.path, body=body, headers=dict(self.headers.items()))
                response = conn.getresponse()
                data = response.read()
                conn.close()
                cut = None
                if self.command == "GET" and response.status in (200, 206) and "list-type" not in self.path:
                    proxy.gets.append({"range": self.headers.get("Range"), "if_match": self.headers.get("If-Match")})
                    if proxy.cuts_left:
                        proxy.cuts_left -= 1
                        cut = proxy.cut
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command == "HEAD":
                    return
                self.wfile.write(data if cut is None else data[:cut])
                if cut is not None:
                    self.wfile.flush()
                    self.close_connection = True

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

        return Handler


def test_s3_open_read_resumes_after_a_cut_connection(moto, reader_log):
    # GIVEN a real object behind a proxy that cuts the first download after 1 MiB + 7 bytes
    bucket = moto.create_bucket("resume-test")
    data = payload(3 * MIB + 5, seed=8)
    moto.client().put_object(Bucket=bucket, Key="p/obj", Body=data)
    proxy = CuttingProxy(moto.endpoint, cut=MIB + 7)
    try:
        s3 = S3Store(StorageConfig(url=f"s3://{bucket}/p", endpoint_url=proxy.endpoint, part_size=PART,
                                   retries=2))
        # WHEN the object is read through afbackup's reader in 256 KiB pieces
        reader = s3.open_read("obj")
        out = bytearray()
        while chunk := reader.read(256 * 1024):
            out += chunk
    finally:
        proxy.close()
    # THEN it is exact; the second request resumed at the cut with Range and If-Match
    assert bytes(out) == data
    assert reader.resumptions == 1
    assert proxy.gets[0] == {"range": None, "if_match": None}
    assert proxy.gets[1]["range"] == f"bytes={MIB + 7}-"
    assert proxy.gets[1]["if_match"]
    assert any(r.levelno == logging.WARNING for r in reader_log.records)
