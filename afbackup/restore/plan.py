"""Restore preflight: everything checked, and the plan decided, before anything is downloaded or touched."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import re

from afbackup import manifest as mf
from afbackup.config.model import Config
from afbackup.errors import ConfigError, PreflightError, UsageError
from afbackup.executors import open_executor
from afbackup.inflight import DEFAULT_POLICY
from afbackup.restore import airflow_steps, quiesce, swap, target
from afbackup.sources.airflow import AirflowAgent, resolve_python
from afbackup.sources.postgres import ToolVersion, target_password, tool_version

logger = logging.getLogger(__name__)

ALL_PARTS = frozenset({"db", "connections", "variables", "pools"})


@dataclasses.dataclass(frozen=True)
class RestoreOptions:
    backup: str = "latest"
    target_dsn: str = ""
    parts: frozenset[str] = ALL_PARTS
    clean: bool = False
    yes: bool = False
    dry_run: bool = False
    pause_dags: bool = True  # a full restore leaves every DAG paused unless --no-pause-dags
    migrate: bool = False
    jobs: int | None = None
    source_deployment: str = ""  # restore a backup of this deployment (a deliberate migration)
    in_flight: str = DEFAULT_POLICY  # --in-flight reset|fail|keep (afbackup/inflight.py)
    terminate_sessions: bool = False
    drop_previous: bool = False


@dataclasses.dataclass(frozen=True)
class TargetProbe:
    """The target's Airflow, asked through the executor's agent the moment a restore starts (its start-up takes
    seconds: the answer comes while the backup is checked, downloaded and the load begins)."""

    agent: AirflowAgent | None
    where: airflow_steps.AirflowTarget
    answer: concurrent.futures.Future[airflow_steps.TargetAirflow] | None


def probe_target(cfg: Config, options: RestoreOptions) -> TargetProbe:
    if not options.target_dsn:
        raise UsageError("--target-dsn is required: the database to restore into")
    agent = _agent(cfg, options)
    where = airflow_steps.airflow_target(options.target_dsn, target_password(cfg), cfg.restore.airflow_db)
    if agent is None or "db" not in options.parts:
        if "db" in options.parts:
            logger.warning("no executor configured: the target's Airflow version is not checked; run "
                           "`airflow db check-migrations` before starting Airflow on the restored database")
        return TargetProbe(agent, where, None)
    answer = concurrent.futures.ThreadPoolExecutor(1, "target-airflow").submit(
        airflow_steps.inspect_airflow, agent, where)
    return TargetProbe(agent, where, answer)


@dataclasses.dataclass
class RestoreContext:
    cfg: Config
    manifest: mf.Manifest
    options: RestoreOptions
    password: str | None = dataclasses.field(repr=False)
    state: target.TargetState
    pg_restore: ToolVersion | None
    probe: TargetProbe
    jobs: int
    destructive: str  # the confirmation question, "" when nothing is destroyed
    sessions: list[quiesce.Session] = dataclasses.field(default_factory=list)  # others on the target at preflight

    @property
    def agent(self) -> AirflowAgent | None:
        return self.probe.agent

    @property
    def airflow(self) -> airflow_steps.AirflowTarget:
        return self.probe.where

    def schema_check(self) -> airflow_steps.SchemaCheck:
        """Wait for the target's Airflow; raise PreflightError when the backup cannot go into it."""
        if self.probe.answer is None:
            return airflow_steps.SchemaCheck("unchecked")
        return airflow_steps.check_schema(self.probe.answer.result(), self.manifest.airflow.schema_revision,
                                          migrate=self.options.migrate)

    @property
    def schema_action(self) -> str:
        return self.schema_check().action


def parse_parts(text: str | None) -> frozenset[str]:
    if not text:
        return ALL_PARTS
    parts = frozenset(part.strip() for part in text.split(",") if part.strip())
    unknown = parts - ALL_PARTS
    if unknown or not parts:
        raise UsageError(f"--only takes a comma list of {', '.join(sorted(ALL_PARTS))}; got {text!r}")
    return parts


def prepare_restore(cfg: Config, manifest: mf.Manifest, options: RestoreOptions, probe: TargetProbe) -> RestoreContext:
    if manifest.exports is None and options.parts - {"db"}:
        if "db" not in options.parts:
            raise UsageError(f"backup {manifest.backup_id} has no connection/variable/pool exports (it was made "
                             "without an executor); restore it with --only db")
    password = target_password(cfg)
    schema = manifest.postgres.schema_name
    state = target.inspect_target(options.target_dsn, password, schema, cfg.database.connect_timeout)
    pg_restore = _pg_restore(cfg, manifest) if "db" in options.parts else None
    destructive = _destructive(state, options) if "db" in options.parts else ""
    sessions = _preflight_target(cfg, state, password, options) if "db" in options.parts else []
    jobs = options.jobs or cfg.restore.jobs
    return RestoreContext(cfg, manifest, options, password, state, pg_restore, probe, jobs, destructive, sessions)


def _preflight_target(cfg: Config, state: target.TargetState, password: str | None,
                      options: RestoreOptions) -> list[quiesce.Session]:
    """Privileges for the atomic load and swap, and the other sessions on an existing target (exit 4)."""
    with quiesce.ddl_connection(target.maintenance_dsn(state.dsn), password, cfg.database.connect_timeout,
                                cfg.restore.lock_timeout) as conn:
        swap.check_privileges(conn, state)
        sessions = quiesce.other_sessions(conn, state.dbname) if state.exists else []
    if not options.terminate_sessions:
        quiesce.refuse_if_busy(sessions, state.dbname)
    return sessions


def _pg_restore(cfg: Config, manifest: mf.Manifest) -> ToolVersion:
    tool = tool_version("pg_restore", cfg.database.pg_bin_dir)
    match = re.search(r"\(PostgreSQL\)\s+(\d+)", manifest.postgres.pg_dump_version)
    dumped_by = int(match.group(1)) if match else 0
    if tool.major < dumped_by:
        raise PreflightError(f"{tool.path} is version {tool.major}, older than the pg_dump {dumped_by} that made "
                             f"this backup", hint=f"install the PostgreSQL {dumped_by} client (database.pg_bin_dir)")
    return tool


def _destructive(state: target.TargetState, options: RestoreOptions) -> str:
    if state.other_tables:
        raise PreflightError(
            f"target database {state.dbname} on {state.server} holds {state.other_tables} table(s) outside the "
            "Airflow schema: a restore replaces the whole database, and they would not be in the restored one",
            hint="move them to another database, or restore into a new database; nothing was changed")
    if not state.tables:
        return ""
    if not options.clean:
        raise PreflightError(
            f"target database {state.dbname} on {state.server} is not empty ({state.tables} tables)",
            hint="restore into a new database, or pass --clean to drop its Airflow schema first")
    return (f"This REPLACES {state.dbname} on {state.server} ({state.tables} Airflow tables) with the backup: "
            f"it is closed to new connections, the backup is loaded into a new database and checked there, then "
            f"swapped in; the current one is kept under a new name. Continue?")


def _agent(cfg: Config, options: RestoreOptions) -> AirflowAgent | None:
    executor = open_executor(cfg.airflow)
    if executor is None:
        if "db" not in options.parts:
            raise ConfigError("--only connections/variables/pools needs an executor",
                              hint="set [airflow] executor to local or kubernetes")
        return None
    resolve_pod = getattr(executor, "resolve_pod", None)
    if resolve_pod is not None:
        resolve_pod()  # no Ready pod to exec in: exit 4 now, not after downloading the archive
    return AirflowAgent(executor, resolve_python(cfg.airflow), timeout=cfg.airflow.timeout)


def _database_plan(ctx: RestoreContext) -> list[str]:
    opts, state, m = ctx.options, ctx.state, ctx.manifest
    staging = swap.derived_name(state.dbname, "restore", "<UTC stamp>")
    lines = []
    if state.exists:
        lines.append(f"close {state.dbname} to new connections until the restore ends")
    lines.append(f"create database {staging} and pg_restore {len(m.row_counts)} tables with "
                 f"{sum(m.row_counts.values())} rows into it ({ctx.jobs} job(s)), then compare row counts and "
                 "sequences there")
    if state.exists and ctx.sessions:
        when = ("once the target's Airflow has accepted the backup (during the load)" if ctx.agent is not None
                else "as the load starts")
        lines.append(f"{when}: terminate {len(ctx.sessions)} other session(s) on {state.dbname} "
                     "(--terminate-sessions): "
                     + "; ".join(s.describe() for s in ctx.sessions[:5]))
    if opts.pause_dags:
        lines.append("pause every DAG")
    if state.exists:
        previous = swap.derived_name(state.dbname, "previous", "<UTC stamp>")
        lines.append(f"swap: rename {state.dbname} ({state.tables} Airflow tables) to {previous}, and the new "
                     f"database to {state.dbname}" + (" (--clean)" if state.tables else ""))
        lines.append(f"drop {previous} ({'--drop-previous' if opts.drop_previous else 'it holds no tables'})"
                     if opts.drop_previous or not state.tables else
                     f"keep {previous} until `afbackup restore-cleanup` drops it")
    else:
        lines.append(f"rename it to {state.dbname} (create database {state.dbname})")
    return lines


def describe_plan(ctx: RestoreContext) -> list[str]:
    """What the restore will do, in order (printed by ``--dry-run``)."""
    opts, state, m = ctx.options, ctx.state, ctx.manifest
    lines = [f"restore backup {m.backup_id} (finished {mf.iso(m.finished_at)}, Airflow "
             f"{m.airflow.release}) into {state.dbname} on {state.server}",
             f"download and check {m.archive.key} ({m.archive.size} bytes) before touching the target"]
    if "db" in opts.parts:
        lines += _database_plan(ctx)
        lines.append({"same": "target Airflow schema matches the backup",
                      "migrate": "run airflow db migrate (--migrate)",
                      "unchecked": "target Airflow not checked (no executor)"}[ctx.schema_action])
        if ctx.agent is not None:
            lines.append("check every connection/variable decrypts with the target's Fernet key; re-encrypt if not")
    else:
        lines.append("import " + ", ".join(sorted(opts.parts)) + " through the executor (overwrite), then check")
    return lines
