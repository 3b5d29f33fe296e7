"""The fast Fernet check: when the target Airflow already holds every source key, no Airflow is needed.

The restored rows are read with SQL and decrypted here with the source keys
carried in the archive (``cryptography``'s Fernet, the library Airflow itself
uses). Since each of those keys is also one of the target's keys (compared by
fingerprint), this proves every restored connection, variable and trigger decrypts
under the target's configuration (connections and variables also equal the backup's values) — without
paying Airflow's start-up. Any other case goes through the agent
(``airflow_steps.repair_fernet``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from psycopg import sql

from afbackup.errors import SourceError
from afbackup.manifest import Manifest
from afbackup.sources.postgres import connect
from afbackup.unpack import ArchiveContents


def target_has_source_keys(manifest: Manifest, target_fingerprints: Sequence[str]) -> bool:
    source = set(manifest.airflow.fernet_fingerprints)
    return bool(source) and source <= set(target_fingerprints)


def check_directly(dsn: str, password: str | None, schema: str, contents: ArchiveContents,
                   expected: dict[str, Any], timeout: float) -> dict[str, int]:
    """Decrypt every restored connection and variable with the source keys; all must equal ``expected``."""
    keys = contents.json("airflow/fernet.json").get("keys", [])
    fernet = MultiFernet([Fernet(key.encode()) for key in keys])
    with connect(dsn, password, timeout) as conn:
        connections = conn.execute(sql.SQL("SELECT conn_id, password, is_encrypted, extra, is_extra_encrypted "
                                           "FROM {}.connection").format(sql.Identifier(schema))).fetchall()
        variables = conn.execute(sql.SQL("SELECT key, val, is_encrypted FROM {}.variable")
                                 .format(sql.Identifier(schema))).fetchall()
        triggers = _triggers(conn, schema)
    wrong = [conn_id for conn_id, pw, pw_enc, extra, extra_enc in connections
             if _plain(fernet, pw, pw_enc) != _expected(expected["connections"], conn_id, "password")
             or (_plain(fernet, extra, extra_enc) or None) != (_expected(expected["connections"], conn_id, "extra")
                                                               or None)]
    wrong += [key for key, value, encrypted in variables
              if _plain(fernet, value, encrypted) != expected["variables"].get(key, _MISSING)]
    counts = {"connections": len(connections), "variables": len(variables)}
    if wrong or counts != {kind: len(expected[kind]) for kind in counts}:
        raise SourceError(f"restored secrets differ from the backup: {', '.join(sorted(map(str, wrong))) or '-'} "
                          f"(restored {counts})", stage="airflow secrets")
    broken = [str(tid) for tid, kwargs in triggers if not kwargs.startswith("{") and _plain(fernet, kwargs, True)
              is _MISSING]
    if broken:
        raise SourceError(f"trigger(s) {', '.join(broken)} do not decrypt with the source Fernet key(s)",
                          stage="airflow secrets", hint="the triggerer cannot run them; check the backup's keys")
    return {**counts, "triggers": len(triggers)}


def _triggers(conn: Any, schema: str) -> list[tuple[Any, str]]:
    """Every trigger's id and stored kwargs (Fernet tokens; plain JSON when written before encryption)."""
    exists = conn.execute("SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = "
                          "'trigger'", (schema,)).fetchone()
    if not exists:
        return []
    return conn.execute(sql.SQL("SELECT id, kwargs FROM {}.trigger").format(sql.Identifier(schema))).fetchall()


_MISSING = object()


def _expected(connections: dict, conn_id: str, field: str) -> Any:
    return connections.get(conn_id, {}).get(field, _MISSING)


def _plain(fernet: MultiFernet, value: str | None, encrypted: bool) -> str | None | object:
    if value is None or not encrypted:
        return value
    try:
        return fernet.decrypt(value.encode()).decode()
    except InvalidToken:
        return _MISSING
