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

import dataclasses
import logging
from typing import Any

from psycopg.conninfo import conninfo_to_dict

from afbackup.errors import PreflightError, SourceError
from afbackup.sources.airflow import AirflowAgent
from afbackup.unpack import ArchiveContents

logger = logging.getLogger(__name__)

_URL_PARAMS = ("sslmode", "sslrootcert", "sslcert", "sslkey", "connect_timeout", "options", "target_session_attrs")


@dataclasses.dataclass(frozen=True)
class AirflowTarget:
    """Where the agent's Airflow points during a restore: ``database`` None means its own database."""

    env: dict[str, str] = dataclasses.field(default_factory=dict, repr=False)
    database: dict[str, Any] | None = None  # host, port, user, dbname, query (a dict)


def airflow_target(dsn: str, password: str | None, mode: str) -> AirflowTarget:
    """Point the agent's Airflow at the restore target (the agent keeps its own SQLAlchemy driver)."""
    if mode == "own":
        return AirflowTarget()
    params = conninfo_to_dict(dsn)
    database = {"host": params.get("host") or "localhost", "port": str(params.get("port") or 5432),
                "user": params.get("user") or "", "dbname": params.get("dbname") or "",
                "query": {key: str(params[key]) for key in _URL_PARAMS if params.get(key)}}
    return AirflowTarget({"PGPASSWORD": password} if password else {}, database)


def _call(agent: AirflowAgent, target: AirflowTarget, ops: list[dict], stage: str) -> list[dict]:
    return agent.call(ops, env=target.env, database=target.database, stage=stage)


@dataclasses.dataclass(frozen=True)
class TargetAirflow:
    """What the target's Airflow told the agent: its alembic head and revisions, Fernet key fingerprints, and
    its side of restore/environment_check.py. Gathered as soon as a restore starts (Airflow takes seconds to
    start), before the backup is even chosen: ``check_schema`` decides."""

    head: str
    revisions: frozenset[str]
    fingerprints: tuple[str, ...]  # of the target's Fernet keys (sha256[:16])
    environment: dict[str, Any]


# Airflow's own switch (airflow/__init__.py, 2.x and 3.x) to import it without initializing settings and the ORM:
# the probe reads the package's migrations and the configuration only, and Airflow 3 starts ~0.5 s faster so.
# Where a version ignores it, the import is merely slower.
_AS_LIBRARY = {"_AIRFLOW__AS_LIBRARY": "1"}


def inspect_airflow(agent: AirflowAgent, target: AirflowTarget) -> TargetAirflow:
    info, environment = agent.call([{"op": "schema"}, {"op": "environment"}], env={**target.env, **_AS_LIBRARY},
                                   database=target.database, stage="airflow version check")
    return TargetAirflow(info["head"], frozenset(info["revisions"]), tuple(info.get("fernet_fingerprints", ())),
                         environment)


@dataclasses.dataclass(frozen=True)
class SchemaCheck:
    action: str  # same | migrate | unchecked
    target_fingerprints: tuple[str, ...] = ()  # of the target's Fernet keys (sha256[:16])
    environment: dict[str, Any] | None = None  # the target's side of restore/environment_check.py


def check_schema(target: TargetAirflow, revision: str, *, migrate: bool) -> SchemaCheck:
    """Compare the backup's alembic revision with the target Airflow's: 'same' or 'migrate', else refuse."""
    if target.head == revision:
        return SchemaCheck("same", target.fingerprints, target.environment)
    if revision in target.revisions:
        if not migrate:
            raise PreflightError(
                f"the backup's Airflow schema (revision {revision}) is older than the target Airflow's "
                f"({target.head})", hint="re-run with --migrate to run `airflow db migrate` after the restore")
        return SchemaCheck("migrate", target.fingerprints, target.environment)
    raise PreflightError(
        f"the backup is from a newer Airflow (schema revision {revision}) than the target's (head "
        f"{target.head})", hint="install the Airflow version of the backup (see `afbackup show`) on the target")


def migrate(agent: AirflowAgent, target: AirflowTarget, argv: tuple[str, ...] = ("db", "migrate")) -> None:
    """``airflow db migrate`` (or ``fab-db migrate``) on the target; a non-zero exit fails the restore."""
    what = "airflow " + " ".join(argv)
    result = _call(agent, target, [{"op": "cli", "argv": list(argv)}], what)[0]
    if result["exit_code"] != 0:
        raise SourceError(f"{what} exited with {result['exit_code']}", stage=what)


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


def repair_fernet(agent: AirflowAgent, target: AirflowTarget, contents: ArchiveContents) -> dict[str, Any]:
    """Make every restored connection and variable readable under the target's key, values unchanged."""
    source_keys = contents.json("airflow/fernet.json").get("keys", [])
    outcome = _call(agent, target, [{"op": "fernet_repair", "expected": expected_secrets(contents),
                                     "source_keys": source_keys}], "fernet")[0]
    broken = outcome["before"]["undecryptable"]
    if outcome["reencrypted"]:
        logger.warning("%d connection(s), %d variable(s) and %d trigger(s) did not decrypt with the target's Fernet "
                       "key: re-encrypted with Airflow's rotate-fernet-key", len(broken["connections"]),
                       len(broken["variables"]), len(broken.get("triggers", [])))
    elif broken["connections"] or broken["variables"] or broken.get("triggers"):
        raise SourceError("restored values do not decrypt with the target's Fernet key and the backup carries "
                          "no source key", stage="fernet", hint="add the source key to the target's fernet_key")
    require_equal(outcome["after"], "after the restore")
    return {"reencrypted": outcome["reencrypted"], "undecryptable_before": broken,
            "checked": outcome["after"]["counts"]}


def import_parts(agent: AirflowAgent, target: AirflowTarget, contents: ArchiveContents, parts: set[str],
                 tmp_dir: str) -> dict[str, Any]:
    """``--only``: import connections/variables/pools (overwrite), then prove every value arrived."""
    request: dict[str, Any] = {"op": "import", "tmp_dir": tmp_dir}
    if "connections" in parts:
        request["connections"] = contents.members["airflow/connections.json"].decode()
    if "pools" in parts:
        request["pools"] = contents.members["airflow/pools.json"].decode()
    if "variables" in parts:
        request["variables"] = contents.json("airflow/variables_exact.json")
    expected = {k: v for k, v in expected_secrets(contents).items() if k in parts}
    _, check = _call(agent, target, [request, {"op": "secrets_check", "expected": expected}], "airflow import")
    require_equal(check, "after the import")
    return {part: _count(contents, part) for part in sorted(parts)}


def _count(contents: ArchiveContents, part: str) -> int:
    return len(contents.json(f"airflow/{part}.json"))


def require_equal(check: dict[str, Any], when: str) -> None:
    broken, differ = check["undecryptable"], check["differ"]
    problems = [f"{kind} {', '.join(names)} do not decrypt" for kind, names in broken.items() if names]
    problems += [f"{kind} {', '.join(names)} differ from the backup" for kind, names in differ.items() if names]
    if problems:
        raise SourceError(f"{when}: " + "; ".join(problems), stage="airflow secrets",
                          hint="check the target's fernet_key and that no secrets backend shadows these ids")
