"""Which Airflow a metadata database belongs to, read from the database itself.

The alembic revision in ``alembic_version`` names the schema; the table set
tells 2.x from 3.x even for revisions this table does not know (3.x has
``dag_version`` and ``dag_bundle``; 2.x has ``dataset`` where 3.x has
``asset``). The revision heads below are facts from Airflow's release history:
the first release that shipped each schema head.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

# schema head revision -> first Airflow release with that schema (ordered oldest first)
SCHEMA_HEADS: tuple[tuple[str, str], ...] = (
    ("c804e5c76e3e", "2.6.2"),
    ("4bc4d934e2bc", "2.6.2"),
    ("405de8318b3a", "2.7.0"),
    ("10b52ebd31f7", "2.8.0"),
    ("88344c1d9134", "2.8.1"),
    ("1949afb29106", "2.9.0"),
    ("686269002441", "2.9.2"),
    ("22ed7efa9da2", "2.10.0"),
    ("5f2621c13b39", "2.10.3"),
    ("29ce7909c52b", "3.0.0"),
    ("fe199e1abd77", "3.0.3"),
    ("cc92b33c6709", "3.1.0"),
    ("509b94a1042d", "3.1.8"),
    ("1d6611b6ab7c", "3.2.0"),
    ("d2f4e1b3c5a7", "3.3.0"),
)
_RELEASE_OF = dict(SCHEMA_HEADS)
_ORDER = {revision: index for index, (revision, _) in enumerate(SCHEMA_HEADS)}


@dataclasses.dataclass(frozen=True)
class AirflowSchema:
    major: int
    revision: str
    release: str  # "" when the revision is not a known release head
    fab_revision: str

    def as_dict(self) -> dict:
        return {"major": self.major, "schema_revision": self.revision, "schema_release": self.release or None,
                "fab_revision": self.fab_revision or None}


def detect_schema(tables: Sequence[str], revisions: dict[str, str]) -> AirflowSchema:
    names = set(tables)
    major = 3 if {"dag_version", "dag_bundle"} <= names else 2
    revision = revisions.get("alembic_version", "")
    return AirflowSchema(major, revision, _RELEASE_OF.get(revision, ""), revisions.get("alembic_version_fab", ""))


def compare_revisions(a: str, b: str) -> int | None:
    """-1/0/1 when both are known release heads (older/same/newer), else None."""
    if a == b:
        return 0
    if a in _ORDER and b in _ORDER:
        return -1 if _ORDER[a] < _ORDER[b] else 1
    return None
