"""Settings carried to the staging database: list parameters split as PostgreSQL stores them, then re-quoted."""

from __future__ import annotations

import pytest

from afbackup.restore.staging import set_statement, split_list


@pytest.mark.parametrize(("stored", "elements"), [
    ('"$user", public', ["$user", "public"]),
    ("airflow", ["airflow"]),
    ('airflow, "Mixed Case", "with,comma"', ["airflow", "Mixed Case", "with,comma"]),
    ('"say ""hi"""', ['say "hi"']),
    ('""', [""]),
    ("", [""]),
])
def test_a_stored_list_setting_splits_into_its_elements(stored, elements):
    assert split_list(stored) == elements


def test_a_database_setting_is_set_again_with_its_value_as_a_literal():
    statement = set_statement("airflow", "", "statement_timeout", "5min").as_string(None)
    assert statement == "ALTER DATABASE \"airflow\" SET \"statement_timeout\" TO '5min'"


def test_a_list_setting_is_set_element_by_element_and_a_role_setting_names_the_role():
    statement = set_statement("air flow", "etl", "search_path", '"$user", public').as_string(None)
    assert statement == ("ALTER ROLE \"etl\" IN DATABASE \"air flow\" SET \"search_path\" TO '$user', 'public'")
