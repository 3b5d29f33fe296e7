"""The restore targets: afbackup restore (into a new database, and ``--clean`` over a live one) against the
``pg_restore -j2`` floor of the same dump.

Each is measured ``ROUNDS`` times, interleaved (floor, new, clean, floor, …), and the median is reported:
this machine is noisy. Every measurement starts on a quiet server. A restore leaves a freshly loaded
gigabyte behind, and autovacuum works through it for the next seconds; the restore measured next would
share two cores with it. So the databases not needed any more are dropped, the one ``--clean`` replaces is
vacuumed (a live target is in a steady state), and the run waits until no autovacuum worker is left.
"""

from __future__ import annotations

import json
import shlex
import time

from bench import scenarios
from bench.measure import Measurement, time_command
from tests.harness.airflow_env import AirflowInstance
from tests.harness.env import Environment

ROUNDS = 3
FLOOR_DB = "floor_restore"
TARGET_DB = "afbackup_restore"


def quiet(env: Environment, vacuum: tuple[str, ...] = (), drop: tuple[str, ...] = (), limit: float = 180) -> None:
    """Drop ``drop``, VACUUM (ANALYZE) ``vacuum``, then wait until autovacuum has been idle for 2 s."""
    for name in drop:
        env.pg.drop_database(name)
    for name in vacuum:
        env.pg.execute(name, "VACUUM (ANALYZE)")
    deadline, idle = time.monotonic() + limit, 0
    while idle < 4 and time.monotonic() < deadline:
        busy = env.pg.execute("postgres", "SELECT 1 FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'")
        idle = 0 if busy else idle + 1
        time.sleep(0.5)


def pg_restore_floor(env: Environment, dump: str) -> Measurement:
    """``pg_restore -j2`` of the dump, from a local unencrypted file, into an empty database."""
    env.pg.create_database(FLOOR_DB, template="template0")
    env.pg.execute(FLOOR_DB, "DROP SCHEMA public")
    result = time_command("pg_restore -j2 floor", f'pg_restore --exit-on-error --no-owner --no-acl --jobs 2 '
                                                  f'-d "{env.pg.dsn(FLOOR_DB)}" {shlex.quote(dump)}')
    scenarios.check(result)
    return result


def measure(env: Environment, airflow: AirflowInstance, db: str, bucket: str, backup_id: str,
            scope_flags: list[str]) -> dict:
    operator = env.write_config(env.config(db, airflow=airflow, bucket=bucket, sign=False), "bench-restore.toml")
    dump = env.workdir / "floor.pgdump"
    flags = " ".join(shlex.quote(flag) for flag in scope_flags)
    scenarios.check(time_command("dump for the floor", f'pg_dump -Fc -Z0 {flags} "{env.pg.dsn(db)}" > {dump}'))
    restore = [operator, "restore", backup_id, "--target-dsn", env.pg.dsn(TARGET_DB), "--jobs", "2", "--json"]
    runs: dict[str, list[Measurement]] = {"floor": [], "afbackup": [], "afbackup_clean": []}
    quiet(env, vacuum=(db,))
    for _ in range(ROUNDS):
        quiet(env, drop=(FLOOR_DB, TARGET_DB))
        runs["floor"].append(pg_restore_floor(env, str(dump)))
        quiet(env, drop=(FLOOR_DB,))
        runs["afbackup"].append(scenarios.afbackup(env, airflow, *restore, name="afbackup restore"))
        quiet(env, vacuum=(TARGET_DB,))
        runs["afbackup_clean"].append(scenarios.afbackup(env, airflow, *restore, "--clean", "--yes", "--drop-previous",
                                                         name="afbackup restore --clean"))
    dump.unlink()
    result: dict = {}
    for key, measured in runs.items():
        middle = sorted(measured, key=lambda m: m.seconds)[len(measured) // 2]
        result[key] = {"seconds": middle.seconds, "all_seconds": [round(m.seconds, 2) for m in measured]}
        if key != "floor":
            result[key] |= {"own_rss": middle.own_peak_rss, "timings": json.loads(middle.stdout)["timings"]}
    return result
