"""Paused by default, on a real PostgreSQL: the record of active DAGs, and unpausing exactly those."""

from __future__ import annotations

import pytest

from afbackup.restore.pause import forget, pause_all, read_record, unpause_recorded
from tests.harness.pg import PostgresServer

pytestmark = pytest.mark.integration  # a real PostgreSQL


@pytest.fixture(scope="module")
def pg():
    with PostgresServer() as server:
        yield server


@pytest.fixture
def db(pg, request):
    name = f"pause_{request.node.name.lower()[-20:].replace('[', '_').replace(']', '')}"
    pg.create_database(name)
    pg.execute(name, "CREATE SCHEMA airflow")
    pg.execute(name, "CREATE TABLE airflow.dag (dag_id text PRIMARY KEY, is_paused boolean NOT NULL)")
    pg.execute(name, "INSERT INTO airflow.dag VALUES ('a', false), ('b', true), ('c', false), ('gone', false)")
    return name


def _paused(pg, db):
    return dict(pg.execute(db, "SELECT dag_id, is_paused FROM airflow.dag"))


def test_pause_records_the_active_dags_and_unpause_restores_exactly_them(pg, db):
    # GIVEN a restored database with three active DAGs, paused by the restore
    assert pause_all(pg.dsn(db), None, "airflow", "B1", 10) == ["a", "c", "gone"]
    assert not any(_paused(pg, db)[dag] is False for dag in "abc")
    # AND since then one DAG was deleted and one unpaused by hand
    pg.execute(db, "DELETE FROM airflow.dag WHERE dag_id = 'gone'")
    pg.execute(db, "UPDATE airflow.dag SET is_paused = false WHERE dag_id = 'c'")
    record = read_record(pg.dsn(db), None, 10)
    assert (record.backup_id, record.dags, record.missing, record.already_active) == ("B1", ("a", "c"), ("gone",),
                                                                                        ("c",))
    # WHEN unpaused THEN exactly the recorded ones are active, 'b' stays paused, and the record is gone
    assert unpause_recorded(pg.dsn(db), None, 10) == ["a"]
    assert _paused(pg, db) == {"a": False, "b": True, "c": False}
    assert read_record(pg.dsn(db), None, 10) is None


def test_a_later_restore_replaces_the_record_and_no_pause_drops_it(pg, db):
    pause_all(pg.dsn(db), None, "airflow", "B1", 10)
    pg.execute(db, "UPDATE airflow.dag SET is_paused = false WHERE dag_id = 'b'")
    assert pause_all(pg.dsn(db), None, "airflow", "B2", 10) == ["b"]
    assert read_record(pg.dsn(db), None, 10).dags == ("b",)
    forget(pg.dsn(db), None, 10)
    assert read_record(pg.dsn(db), None, 10) is None
