"""The ``fleet`` bench case: ``afbackup fleet status`` over 50 deployments x 60 backups (file:// stores).

Synthetic manifests (tests/harness/fleet_store.py): fleet status never opens an
archive, so the archives are empty sparse files of the recorded size. The
command runs as a subprocess, three times (median reported), exactly as a user
runs it; the same figure can be taken with plain ``time`` (printed).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import tempfile
from pathlib import Path

from afbackup import manifest as mf
from bench.measure import run_measured
from tests.harness import fleet_store as fs

DEPLOYMENTS = 50
BACKUPS = 60
TARGET_SECONDS = 5.0  # what "stays fast" means here: one screen refresh of a fleet dashboard


def build(root: Path, deployments: int, backups: int) -> Path:
    now = mf.utcnow()
    lines = ['[check]\nmax_age = "26h"\n[airflow]\nexecutor = "none"\n']
    for i in range(deployments):
        name = f"team-{i:02d}"
        store = root / "stores" / name
        store.mkdir(parents=True)
        fs.daily_history(store, name, now, backups, newest_age=3600.0 * (1 + i % 30))
        fs.write_drill(store, name, now - dt.timedelta(days=i % 80), ok=i % 10 != 3)
        lines.append(f'[deployments.{name}.storage]\nurl = "file://{store}"\n')
    config = root / "fleet.toml"
    config.write_text("\n".join(lines))
    return config


def run_fleet(deployments: int = DEPLOYMENTS, backups: int = BACKUPS, repeats: int = 3) -> dict:
    with tempfile.TemporaryDirectory(prefix="afbackup-fleet-bench-") as tmp:
        config = build(Path(tmp), deployments, backups)
        argv = [sys.executable, "-m", "afbackup", "--config", str(config), "fleet", "status", "--json"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AFBACKUP_")}
        runs = sorted((run_measured("fleet status", argv, env=env) for _ in range(repeats)), key=lambda m: m.seconds)
        median = runs[len(runs) // 2]
        doc = json.loads(median.stdout)
        assert len(doc["deployments"]) == deployments, median.stderr[-2000:]
        return {"deployments": deployments, "backups_each": backups, "seconds": round(median.seconds, 3),
                "runs": [round(m.seconds, 3) for m in runs], "own_rss": median.own_peak_rss,
                "exit_code": doc["exit_code"], "target_seconds": TARGET_SECONDS,
                "plain_time": f"time {' '.join(argv[1:])} >/dev/null"}


def print_fleet(result: dict) -> bool:
    ok = result["seconds"] <= TARGET_SECONDS
    print("\n== fleet status ==")
    print(f"{result['deployments']} deployments x {result['backups_each']} backups (file://): "
          f"median {result['seconds']:.2f}s of {result['runs']}, own RSS {result['own_rss'] / 2**20:.1f} MiB")
    print(f"  [{'PASS' if ok else 'FAIL'}] fleet status <= {TARGET_SECONDS:g}s: {result['seconds']:.3f}")
    return ok


if __name__ == "__main__":
    outcome = run_fleet()
    sys.exit(0 if print_fleet(outcome) else 1)
