"""The manifest: stored manifests are untrusted input, validated strictly; ids and bytes are canonical."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re

import pytest

from afbackup import manifest as mf
from afbackup.errors import IntegrityError

KEY = "v1/backups/20261124T040001Z-3f9a1c/manifest.json"
SHA = hashlib.sha256(b"archive").hexdigest()


def manifest_doc(**changes) -> dict:
    """Shaped like afbackup/backup.py's _manifest_doc plus what _stream_and_commit adds."""
    doc = {
        "format": mf.FORMAT, "format_version": mf.FORMAT_VERSION,
        "tool": {"name": "afbackup", "version": "0.1.0"},
        "backup_id": "20261124T040001Z-3f9a1c", "name": "airflow", "labels": {"env": "prod"},
        "status": "complete", "started_at": "2026-11-24T04:00:01.000Z", "host": "backup-pod",
        "finished_at": "2026-11-24T04:00:09.500Z",
        "airflow": {"major": 3, "schema_revision": "29ce7909c52b", "cli_version": "3.0.2",
                    "executor": "kubernetes", "fernet_fingerprints": ["0123456789abcdef"]},
        "postgres": {"server_version": "15.18", "server_major": 15, "pg_dump_version": "pg_dump (PostgreSQL) 15.18",
                     "database": "airflow", "schema": "public"},
        "scope": {"data_tables": ["dag", "dag_run"], "schema_only_tables": ["log", "xcom"],
                  "row_counts": {"dag": 3, "dag_run": 12}, "added_for_fk": {},
                  "exclude_data": ["log", "xcom"], "include": []},
        "exports": {"connections": 2, "variables": 5, "pools": 1},
        "not_captured": {"connections_from_env": [], "variables_from_env": [], "secrets_backend": None},
        "archive_members": [{"name": "db/airflow.pgdump.00000", "size": 1234, "sha256": SHA},
                            {"name": "manifest.json", "size": 99, "sha256": SHA}],
        "archive": {"format": "tar", "compression": "zstd", "compression_level": 3, "encryption": "openpgp",
                    "dump_part_size": 8 << 20},
        "encryption": {"recipients": ["0123456789ABCDEF0123456789ABCDEF01234567"], "signer": None},
        "exit_codes": {"pg_dump": 0, "gpg": 0, "airflow_agent": 0},
        "object_lock": None,
        "objects": [{"key": mf.ARCHIVE_NAME, "size": 4096, "sha256": SHA, "etag": "abc", "version_id": ""}],
    }
    doc.update(changes)
    return doc


def encode(doc) -> bytes:
    return json.dumps(doc).encode()


def test_a_valid_manifest_parses():
    # GIVEN a manifest as a backup writes it
    manifest = mf.parse_manifest(mf.dump_manifest(manifest_doc()), KEY)
    # THEN the fields afbackup relies on are typed, and extra fields are carried along
    assert manifest.backup_id == "20261124T040001Z-3f9a1c"
    assert manifest.finished_at == dt.datetime(2026, 11, 24, 4, 0, 9, 500000, tzinfo=dt.timezone.utc)
    assert manifest.archive.key == mf.ARCHIVE_NAME and manifest.archive.size == 4096
    assert manifest.row_counts == {"dag": 3, "dag_run": 12}
    assert manifest.member("manifest.json").size == 99
    assert manifest.member("missing") is None
    assert manifest.model_dump(by_alias=True)["labels"] == {"env": "prod"}


def test_older_format_version_is_accepted():
    mf.parse_manifest(encode(manifest_doc(format_version=mf.FORMAT_VERSION - 1)), KEY)


def without(field: str) -> dict:
    doc = manifest_doc()
    del doc[field]
    return doc


@pytest.mark.parametrize(("data", "words"), [
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe\x00garbage", "not valid JSON"),
    (b"", "not valid JSON"),
    (b"[]", "not a valid manifest"),
    (b"null", "not a valid manifest"),
    (encode(without("backup_id")), "backup_id"),
    (encode(without("finished_at")), "finished_at"),
    (encode(without("objects")), "objects"),
    (encode(without("archive_members")), "archive_members"),
    (encode(manifest_doc(objects=[{"key": "a", "size": 1, "sha256": "ABC"}])), "sha256"),
    (encode(manifest_doc(objects=[{"key": "a", "size": 1, "sha256": SHA.upper()}])), "sha256"),
    (encode(manifest_doc(objects=[{"key": "a", "size": -1, "sha256": SHA}])), "size"),
    (encode(manifest_doc(archive_members=[{"name": "x", "size": 1, "sha256": "0" * 63}])), "sha256"),
    (encode(manifest_doc(finished_at="yesterday")), "finished_at"),
    (encode(manifest_doc(format_version=mf.FORMAT_VERSION + 1)), "upgrade afbackup"),
    (encode(manifest_doc(format="borg-manifest")), "format borg-manifest"),
    (encode(manifest_doc(objects=[])), "no stored objects"),
], ids=["garbage", "not-utf8", "empty", "array", "null", "no-id", "no-finished", "no-objects", "no-members",
        "short-sha", "upper-sha", "negative-size", "member-sha", "bad-time", "newer-version", "other-format",
        "objects-empty"])
def test_damaged_manifests_are_integrity_errors_naming_the_key(data, words):
    # WHEN a damaged or foreign manifest is parsed
    with pytest.raises(IntegrityError) as info:
        mf.parse_manifest(data, KEY)
    # THEN the error (exit 8) names the object and what is wrong
    text = info.value.one_line()
    assert KEY in text
    assert words in text


# -- ids and layout ------------------------------------------------------------------------
def test_backup_id_format_is_utc_timestamp_and_random_suffix():
    # GIVEN a moment in a non-UTC time zone
    moment = dt.datetime(2026, 11, 24, 5, 0, 1, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    backup_id = mf.new_backup_id(moment)
    # THEN the id is in UTC, sortable, with a hex suffix
    assert re.fullmatch(r"20261124T040001Z-[0-9a-f]{6}", backup_id)


def test_backup_ids_at_the_same_instant_are_unique():
    moment = dt.datetime(2026, 11, 24, 4, 0, 1, tzinfo=dt.timezone.utc)
    ids = {mf.new_backup_id(moment) for _ in range(20)}
    assert len(ids) == 20


def test_backup_ids_sort_by_time():
    early = mf.new_backup_id(dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc))
    late = mf.new_backup_id(dt.datetime(2026, 10, 2, 3, 4, 5, tzinfo=dt.timezone.utc))
    assert early < late


def test_key_layout_is_versioned():
    assert mf.key_of("X", mf.MANIFEST_NAME) == "v1/backups/X/manifest.json"
    assert mf.LOCKS.startswith("v1/") and mf.PINS.startswith("v1/")


def test_iso_is_utc_with_milliseconds():
    moment = dt.datetime(2026, 11, 24, 5, 0, 1, 123456, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert mf.iso(moment) == "2026-11-24T04:00:01.123Z"
    assert mf.iso(None) is None


# -- canonical bytes -------------------------------------------------------------------------
def test_dump_manifest_is_canonical_and_stable():
    # GIVEN the same document built in two key orders
    doc = manifest_doc()
    reordered = dict(reversed(list(doc.items())))
    reordered["scope"] = dict(reversed(list(doc["scope"].items())))
    # WHEN dumped
    first, second = mf.dump_manifest(doc), mf.dump_manifest(reordered)
    # THEN the bytes are identical (what is signed is what is stored), sorted, newline-terminated
    assert first == second == mf.dump_manifest(json.loads(first))
    assert first.endswith(b"}\n")
    top_level = [line.split(b'"')[1].decode() for line in first.splitlines() if line.startswith(b'  "')]
    assert top_level == sorted(top_level)
    assert json.loads(first) == doc

