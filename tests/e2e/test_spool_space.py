"""A spool too small for the decrypted dump fails in seconds with exit 4, before anything is downloaded.

The spool is a real 4 MiB tmpfs (what a memory-backed emptyDir with a sizeLimit is); mounting one
needs root (CAP_SYS_ADMIN), so the test is skipped where that is not allowed.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
from pathlib import Path

import pytest

from afbackup.spool import SPOOL_HEADROOM


@contextlib.contextmanager
def tmpfs(mount: Path, size: int):
    """A tmpfs of ``size`` bytes at ``mount`` (skips the test where mounting is not allowed)."""
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.mark.slow
def test_restore_verify_deep_and_drill_refuse_a_spool_too_small_before_downloading(env, tmp_path):
    # GIVEN a backup (no executor: the database only), and a spool of half the dump's size
    _, db = env.airflow("3")
    spool = tmp_path / "spool"
    path = env.write_config(env.config(db, restore={"spool_dir": str(spool)}))
    done = env.afbackup(path, "backup", "--json")
    assert done.returncode == 0, done.stderr
    manifest = json.loads(done.stdout)["manifest"]
    dump = sum(m["size"] for m in manifest["archive_members"] if m["name"].startswith("db/airflow.pgdump."))
    needed = dump + SPOOL_HEADROOM
    with tmpfs(spool, dump // 2 // 4096 * 4096):
        _refused_before_downloading(env, path, spool, needed)


def _refused_before_downloading(env, path: Path, small_tmpfs: Path, needed: int) -> None:
    target = env.unique("spool_")
    for args in (("restore", "--target-dsn", env.pg.dsn(target), "--yes"),
                 ("verify", "--deep", "--scratch-dsn", env.pg.dsn()),
                 ("drill", "--scratch-dsn", env.pg.dsn())):
        # WHEN a command that spools the dump runs
        failed = env.afbackup(path, *args)
        # THEN exit 4, naming the size needed and where, before any download (no "verified" step, no target)
        assert failed.returncode == 4, (args[0], failed.stderr)
        error = [line for line in failed.stderr.splitlines() if " ERROR " in line][-1]
        assert f"({needed} bytes) in {small_tmpfs}" in error, error
        assert re.search(r"which has [\d.]+ (KiB|MiB|B) free", error) and "restore.spool_dir" in error, error
        assert "download" not in failed.stderr.lower().replace("nothing was downloaded", ""), failed.stderr
    assert env.pg.execute("postgres", "SELECT 1 FROM pg_database WHERE datname = %s", (target,)) == []
    assert list(small_tmpfs.iterdir()) == []  # the private spool directory was removed
