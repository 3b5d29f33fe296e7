"""The manifest: stored manifests are untrusted input, validated strictly; ids and bytes are canonical."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest

from afbackup import manifest as mf
from afbackup.errors import IntegrityError
from tests.harness.manifests import SHA, manifest_doc

KEY = "v1/backups/20261124T040001Z-3f9a1c/manifest.json"


def encode(doc) -> bytes:
    return json.dumps(doc).encode()


def test_a_valid_manifest_parses():
    # GIVEN a manifest as a backup writes it
    manifest = mf.parse_manifest(mf.dump_manifest(manifest_doc()), KEY)
    # THEN the fields afbackup relies on are typed, and extra fields are carried along
    assert manifest.backup_id == "20261124T040001Z-3f9a1c"
    assert manifest.finished_at == dt.datetime(2026, 11, 24, 4, 0, 9, 500000, tzinfo=dt.UTC)
    assert manifest.archive.key == mf.ARCHIVE_NAME and manifest.archive.size == 4096
    assert manifest.row_counts == {"dag": 3, "dag_run": 12}
    assert manifest.member("manifest.json").size == 99
    assert manifest.member("missing") is None
    assert manifest.labels == {"env": "prod"}


def test_older_format_version_is_accepted():
    mf.parse_manifest(encode(manifest_doc(format_version=mf.FORMAT_VERSION - 1)), KEY)


@pytest.mark.parametrize("version", [mf.FORMAT_VERSION + 1, 99])
def test_a_newer_format_version_is_refused_naming_the_version_before_its_shape_is_checked(version):
    # GIVEN a manifest from a newer afbackup whose shape this one does not know
    doc = {"format": mf.FORMAT, "format_version": version, "backup_id": "x", "something": {"new": True}}
    # WHEN it is parsed
    with pytest.raises(IntegrityError) as info:
        mf.parse_manifest(encode(doc), KEY)
    # THEN the error (exit 8) names the version and says to upgrade, not which field is missing
    text = info.value.one_line()
    assert f"format version {version}" in text and "upgrade afbackup" in text and KEY in text


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
    (encode(manifest_doc(finished_at="2026-11-24T04:00:09")), "finished_at"),
    (encode(manifest_doc(format_version=0)), "format version 0"),
    (encode(manifest_doc(format_version="two")), "format_version"),
    (encode(manifest_doc(postgres={"server_version": "15"})), "postgres"),
    (encode(manifest_doc(exports={"connections": "many", "variables": 1, "pools": 1})), "exports.connections"),
    (encode(manifest_doc(format_version=mf.FORMAT_VERSION + 1)), "upgrade afbackup"),
    (encode(manifest_doc(format="borg-manifest")), "format borg-manifest"),
    (encode(manifest_doc(objects=[])), "no stored objects"),
], ids=["garbage", "not-utf8", "empty", "array", "null", "no-id", "no-finished", "no-objects", "no-members",
        "short-sha", "upper-sha", "negative-size", "member-sha", "bad-time", "naive-time", "version-0",
        "version-not-int", "partial-postgres", "bad-export-count", "newer-version", "other-format",
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
    moment = dt.datetime(2026, 11, 24, 4, 0, 1, tzinfo=dt.UTC)
    ids = {mf.new_backup_id(moment) for _ in range(20)}
    assert len(ids) == 20


def test_backup_ids_sort_by_time():
    early = mf.new_backup_id(dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC))
    late = mf.new_backup_id(dt.datetime(2026, 10, 2, 3, 4, 5, tzinfo=dt.UTC))
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



# -- format 1: what afbackup 0.1.0 wrote --------------------------------------------------------
# A manifest exactly as afbackup 0.1.0 stored it (no executor, Object Lock on). Never regenerate this text:
# it pins that backups made by 0.1.0 stay readable.
V1_MANIFEST = b"""{
  "airflow": {
    "cli_version": null,
    "executor": "none",
    "fab_revision": null,
    "fernet_fingerprints": [],
    "major": 2,
    "schema_release": "2.10.3",
    "schema_revision": "5f2621c13b39"
  },
  "archive": {
    "compression": "zstd",
    "compression_level": 3,
    "dump_part_size": 8388608,
    "encryption": "openpgp",
    "format": "tar"
  },
  "archive_members": [
    {
      "name": "db/airflow.pgdump.00000",
      "sha256": "9a7a2ef4d7aa9bba2d6cc8cc1a1e0b5a3e0e68c6d4dcfb7e4b43aa5e1b1b1f01",
      "size": 81234
    }
  ],
  "backup_id": "20261101T040001Z-0a1b2c",
  "encryption": {
    "recipients": [
      "0123456789ABCDEF0123456789ABCDEF01234567"
    ],
    "signer": "89ABCDEF0123456789ABCDEF0123456789ABCDEF"
  },
  "exit_codes": {
    "airflow_agent": null,
    "gpg": 0,
    "pg_dump": 0
  },
  "exports": null,
  "finished_at": "2026-11-01T04:00:07.250Z",
  "format": "afbackup-manifest",
  "format_version": 1,
  "host": "backup-7d9f",
  "labels": {},
  "name": "airflow",
  "not_captured": {
    "exports": "no executor configured: connections, variables and pools are only in the database dump"
  },
  "object_lock": {
    "mode": "GOVERNANCE",
    "retain_until": "2026-12-01T04:00:01.000Z"
  },
  "objects": [
    {
      "etag": "\\"5d41402abc4b2a76b9719d911017c592-1\\"",
      "key": "archive.tar.zst.gpg",
      "sha256": "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
      "size": 90112,
      "version_id": "3HL4kqtJlcpXroDTDmJ-rmSpXd3dIbrHY"
    }
  ],
  "postgres": {
    "database": "airflow",
    "pg_dump_version": "pg_dump (PostgreSQL) 16.4",
    "schema": "public",
    "server_major": 16,
    "server_version": "16.4"
  },
  "scope": {
    "added_for_fk": {
      "dag": [
        "dag_run"
      ]
    },
    "data_tables": [
      "dag",
      "dag_run"
    ],
    "exclude_data": [
      "log",
      "xcom"
    ],
    "include": [],
    "row_counts": {
      "dag": 2,
      "dag_run": 40
    },
    "schema_only_tables": [
      "log",
      "xcom"
    ]
  },
  "started_at": "2026-11-01T04:00:01.000Z",
  "status": "complete",
  "tool": {
    "name": "afbackup",
    "version": "0.1.0"
  }
}
"""


def test_a_format_1_manifest_of_afbackup_0_1_0_still_parses():
    # WHEN the literal 0.1.0 manifest is parsed
    m = mf.parse_manifest(V1_MANIFEST, KEY)
    # THEN every part reads through the typed model
    assert (m.format_version, m.backup_id, m.status) == (1, "20261101T040001Z-0a1b2c", "complete")
    assert m.finished_at == dt.datetime(2026, 11, 1, 4, 0, 7, 250000, tzinfo=dt.UTC)
    assert (m.airflow.major, m.airflow.cli_version, m.airflow.release) == (2, None, "2.10.3")
    assert m.postgres.schema_name == "public" and m.postgres.server_major == 16
    assert m.scope.added_for_fk == {"dag": ["dag_run"]} and m.row_counts == {"dag": 2, "dag_run": 40}
    assert m.exports is None and "no executor" in (m.not_captured.exports or "")
    assert m.not_captured.missing() == {"exports": m.not_captured.exports}
    assert m.encryption.signer == "89ABCDEF0123456789ABCDEF0123456789ABCDEF"
    assert m.archive.size == 90112 and m.archive.version_id.startswith("3HL4")
    assert m.archive_format.dump_part_size == 8 << 20 and m.members[0].size == 81234
    assert m.object_lock is not None and m.object_lock.retain_until.month == 12
    assert m.exit_codes.airflow_agent is None
    # AND what is shown and compared is the document exactly as stored
    assert m.raw == json.loads(V1_MANIFEST)
    assert mf.dump_manifest(m.raw) == V1_MANIFEST


# -- the writer's side --------------------------------------------------------------------------
def _body() -> mf.ManifestBody:
    inner = {k: v for k, v in manifest_doc().items() if k not in mf.OUTER_ONLY}
    return mf.ManifestBody.model_validate(dict(inner, status="archived"))


def test_the_model_writes_every_field_canonically_and_reads_back_the_same():
    # GIVEN a body as the writer builds it, completed with the stored object
    body = _body()
    finished = dt.datetime(2026, 11, 24, 5, 0, 9, 500000, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    manifest = body.completed(finished, [mf.ObjectInfo(key=mf.ARCHIVE_NAME, size=4096, sha256=SHA, etag="abc")])
    # WHEN it is dumped and parsed back
    data = mf.dump_manifest(manifest)
    again = mf.parse_manifest(data, KEY)
    # THEN it is the same manifest, written as the current format with times in UTC with milliseconds
    assert again.to_doc() == manifest.to_doc() and again.status == "complete" and body.status == "archived"
    doc = json.loads(data)
    assert doc["format_version"] == mf.FORMAT_VERSION == 2
    assert doc["finished_at"] == "2026-11-24T04:00:09.500Z" and doc["started_at"] == "2026-11-24T04:00:01.000Z"
    assert doc["postgres"]["schema"] == "public" and doc["archive"]["format"] == "tar"
    assert doc == manifest_doc()
    # AND the bytes are canonical: dumping the stored document again gives the same bytes
    assert mf.dump_manifest(doc) == data == mf.dump_manifest(again.raw)


def test_the_archive_copy_is_compared_field_by_field_except_what_only_the_stored_manifest_has():
    manifest = mf.parse_manifest(encode(manifest_doc()), KEY)
    inner = _body().to_doc()
    assert manifest.copy_differs(inner) is None
    assert manifest.copy_differs(dict(inner, scope=dict(inner["scope"], row_counts={"dag": 4}))) == "scope"
    assert manifest.copy_differs(dict(inner, extra_field=1)) == "extra_field"
    assert manifest.copy_differs({k: v for k, v in inner.items() if k != "host"}) == "host"


def test_unknown_fields_are_kept_and_shown_but_not_interpreted():
    m = mf.parse_manifest(encode(manifest_doc(future={"a": 1}, airflow=dict(manifest_doc()["airflow"], x=2))), KEY)
    assert m.raw["future"] == {"a": 1} and m.model_extra == {"future": {"a": 1}}
    assert m.to_doc()["airflow"]["x"] == 2
