"""The ``fleet`` bench case: ``afbackup fleet status`` over 50 deployments x 60 backups.

Synthetic manifests (tests/harness/fleet_store.py): fleet status never opens an
archive, so the archives are sparse files of the recorded size. Two stores:
file:// directories, and the same objects in S3 over HTTP (moto server, one
bucket, one prefix per deployment; objects copied from the file:// tree). The
command runs as a subprocess, three times (median reported), exactly as a user
runs it; the same figure can be taken with plain ``time`` (printed).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import resource
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


def to_s3(root: Path, config: Path, endpoint: str, bucket: str) -> Path:
    """Copy every store into ``bucket`` (one prefix per deployment) and write a config pointing there."""
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    client.create_bucket(Bucket=bucket)
    for path in sorted((root / "stores").rglob("*")):
        if path.is_file():
            key = path.relative_to(root / "stores").as_posix()
            client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
    text = config.read_text().replace(f'url = "file://{root / "stores"}/', f'url = "s3://{bucket}/')
    s3_config = root / "fleet-s3.toml"
    s3_config.write_text(text + f'\n[storage]\nendpoint_url = "{endpoint}"\nregion = "us-east-1"\n')
    return s3_config


def measure(config: Path, deployments: int, repeats: int, extra_env: dict[str, str]) -> dict:
    argv = [sys.executable, "-m", "afbackup", "--config", str(config), "fleet", "status", "--json"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AFBACKUP_")} | extra_env
    measured = []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        run = run_measured("fleet status", argv, env=env)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        measured.append((run, cpu))
    measured.sort(key=lambda pair: pair[0].seconds)
    median, cpu = measured[len(measured) // 2]
    doc = json.loads(median.stdout)
    assert len(doc["deployments"]) == deployments, median.stderr[-2000:]
    return {"seconds": round(median.seconds, 3), "runs": [round(m.seconds, 3) for m, _ in measured],
            "cpu_seconds": round(cpu, 3), "own_rss": median.own_peak_rss, "exit_code": doc["exit_code"]}


def run_fleet(deployments: int = DEPLOYMENTS, backups: int = BACKUPS, repeats: int = 3, s3: bool = True) -> dict:
    from tests.harness.s3 import FAKE_CREDENTIALS, MotoServer

    result: dict = {"deployments": deployments, "backups_each": backups, "target_seconds": TARGET_SECONDS}
    with tempfile.TemporaryDirectory(prefix="afbackup-fleet-bench-") as tmp:
        config = build(Path(tmp), deployments, backups)
        result["file"] = measure(config, deployments, repeats, {})
        if s3:
            with MotoServer() as server:
                s3_config = to_s3(Path(tmp), config, server.endpoint, "fleet-bench")
                result["s3"] = measure(s3_config, deployments, repeats, dict(FAKE_CREDENTIALS))
    return result


def print_fleet(result: dict) -> bool:
    print("\n== fleet status ==")
    ok = True
    for store in ("file", "s3"):
        if store not in result:
            continue
        r = result[store]
        passed = r["seconds"] <= TARGET_SECONDS
        ok = ok and passed
        print(f"{result['deployments']} deployments x {result['backups_each']} backups ({store}): median "
              f"{r['seconds']:.2f}s of {r['runs']} (afbackup's own CPU {r['cpu_seconds']:.2f}s), "
              f"own RSS {r['own_rss'] / 2**20:.1f} MiB")
        print(f"  [{'PASS' if passed else 'FAIL'}] fleet status <= {TARGET_SECONDS:g}s ({store}): {r['seconds']:.3f}")
    return ok


if __name__ == "__main__":
    outcome = run_fleet()
    sys.exit(0 if print_fleet(outcome) else 1)
