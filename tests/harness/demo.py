"""``make demo``: the main job on embedded defaults, start to finish, then everything is stopped.

A throwaway PostgreSQL, a real Airflow 3 metadata DB (``airflow db migrate``
plus DAG runs, task instances, connections, variables and pools), a local S3
endpoint (moto on loopback) and fresh GPG keys; then ``afbackup backup``,
``list``, ``show``, ``verify``, and ``restore`` into a new database, with a
side-by-side comparison of row counts, and a DR drill whose Markdown report
is printed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from tests.harness.env import Environment

BOLD, DIM, RESET = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")


def step(text: str) -> None:
    print(f"\n{BOLD}==> {text}{RESET}", flush=True)


def afbackup(env: Environment, config, *args: str, airflow=None) -> subprocess.CompletedProcess:
    """Run the CLI as a user would; its log lines (stderr) are shown as they come."""
    print(f"{DIM}$ afbackup {' '.join(args)}{RESET}", flush=True)
    done = subprocess.run([sys.executable, "-m", "afbackup", "--config", str(config), *args], stdout=subprocess.PIPE,
                          text=True, env=env.afbackup_env(airflow), cwd=str(env.workdir))
    if done.returncode != 0:
        raise SystemExit(f"afbackup {args[0]} failed with exit code {done.returncode}")
    return done


def side_by_side(env: Environment, source: str, restored: str, manifest: dict) -> None:
    """Row counts of every table with rows, in the source and in the restored database."""
    print(f"{'table':<34}{'source':>10}{'restored':>10}")
    for table in sorted(manifest["scope"]["row_counts"]):
        counts = [env.pg.execute(name, f'SELECT count(*) FROM "{table}"')[0][0] for name in (source, restored)]
        if any(counts):
            mark = "" if counts[0] == counts[1] else "  <-- differs"
            print(f"{table:<34}{counts[0]:>10}{counts[1]:>10}{mark}")
    for table in manifest["scope"]["schema_only_tables"]:
        count = env.pg.execute(source, f'SELECT count(*) FROM "{table}"')[0][0]
        print(f"{table:<34}{count:>10}{'(schema)':>10}")


def main() -> int:
    started = time.monotonic()
    step("starting a throwaway PostgreSQL, a local S3 endpoint (moto) and fresh GPG keys")
    with Environment() as env:
        print(f"PostgreSQL on 127.0.0.1:{env.pg.port}, S3 at {env.s3.endpoint}")
        print(f"backup key {env.keys.fingerprints['backup']}, signing key {env.keys.fingerprints['signer']}")
        step("creating a real Airflow 3 metadata DB (airflow db migrate, DAG runs, connections, variables, pools)")
        airflow, db = env.airflow("3", name="airflow")
        counts = {table: env.pg.execute(db, f"SELECT count(*) FROM {table}")[0][0]
                  for table in ("dag_run", "task_instance", "connection", "variable", "slot_pool")}
        print(f"Airflow {airflow.version}: " + ", ".join(f"{t} {n}" for t, n in counts.items()))
        config = env.write_config(env.config(db, airflow=airflow, bucket=env.bucket("airflow-backups")),
                                  "config.toml")
        step(f"configuration ({config})")
        print(config.read_text())

        step("afbackup backup")
        clock = time.monotonic()
        backup_id = afbackup(env, config, "backup", airflow=airflow).stdout.strip()
        seconds = time.monotonic() - clock
        step("afbackup list")
        print(afbackup(env, config, "list").stdout)
        step(f"afbackup show {backup_id}")
        shown = afbackup(env, config, "show", backup_id).stdout
        print(shown)
        manifest = json.loads(afbackup(env, config, "show", backup_id, "--json").stdout)

        step("afbackup verify")
        print(afbackup(env, config, "verify", backup_id).stdout)
        step("afbackup restore into a new database (airflow_restored)")
        restored = afbackup(env, config, "restore", backup_id, "--target-dsn", env.pg.dsn("airflow_restored"),
                            "--pause-dags", airflow=airflow)
        print(restored.stdout)
        side_by_side(env, db, "airflow_restored", manifest)
        step("afbackup drill (verify + restore into a scratch DB + checks + RTO/RPO)")
        report_dir = env.workdir / "drill-report"
        afbackup(env, config, "drill", backup_id, "--scratch-dsn", env.pg.dsn(), "--report", str(report_dir),
                 "--rto-target", "10m", "--rpo-target", "26h", airflow=airflow)
        print((report_dir / "drill-report.md").read_text())

        step("what happened")
        print(f"backup id   {backup_id}")
        encryption = manifest["encryption"]
        print(f"stored      {manifest['objects'][0]['size']:,} bytes, encrypted to "
              f"{len(encryption['recipients'])} key(s), manifest signed by {encryption['signer']}")
        print(f"took        {seconds:.1f}s")
        print(f"exports     {manifest['exports']}")
        rows = manifest["scope"]["row_counts"]
        print("rows        " + ", ".join(f"{t} {rows[t]}" for t in sorted(rows) if rows[t]))
        step("stopping everything the demo started")
    print(f"done in {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
