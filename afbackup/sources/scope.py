"""Which tables a backup captures: computed from the catalog, closed under foreign keys.

Pure functions over catalog facts, so the rules are unit-tested without a
database. The default scope keeps the schema of every table in the Airflow
schema and the rows of all but the excluded heavy tables (``log``, ``xcom``,
``_airflow_deleted__*``). A table whose rows are captured needs the rows of
every table it references, or the restore fails on foreign keys: such parents
are added and reported (``added_for_fk``), never silently dropped.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Iterable, Mapping, Sequence

from afbackup.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Scope:
    """The outcome: tables dumped with rows, tables dumped schema-only."""

    schema: str
    data_tables: tuple[str, ...]
    schema_only_tables: tuple[str, ...]
    added_for_fk: Mapping[str, tuple[str, ...]]  # parent -> the captured tables that reference it
    explicit: bool  # True when [database] include chose the tables

    @property
    def all_tables(self) -> tuple[str, ...]:
        return tuple(sorted(self.data_tables + self.schema_only_tables))


def compute_scope(
    schema: str,
    tables: Sequence[str],
    foreign_keys: Iterable[tuple[str, str]],
    *,
    exclude_data: Sequence[str] = (),
    include: Sequence[str] = (),
) -> Scope:
    """Close the requested scope under ``foreign_keys`` (pairs of child table, parent table)."""
    existing = set(tables)
    parents = _parents_by_child(foreign_keys, existing)
    if include:
        missing = sorted(name for name in include if name not in existing)
        if missing:
            raise ConfigError(
                f"database.include names tables that do not exist in schema {schema}: {', '.join(missing)}",
                hint="fix the names (exact table names, no patterns)",
            )
        wanted = set(include)
    else:
        wanted = {name for name in existing if not _matches(name, exclude_data)}
    data, added = _close_under_fk(wanted, parents)
    schema_only = () if include else tuple(sorted(existing - data))
    return Scope(
        schema=schema,
        data_tables=tuple(sorted(data)),
        schema_only_tables=schema_only,
        added_for_fk={parent: tuple(sorted(children)) for parent, children in sorted(added.items())},
        explicit=bool(include),
    )


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _parents_by_child(foreign_keys: Iterable[tuple[str, str]], existing: set[str]) -> dict[str, set[str]]:
    parents: dict[str, set[str]] = {}
    for child, parent in foreign_keys:
        if child != parent and child in existing and parent in existing:
            parents.setdefault(child, set()).add(parent)
    return parents


def _close_under_fk(wanted: set[str], parents: Mapping[str, set[str]]) -> tuple[set[str], dict[str, set[str]]]:
    data = set(wanted)
    added: dict[str, set[str]] = {}
    pending = list(sorted(data))
    while pending:
        child = pending.pop()
        for parent in sorted(parents.get(child, ())):
            if parent not in data:
                data.add(parent)
                pending.append(parent)
            if parent not in wanted:
                added.setdefault(parent, set()).add(child)
    return data, added
