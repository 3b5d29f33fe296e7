"""What a backup will capture, decided before anything is written.

Connects to the metadata database, reads the catalog, detects the Airflow
schema, computes the table scope and checks pg_dump against the server.
Shared by ``backup``, ``backup --dry-run`` and ``check``.
"""

from __future__ import annotations

import dataclasses
import logging

from afbackup.config.model import Config
from afbackup.log import event
from afbackup.sources.airflow_schema import AirflowSchema, detect_schema
from afbackup.sources.postgres import (
    Catalog,
    ToolVersion,
    check_dump_version,
    connect,
    database_password,
    read_catalog,
    tool_version,
)
from afbackup.sources.scope import Scope, compute_scope

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SourcePlan:
    dsn: str
    password: str | None = dataclasses.field(repr=False)
    catalog: Catalog
    schema: AirflowSchema
    scope: Scope
    pg_dump: ToolVersion


def plan_source(cfg: Config) -> SourcePlan:
    """Read the database and decide the scope; raises PreflightError/ConfigError on problems."""
    db = cfg.database
    password = database_password(cfg)
    with connect(db.dsn, password, db.connect_timeout) as conn:
        catalog = read_catalog(conn, db.airflow_schema)
    schema = detect_schema(catalog.tables, catalog.revisions)
    scope = compute_scope(catalog.schema, catalog.tables, catalog.foreign_keys,
                          exclude_data=db.exclude_data, include=db.include)
    for parent, children in scope.added_for_fk.items():
        logger.warning("table %s is captured with its rows because %s reference(s) it", parent, ", ".join(children),
                       extra=event(action="scope", table=parent, state="added_for_fk"))
    pg_dump = tool_version("pg_dump", db.pg_bin_dir)
    check_dump_version(pg_dump, catalog.server_major)
    logger.info("Airflow %s schema (revision %s) in %s.%s on PostgreSQL %s; %d tables with rows, %d schema-only",
                schema.release or f"{schema.major}.x", schema.revision or "none", catalog.database, catalog.schema,
                catalog.server_version, len(scope.data_tables), len(scope.schema_only_tables))
    return SourcePlan(db.dsn, password, catalog, schema, scope, pg_dump)
