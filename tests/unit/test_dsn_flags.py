"""A password in a DSN flag is refused exactly as in the config: exit 3, naming the flag and the right way.

Before: ``--target-dsn postgresql://admin:secret@…`` was accepted and the password showed up on
pg_restore's command line (``ps``) and in the runbook's output.
"""

from __future__ import annotations

import logging

import pytest

from afbackup.cli import run
from afbackup.errors import ExitCode

SECRET = "canary-dsn-secret"


@pytest.fixture(autouse=True)
def _restore_logging():
    root = logging.getLogger("afbackup")
    saved = (list(root.handlers), root.level, root.propagate)
    yield
    root.handlers[:], root.level, root.propagate = saved[0], saved[1], saved[2]


@pytest.mark.parametrize("argv, flag", [
    (["restore", "--target-dsn", f"postgresql://admin:{SECRET}@db.example:5432/airflow", "--yes"], "--target-dsn"),
    (["restore", f"--target-dsn=host=db.example dbname=airflow user=admin password={SECRET}"], "--target-dsn"),
    (["verify", "--deep", "--scratch-dsn", f"postgresql://admin:{SECRET}@db.example/postgres"], "--scratch-dsn"),
    (["drill", "--scratch-dsn", f"postgresql://admin:{SECRET}@db.example/postgres"], "--scratch-dsn"),
], ids=["restore-url", "restore-keywords", "verify", "drill"])
def test_a_password_in_a_dsn_flag_exits_3_naming_the_flag_and_the_right_way(tmp_path, capsys, argv, flag):
    # GIVEN a config file that would load (the flag is checked before anything connects)
    config = tmp_path / "afbackup.toml"
    config.write_text('[storage]\nurl = "file:///nonexistent"\n')
    # WHEN the DSN flag carries a password
    code = run(["--config", str(config), *argv])
    # THEN exit 3, one ERROR line naming the flag and where the password goes; the secret is not printed
    captured = capsys.readouterr()
    assert code == ExitCode.CONFIG
    errors = [line for line in captured.err.splitlines() if " ERROR " in line]
    assert len(errors) == 1, captured.err
    assert flag in errors[0] and "contains a password" in errors[0]
    assert "restore.password_file" in errors[0] and "PGPASSWORD" in errors[0] and "PGPASSFILE" in errors[0]
    assert SECRET not in captured.err + captured.out


def test_a_dsn_flag_without_a_password_is_accepted_by_the_check(tmp_path):
    from afbackup.config import dsn_flag

    assert dsn_flag("postgresql://admin@db.example/airflow", "--target-dsn") == "postgresql://admin@db.example/airflow"


def test_the_config_refuses_the_same_dsn_with_the_same_words(tmp_path, capsys):
    config = tmp_path / "afbackup.toml"
    config.write_text(f'[drill]\nscratch_dsn = "postgresql://admin:{SECRET}@db.example/postgres"\n')
    code = run(["--config", str(config), "drill"])
    captured = capsys.readouterr()
    assert code == ExitCode.CONFIG
    assert "drill.scratch_dsn: contains a password; use a password file, PGPASSWORD or PGPASSFILE" in captured.err
    assert SECRET not in captured.err


@pytest.mark.parametrize("dsn", [f"postgresql://admin:{SECRET}@db.example/airflow",
                                 f"host=db.example dbname=airflow password={SECRET}"])
def test_the_incident_runbook_refuses_a_dsn_with_a_password_before_printing_it(tmp_path, dsn):
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "restore_drills" / "incident_restore.sh"
    done = subprocess.run([str(script), "--yes", "--target-dsn", dsn], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "AFBACKUP": "false"})
    assert done.returncode == 3, done.stderr
    assert "--target-dsn contains a password" in done.stderr and "PGPASSFILE" in done.stderr
    assert SECRET not in done.stdout + done.stderr
