"""``make bench``: afbackup against the seed script and the pg_dump floor, on a generated >= 1 GB Airflow 3 DB.

It also runs ``drill --live`` on the bench database and reports both RTOs: to a restored database and to
the first successful task (the canary's, on an Airflow started on the restored database).

Short measurements (the pg_dump floor, afbackup backup, the raw download, verify, and the restores with their
floor: bench/restore.py) are run three times and the median is reported. Prints wall time, peak RSS
(afbackup's own process, and its whole process tree) and archive size, the ratios, and whether each target
is met; then repeats afbackup on a database three times larger to show that its memory stays flat. Results
also go to bench/results/<timestamp>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

from afbackup.config.units import parse_size
from bench import restore as restore_bench
from bench import scenarios
from bench.airflow_data import populate
from tests.harness.airflow_env import AIRFLOW_VERSIONS, AirflowInstance
from tests.harness.env import Environment

RESULTS = Path(__file__).parent / "results"


REPEATS = 3


def median_run(measure):
    """The run with the median wall time of ``REPEATS`` runs: a 2-core machine is noisy for short commands."""
    runs = sorted((measure() for _ in range(REPEATS)), key=lambda m: m.seconds)
    return runs[len(runs) // 2]


def _prepare_db(env: Environment, name: str, size: int) -> tuple[AirflowInstance, str]:
    env.pg.create_database(name)
    airflow = AirflowInstance(AIRFLOW_VERSIONS["3"], env.workdir / f"home-{name}", env.pg.sqlalchemy_url(name))
    airflow.migrate()
    started = time.monotonic()
    counts = populate(env.pg.dsn(name), size)
    airflow.run_batch([["pools", "set", "etl", "8", "ETL"]] +
                      [["variables", "set", f"var_{i}", json.dumps({"i": i})] for i in range(20)],
                      connections=[{"conn_id": f"conn_{i}", "conn_type": "postgres", "host": "db", "login": "u",
                                    "password": f"pw-{i}"} for i in range(20)])
    print(f"  {name}: {counts['database_bytes'] / 2**30:.2f} GiB, {counts['rows'].get('task_instance')} task instances "
          f"({time.monotonic() - started:.0f}s)", flush=True)
    return airflow, name


def _config(env: Environment, airflow: AirflowInstance, db: str, bucket: str) -> Path:
    cfg = env.config(db, airflow=airflow, bucket=bucket, sign=False, private_keys=False)
    cfg["storage"].pop("part_size")
    return env.write_config(cfg, f"bench-{db}.toml")


def _scope_flags(env, airflow, config: Path) -> list[str]:
    plan = json.loads(scenarios.afbackup(env, airflow, config, "backup", "--dry-run", "--json",
                                         name="dry run").stdout)
    return [f"--schema={plan['schema']}"] + [f"--exclude-table-data={plan['schema']}.{t}"
                                              for t in plan["schema_only_tables"]]


def _archive_size(measurement) -> int:
    return json.loads(measurement.stdout)["size"]


def run(size: int, triple: bool, only: str = "all") -> dict:
    report: dict = {"size_bytes": size, "date": dt.datetime.now(dt.UTC).isoformat(), "only": only}
    with Environment(min_part_size=None) as env:
        awscli = scenarios_awscli()
        print("generating the benchmark databases …", flush=True)
        airflow, db = _prepare_db(env, "bench1x", size)
        bucket = env.bucket("bench")
        config = _config(env, airflow, db, bucket)
        if only == "restore":  # one backup to restore from; the backup targets are not measured
            ours = scenarios.afbackup(env, airflow, config, "backup", "--json")
            report["backup"] = {"afbackup": {"seconds": ours.seconds, "archive": _archive_size(ours),
                                             "own_rss": ours.own_peak_rss, "tree_rss": ours.tree_peak_rss}}
        else:
            seed = scenarios.seed_script(env, airflow, db, bucket, awscli, env.workdir)
            flags = _scope_flags(env, airflow, config)
            floor = median_run(lambda: scenarios.pg_dump_floor(env, db, flags))
            ours = median_run(lambda: scenarios.afbackup(env, airflow, config, "backup", "--json"))
            report["backup"] = {
                "seed": {"seconds": seed.seconds, "archive": json.loads(seed.stdout)["archive_size"]},
                "floor": {"seconds": floor.seconds},
                "afbackup": {"seconds": ours.seconds, "archive": _archive_size(ours), "own_rss": ours.own_peak_rss,
                             "tree_rss": ours.tree_peak_rss},
            }
        report["restore"] = _restore_bench(env, airflow, db, bucket, json.loads(ours.stdout), awscli,
                                           _scope_flags(env, airflow, config), full=only != "restore")
        report["drill"] = _drill_bench(env, airflow, db, bucket, json.loads(ours.stdout))
        if triple and only != "restore":
            airflow3, db3 = _prepare_db(env, "bench3x", 3 * size)
            big = scenarios.afbackup(env, airflow3, _config(env, airflow3, db3, bucket), "backup", "--json")
            report["backup"]["afbackup_3x"] = {"seconds": big.seconds, "archive": _archive_size(big),
                                               "own_rss": big.own_peak_rss, "tree_rss": big.tree_peak_rss}
    return report


def _restore_bench(env: Environment, airflow: AirflowInstance, db: str, bucket: str, backup: dict, awscli: str,
                   scope_flags: list[str], *, full: bool = True) -> dict:
    """Restore (bench/restore.py); verify vs raw download+decrypt+decompress (skipped with ``--case restore``)."""
    result = restore_bench.measure(env, airflow, db, bucket, backup["backup_id"], scope_flags)
    if not full:
        return result
    operator = env.write_config(env.config(db, airflow=airflow, bucket=bucket, sign=False), "bench-restore.toml")
    key = f"airflow/v1/backups/{backup['backup_id']}/archive.tar.zst.gpg"
    raw = median_run(lambda: scenarios.raw_download_decrypt(env, bucket, key, awscli))
    verify = median_run(lambda: scenarios.afbackup(env, airflow, operator, "verify", backup["backup_id"],
                                                   name="afbackup verify"))
    return {**result, "raw_download": {"seconds": raw.seconds},
            "verify": {"seconds": verify.seconds, "own_rss": verify.own_peak_rss}}


def _drill_bench(env: Environment, airflow: AirflowInstance, db: str, bucket: str, backup: dict) -> dict:
    """``drill --live``: RTO to a restored database and RTO to the first successful task (the canary's)."""
    cfg = env.config(db, airflow=airflow, bucket=bucket, sign=False,
                     smoke={"canary_connection": "conn_0", "canary_variable": "var_0"})
    done = scenarios.afbackup(env, airflow, env.write_config(cfg, "bench-drill.toml"), "drill", backup["backup_id"],
                              "--live", "--scratch-dsn", env.pg.dsn(), "--json", name="afbackup drill --live")
    drill = json.loads(done.stdout)
    return {"seconds": done.seconds, "rto_seconds": drill["rto_seconds"], "rto_live_seconds": drill["rto_live_seconds"]}


def scenarios_awscli() -> str:
    """The aws CLI from its own venv (installed by `make awscli`)."""
    path = Path(__file__).resolve().parents[1] / ".cache" / "venvs" / "awscli" / "bin" / "aws"
    if not path.exists():
        raise SystemExit(f"{path} is missing: run `make awscli`")
    return str(path)


def print_report(report: dict) -> bool:
    b = report["backup"]
    checks = _print_backup(b) if "seed" in b else []
    if "restore" in report:
        checks += _print_restore(report["restore"])
    if "drill" in report:
        d = report["drill"]
        print("\n== drill --live (RTO) ==")
        print(f"{'to a restored database':24}{d['rto_seconds']:9.2f}")
        print(f"{'to the first task':24}{d['rto_live_seconds']:9.2f}   (the whole drill {d['seconds']:.1f} s)")
    print()
    for label, value, ok in checks:
        print(f"  [{'PASS' if ok else 'FAIL'}] {label}: {value:.3f}")
    return all(ok for _, _, ok in checks)


def _print_backup(b: dict) -> list:
    seed, floor, ours = b["seed"], b["floor"], b["afbackup"]
    mib = 2**20
    print("\n== backup ==")
    print(f"{'':24}{'wall s':>9}{'archive MiB':>13}{'own RSS MiB':>13}{'tree RSS MiB':>14}")
    print(f"{'seed script':24}{seed['seconds']:9.2f}{seed['archive'] / mib:13.1f}{'':>13}{'':>14}")
    print(f"{'pg_dump -Z0 floor':24}{floor['seconds']:9.2f}")
    print(f"{'afbackup backup':24}{ours['seconds']:9.2f}{ours['archive'] / mib:13.1f}"
          f"{ours['own_rss'] / mib:13.1f}{ours['tree_rss'] / mib:14.1f}")
    checks = [
        ("wall ≤ 1/3 of the seed script", ours["seconds"] / seed["seconds"], ours["seconds"] <= seed["seconds"] / 3),
        ("wall ≤ 1.5 × the pg_dump floor", ours["seconds"] / floor["seconds"],
         ours["seconds"] <= 1.5 * floor["seconds"]),
        ("archive ≤ the seed script's", ours["archive"] / seed["archive"], ours["archive"] <= seed["archive"]),
        ("own peak RSS ≤ 200 MB", ours["own_rss"] / 1e6, ours["own_rss"] <= 200e6),
    ]
    if "afbackup_3x" in b:
        big = b["afbackup_3x"]
        change = big["own_rss"] / ours["own_rss"] - 1
        print(f"{'afbackup backup, DB ×3':24}{big['seconds']:9.2f}{big['archive'] / mib:13.1f}"
              f"{big['own_rss'] / mib:13.1f}{big['tree_rss'] / mib:14.1f}")
        checks.append(("own peak RSS flat (±20 %) at 3× size", change, abs(change) <= 0.20))
    return checks


def _print_restore(r: dict) -> list:
    mib, checks = 2**20, []
    print("\n== restore and verify ==")
    print(f"{'pg_restore -j2 floor':24}{r['floor']['seconds']:9.2f}   (median of {r['floor']['all_seconds']})")
    for key, label in (("afbackup", "afbackup restore"), ("afbackup_clean", "afbackup restore --clean")):
        run_ = r[key]
        print(f"{label:24}{run_['seconds']:9.2f}   (median of {run_['all_seconds']}), own RSS "
              f"{run_['own_rss'] / mib:.1f} MiB")
        print(" " * 24 + "   steps: " + ", ".join(f"{k} {v:.2f}" for k, v in run_["timings"].items()))
        checks.append((f"{label} ≤ 1.3 × pg_restore -j2", run_["seconds"] / r["floor"]["seconds"],
                       run_["seconds"] <= 1.3 * r["floor"]["seconds"]))
    if "verify" in r:
        print(f"{'download+decrypt+zstd':24}{r['raw_download']['seconds']:9.2f}")
        print(f"{'afbackup verify':24}{r['verify']['seconds']:9.2f}   own RSS {r['verify']['own_rss'] / mib:.1f} MiB")
        checks.append(("verify ≤ 1.2 × download+decrypt+decompress",
                       r["verify"]["seconds"] / r["raw_download"]["seconds"],
                       r["verify"]["seconds"] <= 1.2 * r["raw_download"]["seconds"]))
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1GiB", help="size of the generated database (default 1GiB)")
    parser.add_argument("--no-triple", action="store_true", help="skip the 3× database")
    parser.add_argument("--case", choices=["all", "backup", "restore", "fleet"], default="all",
                        help="backup: the backup, restore and verify targets; restore: only the restore targets "
                             "(one backup to restore from; no seed, backup medians, verify or 3x database); "
                             "fleet: only `fleet status` over 50 deployments x 60 backups (no database needed)")
    args = parser.parse_args(argv)
    report: dict = {}
    ok = True
    if args.case in ("all", "backup", "restore"):
        report = run(parse_size(args.size), not args.no_triple, "restore" if args.case == "restore" else "all")
        ok = print_report(report)
    if args.case in ("all", "fleet"):
        from bench.fleet import print_fleet, run_fleet

        report["fleet"] = run_fleet()
        ok = print_fleet(report["fleet"]) and ok
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{dt.datetime.now():%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"\nresults: {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
