"""The fast Fernet check against a real PostgreSQL: exact values pass, a wrong key or value fails."""

from __future__ import annotations

import json

import pytest
from cryptography.fernet import Fernet

from afbackup import manifest as mf
from afbackup.errors import SourceError
from afbackup.restore.secrets_check import check_directly, target_has_source_keys
from afbackup.unpack import ArchiveContents
from tests.harness.manifests import manifest_doc
from tests.harness.pg import PostgresServer

KEY = Fernet.generate_key().decode()

pytestmark = pytest.mark.integration  # a real PostgreSQL server


@pytest.fixture(scope="module")
def pg():
    with PostgresServer() as server:
        yield server


@pytest.fixture
def db(pg):
    name = f"secrets_{Fernet.generate_key()[:6].decode().lower().replace('-', 'x').replace('_', 'y')}"
    pg.create_database(name)
    pg.execute(name, "CREATE TABLE connection (conn_id text, password text, is_encrypted bool, extra text,"
                     " is_extra_encrypted bool)")
    pg.execute(name, "CREATE TABLE variable (key text, val text, is_encrypted bool)")
    token = Fernet(KEY.encode()).encrypt
    pg.execute(name, "INSERT INTO connection VALUES ('db', %s, true, %s, true), ('plain', 'p', false, NULL, false)",
               (token(b"s3cret").decode(), token(b'{"a":1}').decode()))
    pg.execute(name, "INSERT INTO variable VALUES ('json', %s, true), ('raw', 'x', false)",
               (token(b'"hello"').decode(),))
    return name


def _contents(keys):
    return ArchiveContents({"airflow/fernet.json": json.dumps({"keys": keys}).encode()}, 0)


EXPECTED = {"connections": {"db": {"password": "s3cret", "extra": '{"a":1}'},
                            "plain": {"password": "p", "extra": None}},
            "variables": {"json": '"hello"', "raw": "x"}}


def test_exact_values_decrypt_and_match(pg, db):
    assert check_directly(pg.dsn(db), None, "public", _contents([KEY]), EXPECTED, 10) == {
        "connections": 2, "variables": 2, "triggers": 0}


def test_triggers_must_decrypt_with_the_source_keys(pg, db):
    # GIVEN a trigger encrypted with the source key and one in plain JSON (older Airflow): both readable
    pg.execute(db, "CREATE TABLE trigger (id int, kwargs text)")
    pg.execute(db, "INSERT INTO trigger VALUES (1, %s), (2, '{\"a\": 1}')",
               (Fernet(KEY.encode()).encrypt(b'{"__var": {}, "__type": "dict"}').decode(),))
    assert check_directly(pg.dsn(db), None, "public", _contents([KEY]), EXPECTED, 10)["triggers"] == 2
    # WHEN one is encrypted with another key THEN it is named
    pg.execute(db, "INSERT INTO trigger VALUES (7, %s)", (Fernet(Fernet.generate_key()).encrypt(b"{}").decode(),))
    with pytest.raises(SourceError, match="trigger.* 7 "):
        check_directly(pg.dsn(db), None, "public", _contents([KEY]), EXPECTED, 10)


def test_a_changed_value_is_named(pg, db):
    changed = json.loads(json.dumps(EXPECTED))
    changed["variables"]["json"] = "hello"  # what a lossy JSON round trip would give
    with pytest.raises(SourceError, match="json"):
        check_directly(pg.dsn(db), None, "public", _contents([KEY]), changed, 10)


def test_a_wrong_key_fails(pg, db):
    with pytest.raises(SourceError, match="db"):
        check_directly(pg.dsn(db), None, "public", _contents([Fernet.generate_key().decode()]), EXPECTED, 10)


def _manifest(fingerprints: list[str]) -> mf.Manifest:
    doc = manifest_doc()
    doc["airflow"]["fernet_fingerprints"] = fingerprints
    return mf.parse_manifest(mf.dump_manifest(doc), "manifest.json")


def test_same_keys_means_every_source_key_is_a_target_key():
    assert target_has_source_keys(_manifest(["aa", "bb"]), ["bb", "aa", "cc"])
    assert not target_has_source_keys(_manifest(["aa", "bb"]), ["aa"])
    assert not target_has_source_keys(_manifest([]), ["aa"])
