"""The names of the databases a restore creates: documented, within PostgreSQL's 63 bytes, recognisable."""

from __future__ import annotations

from afbackup.restore.quiesce import with_lock_timeout
from afbackup.restore.swap import derived_name


def test_derived_names_follow_the_documented_pattern():
    assert derived_name("airflow", "previous", "20261207110503") == "airflow__afbackup_previous_20261207110503"
    assert derived_name("airflow", "restore", "20261207110503") == "airflow__afbackup_restore_20261207110503"


def test_a_long_target_name_is_shortened_to_fit_63_bytes_keeping_the_suffix():
    name = derived_name("a" * 60, "previous", "20261207110503")
    assert len(name.encode()) == 63 and name.endswith("__afbackup_previous_20261207110503")
    # a multi-byte character is never cut in half
    utf8 = derived_name("ü" * 40, "restore", "20261207110503")
    assert len(utf8.encode()) <= 63 and utf8.encode().decode() == utf8


def test_the_lock_timeout_is_added_to_the_connection_options_without_losing_others():
    dsn = with_lock_timeout("postgresql://u@h:5/db?options=-c%20search_path%3Dx", 2.5)
    assert "search_path=x" in dsn and "lock_timeout=2500" in dsn
