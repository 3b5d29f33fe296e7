"""Restore steps that need Airflow itself, run through the executor's agent.

The agent's Airflow is pointed at the restore target (``[restore]
airflow_db = "target"``, the default): its SQLAlchemy URL is built from
``--target-dsn`` and the password, if any, travels in the agent's
environment over stdin (never argv, never disk). With ``airflow_db = "own"``
the agent uses the database its Airflow is configured with (for example
when the target is reached through a port-forward that the pod cannot use).

Fernet: a restored database decrypts only with the source deployment's key.
The archive carries the source key(s) (``airflow/fernet.json``, inside the
encrypted archive only); when a restored value does not decrypt with the
target's key, Airflow's own ``rotate-fernet-key`` runs with
``fernet_key = <target>,<source…>``, which re-encrypts every connection,
variable and trigger under the target key byte for byte — no JSON round
trip, so values are exactly what they were. Every value is then compared with
the archive's copies.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from psycopg.conninfo import conninfo_to_dict

from afbackup.errors import PreflightError, SourceError
from afbackup.sources.airflow import AirflowAgent
from afbackup.unpack import ArchiveContents

logger = logging.getLogger(__name__)

_URL_PARAMS = ("sslmode", "sslrootcert", "sslcert", "sslkey", "connect_timeout", "options", "target_session_attrs")


def target_env(dsn: str, password: str | None, mode: str) -> dict[str, str]:
    """The environment that points the agent's Airflow at the restore target."""
    if mode == "own":
        return {}
    params = conninfo_to_dict(dsn)
    user = quote(params.get("user") or "", safe="")
    host = params.get("host") or "localhost"
    port = params.get("port") or "5432"
    query = "&".join(f"{key}={quote(str(params[key]), safe='')}" for key in _URL_PARAMS if params.get(key))
    url = f"postgresql://{user}@{host}:{port}/{quote(params.get('dbname', ''), safe='')}"
    env = {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url + (f"?{query}" if query else "")}
    if password:
        env["PGPASSWORD"] = password
    return env


def check_schema(agent: AirflowAgent, env: dict[str, str], revision: str, *, migrate: bool) -> str:
    """Compare the backup's alembic revision with the target Airflow's: 'same' or 'migrate', else refuse."""
    info = agent.call([{"op": "schema", "revision": revision}], env=env, stage="airflow version check")[0]
    if info["head"] == revision:
        return "same"
    if info["known"]:
        if not migrate:
            raise PreflightError(
                f"the backup's Airflow schema (revision {revision}) is older than the target Airflow's "
                f"({info['head']})", hint="re-run with --migrate to run `airflow db migrate` after the restore")
        return "migrate"
    raise PreflightError(
        f"the backup is from a newer Airflow (schema revision {revision}) than the target's (head "
        f"{info['head']})", hint="install the Airflow version of the backup (see `afbackup show`) on the target")


def migrate(agent: AirflowAgent, env: dict[str, str]) -> None:
    result = agent.cli("db", "migrate", env=env, stage="airflow db migrate")
    if result["exit_code"] != 0:
        raise SourceError(f"airflow db migrate exited with {result['exit_code']}", stage="airflow db migrate")


def expected_secrets(contents: ArchiveContents) -> dict[str, Any]:
    """What the restored Airflow must hold, from the archive: exact values, compared inside the agent."""
    connections = contents.json("airflow/connections.json")
    exact = contents.json("airflow/variables_exact.json")
    pools = contents.json("airflow/pools.json")
    return {"connections": {cid: {"password": c.get("password"), "extra": c.get("extra")}
                            for cid, c in connections.items()},
            "variables": {key: item["val"] for key, item in exact.items()},
            "pools": {name: {"slots": p.get("slots"), "description": p.get("description")}
                      for name, p in pools.items()}}


def repair_fernet(agent: AirflowAgent, env: dict[str, str], contents: ArchiveContents) -> dict[str, Any]:
    """Make every restored connection and variable readable under the target's key, values unchanged."""
    source_keys = contents.json("airflow/fernet.json").get("keys", [])
    outcome = agent.call([{"op": "fernet_repair", "expected": expected_secrets(contents), "source_keys": source_keys}],
                         env=env, stage="fernet")[0]
    broken = outcome["before"]["undecryptable"]
    if outcome["reencrypted"]:
        logger.warning("%d connection(s) and %d variable(s) did not decrypt with the target's Fernet key: "
                       "re-encrypted with Airflow's rotate-fernet-key", len(broken["connections"]),
                       len(broken["variables"]))
    elif broken["connections"] or broken["variables"]:
        raise SourceError("restored values do not decrypt with the target's Fernet key and the backup carries "
                          "no source key", stage="fernet", hint="add the source key to the target's fernet_key")
    _require_equal(outcome["after"], "after the restore")
    return {"reencrypted": outcome["reencrypted"], "undecryptable_before": broken,
            "checked": outcome["after"]["counts"]}


def import_parts(agent: AirflowAgent, env: dict[str, str], contents: ArchiveContents, parts: set[str],
                 tmp_dir: str) -> dict[str, Any]:
    """``--only``: import connections/variables/pools (overwrite), then prove every value arrived."""
    request: dict[str, Any] = {"op": "import", "tmp_dir": tmp_dir}
    if "connections" in parts:
        request["connections"] = contents.members["airflow/connections.json"].decode()
    if "pools" in parts:
        request["pools"] = contents.members["airflow/pools.json"].decode()
    if "variables" in parts:
        request["variables"] = contents.json("airflow/variables_exact.json")
    agent.call([request], env=env, stage="airflow import")
    expected = expected_secrets(contents)
    check = _secrets_check(agent, env, {k: v for k, v in expected.items() if k in parts})
    _require_equal(check, "after the import")
    return {part: _count(contents, part) for part in sorted(parts)}


def _count(contents: ArchiveContents, part: str) -> int:
    return len(contents.json(f"airflow/{part}.json"))


def _secrets_check(agent: AirflowAgent, env: dict[str, str], expected: dict[str, Any]) -> dict[str, Any]:
    return agent.call([{"op": "secrets_check", "expected": expected}], env=env, stage="secrets check")[0]


def _require_equal(check: dict[str, Any], when: str) -> None:
    broken, differ = check["undecryptable"], check["differ"]
    problems = [f"{kind} {', '.join(names)} do not decrypt" for kind, names in broken.items() if names]
    problems += [f"{kind} {', '.join(names)} differ from the backup" for kind, names in differ.items() if names]
    if problems:
        raise SourceError(f"{when}: " + "; ".join(problems), stage="airflow secrets",
                          hint="check the target's fernet_key and that no secrets backend shadows these ids")
