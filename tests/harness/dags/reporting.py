"""A second DAG, paused-state and scheduling variety for the seeded metadata."""

import datetime

try:
    from airflow.sdk import DAG, task
except ImportError:
    from airflow import DAG
    from airflow.decorators import task

with DAG("reporting", start_date=datetime.datetime(2026, 1, 1), schedule="@hourly", catchup=False,
         tags=["afbackup"]) as dag:

    @task
    def build_report():
        return "report-ok"

    @task
    def publish(name):
        print("published", name)

    publish(build_report())
