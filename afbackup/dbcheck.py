"""Checks of a restored database: row counts against the manifest, and sound sequences.

Shared by ``restore``, ``verify --deep`` and ``drill``. A sequence is sound
when the next value it hands out is greater than the largest value already in
its column; otherwise the next insert fails with a duplicate key (the classic
symptom of a partial or data-only restore).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import psycopg
from psycopg import sql

from afbackup.sources.postgres import one_row

_OWNED_SEQUENCES = """
SELECT s.relname, t.relname, a.attname
FROM pg_class s
JOIN pg_namespace n ON n.oid = s.relnamespace
JOIN pg_depend d ON d.objid = s.oid AND d.classid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
JOIN pg_class t ON t.oid = d.refobjid
JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
WHERE s.relkind = 'S' AND n.nspname = %s
ORDER BY 1
"""


@dataclasses.dataclass(frozen=True)
class Finding:
    check: str  # "rows" | "sequence"
    subject: str  # table or sequence name
    detail: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.detail}"


def count_rows(conn: psycopg.Connection, schema: str, tables: list[str]) -> dict[str, int]:
    if not tables:
        return {}
    query = sql.SQL(" UNION ALL ").join(
        sql.SQL("SELECT {}, count(*) FROM {}.{}").format(sql.Literal(t), sql.Identifier(schema), sql.Identifier(t))
        for t in tables
    )
    return {name: int(count) for name, count in conn.execute(query).fetchall()}


def compare_row_counts(conn: psycopg.Connection, schema: str, expected: Mapping[str, int]) -> list[Finding]:
    """Every table the manifest counted must hold exactly that many rows."""
    existing = {row[0] for row in conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)).fetchall()}
    findings = [Finding("rows", table, "missing from the restored database")
                for table in sorted(expected) if table not in existing]
    actual = count_rows(conn, schema, sorted(t for t in expected if t in existing))
    findings += [Finding("rows", table, f"{actual[table]} rows, the manifest says {expected[table]}")
                 for table in sorted(actual) if actual[table] != expected[table]]
    return findings


def check_sequences(conn: psycopg.Connection, schema: str) -> list[Finding]:
    """Every sequence owned by a column must hand out values above the column's maximum."""
    findings = []
    for seq, table, column in conn.execute(_OWNED_SEQUENCES, (schema,)).fetchall():
        last, called, increment = one_row(conn.execute(sql.SQL(
            "SELECT last_value, is_called, (SELECT increment_by FROM pg_sequences"
            " WHERE schemaname = {} AND sequencename = {}) FROM {}.{}").format(
            sql.Literal(schema), sql.Literal(seq), sql.Identifier(schema), sql.Identifier(seq))))
        top = one_row(conn.execute(sql.SQL("SELECT max({}) FROM {}.{}").format(
            sql.Identifier(column), sql.Identifier(schema), sql.Identifier(table))))[0]
        next_value = last + (increment if called else 0)
        if top is not None and next_value <= top:
            findings.append(Finding("sequence", seq, f"next value {next_value} is not above max({table}.{column}) "
                                                      f"= {top}: the next insert would fail"))
    return findings


def check_restored(conn: psycopg.Connection, schema: str, expected: Mapping[str, int]) -> list[Finding]:
    return compare_row_counts(conn, schema, expected) + check_sequences(conn, schema)
