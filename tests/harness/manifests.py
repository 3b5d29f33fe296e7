"""Synthetic manifest documents for tests that need a valid stored manifest without running a backup."""

from __future__ import annotations

import hashlib
from typing import Any

from afbackup import manifest as mf

SHA = hashlib.sha256(b"archive").hexdigest()


def manifest_doc(**changes: Any) -> dict[str, Any]:
    """A current-format stored manifest, shaped like afbackup/backup.py's ``_manifest_body`` once completed."""
    doc: dict[str, Any] = {
        "format": mf.FORMAT, "format_version": mf.FORMAT_VERSION,
        "tool": {"name": "afbackup", "version": "0.1.0"},
        "backup_id": "20261124T040001Z-3f9a1c", "name": "airflow", "deployment": "airflow", "labels": {"env": "prod"},
        "status": "complete", "started_at": "2026-11-24T04:00:01.000Z", "host": "backup-pod",
        "finished_at": "2026-11-24T04:00:09.500Z",
        "airflow": {"major": 3, "schema_revision": "29ce7909c52b", "schema_release": "3.0.0", "fab_revision": None,
                    "cli_version": "3.0.2", "executor": "kubernetes", "fernet_fingerprints": ["0123456789abcdef"]},
        "postgres": {"server_version": "15.18", "server_major": 15, "pg_dump_version": "pg_dump (PostgreSQL) 15.18",
                     "database": "airflow", "schema": "public"},
        "scope": {"data_tables": ["dag", "dag_run"], "schema_only_tables": ["log", "xcom"],
                  "row_counts": {"dag": 3, "dag_run": 12}, "added_for_fk": {},
                  "exclude_data": ["log", "xcom"], "include": []},
        "exports": {"connections": 2, "variables": 5, "pools": 1},
        "not_captured": {"exports": None, "connections_from_env": [], "variables_from_env": [],
                         "secrets_backend": None},
        "archive_members": [{"name": "db/airflow.pgdump.00000", "size": 1234, "sha256": SHA},
                            {"name": "manifest.json", "size": 99, "sha256": SHA}],
        "archive": {"format": "tar", "compression": "zstd", "compression_level": 3, "encryption": "openpgp",
                    "dump_part_size": 8 << 20},
        "encryption": {"recipients": ["0123456789ABCDEF0123456789ABCDEF01234567"], "signer": None,
                       "fernet_recipients": None},
        "exit_codes": {"pg_dump": 0, "gpg": 0, "airflow_agent": 0},
        "object_lock": None, "in_flight": None, "active_dags": None, "environment": None,
        "objects": [{"key": mf.ARCHIVE_NAME, "size": 4096, "sha256": SHA, "etag": "abc", "version_id": ""}],
    }
    doc.update(changes)
    return doc
