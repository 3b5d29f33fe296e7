"""``SmokeOptions`` from the configuration, flags and the backup's manifest (``afbackup smoke``)."""

from __future__ import annotations

import dataclasses

from afbackup.config.model import Config
from afbackup.errors import IntegrityError
from afbackup.smoke import SmokeOptions


def options_from(cfg: Config, *, backup_ref: str | None, dsn: str = "", canary: bool = False,
                 queued_threshold: float | None = None, heartbeat_timeout: float | None = None) -> SmokeOptions:
    """``backup_ref`` None: no backup read. ``dsn`` "": ``[database] dsn`` (its password file); a DSN given
    as a flag is a restore target, read with ``[restore] password_file``."""
    from afbackup.sources.postgres import database_password, target_password

    smoke = cfg.smoke
    options = SmokeOptions(
        queued_threshold=smoke.queued_threshold if queued_threshold is None else queued_threshold,
        heartbeat_timeout=smoke.heartbeat_timeout if heartbeat_timeout is None else heartbeat_timeout,
        optional_components=smoke.optional_components, canary=canary, canary_dag=smoke.canary_dag,
        canary_connection=smoke.canary_connection, canary_variable=smoke.canary_variable,
        canary_timeout=smoke.canary_timeout, dsn=dsn or cfg.database.dsn,
        password=target_password(cfg) if dsn else database_password(cfg),
        schema=cfg.database.airflow_schema, connect_timeout=cfg.database.connect_timeout)
    if backup_ref is None:
        return options
    from afbackup.storage import open_store
    from afbackup.trust import Trust
    from afbackup.unpack import trusted_manifest

    record = trusted_manifest(open_store(cfg.storage), backup_ref, Trust.from_config(cfg))
    if record.manifest is None:
        raise IntegrityError(f"backup {record.backup_id} is incomplete (no manifest)",
                             hint="name a complete backup (afbackup list), or pass --no-backup")
    dags = record.manifest.row_counts.get("dag")
    return dataclasses.replace(options, backup_id=record.backup_id, manifest_dags=dags)
