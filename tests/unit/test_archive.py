"""The tar layer: TarWriter output is standard tar; TarReader is strict about what it accepts.

Round trips go through GNU tar too: the break-glass path (`tar -xOf -
--wildcards 'db/airflow.pgdump.*'`) must give back the dump byte for byte.
"""

from __future__ import annotations

import hashlib
import io
import random
import shutil
import subprocess
import tarfile

import pytest

from afbackup.archive import BLOCK, DUMP_BASENAME, END_OF_ARCHIVE, TarReader, TarWriter
from afbackup.errors import IntegrityError

PART = 4 * BLOCK  # small parts keep the tests fast; the logic does not depend on the size
MTIME = 1_790_000_000

requires_gnu_tar = pytest.mark.skipif(shutil.which("tar") is None, reason="GNU tar not installed")


def payload(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def collect(chunks) -> bytes:
    """Copy each chunk as it is yielded (add_parts reuses one buffer)."""
    out = bytearray()
    for chunk in chunks:
        out += chunk
    return bytes(out)


def build_archive(dump: bytes, extra: dict[str, bytes] | None = None, part: int = PART) -> tuple[bytes, TarWriter]:
    writer = TarWriter(MTIME)
    data = collect(writer.add_parts(DUMP_BASENAME, io.BytesIO(dump).readinto, part))
    for name, body in (extra or {}).items():
        data += collect(writer.add_bytes(name, body))
    return data + writer.end(), writer


def read_archive(data: bytes) -> tuple[dict[str, bytes], TarReader]:
    reader = TarReader(io.BytesIO(data))
    members = {}
    for member in reader:
        members[member.name] = b"".join(member.chunks())
    return members, reader


# -- round trips ------------------------------------------------------------------------
@pytest.mark.parametrize(("size", "parts"), [
    (0, [0]),                              # empty stream: one empty part, never zero parts
    (1, [1]),
    (PART - 1, [PART - 1]),
    (PART, [PART]),                        # exactly one part: no empty trailing part
    (3 * PART, [PART, PART, PART]),        # exact multiple
    (3 * PART + 1, [PART, PART, PART, 1]),  # one byte over
])
def test_parts_round_trip(size, parts):
    # GIVEN a dump stream of `size` bytes
    dump = payload(size)
    # WHEN it is written as parts and read back
    data, writer = build_archive(dump, {"connections.json": b"{}"})
    members, reader = read_archive(data)
    # THEN the parts have the expected sizes and names, and joined they are the input
    names = [f"{DUMP_BASENAME}.{i:05d}" for i in range(len(parts))]
    assert [m.name for m in writer.members] == [*names, "connections.json"]
    assert [m.size for m in writer.members[:-1]] == parts
    assert b"".join(members[name] for name in names) == dump
    assert members["connections.json"] == b"{}"
    # AND the records of both sides agree and match hashlib
    assert reader.records == writer.members
    for record in writer.members:
        body = members[record.name]
        assert record.size == len(body) and record.sha256 == hashlib.sha256(body).hexdigest()
    assert len(data) % BLOCK == 0 and data.endswith(END_OF_ARCHIVE)


def test_readinto_with_short_reads_still_fills_parts():
    # GIVEN a source that returns at most 7 bytes per readinto (like a pipe)
    dump = payload(2 * PART + 100)
    source = io.BytesIO(dump)

    def trickle(view):
        return source.readinto(view[:7])

    writer = TarWriter(MTIME)
    data = collect(writer.add_parts(DUMP_BASENAME, trickle, PART)) + writer.end()
    # THEN parts are still full-size (only the last is short)
    assert [m.size for m in writer.members] == [PART, PART, 100]
    members, _ = read_archive(data)
    assert b"".join(members.values()) == dump


def test_python_tarfile_reads_our_archive():
    dump = payload(2 * PART + 3)
    data, _ = build_archive(dump, {"pools.json": b'{"default_pool": {}}'})
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        infos = tar.getmembers()
        assert [i.name for i in infos][-1] == "pools.json"
        assert all(i.isreg() and i.mode == 0o600 and i.mtime == MTIME for i in infos)


@requires_gnu_tar
def test_gnu_tar_lists_and_joins_the_parts(tmp_path):
    # GIVEN an archive with a multi-part dump and a JSON member, on disk
    dump = payload(3 * PART + 17, seed=9)
    data, writer = build_archive(dump, {"airflow/connections.json": b'{"c": 1}'})
    path = tmp_path / "archive.tar"
    path.write_bytes(data)
    # WHEN GNU tar lists it
    listing = subprocess.run(["tar", "-tvf", str(path)], capture_output=True, text=True, check=True)
    # THEN it sees every member with its size, and no warnings
    lines = listing.stdout.splitlines()
    assert len(lines) == len(writer.members)
    for line, record in zip(lines, writer.members, strict=True):
        assert line.endswith(record.name) and f" {record.size} " in line
    assert listing.stderr == ""
    # AND the documented break-glass command reassembles the dump exactly
    joined = subprocess.run(["tar", "-xOf", "-", "--wildcards", "db/airflow.pgdump.*"],
                            input=data, capture_output=True, check=True)
    assert joined.stdout == dump


# -- what the reader refuses ---------------------------------------------------------------
def tar_with(*infos: tarfile.TarInfo, fmt=tarfile.USTAR_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        ok = tarfile.TarInfo("ok.json")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"{}"))
        for info in infos:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isreg() else None)
    return buf.getvalue()


def regular(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 1
    return info


def special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


@pytest.mark.parametrize("info", [
    regular("../escape.json"),
    regular("db/../../escape.json"),
    regular("/etc/cron.d/evil"),
    regular("db\\..\\evil"),
    special("db/link", tarfile.SYMTYPE, "/etc/passwd"),
    special("db/hard", tarfile.LNKTYPE, "ok.json"),
    special("db/dev", tarfile.CHRTYPE),
    special("db/blk", tarfile.BLKTYPE),
    special("db/fifo", tarfile.FIFOTYPE),
    special("db", tarfile.DIRTYPE),
], ids=lambda info: info.name)
def test_reader_refuses_unsafe_members(info):
    # GIVEN an archive whose second member is unsafe (built with Python's tarfile)
    data = tar_with(info)
    reader = TarReader(io.BytesIO(data))
    members = iter(reader)
    first = next(members)
    assert first.name == "ok.json"
    # WHEN the reader reaches it
    # THEN it refuses with an integrity error naming the member
    with pytest.raises(IntegrityError) as err:
        next(members)
    assert info.name in str(err.value) or repr(info.name) in str(err.value)


def test_reader_refuses_pax_headers():
    # a PAX extended header is not a regular member: our writer never makes one
    data = tar_with(regular("x" * 120), fmt=tarfile.PAX_FORMAT)
    with pytest.raises(IntegrityError):
        read_archive(data)


def test_reader_refuses_a_damaged_header_checksum():
    data = bytearray(build_archive(b"abc")[0])
    data[0] ^= 0xFF  # first byte of the first member's name; the header checksum no longer matches
    with pytest.raises(IntegrityError, match="damaged tar header"):
        read_archive(bytes(data))


@pytest.mark.parametrize("cut", ["in_header", "in_data", "in_padding", "no_end_marker", "half_end_marker"])
def test_truncated_archive_is_an_integrity_error(cut):
    # GIVEN a good archive: header(512) + data(PART) + header(512) + data(10)+pad + end(1024)
    data, _ = build_archive(payload(PART + 10))
    end = len(data) - len(END_OF_ARCHIVE)
    position = {
        "in_header": BLOCK + PART + 100,
        "in_data": BLOCK + PART // 2,
        "in_padding": end - 5,
        "no_end_marker": end,
        "half_end_marker": end + BLOCK,
    }[cut]
    # WHEN it is cut short and read
    with pytest.raises(IntegrityError) as err:
        read_archive(data[:position])
    # THEN the error says so
    assert "truncated" in str(err.value) and "ends early" in str(err.value)


def test_empty_input_is_truncated():
    with pytest.raises(IntegrityError, match="truncated"):
        read_archive(b"")


def test_members_must_be_read_in_order():
    data, _ = build_archive(payload(10), {"a.json": b"[]"})
    reader = TarReader(io.BytesIO(data))
    iterator = iter(reader)
    first = next(iterator)
    second = next(iterator)  # skips the unread first member
    assert second.read_all(limit=100) == b"[]"
    with pytest.raises(RuntimeError):
        list(first.chunks())


def test_read_all_refuses_members_over_the_limit():
    data, _ = build_archive(b"", {"manifest.json": b"x" * 100})
    reader = TarReader(io.BytesIO(data))
    members = iter(reader)
    next(members)
    with pytest.raises(IntegrityError, match="more than expected"):
        next(members).read_all(limit=99)
