"""``afbackup fleet status`` over real file:// stores: deployments fresh, stale, missing, with a failed
drill, locked, and with a damaged newest manifest; JSON shape, text order, worst exit code, few reads."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from pathlib import Path

import pytest

from afbackup import manifest as mf
from afbackup.cli import run
from afbackup.config import load_fleet
from afbackup.fleet import DeploymentFacts, assess, fleet_status, trend, worst
from afbackup.lock import WRITER_LOCK
from afbackup.storage import open_store
from tests.harness import fleet_store as fs
from tests.harness.clock import FakeClock

NOW = mf.utcnow()
HOUR = 3600.0


@pytest.fixture(autouse=True)
def _restore_logging():
    yield
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)


@pytest.fixture
def fleet(tmp_path: Path) -> tuple[Path, Path]:
    stores = tmp_path / "stores"
    names = ["fresh", "stale", "drill-failed", "locked", "missing", "damaged", "failing"]
    # synthetic manifests are unsigned: the explicit opt-out (signed stores are tested below)
    lines = ['[check]\nmax_age = "26h"\n[airflow]\nexecutor = "none"\n[encryption]\nrequire_signature = false\n']
    for name in names:
        (stores / name).mkdir(parents=True)
        lines.append(f'[deployments.{name}.storage]\nurl = "file://{stores / name}"\n')
    config = tmp_path / "fleet.toml"
    config.write_text("\n".join(lines))
    fs.daily_history(stores / "fresh", "fresh", NOW, 12, newest_age=2 * HOUR)
    fs.write_drill(stores / "fresh", "fresh", NOW - dt.timedelta(days=3), rto=720, rpo=5 * HOUR)
    fs.daily_history(stores / "stale", "stale", NOW, 5, newest_age=30 * HOUR)
    fs.daily_history(stores / "drill-failed", "drill-failed", NOW, 5, newest_age=HOUR)
    fs.write_drill(stores / "drill-failed", "drill-failed", NOW - dt.timedelta(days=1), ok=False,
                   failed_checks=("database checks",))
    fs.daily_history(stores / "locked", "locked", NOW, 5, newest_age=20 * HOUR)
    fs.write_lock(stores / "locked", NOW)
    damaged = fs.daily_history(stores / "damaged", "damaged", NOW, 3, newest_age=HOUR)
    (stores / "damaged" / mf.key_of(damaged[-1], mf.MANIFEST_NAME)).write_text("{not json")
    fs.daily_history(stores / "failing", "failing", NOW, 3, newest_age=10 * HOUR)
    fs.write_backup(stores / "failing", "failing", NOW - dt.timedelta(hours=1), failed="pg_dump: connection refused")
    return config, stores


def by_name(doc: dict) -> dict[str, dict]:
    return {d["name"]: d for d in doc["deployments"]}


def test_fleet_status_json_reports_each_state_and_the_worst_code(fleet, capsys):
    config, _ = fleet
    code = run(["--config", str(config), "fleet", "status", "--json"], clock=FakeClock(NOW))
    doc = json.loads(capsys.readouterr().out)
    rows = by_name(doc)
    assert code == doc["exit_code"] == 8  # stale and missing outrank a failed drill and an untrusted manifest
    fresh = rows["fresh"]
    assert fresh["ok"] is True and fresh["exit_code"] == 0
    assert {"name", "ok", "exit_code", "newest_backup_id", "age_seconds"} <= set(fresh)
    assert 2 * HOUR - 5 < fresh["age_seconds"] < 2 * HOUR + 60
    assert len(fresh["backups"]) == 10 and fresh["backups"][0]["backup_id"] == fresh["newest_backup_id"]
    newest = fresh["backups"][0]
    assert newest["size"] == 1 << 20 and newest["duration_seconds"] == pytest.approx(90, abs=1)
    assert fresh["size_trend"] < 0  # the synthetic history shrinks by 1000 bytes a day
    assert fresh["last_drill"]["ok"] is True and fresh["last_drill"]["rto_seconds"] == 720
    assert fresh["last_drill"]["rto_live_seconds"] is None and fresh["last_drill"]["rpo_seconds"] == 5 * HOUR
    assert fresh["lock"] == {"held": False, "stale": False, "holder": None}
    assert rows["stale"]["exit_code"] == 8 and "over max_age 26.0h" in rows["stale"]["problems"][0]
    assert rows["missing"]["exit_code"] == 8 and rows["missing"]["newest_backup_id"] is None
    assert rows["drill-failed"]["exit_code"] == 10 and "database checks" in rows["drill-failed"]["problems"][0]
    locked = rows["locked"]
    assert locked["ok"] is True and locked["lock"]["held"] is True and not locked["lock"]["stale"]
    assert "backup by pod-1" in locked["lock"]["holder"]
    damaged = rows["damaged"]  # the newest manifest is damaged: reported, and the next one is the newest trusted
    assert damaged["exit_code"] == 7 and "not valid JSON" in damaged["problems"][0]
    assert damaged["newest_backup_id"] == damaged["backups"][1]["backup_id"]
    failing = rows["failing"]  # the last attempt failed, the newest complete one is still fresh: a warning
    assert failing["ok"] is True and "connection refused" in failing["warnings"][0]
    assert [d["name"] for d in doc["deployments"]][:2] == ["missing", "stale"]


def test_fleet_status_text_is_one_line_a_deployment_worst_first(fleet, capsys):
    config, _ = fleet
    assert run(["--config", str(config), "fleet", "status"], clock=FakeClock(NOW)) == 8
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("STATE") and len(lines) == 1 + 7
    assert [line.split()[1] for line in lines[1:3]] == ["missing", "stale"]
    assert lines[1].startswith("FAIL(8)")
    assert [line.split()[0] for line in lines[-3:]] == ["ok"] * 3
    assert any("drill-failed" in line and "FAIL(10)" in line and "FAILED" in line for line in lines)


def test_root_deployment_option_narrows_the_fleet(fleet, capsys):
    config, _ = fleet
    argv = ["--config", str(config), "--deployment", "fresh", "fleet", "status", "--json"]
    assert run(argv, clock=FakeClock(NOW)) == 0
    assert [d["name"] for d in json.loads(capsys.readouterr().out)["deployments"]] == ["fresh"]


class CountingStore:
    """A real store that counts what fleet status asks of it."""

    def __init__(self, inner) -> None:
        self.inner, self.calls = inner, []

    def __getattr__(self, name):
        attribute = getattr(self.inner, name)
        if not callable(attribute):
            return attribute

        def call(*args, **kwargs):
            self.calls.append((name, args[0] if args else ""))
            return attribute(*args, **kwargs)
        return call


def test_reads_one_manifest_per_deployment_however_many_backups(tmp_path):
    fs.daily_history(tmp_path / "s", "a", NOW, 60, newest_age=HOUR)
    config = tmp_path / "c.toml"
    config.write_text(f'[backup]\nname = "a"\n[storage]\nurl = "file://{tmp_path / "s"}"\n'
                      '[encryption]\nrequire_signature = false\n')
    stores = []

    def opener(cfg):
        stores.append(CountingStore(open_store(cfg)))
        return stores[0]
    (status,) = fleet_status(load_fleet(config, environ={}), NOW, open_store=opener)
    assert status.ok
    reads = [key for name, key in stores[0].calls if name in ("get_bytes", "get_object")]
    newest = status.facts.newest_id
    # one manifest (and at most its signature) of 60 backups: the history comes from the listing
    assert [key for key in reads if key.endswith(mf.MANIFEST_NAME)] == [mf.key_of(newest, mf.MANIFEST_NAME)]
    assert set(reads) <= {mf.key_of(newest, mf.MANIFEST_NAME), mf.key_of(newest, mf.SIGNATURE_NAME), WRITER_LOCK}
    lists = [key for name, key in stores[0].calls if name == "list"]
    # the store's listing, the drills', and at most the newest backup's own folder (its signature)
    assert set(lists) <= {mf.BACKUPS, "v1/drills/", mf.backup_prefix(newest)} and len(lists) <= 3


def test_assess_and_worst_are_pure():
    stale = DeploymentFacts("x", 26 * HOUR, newest_id="b", newest_finished_at=NOW - dt.timedelta(hours=27))
    assert assess(stale, NOW).exit_code == 8
    fresh = DeploymentFacts("x", 26 * HOUR, newest_id="b", newest_finished_at=NOW - dt.timedelta(hours=25))
    status = assess(fresh, NOW)
    assert status.ok and status.as_dict()["warnings"] == ["no drill recorded"]
    from afbackup.drill_record import DrillRecord

    old_drill = DrillRecord("d", True, NOW - dt.timedelta(days=120))
    overdue = dataclasses.replace(fresh, drill=old_drill)
    assert assess(overdue, NOW).ok and assess(overdue, NOW).as_dict()["warnings"] == ["last drill is 120 days old"]
    broken = DeploymentFacts("x", 1.0, error="storage: access denied", error_code=6)
    assert assess(broken, NOW).exit_code == 6
    assert worst([0, 10, 7, 8, 6]) == 8 and worst([10, 7]) == 7 and worst([]) == 0
    assert trend([110, 100, 100, 90]) == pytest.approx(0.1) and trend([5]) is None


def test_an_unknown_deployment_is_a_config_error(fleet, capsys):
    config, _ = fleet
    assert run(["--config", str(config), "--deployment", "nope", "fleet", "status"], clock=FakeClock(NOW)) == 3


def test_an_unreachable_store_is_exit_6_for_that_deployment_only(tmp_path, capsys):
    from tests.harness.pg import free_port

    good = tmp_path / "good"
    fs.daily_history(good, "good", NOW, 3, newest_age=HOUR)
    config = tmp_path / "c.toml"
    config.write_text('[encryption]\nrequire_signature = false\n'
                      f'[deployments.good.storage]\nurl = "file://{good}"\n'
                      f'[deployments.gone.storage]\nurl = "s3://nowhere/gone"\n'
                      f'endpoint_url = "http://127.0.0.1:{free_port()}"\nretries = 0\n')
    assert run(["--config", str(config), "fleet", "status", "--json"], clock=FakeClock(NOW)) == 6
    rows = by_name(json.loads(capsys.readouterr().out))
    assert rows["good"]["ok"] is True
    assert rows["gone"]["exit_code"] == 6 and "S3 listing of" in rows["gone"]["problems"][0]


def test_the_newest_trusted_backup_skips_one_signed_by_an_untrusted_key(tmp_path, capsys):
    import shutil

    from tests.harness.gpgkeys import make_keyring

    if shutil.which("gpg") is None:
        pytest.skip("gpg not installed")
    ring = make_keyring(("signer", "stranger"))
    try:
        store = tmp_path / "s"
        older, newer = fs.daily_history(store, "a", NOW, 2, newest_age=HOUR)
        for backup_id, who in ((older, "signer"), (newer, "stranger")):
            data = (store / mf.key_of(backup_id, mf.MANIFEST_NAME)).read_bytes()
            signature = ring.gpg("--local-user", ring.fingerprints[who], "--detach-sign", input=data).stdout
            (store / mf.key_of(backup_id, mf.SIGNATURE_NAME)).write_bytes(signature)
        config = tmp_path / "c.toml"
        config.write_text(f'[backup]\nname = "a"\n[storage]\nurl = "file://{store}"\n[encryption]\n'
                          f'gnupghome = "{ring.home}"\ntrusted_signers = ["{ring.fingerprints["signer"]}"]\n')
        assert run(["--config", str(config), "fleet", "status", "--json"], clock=FakeClock(NOW)) == 7
        (row,) = json.loads(capsys.readouterr().out)["deployments"]
        assert row["newest_backup_id"] == older
        assert f"backup {newer} is not trusted" in row["problems"][0] and "trusted_signers" in row["problems"][0]
    finally:
        ring.cleanup()
