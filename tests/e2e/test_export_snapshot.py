"""The exports and the dump describe the same moment: a variable changed by a running task while the
backup runs does not make a correct restore fail its "restored secrets differ" check.

The change is injected where it used to hurt: inside the Airflow agent's interpreter (a
``sitecustomize`` on its PYTHONPATH), after the backup's snapshot exists and before Airflow
reads anything. Before the fix the exports read the live rows (the new value) while the dump
held the snapshot's (the old one), and the restore exited 5.
"""

from __future__ import annotations

import os

import pytest

from tests.harness.airflow_env import AirflowInstance

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

SITECUSTOMIZE = '''
import os, sys, time
if os.environ.get("AFB_WINDOW_DSN") and os.path.realpath(sys.prefix) == os.environ.get("AFB_WINDOW_PREFIX") \\
        and not os.path.exists(os.environ["AFB_WINDOW_DONE"]):
    import psycopg2
    conn = psycopg2.connect(os.environ["AFB_WINDOW_DSN"])
    conn.autocommit = True
    with conn.cursor() as cur:
        for _ in range(600):  # the backup's snapshot: afbackup's REPEATABLE READ transaction, idle in it
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'afbackup' "
                        "AND state = 'idle in transaction' AND datname = current_database()")
            if cur.fetchone()[0]:
                break
            time.sleep(0.05)
        cur.execute("UPDATE variable SET val = 'changed in the window', is_encrypted = false WHERE key = 'plain'")
    conn.close()
    open(os.environ["AFB_WINDOW_DONE"], "w").close()
'''


def test_a_variable_changed_between_export_and_snapshot_restores_consistently(env, tmp_path, airflow_major):
    # GIVEN a deployment whose variable 'plain' a task updates while the backup runs
    airflow, db = env.airflow(airflow_major)
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    path = env.write_config(env.config(db, airflow=airflow))
    window = {"PYTHONPATH": str(hook), "AFB_WINDOW_DSN": env.pg.dsn(db),
              "AFB_WINDOW_PREFIX": os.path.realpath(airflow.venv), "AFB_WINDOW_DONE": str(tmp_path / "changed")}
    # WHEN it is backed up
    done = env.afbackup(path, "backup", airflow=airflow, env=window)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "changed").exists(), "the change was not injected"
    assert env.pg.execute(db, "SELECT val FROM variable WHERE key = 'plain'") == [("changed in the window",)]
    # THEN a full restore passes its checks (exports and dump agree on the value)
    name = env.unique("window_")
    target = AirflowInstance(airflow.version, env.workdir / f"home-{name}", env.pg.sqlalchemy_url(name),
                             airflow.fernet_key)
    restored = env.afbackup(path, "restore", "--target-dsn", env.pg.dsn(name), "--yes", airflow=target)
    assert restored.returncode == 0, restored.stderr
    assert "values equal the backup" in restored.stdout
    # AND the value is the snapshot's (the encrypted original), in the database and in the exports alike
    assert env.pg.execute(name, "SELECT is_encrypted FROM variable WHERE key = 'plain'") == [(True,)]
    env.pg.drop_database(name)
