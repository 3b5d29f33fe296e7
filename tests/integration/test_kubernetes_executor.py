"""KubernetesExecutor against our fake API server, through the REAL kubernetes client.

Every test goes over a real TCP socket on 127.0.0.1: REST for the pod lookup,
a websocket speaking the v4/v5 channel protocol for exec. The "container" is
this machine, so commands are plain ``python3 -c`` programs.
"""

from __future__ import annotations

import hashlib
import random
import sys
import time

import pytest

from afbackup.errors import ConfigError, ExitCode, PreflightError
from afbackup.executors.base import STDERR_TAIL, CommandNotFound, ExecError
from afbackup.executors.kubernetes import KubernetesExecutor
from tests.k8s_fake import V4, V5, FakeCluster

NS = "airflow"
LABELS = {"component": "scheduler", "release": "airflow"}
PY = sys.executable
MIB = 1024 * 1024


@pytest.fixture
def cluster():
    """GIVEN an API server with a scheduler Deployment: one Ready pod, one not Ready."""
    with FakeCluster() as fake:
        fake.add_deployment("airflow-scheduler", NS, LABELS)
        fake.add_statefulset("airflow-worker", NS, {"component": "worker"})
        fake.add_pod("airflow-scheduler-ready", NS, LABELS, containers=["scheduler", "git-sync"])
        fake.add_pod("airflow-scheduler-starting", NS, LABELS, ready=False)
        fake.add_pod("airflow-worker-0", NS, {"component": "worker"}, containers=["worker"])
        yield fake


def executor(fake: FakeCluster, target: str = "deployment/airflow-scheduler",
             container: str = "scheduler") -> KubernetesExecutor:
    return KubernetesExecutor(namespace=NS, target=target, container=container,
                              api_client=fake.api_client())


def python(code: str) -> list[str]:
    return [PY, "-c", code]


def payload(size: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


# -- exit codes and streams ----------------------------------------------------
@pytest.mark.parametrize("code", [0, 1, 3])
def test_exit_code_propagates(cluster, code):
    result = executor(cluster).run(python(f"import sys; sys.exit({code})"), timeout=20)
    assert result.returncode == code
    assert cluster.execs[-1].pod == "airflow-scheduler-ready"


def test_stdout_and_stderr_stay_separate(cluster):
    # GIVEN a command that interleaves its export with warning noise on stderr
    code = ("import sys\n"
            "for i in range(200):\n"
            "    sys.stdout.write(f'row {i}\\n'); sys.stdout.flush()\n"
            "    sys.stderr.write('DeprecationWarning: noise\\n'); sys.stderr.flush()\n")
    # WHEN it runs in the pod
    result = executor(cluster).run(python(code), timeout=20)
    # THEN stdout holds only the rows, stderr only the noise
    assert result.stdout == b"".join(f"row {i}\n".encode() for i in range(200))
    assert set(result.stderr.splitlines()) == {b"DeprecationWarning: noise"}


def test_stderr_keeps_only_the_tail(cluster):
    code = "import sys; sys.stderr.write('x' * 300000 + 'END')"
    result = executor(cluster).run(python(code), timeout=20)
    assert len(result.stderr) == STDERR_TAIL and result.stderr.endswith(b"END")


def test_binary_stdout_round_trips_byte_exact(cluster):
    # GIVEN 5 MiB of random bytes plus bytes that are not UTF-8 (and a split multibyte char)
    data = payload(5 * MIB) + b"\xff\xfe\x80\xc3" + "é€".encode()
    code = ("import random, sys\n"
            f"sys.stdout.buffer.write(random.Random(7).randbytes({5 * MIB}))\n"
            "sys.stdout.buffer.write(b'\\xff\\xfe\\x80\\xc3' + 'é€'.encode())\n"
            "sys.stderr.write('noise')\n")
    result = executor(cluster).run(python(code), timeout=60)
    assert result.returncode == 0
    assert len(result.stdout) == len(data)
    assert hashlib.sha256(result.stdout).hexdigest() == hashlib.sha256(data).hexdigest()
    assert result.stderr == b"noise"


def test_empty_output_and_no_stdin(cluster):
    result = executor(cluster).run(python("pass"), timeout=20)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")
    assert cluster.execs[-1].stdin is False  # nothing to send: stdin not even attached


@pytest.mark.parametrize("protocols", [(V4,), (V5, V4)], ids=["v4", "v5"])
def test_stdin_reaches_the_command_without_closing_it(protocols):
    # GIVEN a server that negotiates v4 (no half-close possible) or v5
    with FakeCluster(protocols=protocols) as fake:
        fake.add_pod("scheduler-0", NS, LABELS)
        data = payload(3 * MIB + 12345, seed=11)
        # WHEN a command reads exactly len(data) bytes -- it would hang if it waited for EOF
        code = ("import hashlib, sys\n"
                f"n, buf = {len(data)}, bytearray()\n"
                "while len(buf) < n:\n"
                "    chunk = sys.stdin.buffer.read1(n - len(buf))\n"
                "    if not chunk: sys.exit(9)\n"
                "    buf += chunk\n"
                "print(hashlib.sha256(buf).hexdigest())\n")
        result = executor(fake, "pod/scheduler-0").run(python(code), stdin=data, timeout=60)
        # THEN it saw every byte, and stdin was never closed
        assert result.returncode == 0, result.stderr_tail()
        assert result.stdout.decode().strip() == hashlib.sha256(data).hexdigest()
        record = fake.execs[-1]
        assert record.protocol == protocols[0]
        assert record.stdin_bytes == len(data) and record.stdin_closed is False


def test_max_stdout_exceeded_is_an_exec_error(cluster):
    code = "import sys; sys.stdout.buffer.write(b'x' * 3_000_000)"
    with pytest.raises(ExecError, match="max_stdout"):
        executor(cluster).run(python(code), timeout=20, max_stdout=1_000_000)


# -- targets -------------------------------------------------------------------
@pytest.mark.parametrize("target, pod", [
    ("deployment/airflow-scheduler", "airflow-scheduler-ready"),
    ("statefulset/airflow-worker", "airflow-worker-0"),
    ("pod/airflow-scheduler-ready", "airflow-scheduler-ready"),
    ("selector:component=scheduler,release=airflow", "airflow-scheduler-ready"),
])
def test_targets_resolve_to_the_ready_pod(cluster, target, pod):
    container = "worker" if "worker" in target else "scheduler"
    ex = executor(cluster, target, container)
    assert ex.resolve_pod().metadata.name == pod
    assert ex.run(python("print('hi')"), timeout=20).stdout == b"hi\n"
    assert (cluster.execs[-1].pod, cluster.execs[-1].container) == (pod, container)


def test_newest_ready_pod_wins(cluster):
    cluster.add_pod("airflow-scheduler-newer", NS, LABELS)
    cluster.add_pod("airflow-scheduler-leaving", NS, LABELS, terminating=True)
    assert executor(cluster).resolve_pod().metadata.name == "airflow-scheduler-newer"


def test_not_ready_pod_is_a_preflight_error(cluster):
    with pytest.raises(PreflightError, match="not Ready") as info:
        executor(cluster, "pod/airflow-scheduler-starting").run(python("pass"), timeout=20)
    assert info.value.exit_code == ExitCode.PREFLIGHT
    assert cluster.execs == []


def test_deployment_without_ready_pod_is_a_preflight_error(cluster):
    cluster.add_deployment("webserver", NS, {"component": "webserver"})
    cluster.add_pod("webserver-1", NS, {"component": "webserver"}, ready=False)
    with pytest.raises(PreflightError, match=r"no Ready pod.*webserver-1: Pending"):
        executor(cluster, "deployment/webserver").run(python("pass"), timeout=20)


@pytest.mark.parametrize("target, what", [
    ("deployment/nope", "deployment/nope not found"),
    ("statefulset/nope", "statefulset/nope not found"),
    ("pod/nope", "pod nope not found"),
])
def test_missing_target_is_a_preflight_error(cluster, target, what):
    with pytest.raises(PreflightError, match=what):
        executor(cluster, target).run(python("pass"), timeout=20)


def test_missing_container_names_the_containers(cluster):
    with pytest.raises(PreflightError) as info:
        executor(cluster, container="webserver").run(python("pass"), timeout=20)
    assert "'webserver'" in info.value.message
    assert "scheduler, git-sync" in info.value.message


def test_malformed_target_is_a_config_error(cluster):
    with pytest.raises(ConfigError):
        executor(cluster, "daemonset/x")


# -- failures of the exec itself --------------------------------------------------
def test_forbidden_names_verb_and_resource(cluster):
    cluster.faults.forbid = True
    with pytest.raises(PreflightError) as info:
        executor(cluster).run(python("pass"), timeout=20)
    line = info.value.one_line()
    assert "cannot create pods/exec in namespace airflow" in line
    assert "system:serviceaccount:airflow:afbackup" in line
    assert "grant create and get on pods/exec" in line


def test_missing_command_is_command_not_found(cluster):
    with pytest.raises(CommandNotFound, match="no-such-airflow-cli") as info:
        executor(cluster).run(["no-such-airflow-cli", "version"], timeout=20)
    assert info.value.exit_code == ExitCode.SOURCE


def test_exit_127_saying_not_found_is_command_not_found(cluster):
    code = ("import sys\n"
            "sys.stderr.write('/usr/bin/env: airflow: No such file or directory')\n"
            "sys.exit(127)\n")
    with pytest.raises(CommandNotFound):
        executor(cluster).run(python(code), timeout=20)


@pytest.mark.parametrize("abruptly", [False, True], ids=["close-frame", "tcp-reset"])
def test_drop_before_status_is_an_exec_error(cluster, abruptly):
    cluster.faults.drop_before_status = True
    cluster.faults.drop_abruptly = abruptly
    with pytest.raises(ExecError, match="closed before the exit status arrived"):
        executor(cluster).run(python("print('partial export')"), timeout=20)


def test_hang_times_out_quickly(cluster):
    cluster.faults.hang = True
    started = time.monotonic()
    with pytest.raises(ExecError, match="2 s timeout"):
        executor(cluster).run(python("pass"), stdin=b"x" * 1000, timeout=2)
    assert time.monotonic() - started < 3.5


def test_slow_command_times_out_and_is_stopped(cluster):
    with pytest.raises(ExecError, match="timeout"):
        executor(cluster).run(python("import time; time.sleep(30)"), timeout=1)
    deadline = time.monotonic() + 5
    while cluster.execs[-1].returncode is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the fake kills the command once the session closes
    assert cluster.execs[-1].returncode is not None


# -- credentials ---------------------------------------------------------------
def test_kubeconfig_file_and_context(tmp_path):
    with FakeCluster(token="s3cr3t-token") as fake:
        fake.add_deployment("airflow-scheduler", NS, LABELS)
        fake.add_pod("airflow-scheduler-ready", NS, LABELS)
        path = fake.write_kubeconfig(str(tmp_path / "kubeconfig"), context="fake-ctx")
        ex = KubernetesExecutor(namespace=NS, target="deployment/airflow-scheduler",
                                container="scheduler", context="fake-ctx", kubeconfig=path)
        result = ex.run(python("print('via kubeconfig')"), timeout=20)
        assert result.stdout == b"via kubeconfig\n"
        assert "fake-ctx" in ex.describe() and "s3cr3t" not in ex.describe()


def test_unknown_context_is_a_config_error(tmp_path):
    with FakeCluster() as fake:
        path = fake.write_kubeconfig(str(tmp_path / "kubeconfig"), context="fake-ctx")
        with pytest.raises(ConfigError, match="kubeconfig"):
            KubernetesExecutor(namespace=NS, target="pod/x", container="c",
                               context="other", kubeconfig=path)


def test_wrong_token_is_a_preflight_error():
    with FakeCluster(token="right") as fake:
        fake.add_pod("p", NS, LABELS)
        ex = executor(fake, "pod/p")
        fake.token = "changed"
        with pytest.raises(PreflightError, match="401"):
            ex.run(python("pass"), timeout=20)


def test_output_arriving_during_a_slow_read_is_not_lost(cluster, monkeypatch):
    # GIVEN a slow consumer: reading an empty stderr channel makes the client run
    # update() itself, which can pull in the last stdout frames and the status
    from kubernetes.stream.ws_client import WSClient

    real_read = WSClient.read_channel

    def slow_read(self, channel, timeout=0):
        if channel == 2:
            time.sleep(0.02)
        return real_read(self, channel, timeout)

    monkeypatch.setattr(WSClient, "read_channel", slow_read)
    code = ("import sys\n"
            "for i in range(64):\n"
            "    sys.stdout.buffer.write(bytes([i]) * 16384); sys.stdout.flush()\n")
    expected = b"".join(bytes([i]) * 16384 for i in range(64))
    # WHEN the command streams 1 MiB; THEN every byte is kept, every time
    for _ in range(3):
        assert executor(cluster).run(python(code), timeout=30).stdout == expected


def test_stdin_echoed_while_sending_does_not_deadlock(cluster):
    # GIVEN a command that writes each chunk back as soon as it reads it: with
    # stdin sent before stdout is read, both directions would fill up and stall
    size = 8 * MIB
    code = ("import sys\n"
            f"left = {size}\n"
            "while left:\n"
            "    chunk = sys.stdin.buffer.read1(min(left, 65536))\n"
            "    if not chunk: sys.exit(9)\n"
            "    sys.stdout.buffer.write(chunk); sys.stdout.flush(); left -= len(chunk)\n")
    data = payload(size, seed=3)
    result = executor(cluster).run(python(code), stdin=data, timeout=60)
    assert result.returncode == 0 and result.stdout == data


def test_timeout_holds_while_stdin_is_blocked(cluster):
    # GIVEN a command that never reads its 16 MiB of stdin: our sends block
    started = time.monotonic()
    with pytest.raises(ExecError, match="timeout"):
        executor(cluster).run(python("import time; time.sleep(30)"), stdin=payload(16 * MIB),
                              timeout=2)
    assert time.monotonic() - started < 3.5


def test_stdin_and_stdout_are_never_logged(cluster, caplog):
    caplog.set_level("DEBUG")
    code = "import sys; sys.stdout.write(sys.stdin.read(17).upper())"
    result = executor(cluster).run(python(code), stdin=b"password=hunter2!", timeout=20)
    assert result.stdout == b"PASSWORD=HUNTER2!"
    assert "hunter2" not in caplog.text.lower()
    assert "exec" in caplog.text  # the debug lines themselves are there


def test_stalled_handshake_times_out_and_the_next_run_works(cluster):
    # GIVEN an API server that accepts the exec request but never upgrades it
    cluster.faults.stall_handshake = True
    ex = executor(cluster)
    started = time.monotonic()
    with pytest.raises(ExecError, match="could not open an exec session"):
        ex.run(python("pass"), timeout=1.5)
    assert time.monotonic() - started < 2.5
    # WHEN the server recovers, while that handshake is still pending
    cluster.faults.stall_handshake = False
    # THEN the same executor works (the stuck handshake did not hijack its client)
    assert ex.run(python("print('ok')"), timeout=20).stdout == b"ok\n"
