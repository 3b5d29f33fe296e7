"""A small DAG for seeding test metadata: three tasks, XComs between them."""

import datetime

try:  # Airflow 3
    from airflow.sdk import DAG, task
except ImportError:  # Airflow 2
    from airflow import DAG
    from airflow.decorators import task

with DAG("sample_etl", start_date=datetime.datetime(2026, 1, 1), schedule="@daily", catchup=False,
         tags=["afbackup", "etl"]) as dag:

    @task
    def extract():
        return {"rows": 42, "source": "orders"}

    @task
    def transform(payload):
        return {"rows": payload["rows"] * 2}

    @task(pool="etl")
    def load(payload):
        print("loaded", payload)

    load(transform(extract()))
