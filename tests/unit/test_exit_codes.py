"""The exit-code table of DESIGN.md, pinned: error classes -> codes, and the CLI's mapping.

CronJobs, CI drills and scripts branch on these numbers; changing one is a
breaking change and must fail here first.
"""

from __future__ import annotations

import logging
import signal

import pytest

from afbackup import errors
from afbackup.cli import run
from afbackup.errors import ExitCode


@pytest.fixture(autouse=True)
def _restore_logging():
    """run() points the afbackup logger at this test's captured stderr; undo that afterwards."""
    root = logging.getLogger("afbackup")
    saved = (list(root.handlers), root.level, root.propagate)
    yield
    root.handlers[:], root.level, root.propagate = saved[0], saved[1], saved[2]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " ERROR " in line]


def write_config(tmp_path, text: str):
    """A config file; synthetic stores hold unsigned manifests, so signatures are explicitly not required."""
    path = tmp_path / "afbackup.toml"
    path.write_text(text + ("" if "[encryption]" in text else "\n[encryption]\nrequire_signature = false\n"))
    return path


# -- the table itself ------------------------------------------------------------
def test_exit_code_values_are_exactly_the_documented_table():
    # GIVEN the table in DESIGN.md ("Exit codes")
    documented = {"OK": 0, "UNEXPECTED": 1, "USAGE": 2, "CONFIG": 3, "PREFLIGHT": 4, "SOURCE": 5,
                  "STORAGE": 6, "CRYPTO": 7, "INTEGRITY": 8, "LOCKED": 9, "DRILL_FAILED": 10,
                  "SIGNAL_BASE": 128}
    # WHEN we read the enum
    actual = {member.name: int(member.value) for member in ExitCode}
    # THEN it is the same table, no more, no less
    assert actual == documented


@pytest.mark.parametrize(("error_class", "code"), [
    (errors.UsageError, 2),
    (errors.ConfigError, 3),
    (errors.PreflightError, 4),
    (errors.SourceError, 5),
    (errors.StorageError, 6),
    (errors.CryptoError, 7),
    (errors.IntegrityError, 8),
    (errors.NotFoundError, 8),
    (errors.LockedError, 9),
    (errors.DrillFailed, 10),
])
def test_each_error_class_maps_to_its_code(error_class, code):
    # GIVEN an instance of an expected-failure class
    exc = error_class("something failed", hint="do this")
    # THEN its class decides the documented exit code
    assert int(exc.exit_code) == code
    assert isinstance(exc, errors.AfbackupError)


def test_not_found_is_an_integrity_error():
    assert issubclass(errors.NotFoundError, errors.IntegrityError)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_exits_with_128_plus_signal(signum):
    assert errors.Interrupted(signum).exit_code == 128 + signum


def test_one_line_joins_stage_message_and_hint_on_a_single_line():
    exc = errors.SourceError("pg_dump exited with 1:\n  line two", hint="check\nthe DB", stage="pg_dump")
    assert exc.one_line() == "pg_dump: pg_dump exited with 1: line two — check the DB"


# -- the CLI maps failures to those codes ----------------------------------------
def test_unknown_option_is_a_usage_error(capsys):
    # WHEN the command line has an option afbackup does not know
    code = run(["--no-such-option", "list"])
    # THEN exit 2, and click says what was wrong
    assert code == ExitCode.USAGE == 2
    assert "No such option" in capsys.readouterr().err


def test_unknown_command_is_a_usage_error(capsys):
    assert run(["frobnicate"]) == 2


def test_missing_config_file_is_a_config_error(capsys):
    # WHEN --config names a file that does not exist
    code = run(["--config", "/nonexistent/afbackup.toml", "list"])
    # THEN exit 3 and exactly one ERROR line naming the file
    assert code == ExitCode.CONFIG == 3
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1
    assert "/nonexistent/afbackup.toml" in lines[0]


def test_unknown_config_key_is_a_config_error(tmp_path, capsys):
    # GIVEN a config with a key afbackup does not know (a typo)
    path = write_config(tmp_path, f'[storage]\nurl = "file://{tmp_path}/store"\nreigon = "eu-west-1"\n')
    # WHEN a command loads it
    code = run(["--config", str(path), "list"])
    # THEN exit 3, one ERROR line naming the key
    assert code == 3
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1
    assert "storage.reigon" in lines[0] and "unknown key" in lines[0]


def test_show_latest_on_an_empty_store_is_an_integrity_error(tmp_path, capsys):
    # GIVEN a file:// store with no backup in it
    path = write_config(tmp_path, f'[storage]\nurl = "file://{tmp_path}/store"\n')
    # WHEN we ask for the latest backup
    code = run(["--config", str(path), "show", "latest"])
    # THEN exit 8 (no usable backup), nothing on stdout, and one ERROR line on stderr
    assert code == ExitCode.INTEGRITY == 8
    out, err = capsys.readouterr()
    assert out == ""
    lines = error_lines(err)
    assert len(lines) == 1
    assert "no complete backup" in lines[0]
    assert "Traceback" not in err


def test_a_malformed_backup_id_is_a_usage_error(tmp_path, capsys):
    path = write_config(tmp_path, f'[storage]\nurl = "file://{tmp_path}/store"\n')
    assert run(["--config", str(path), "show", "../../etc"]) == 2
    assert len(error_lines(capsys.readouterr().err)) == 1


def test_success_is_zero(tmp_path, capsys):
    path = write_config(tmp_path, f'[storage]\nurl = "file://{tmp_path}/store"\n')
    assert run(["--config", str(path), "list"]) == 0
    assert error_lines(capsys.readouterr().err) == []


def test_an_unexpected_exception_exits_1_with_one_line(tmp_path, capsys, monkeypatch):
    # GIVEN a command whose dependency fails in a way nobody anticipated
    import afbackup.cli.catalog as catalog_cmd

    def explode(*args, **kwargs):
        raise RuntimeError("kaboom in the catalog")

    monkeypatch.setattr(catalog_cmd, "list_backups", explode)
    path = write_config(tmp_path, f'[storage]\nurl = "file://{tmp_path}/store"\n')
    # WHEN it runs
    code = run(["--config", str(path), "list"])
    # THEN exit 1, one ERROR line naming the exception, and the traceback only at -v
    assert code == ExitCode.UNEXPECTED == 1
    err = capsys.readouterr().err
    lines = error_lines(err)
    assert len(lines) == 1
    assert "RuntimeError" in lines[0] and "kaboom in the catalog" in lines[0]
    assert "Traceback" not in err


def test_verbose_adds_the_traceback_at_debug(tmp_path, capsys):
    path = write_config(tmp_path, f'[storage]\nurl = "file://{tmp_path}/store"\n')
    assert run(["-v", "--config", str(path), "show", "latest"]) == 8
    err = capsys.readouterr().err
    assert len(error_lines(err)) == 1
    assert "Traceback" in err


def test_a_terminating_signal_exits_128_plus_n_and_restores_handlers(tmp_path, capsys, monkeypatch):
    # GIVEN a command that receives SIGTERM while it works
    import os

    import afbackup.cli.catalog as catalog_cmd

    def killed(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("the signal handler should have interrupted us")

    monkeypatch.setattr(catalog_cmd, "list_backups", killed)
    path = write_config(tmp_path, f'[storage]\nurl = "file://{tmp_path}/store"\n')
    before = signal.getsignal(signal.SIGTERM)
    # WHEN it runs
    code = run(["--config", str(path), "list"])
    # THEN exit 128+15 with one ERROR line, and our handler is gone again
    assert code == 128 + signal.SIGTERM
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "signal 15" in lines[0]
    assert signal.getsignal(signal.SIGTERM) is before


def test_config_path_that_is_a_directory_is_a_config_error(tmp_path, capsys):
    assert run(["--config", str(tmp_path), "list"]) == 3


def test_config_file_that_is_not_utf8_is_a_config_error(tmp_path, capsys):
    path = tmp_path / "latin1.toml"
    path.write_bytes('[storage]\nurl = "file:///srv/sauvegardes/caf\u00e9"\n'.encode("latin-1"))
    assert run(["--config", str(path), "list"]) == 3
