"""The table scope: default excludes, closure under foreign keys, explicit includes.

compute_scope is pure, so these run without a database; the property test
checks the closure on random FK graphs.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from afbackup.errors import ConfigError
from afbackup.sources.scope import compute_scope

DEFAULT_EXCLUDES = ("log", "xcom", "_airflow_deleted__*")  # config default for [database] exclude_data

# A small Airflow-3-like catalog: (child, parent) foreign keys.
TABLES = ["alembic_version", "dag", "dag_bundle", "dag_version", "dag_run", "log_template", "task_instance",
          "xcom", "log", "rendered_task_instance_fields", "_airflow_deleted__dag_run__20260101",
          "connection", "variable", "slot_pool"]
FKS = [
    ("dag", "dag_bundle"),
    ("dag_version", "dag"),
    ("dag_run", "dag"),
    ("dag_run", "log_template"),
    ("dag_run", "dag_version"),
    ("task_instance", "dag_run"),
    ("task_instance", "dag_version"),
    ("task_instance", "task_instance"),  # self-reference (e.g. a parent-task column)
    ("xcom", "task_instance"),
    ("rendered_task_instance_fields", "task_instance"),
]


def test_default_excludes_keep_schema_and_skip_rows():
    # GIVEN the default exclude list and no FK into the excluded tables
    scope = compute_scope("public", TABLES, FKS, exclude_data=DEFAULT_EXCLUDES)
    # THEN log, xcom and db-clean archive tables are schema-only; all others carry rows
    assert scope.schema_only_tables == ("_airflow_deleted__dag_run__20260101", "log", "xcom")
    assert set(scope.data_tables) == set(TABLES) - set(scope.schema_only_tables)
    assert scope.added_for_fk == {}
    assert scope.explicit is False
    assert scope.all_tables == tuple(sorted(TABLES))


def test_excluding_a_parent_adds_it_back_and_reports_who_needs_it():
    # GIVEN dag_bundle and log_template excluded, but tables with rows reference them
    scope = compute_scope("public", TABLES, FKS, exclude_data=[*DEFAULT_EXCLUDES, "dag_bundle", "log_template"])
    # THEN both are captured with rows, and the report names the referencing tables
    assert "dag_bundle" in scope.data_tables and "log_template" in scope.data_tables
    assert scope.added_for_fk == {"dag_bundle": ("dag",), "log_template": ("dag_run",)}


def test_transitive_parents_are_added_and_reported():
    # GIVEN a chain task_instance -> dag_run -> dag -> dag_bundle with every parent excluded
    scope = compute_scope("public", TABLES, FKS,
                          exclude_data=["dag_run", "dag", "dag_bundle", "dag_version", "log_template"])
    # THEN the whole chain is back, each parent reported with the table that pulled it in
    for table in ("dag_run", "dag", "dag_bundle", "dag_version", "log_template"):
        assert table in scope.data_tables
    assert scope.added_for_fk["dag_run"] == ("task_instance",)
    assert scope.added_for_fk["dag"] == ("dag_run", "dag_version")
    assert scope.added_for_fk["dag_bundle"] == ("dag",)
    assert set(scope.added_for_fk["dag_version"]) == {"dag_run", "task_instance"}


def test_excluding_a_child_does_not_drag_anything():
    scope = compute_scope("public", TABLES, FKS, exclude_data=["xcom", "rendered_task_instance_fields"])
    assert "xcom" in scope.schema_only_tables and "rendered_task_instance_fields" in scope.schema_only_tables
    assert scope.added_for_fk == {}


def test_self_references_are_ignored():
    # GIVEN a table that references only itself, excluded
    scope = compute_scope("public", ["a", "b"], [("a", "a"), ("b", "b")], exclude_data=["a"])
    # THEN it stays excluded (a self-reference needs no other table)
    assert scope.data_tables == ("b",)
    assert scope.schema_only_tables == ("a",)
    assert scope.added_for_fk == {}


def test_foreign_keys_to_tables_outside_the_schema_are_ignored():
    scope = compute_scope("public", ["a"], [("a", "elsewhere"), ("ghost", "a")])
    assert scope.data_tables == ("a",)
    assert scope.added_for_fk == {}


def test_fk_cycles_terminate():
    scope = compute_scope("public", ["a", "b", "c"], [("a", "b"), ("b", "a"), ("c", "a")], exclude_data=["a", "b"])
    assert scope.data_tables == ("a", "b", "c")


def test_include_is_closed_under_foreign_keys():
    # GIVEN an explicit scope naming only task_instance
    scope = compute_scope("public", TABLES, FKS, include=["task_instance"])
    # THEN every table it references (transitively) is added and reported; nothing else is dumped
    assert set(scope.data_tables) == {"task_instance", "dag_run", "dag", "dag_bundle", "dag_version",
                                      "log_template"}
    assert scope.schema_only_tables == ()
    assert scope.explicit is True
    assert set(scope.added_for_fk) == {"dag_run", "dag", "dag_bundle", "dag_version", "log_template"}


def test_include_ignores_exclude_data():
    scope = compute_scope("public", TABLES, FKS, include=["xcom"], exclude_data=["xcom", "task_instance"])
    assert "xcom" in scope.data_tables and "task_instance" in scope.data_tables


def test_include_rejects_unknown_names_listing_them():
    with pytest.raises(ConfigError) as info:
        compute_scope("airflow", TABLES, FKS, include=["dag", "dags", "task_*"])
    message = info.value.one_line()
    assert "dags" in message and "task_*" in message and "airflow" in message


def test_exclude_patterns_are_case_sensitive_globs():
    scope = compute_scope("public", ["Log", "log", "log_template"], [], exclude_data=["log"])
    assert scope.schema_only_tables == ("log",)


# -- property: closure on random FK graphs -------------------------------------------------
@st.composite
def catalogs(draw):
    """A random DAG of FKs (edges from later to earlier tables) plus a few self-references."""
    count = draw(st.integers(min_value=1, max_value=12))
    tables = [f"t{i}" for i in range(count)]
    pairs = [(tables[i], tables[j]) for i in range(count) for j in range(i)]
    fks = draw(st.lists(st.sampled_from(pairs), max_size=30)) if pairs else []
    fks += [(t, t) for t in draw(st.lists(st.sampled_from(tables), max_size=3))]
    excluded = draw(st.lists(st.sampled_from(tables), max_size=count, unique=True))
    return tables, fks, excluded


@settings(max_examples=200, deadline=None)
@given(catalogs())
def test_scope_is_closed_under_fk_and_partitions_the_tables(catalog):
    tables, fks, excluded = catalog
    scope = compute_scope("public", tables, fks, exclude_data=excluded)
    data, schema_only = set(scope.data_tables), set(scope.schema_only_tables)
    # closure: every data table's parents are data tables
    for child, parent in fks:
        if child in data:
            assert parent in data
    # partition: data ∪ schema_only = all tables, disjoint
    assert data | schema_only == set(tables)
    assert not data & schema_only
    # every table that did not ask for rows but got them is reported, with a real reason
    assert set(scope.added_for_fk) == data & set(excluded)
    for parent, children in scope.added_for_fk.items():
        assert children and all((child, parent) in fks and child in data for child in children)
    # tables not excluded always keep their rows
    assert set(tables) - set(excluded) <= data


@settings(max_examples=100, deadline=None)
@given(catalogs(), st.data())
def test_include_scope_is_closed_under_fk(catalog, data):
    tables, fks, _ = catalog
    include = data.draw(st.lists(st.sampled_from(tables), min_size=1, unique=True))
    scope = compute_scope("public", tables, fks, include=include)
    chosen = set(scope.data_tables)
    assert set(include) <= chosen
    for child, parent in fks:
        if child in chosen:
            assert parent in chosen
    assert set(scope.added_for_fk) == chosen - set(include)
