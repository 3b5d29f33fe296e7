"""The canary check of ``afbackup smoke``: trigger the canary DAG and wait for its run with backoff.

The DAG must be known to Airflow (the DAG processor parses it from the DAGs folder: waited for, bounded by
``canary_timeout``); it is unpaused for the run and paused again afterwards, whatever happened. The run's
conf names the connection and the variable to read. Polling backs off 2, 5, 10, 30, 30 … seconds, bounded
by ``canary_timeout``. The report records the run's state, its duration, and when its first task succeeded
(``first_success_at``: the end of RTO to the first successful task in ``drill --live``).
"""

from __future__ import annotations

import ast
import secrets
import time
from typing import TYPE_CHECKING

from afbackup.errors import AirflowApiError, DrillFailed

if TYPE_CHECKING:
    from afbackup.airflow_api import AirflowApi
    from afbackup.smoke import SmokeOptions, SmokeReport

BACKOFF = (2.0, 5.0, 10.0, 30.0)
FINISHED = ("success", "failed")


def delays(budget: float) -> list[float]:
    """The polling waits: 2, 5, 10, 30, 30 … seconds, never past ``budget`` in total."""
    out: list[float] = []
    while sum(out) < budget:
        out.append(min(BACKOFF[min(len(out), len(BACKOFF) - 1)], budget - sum(out)))
    return out


def run_canary(api: AirflowApi, options: SmokeOptions, report: SmokeReport) -> str:
    from afbackup.smoke import utcnow

    deadline = time.monotonic() + options.canary_timeout
    dag_id = options.canary_dag
    _wait_for_dag(api, dag_id, deadline)
    run_id = f"afbackup_smoke_{utcnow():%Y%m%dT%H%M%S}_{secrets.token_hex(3)}"
    conf = {k: v for k, v in (("connection", options.canary_connection), ("variable", options.canary_variable)) if v}
    report.canary = {"dag_id": dag_id, "run_id": run_id, "conf": conf, "state": None}
    api.patch_dag(dag_id, is_paused=False)
    try:
        api.trigger(dag_id, run_id, conf)
        run = _wait_for_run(api, dag_id, run_id, deadline)
    finally:
        try:
            api.patch_dag(dag_id, is_paused=True)
        except AirflowApiError:
            pass  # the run's outcome is what matters; a DAG with no schedule left unpaused starts nothing
    return _verdict(api, dag_id, run_id, run, report, options)


def _failure_reason(api: AirflowApi, dag_id: str, run_id: str, ti: dict) -> str:
    """The last error line of a failed task's log, best effort ("" when the log cannot be read)."""
    path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{ti['task_id']}/logs/{ti.get('try_number') or 1}"
    try:
        doc = api.get(path, full_content="true")
    except AirflowApiError:
        return ""
    content = doc.get("content") if isinstance(doc, dict) else None
    if isinstance(content, list):  # Airflow 3: structured log records
        lines = [" ".join(str(part) for part in (item.get("event", ""), _error_text(item)) if part)
                 if isinstance(item, dict) else str(item) for item in content]
    else:
        lines = _airflow2_lines(str(content or ""))
    errors = [line.strip() for line in lines if any(word in line for word in ("Error", "Exception", "Invalid"))]
    return " ".join((errors or [""])[-1].split())[:300]


def _airflow2_lines(content: str) -> list[str]:
    """Airflow 2 sends the log as the repr of ``[(host, text), …]``; plain text otherwise."""
    if content.startswith("[("):
        try:
            parts = ast.literal_eval(content)
            return [line for _host, text in parts for line in str(text).splitlines()]
        except (ValueError, SyntaxError, TypeError):
            pass
    return content.splitlines()


def _error_text(item: dict) -> str:
    detail = item.get("error_detail")
    if isinstance(detail, list) and detail and isinstance(detail[-1], dict):
        return f"{detail[-1].get('exc_type', '')}: {detail[-1].get('exc_value', '')}"
    return ""


def _wait_for_dag(api: AirflowApi, dag_id: str, deadline: float) -> None:
    for wait in delays(max(0.0, deadline - time.monotonic())) + [0.0]:
        try:
            api.get(f"/dags/{dag_id}")
            return
        except AirflowApiError as exc:
            if exc.status != 404:
                raise
        if wait:
            time.sleep(wait)
    raise DrillFailed(f"the canary DAG {dag_id} is not known to Airflow",
                      hint="install it: afbackup canary install --dags-folder DIR (and check import errors)")


def _wait_for_run(api: AirflowApi, dag_id: str, run_id: str, deadline: float) -> dict:
    run: dict = {}
    for wait in delays(max(0.0, deadline - time.monotonic())) + [0.0]:
        run = dict(api.get(f"/dags/{dag_id}/dagRuns/{run_id}"))
        if run.get("state") in FINISHED:
            return run
        if wait:
            time.sleep(wait)
    return run


def _verdict(api: AirflowApi, dag_id: str, run_id: str, run: dict, report: SmokeReport,
             options: SmokeOptions) -> str:
    from afbackup.smoke import parse_time

    state = run.get("state")
    tis = api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances").get("task_instances", [])
    start, end = parse_time(run.get("start_date")), parse_time(run.get("end_date"))
    seconds = round((end - start).total_seconds(), 3) if start and end else None
    done = sorted(t["end_date"] for t in tis if t.get("state") == "success" and t.get("end_date"))
    report.canary.update(state=state, seconds=seconds, first_success_at=done[0] if done else None,
                         tasks={t["task_id"]: t.get("state") for t in tis})
    tasks = ", ".join(f"{t['task_id']} {t.get('state')}" for t in tis) or "no task started"
    if state == "success":
        what = f"read connection {options.canary_connection or '-'} and variable {options.canary_variable or '-'}"
        return f"run {run_id} succeeded in {seconds}s ({tasks}; {what})"
    if state in FINISHED:
        failed = next((t for t in tis if t.get("state") != "success"), None)
        reason = _failure_reason(api, dag_id, run_id, failed) if failed else ""
        report.canary["error"] = reason
        if "isn't defined" in reason and options.canary_connection:
            reason += (" (Airflow reports a connection it cannot decrypt as not defined: if the row exists, the "
                       "Fernet key is not the one it was encrypted with)")
        raise DrillFailed(f"canary run {run_id} {state} ({tasks}): the task could not read its connection or "
                          f"variable, or could not run" + (f"; its log ends: {reason}" if reason else ""),
                          hint="see the task's log in Airflow; a wrong Fernet key fails the connection read")
    raise DrillFailed(f"canary run {run_id} still {state} after {options.canary_timeout:g}s ({tasks})",
                      hint="is the scheduler running, and an executor slot free?")
