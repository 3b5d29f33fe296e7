

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
