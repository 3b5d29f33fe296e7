"""afbackup's canary DAG: proves that a (restored) Airflow runs a task that reads its secrets.

Shipped with afbackup (``afbackup canary print`` / ``afbackup canary install --dags-folder DIR``) and
triggered by ``afbackup smoke --canary`` / ``afbackup drill --live`` with the run's conf
``{"connection": CONN_ID, "variable": KEY}`` (``[smoke] canary_connection`` / ``canary_variable``).
The one task reads the connection (its password and extra are decrypted with the deployment's Fernet
key, so a wrong key fails the task) and the variable, and checks they hold something; it logs their
names and sizes, never their values. Without conf it only proves that a task runs.
Works on Airflow 2 (2.4+) and 3: the imports fall back from ``airflow.sdk`` to the Airflow 2 modules.
No schedule: it runs only when triggered, and never catches up.
"""

# mypy: ignore-errors
from __future__ import annotations

import datetime

try:  # Airflow 3
    from airflow.sdk import DAG, Connection, Variable, task

    def _connection(conn_id: str) -> object:
        return Connection.get(conn_id)
except ImportError:  # Airflow 2
    from airflow import DAG
    from airflow.decorators import task
    from airflow.hooks.base import BaseHook
    from airflow.models import Variable

    def _connection(conn_id: str) -> object:
        return BaseHook.get_connection(conn_id)


@task(task_id="check_secrets", retries=0)
def check_secrets(**context: object) -> None:
    conf = getattr(context.get("dag_run"), "conf", None) or {}
    checked = []
    conn_id = conf.get("connection")
    if conn_id:
        conn = _connection(conn_id)
        password, extra = conn.password, conn.extra  # decrypted here: a wrong Fernet key raises
        if not (conn.host or password or extra):
            raise ValueError(f"connection {conn_id!r} has no host, password or extra")
        checked.append(f"connection {conn_id} ({len(password or '')} password chars, {len(extra or '')} extra chars)")
    key = conf.get("variable")
    if key:
        value = Variable.get(key)
        if value in (None, ""):
            raise ValueError(f"variable {key!r} is empty")
        checked.append(f"variable {key} ({len(str(value))} chars)")
    print("afbackup canary: OK:", "; ".join(checked) or "no connection or variable named: the task ran")


with DAG(
    dag_id="afbackup_canary",
    schedule=None,
    start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
    catchup=False,
    is_paused_upon_creation=True,
    tags=["afbackup"],
    doc_md=__doc__,
):
    check_secrets()
