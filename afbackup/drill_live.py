"""``afbackup drill --live``: start a real Airflow on the restored scratch database and run the smoke test,
canary included. RTO to the first successful task (``rto_live_seconds``) runs from the drill's start to the
end of the canary's task, as Airflow recorded it.

The Airflow started is ``[drill] airflow_command`` (else ``[airflow] command`` with the local executor): it
must be the backup's Airflow version. It gets the source Fernet key (escrowed, or the one carried in the
archive), LocalExecutor, and only the canary DAG in its DAGs folder. It is stopped (process groups, SIGTERM
then SIGKILL) before the scratch database is dropped, on every exit path. The triggerer is not started, so
its health is not required (the canary does not defer).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import TYPE_CHECKING, Any

from afbackup.errors import ConfigError, SourceError

if TYPE_CHECKING:
    from afbackup.config.model import Config
    from afbackup.drill import DrillOptions, DrillReport, _Steps
    from afbackup.manifest import Manifest


def airflow_command(cfg: Config) -> tuple[str, ...]:
    if cfg.drill.airflow_command:
        return cfg.drill.airflow_command
    if cfg.airflow.executor == "local":
        return cfg.airflow.command
    raise ConfigError("drill --live needs a local Airflow CLI to start", hint="set [drill] airflow_command, "
                      "e.g. [\"/opt/airflow/venv/bin/airflow\"] (the backup's Airflow version)")


def run_live(cfg: Config, state: dict[str, Any], password: str | None, options: DrillOptions, report: DrillReport,
             steps: _Steps, started: dt.datetime) -> None:
    from afbackup.check_report import Check
    from afbackup.live_airflow import LiveAirflow, LiveSpec

    if not report.ok:
        steps.run("live: airflow starts", lambda: "")  # recorded as skipped
        return
    manifest: Manifest = state["manifest"]
    spec = LiveSpec(command=airflow_command(cfg), major=manifest.airflow.major or 0, dsn=state["dsn"],
                    password=password, fernet_keys=tuple(_keys(options, state)),
                    home_parent=cfg.drill.airflow_home or cfg.airflow.tmp_dir,
                    startup_timeout=cfg.drill.live_startup_timeout)
    if spec.major not in (2, 3):
        raise SourceError("the backup's manifest does not say which Airflow major version made it")
    with LiveAirflow(spec) as live:
        if not steps.run("live: airflow starts", lambda: _started(live)):
            return
        smoke = _smoke(cfg, live, state, password, report)
    for check in smoke.checks:
        report.checks.append(Check(f"live: {check.name}", check.ok, check.detail, check.seconds))
    report.smoke = {"stuck": [dataclasses.asdict(s) for s in smoke.stuck], "canary": smoke.canary,
                    "import_errors": smoke.import_errors}
    first = smoke.canary.get("first_success_at")
    if smoke.ok and first:
        from afbackup.smoke import parse_time

        moment = parse_time(first)
        assert moment is not None
        report.rto_live_seconds = round((moment - started).total_seconds(), 3)


def _started(live: Any) -> str:
    seconds = live.wait_ready()
    return f"Airflow {live.spec.major} ({', '.join(live.components)}) healthy {seconds:.1f}s after start"


def _smoke(cfg: Config, live: Any, state: dict[str, Any], password: str | None, report: DrillReport) -> Any:
    from afbackup.smoke import SmokeOptions, run_smoke

    manifest: Manifest = state["manifest"]
    smoke = cfg.smoke
    options = SmokeOptions(
        queued_threshold=smoke.queued_threshold, heartbeat_timeout=smoke.heartbeat_timeout,
        optional_components=tuple({*smoke.optional_components, "triggerer"}),
        manifest_dags=manifest.row_counts.get("dag"), backup_id=report.backup_id, canary=True,
        canary_dag=smoke.canary_dag, canary_connection=smoke.canary_connection,
        canary_variable=smoke.canary_variable, canary_timeout=smoke.canary_timeout, dsn=state["dsn"],
        password=password, schema=manifest.postgres.schema_name, connect_timeout=cfg.database.connect_timeout)
    api = live.api()
    try:
        return run_smoke(api, options)
    finally:
        api.close()


def _keys(options: DrillOptions, state: dict[str, Any]) -> list[str]:
    from afbackup.drill import _fernet_keys

    keys, _source = _fernet_keys(options, state.get("contents"))
    if keys:
        return keys
    raise ConfigError("drill --live needs the source Fernet key to start Airflow on the restored database",
                      hint="pass --fernet-key-file (the escrowed key), or back up with an Airflow executor")
