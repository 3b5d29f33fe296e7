"""``afbackup canary print|install``: the canary DAG that ``smoke --canary`` and ``drill --live`` trigger."""

from __future__ import annotations

import click

from afbackup.cli.context import AppContext, emit, pass_app


@click.group()
def canary() -> None:
    """The canary DAG: one task that reads a connection and a variable ([smoke] canary_*)."""


@canary.command("print")
@pass_app
def print_dag(app: AppContext) -> int:
    """Print the canary DAG file."""
    from afbackup import canary as dag

    emit(dag.source().rstrip("\n"))
    return 0


@canary.command("install")
@click.option("--dags-folder", required=True, metavar="DIR", help="Airflow's DAGs folder ([core] dags_folder).")
@pass_app
def install(app: AppContext, dags_folder: str) -> int:
    """Write the canary DAG into a DAGs folder (replacing an older copy)."""
    from afbackup import canary as dag

    path = dag.install(dags_folder)
    emit(f"installed the canary DAG {dag.DAG_ID} as {path}")
    return 0
