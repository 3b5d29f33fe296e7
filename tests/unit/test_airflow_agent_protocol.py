"""The Airflow agent protocol: framed replies, interpreter discovery, and the REAL agent end to end.

The end-to-end tests run afbackup/sources/airflow_agent.py, unchanged, in a
child Python against a stub ``airflow`` package written to tmp_path. The stub
is deliberately noisy — print(), raw fd 1, sys.__stdout__, a child process,
even a fake reply frame — like real Airflow logging on stdout. None of it may
reach the framed reply.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from afbackup.config.model import AirflowConfig
from afbackup.errors import ConfigError, SourceError
from afbackup.executors.base import DEFAULT_MAX_STDOUT, ExecResult
from afbackup.sources.airflow import (
    BOOTSTRAP,
    MAGIC,
    AirflowAgent,
    _parse_reply,
    _shebang_python,
    agent_source,
    export_all,
    resolve_python,
)


def frame(payload: dict | bytes, *, length: int | None = None, digest: str | None = None) -> bytes:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    length = len(body) if length is None else length
    digest = hashlib.sha256(body).hexdigest() if digest is None else digest
    return b"%s %d %s\n" % (MAGIC, length, digest.encode()) + body


REPLY = {"results": [{"ok": True, "result": {"answer": 42}}]}


# -- _parse_reply -------------------------------------------------------------------------
def test_parse_reply_reads_a_good_frame():
    assert _parse_reply(frame(REPLY)) == REPLY


def test_parse_reply_ignores_garbage_before_and_after_the_frame():
    noisy = b"WARNING - secrets masker {\"not\": json\n\x00\xff" + frame(REPLY) + b"\ntrailing log line\n"
    assert _parse_reply(noisy) == REPLY


def test_parse_reply_without_a_frame_is_none():
    assert _parse_reply(b"") is None
    assert _parse_reply(b"Traceback (most recent call last):\n  ...\n") is None


def test_truncated_body_is_a_source_error():
    data = frame(REPLY)
    with pytest.raises(SourceError, match="truncated") as info:
        _parse_reply(data[:-5])
    assert info.value.stage == "exec"


def test_wrong_sha_is_a_source_error():
    with pytest.raises(SourceError, match="damaged"):
        _parse_reply(frame(REPLY, digest="0" * 64))


def test_flipped_body_byte_is_a_source_error():
    data = bytearray(frame(REPLY))
    data[-3] ^= 0x01
    with pytest.raises(SourceError):
        _parse_reply(bytes(data))


def test_damaged_header_is_a_source_error():
    with pytest.raises(SourceError, match="header"):
        _parse_reply(MAGIC + b" twelve abc\n{}")


# -- which Python runs Airflow ---------------------------------------------------------------
def script(tmp_path: Path, text: str, name: str = "airflow") -> Path:
    path = tmp_path / "bin" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.mark.parametrize(("text", "expected"), [
    ("#!/venv/bin/python3\nfrom airflow.__main__ import main\n", ["/venv/bin/python3"]),
    ("#!/usr/bin/env python3\nimport sys\n", ["python3"]),
    ("#!/usr/bin/env -S python3.11 -u\n", ["python3.11"]),
    ("#!/bin/sh\n'''exec' \"/very/long/path/to/a/venv/bin/python\" \"$0\" \"$@\"\n' '''\nimport sys\n",
     ["/very/long/path/to/a/venv/bin/python"]),
    ("#!/bin/bash\nexec airflow-real \"$@\"\n", None),
    ("#!/bin/sh\nexec /usr/bin/python3 -m airflow \"$@\"\n", None),
    ("no shebang at all\n", None),
    ("", None),
], ids=["venv", "env", "env-S", "pip-long-path", "bash", "sh-wrapper", "no-shebang", "empty"])
def test_shebang_python(tmp_path, text, expected):
    assert _shebang_python(str(script(tmp_path, text))) == expected


def test_shebang_python_of_a_missing_file_is_none(tmp_path):
    assert _shebang_python(str(tmp_path / "nope")) is None


def test_resolve_python_honours_the_configured_interpreter(tmp_path):
    cfg = AirflowConfig(python=("/opt/airflow/venv/bin/python", "-X", "utf8"), command=("/nonexistent/airflow",))
    assert resolve_python(cfg) == ["/opt/airflow/venv/bin/python", "-X", "utf8"]


def test_resolve_python_reads_the_cli_shebang_on_path(tmp_path, monkeypatch):
    script(tmp_path, "#!/srv/airflow/bin/python3.12\n")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    assert resolve_python(AirflowConfig(command=("airflow",))) == ["/srv/airflow/bin/python3.12"]


def test_resolve_python_reads_an_absolute_command(tmp_path):
    path = script(tmp_path, "#!/usr/bin/env python3\n")
    assert resolve_python(AirflowConfig(command=(str(path),))) == ["python3"]


def test_resolve_python_in_kubernetes_defaults_to_python():
    assert resolve_python(AirflowConfig(executor="kubernetes")) == ["python"]


@pytest.mark.parametrize("case", ["not-python", "missing", "multi-word"])
def test_resolve_python_raises_config_error_when_it_cannot_tell(tmp_path, case):
    if case == "not-python":
        command = (str(script(tmp_path, "#!/bin/bash\nexec true\n")),)
    elif case == "missing":
        command = (str(tmp_path / "no-such-airflow"),)
    else:
        command = ("docker", "exec", "scheduler", "airflow")
    with pytest.raises(ConfigError) as info:
        resolve_python(AirflowConfig(command=command))
    assert "[airflow] python" in info.value.one_line()


# -- the real agent against a stub Airflow ------------------------------------------------------
STUB = {
    "airflow/__init__.py": """
        __version__ = "2.99.0-stub"
        print("airflow: import-time banner on stdout")
    """,
    "airflow/configuration.py": """
        class _Conf:
            values = {("core", "fernet_key"): "first-key, second-key", ("secrets", "backend"): ""}

            def get(self, section, key, fallback=None):
                return self.values.get((section, key), fallback)

        conf = _Conf()
    """,
    "airflow/models/__init__.py": """
        class Variable:
            key = "key"

            def __init__(self, key, val, description):
                self.key, self.val, self.description = key, val, description
    """,
    "airflow/utils/__init__.py": "",
    "airflow/utils/session.py": """
        import contextlib
        from airflow.models import Variable

        class _Session:
            def scalars(self, statement):
                return [Variable("answer", '"42"', "quoted on purpose"), Variable("plain", "x", None)]

        @contextlib.contextmanager
        def create_session():
            yield _Session()
    """,
    "sqlalchemy/__init__.py": """
        class _Select:
            def order_by(self, *columns):
                return self

        def select(model):
            return _Select()
    """,
    "airflow/cli/__init__.py": "",
    "airflow/cli/cli_parser.py": """
        import argparse
        import json
        import os
        import subprocess
        import sys

        DATA = {
            "connections": {"my_db": {"conn_type": "postgres", "password": "hunter2"}},
            "variables": {"answer": 42, "plain": "x"},
            "pools": {"default_pool": {"slots": 128, "description": "Default pool"}},
        }

        def noise():
            print("INFO - export starting {not json")
            sys.stdout.flush()
            os.write(1, b"AFBACKUP-AGENT/1 5 " + b"0" * 64 + b"\\nfake!\\n")
            sys.__stdout__.write("via sys.__stdout__\\n")
            sys.__stdout__.flush()
            subprocess.run([sys.executable, "-c", "print('child process noise')"], check=True)
            print("WARNING - on stderr", file=sys.stderr)

        def record(entry):
            with open(os.environ["STUB_RECORD"], "a") as fh:
                fh.write(json.dumps(entry) + "\\n")

        def exporter(kind):
            def run(args):
                noise()
                directory = os.path.dirname(os.path.abspath(args.file))
                record({"kind": kind, "dir": directory, "mode": os.stat(directory).st_mode & 0o777})
                if os.environ.get("STUB_FAIL") == kind:
                    sys.exit(1)
                with open(args.file, "w") as fh:
                    json.dump(DATA[kind], fh)
                print("Exported %d %s to %s" % (len(DATA[kind]), kind, args.file))
            return run

        def make_noise(args):
            noise()
            print("the command's own output")
            with open(args.out, "w") as fh:
                fh.write("written by the stub CLI")

        def explode(args):
            raise RuntimeError("database is locked")

        def get_parser():
            parser = argparse.ArgumentParser(prog="airflow")
            sub = parser.add_subparsers(dest="group", required=True)
            for kind in DATA:
                cmd = sub.add_parser(kind)
                cmd.add_argument("action", choices=["export"])
                cmd.add_argument("file")
                cmd.set_defaults(func=exporter(kind))
            cmd = sub.add_parser("noise")
            cmd.add_argument("--out", required=True)
            cmd.set_defaults(func=make_noise)
            sub.add_parser("explode").set_defaults(func=explode)
            return parser
    """,
}


class SubprocessExecutor:
    """Runs argv locally with subprocess (the executor contract, nothing of ours under test)."""

    name = "test"

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.results: list[ExecResult] = []

    def describe(self) -> str:
        return "the test machine"

    def run(self, argv, *, stdin: bytes = b"", timeout: float, max_stdout: int = DEFAULT_MAX_STDOUT) -> ExecResult:
        done = subprocess.run(list(argv), input=stdin, capture_output=True, timeout=timeout, env=self.env)
        result = ExecResult(done.returncode, done.stdout[:max_stdout], done.stderr)
        self.results.append(result)
        return result


@pytest.fixture
def stub(tmp_path):
    root = tmp_path / "stub"
    for name, text in STUB.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    record = tmp_path / "record.jsonl"
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHONPATH": str(root),
           "STUB_RECORD": str(record), "AIRFLOW_CONN_FROM_ENV": "postgres://x", "AIRFLOW_VAR_ENV_ONLY": "1"}
    executor = SubprocessExecutor(env)
    agent = AirflowAgent(executor, [sys.executable], timeout=60)
    agent.record_path = record  # type: ignore[attr-defined]
    return agent


def records(agent) -> list[dict]:
    path = agent.record_path
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_bootstrap_is_python_code_run_with_dash_c(stub):
    stub.info()
    assert stub.executor.results  # it ran
    compile(BOOTSTRAP, "bootstrap", "exec")


def test_exports_survive_noise_and_use_a_private_tmpfs_dir(stub):
    # GIVEN an "Airflow" that prints noise (even a fake reply frame) on stdout around every export
    # WHEN the three exports run through the real agent into /dev/shm
    exported = export_all(stub, "/dev/shm")
    # THEN the files are exactly what the CLI wrote, parsed and counted
    assert json.loads(exported.files["connections.json"]) == {
        "my_db": {"conn_type": "postgres", "password": "hunter2"}}
    assert json.loads(exported.files["pools.json"])["default_pool"]["slots"] == 128
    assert dict(exported.counts) == {"connections": 1, "variables": 2, "pools": 1}
    assert json.loads(exported.secret_members["variables_exact.json"]) == {
        "answer": {"val": '"42"', "description": "quoted on purpose"}, "plain": {"val": "x", "description": None}}
    assert json.loads(exported.secret_members["fernet.json"]) == {"keys": ["first-key", "second-key"]}
    # AND the info op saw the stub's version and the env-defined names (not captured by exports)
    assert exported.info["airflow_version"] == "2.99.0-stub"
    assert exported.info["env_connections"] == ["from_env"]
    assert exported.info["env_variables"] == ["env_only"]
    assert len(exported.info["fernet_fingerprints"]) == 2
    # AND the agent's real stdout held nothing but the one frame; the noise went to stderr
    result = stub.executor.results[-1]
    assert result.stdout.startswith(MAGIC) and result.stdout.count(MAGIC) == 1
    assert b"child process noise" in result.stderr and b"export starting" in result.stderr
    assert b"hunter2" not in result.stderr
    # AND all three exports were written into one private 0700 directory on a tmpfs, removed afterwards
    seen = records(stub)
    assert [entry["kind"] for entry in seen] == ["connections", "variables", "pools"]
    directory = {entry["dir"] for entry in seen}
    assert len(directory) == 1
    (workdir,) = directory
    assert workdir.startswith("/dev/shm/afbackup-")
    assert {entry["mode"] for entry in seen} == {0o700}
    assert not os.path.exists(workdir)


def test_cli_op_returns_the_commands_own_stdout(stub, tmp_path):
    out = tmp_path / "made-by-cli.txt"
    result = stub.cli("noise", "--out", str(out))
    assert result["exit_code"] == 0
    assert "the command's own output" in result["stdout"]
    assert "fake!" not in result["stdout"] and "child process noise" not in result["stdout"]
    assert out.read_text() == "written by the stub CLI"


def test_an_op_that_raises_is_a_source_error_naming_the_op(stub):
    with pytest.raises(SourceError) as info:
        stub.cli("explode", stage="airflow cli")
    message = info.value.one_line()
    assert "airflow cli failed" in message and "RuntimeError: database is locked" in message
    assert info.value.stage == "airflow cli"


def test_a_failed_export_is_a_source_error_and_still_removes_the_private_dir(stub):
    # GIVEN `pools export` exits 1 after the other two exports wrote their files
    with pytest.raises(SourceError) as info:
        stub.call([{"op": "export", "tmp_dir": "/dev/shm"}], env={"STUB_FAIL": "pools"}, stage="export")
    # THEN the error names the op and the failing command; the directory is gone anyway
    message = info.value.one_line()
    assert "airflow export failed" in message and "pools export failed (exit 1)" in message
    (workdir,) = {entry["dir"] for entry in records(stub)}
    assert not os.path.exists(workdir)


def test_an_unknown_op_is_a_source_error_naming_it(stub):
    with pytest.raises(SourceError, match="airflow no_such_op failed"):
        stub.call([{"op": "no_such_op"}])


def test_export_dir_on_persistent_disk_is_refused(stub, tmp_path):
    fstype = subprocess.run(["stat", "-f", "-c", "%T", str(tmp_path)], capture_output=True, text=True).stdout.strip()
    if fstype in ("tmpfs", "ramfs"):
        pytest.skip("tmp_path is itself memory-backed here")
    with pytest.raises(SourceError, match="not a memory-backed filesystem"):
        export_all(stub, str(tmp_path))
    assert records(stub) == []  # no export ran at all


def test_agent_exiting_without_a_reply_is_a_source_error_with_its_exit_code(stub):
    # python -c '<exit 3>' -- -c BOOTSTRAP: the interpreter "dies" before the agent runs
    broken = AirflowAgent(stub.executor, [sys.executable, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)",
                                          "--"], timeout=30)
    with pytest.raises(SourceError) as info:
        broken.info()
    assert "exited with 3" in info.value.one_line() and "boom" in info.value.one_line()


def test_agent_exiting_zero_without_a_reply_is_a_source_error(stub):
    silent = AirflowAgent(stub.executor, [sys.executable, "-c", "pass", "--"], timeout=30)
    with pytest.raises(SourceError, match="sent no reply"):
        silent.info()


# -- the agent as a module --------------------------------------------------------------------
def test_importing_the_agent_module_runs_nothing():
    # GIVEN a request on stdin that the agent would act on if it ran
    request = b'2\n{}'
    # WHEN the module is imported (not sent through the bootstrap)
    done = subprocess.run([sys.executable, "-c", "import afbackup.sources.airflow_agent as a; print(a.MAGIC.decode())"],
                          input=request, capture_output=True, timeout=60)
    # THEN it defines the agent without reading stdin or replying
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == b"AFBACKUP-AGENT/1\n"


def test_the_agent_source_is_python_3_8():
    # The Airflow interpreter may be older than afbackup's: the source must parse with 3.8 grammar.
    ast.parse(agent_source(), feature_version=(3, 8))
