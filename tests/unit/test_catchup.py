"""Catch-up estimates: fixed periods are counted, anything else is said to be unknown."""

from __future__ import annotations

import datetime as dt

import pytest

from afbackup.catchup import cron_period, estimate_runs

NOW = dt.datetime(2026, 12, 7, 12, 30, tzinfo=dt.UTC)


@pytest.mark.parametrize("expression, seconds", [
    ("@daily", 86400), ("@hourly", 3600), ("0 0 * * *", 86400), ("15 * * * *", 3600), ("*/15 * * * *", 900),
    ("30 */6 * * *", 21600), ("0 9 * * 1", 604800), ("* * * * *", 60),
    ("0 9 * * 1-5", None), ("0 0 1 * *", None), ("@monthly", None), ("*/7 * * * *", None), ("bogus", None),
])
def test_cron_period(expression, seconds):
    assert cron_period(expression) == seconds


def _dag(**fields):
    return {"dag_id": "d", "next_dagrun_create_after": "2026-12-05T00:00:00+00:00", "expression": "@daily",
            "delta": None, "timezone": "UTC", "catchup": True, **fields}


def test_catchup_on_counts_every_period_since_the_next_due_run():
    assert estimate_runs(_dag(), NOW)["runs"] == 3  # the 5th, 6th and 7th


def test_catchup_off_is_one_run_and_not_due_yet_is_none():
    assert estimate_runs(_dag(catchup=False), NOW)["runs"] == 1
    assert estimate_runs(_dag(next_dagrun_create_after="2026-12-08T00:00:00+00:00"), NOW)["runs"] == 0
    assert estimate_runs(_dag(next_dagrun_create_after=None), NOW)["runs"] == 0


def test_a_fixed_delta_counts_and_an_irregular_cron_is_unknown():
    assert estimate_runs(_dag(expression=None, delta=43200.0), NOW)["runs"] == 6
    unknown = estimate_runs(_dag(expression="0 9 * * 1-5"), NOW)
    assert unknown["runs"] is None and "unknown" in unknown["reason"]
    assert estimate_runs(_dag(catchup=None), NOW)["runs"] is None


def test_schedules_are_read_from_plain_and_compressed_serialized_dags():
    import json
    import zlib

    from afbackup.catchup import _schedule

    dag = {"timetable": {"__type": "airflow.timetables.trigger.CronTriggerTimetable",
                         "__var": {"expression": "0 0 * * *", "timezone": "UTC"}}, "catchup": True}
    plain = _schedule("d", None, None, json.dumps(dag), None)
    packed = _schedule("d", None, None, None, zlib.compress(json.dumps({"dag": dag}).encode()))
    assert plain == packed and (plain["expression"], plain["catchup"]) == ("0 0 * * *", True)
    legacy = _schedule("d", None, None, json.dumps({"schedule_interval": {"__type": "timedelta", "__var": 3600.0},
                                                   "timetable": None}), None)  # Airflow 2's plain schedules
    assert (legacy["delta"], legacy["expression"], legacy["catchup"]) == (3600.0, None, None)
