"""Run an Airflow command inside the scheduler pod, through the Kubernetes exec API.

Why this is more than one call to ``kubernetes.stream.stream()``: the client's
convenient paths lose data or hide failures (RELIABILITY.md section H):
- the preload path returns ``read_all()``, stdout and stderr merged, and no
  exit code; without ``binary=True`` every frame is UTF-8 decoded with
  replacement, which corrupts binary output;
- ``run_forever``/``update(timeout=...)`` return silently when time is up, and
  ``returncode`` raises TypeError when no status arrived and ValueError when the
  status is a Failure without an exit code (a missing executable);
- ``read_channel()`` of an empty channel runs ``update()`` itself, so reading
  stderr can pull in more stdout and the status behind our back;
- a refused handshake (403, 404) becomes ``ApiException(status=0)`` with the
  HTTP status only in its text, and the handshake has no timeout.
So the pod is found first (``kubernetes_pods``: problems there are preflight
errors, exit 4), the session is opened in a helper thread bounded by the
deadline, stdin is fed from a second thread (a blocking send must never stop
us reading stdout, or both ends stall on full buffers), and channels 1
(stdout), 2 (stderr) and 3 (status) are read separately, here.

Stdin is never half-closed, even when v5 was negotiated: v4 cannot do it, and
one behaviour everywhere keeps callers honest (they send length-prefixed input
and the remote side reads exactly that much). Empty stdin is not attached at
all, so a command that reads it sees EOF instead of hanging. Closing the
session does not stop the remote process (the API has no kill): after a
timeout it may live on in the pod. Neither stdin nor stdout is ever logged.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

from afbackup.errors import AfbackupError, ConfigError
from afbackup.executors.base import (
    DEFAULT_MAX_STDOUT,
    STDERR_TAIL,
    CommandNotFound,
    ExecError,
    ExecResult,
)
from afbackup.executors.kubernetes_pods import API_TIMEOUT, PodLocator, api_error, status_message

logger = logging.getLogger(__name__)

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
STDIN_CHUNK = 32 * 1024  # bytes of stdin per websocket frame (kubectl's buffer size)
STDOUT_CH, STDERR_CH, STATUS_CH = 1, 2, 3
_NOT_FOUND = ("executable file not found", "no such file or directory")


def load_api_client(*, context: str = "", kubeconfig: str = "", service_account_dir: str = SERVICE_ACCOUNT_DIR) -> Any:
    """An ApiClient from the pod's service account, or from a kubeconfig + context.

    In-cluster credentials are used only when nothing points elsewhere: we run
    in a pod (KUBERNETES_SERVICE_HOST is set) and neither kubeconfig nor context
    is given. They are read by the client's own in-cluster loader from
    ``service_account_dir`` (``token`` and ``ca.crt``; the token is re-read when
    it rotates). A kubeconfig is never written back (``persist_config=False``).
    """
    from kubernetes import client, config
    from kubernetes.config.incluster_config import InClusterConfigLoader

    try:
        if os.environ.get("KUBERNETES_SERVICE_HOST") and not kubeconfig and not context:
            configuration = client.Configuration()
            InClusterConfigLoader(token_filename=os.path.join(service_account_dir, "token"),
                                  cert_filename=os.path.join(service_account_dir, "ca.crt")
                                  ).load_and_set(client_configuration=configuration)
            return client.ApiClient(configuration)
        return config.new_client_from_config(
            config_file=kubeconfig or None, context=context or None, persist_config=False
        )
    except (config.ConfigException, OSError) as exc:
        if os.environ.get("KUBERNETES_SERVICE_HOST") and not kubeconfig and not context:
            raise ConfigError(f"cannot load the in-cluster service account from {service_account_dir}: {exc}",
                              hint="check kubernetes.service_account_dir and automountServiceAccountToken") from exc
        where = kubeconfig or "the default kubeconfig"
        raise ConfigError(
            f"cannot load Kubernetes credentials from {where}: {exc}",
            hint="check kubernetes.kubeconfig and kubernetes.context (kubectl config get-contexts)",
        ) from exc


class KubernetesExecutor:
    """Runs an argv in one container of a Ready pod, chosen afresh on every run."""

    name = "kubernetes"

    def __init__(self, *, namespace: str, target: str, container: str, context: str = "",
                 kubeconfig: str = "", service_account_dir: str = SERVICE_ACCOUNT_DIR,
                 api_client: Any = None) -> None:
        if not namespace or not container:
            raise ConfigError("the kubernetes executor needs a namespace and a container",
                              hint="set kubernetes.namespace and kubernetes.container")
        self.namespace, self.target, self.container, self.context = (
            namespace, target, container, context)
        self.api_client = api_client or load_api_client(context=context, kubeconfig=kubeconfig,
                                                        service_account_dir=service_account_dir)
        self.pods = PodLocator(self.api_client, namespace=namespace, target=target,
                               container=container)

    def describe(self) -> str:
        via = f" (context {self.context})" if self.context else ""
        return (f"kubernetes exec into container {self.container} of {self.target} "
                f"in namespace {self.namespace}{via}")

    def resolve_pod(self, *, timeout: float = API_TIMEOUT) -> Any:
        """The Ready pod (a V1Pod) the next run would use; PreflightError if none."""
        return self.pods.ready_pod(timeout=timeout)

    def run(self, argv: Sequence[str], *, stdin: bytes = b"", timeout: float,
            max_stdout: int = DEFAULT_MAX_STDOUT) -> ExecResult:
        """Run ``argv`` in the pod; ``timeout`` (seconds) bounds it all, pod lookup included."""
        argv = [str(arg) for arg in argv]
        if not argv:
            raise ExecError("no command given to the kubernetes executor")
        deadline = time.monotonic() + timeout
        pod = self.resolve_pod(timeout=min(timeout, API_TIMEOUT)).metadata.name
        logger.debug("exec %s in %s/%s container %s: %d bytes of stdin", argv[0],
                     self.namespace, pod, self.container, len(stdin))
        session = _Session(self._connect(pod, argv, bool(stdin), deadline), max_stdout)
        try:
            session.feed(stdin)
            session.wait(deadline)
        finally:
            session.close()
        result = _result(session, argv, f"{self.namespace}/{pod}", self.container, timeout)
        logger.debug("exec %s in %s/%s: exit %d, %d bytes of stdout", argv[0], self.namespace,
                     pod, result.returncode, len(result.stdout))
        return result

    def _connect(self, pod: str, argv: list[str], with_stdin: bool, deadline: float) -> Any:
        """Open the exec websocket; the handshake has no timeout of its own, so bound it."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        args = (self.api_client.configuration, pod, self.namespace, self.container, argv,
                with_stdin)
        threading.Thread(target=_open_into, args=(future, *args), daemon=True,
                         name="afbackup-k8s-connect").start()
        try:
            ws = future.result(timeout=max(0.0, deadline - time.monotonic()))
        except concurrent.futures.TimeoutError:
            future.add_done_callback(_close_late)
            raise ExecError(f"could not open an exec session to {self.namespace}/{pod} "
                            "before the timeout", hint="check the API server's health") from None
        except Exception as exc:  # the client wraps everything in ApiException
            raise self._refused(exc, pod) from exc
        with contextlib.suppress(AttributeError, OSError):
            ws.sock.settimeout(max(0.001, deadline - time.monotonic()))  # no blocking past it
        return ws

    def _refused(self, exc: Exception, pod: str) -> AfbackupError:
        """Translate a failed handshake; the HTTP status hides in ``__context__``."""
        cause = exc.__context__ or exc
        code = getattr(cause, "status_code", None) or getattr(exc, "status", None) or 0
        message = status_message(getattr(cause, "resp_body", None)) or str(cause)
        if code:
            return api_error(code, message, ("create", "pods/exec"), f"pod {pod}", self.namespace)
        return self.pods.unreachable(cause)


def _open_into(future: concurrent.futures.Future, configuration: Any, pod: str,
               namespace: str, container: str, argv: list[str], with_stdin: bool) -> None:
    """Thread body: call ``stream()`` and hand the WSClient (or the error) over.

    ``stream()`` swaps ``call_api`` on the ApiClient it is given for the length
    of the handshake, so it gets a client of its own: a handshake we gave up on
    must not reroute the next run's REST calls into a websocket.
    """
    from kubernetes import client
    from kubernetes.stream import stream

    core = client.CoreV1Api(client.ApiClient(configuration))
    try:
        future.set_result(stream(
            core.connect_get_namespaced_pod_exec, pod, namespace, command=argv,
            container=container, stdin=with_stdin, stdout=True, stderr=True, tty=False,
            _preload_content=False, binary=True))
    except BaseException as exc:  # re-raised in the caller's thread
        future.set_exception(exc)


def _close_late(future: concurrent.futures.Future) -> None:
    """A session that opened after we gave up on it: close it at once."""
    if future.exception() is None:
        _shutdown(future.result())


def _shutdown(ws: Any) -> None:
    """Close the socket now: no close handshake, and wake a writer blocked in send."""
    websock = getattr(ws, "sock", None)
    raw = getattr(websock, "sock", None)
    if raw is not None:
        with contextlib.suppress(OSError):
            raw.shutdown(socket.SHUT_RDWR)
    if websock is not None:
        websock.shutdown()
    ws.close()


class _Session:
    """One exec websocket: stdin fed from a thread, channels 1-3 collected here."""

    def __init__(self, ws: Any, max_stdout: int) -> None:
        self.ws = ws
        self.max_stdout = max_stdout
        self.stdout = bytearray()
        self.stderr = b""
        self.status = b""
        self.lost = ""  # why the connection ended without a close frame, if it did
        self.timed_out = False
        self._feeder: threading.Thread | None = None

    def feed(self, data: bytes) -> None:
        if data:
            self._feeder = threading.Thread(target=self._write_stdin, args=(data,),
                                            daemon=True, name="afbackup-k8s-stdin")
            self._feeder.start()

    def _write_stdin(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            for start in range(0, len(view), STDIN_CHUNK):
                self.ws.write_stdin(bytes(view[start:start + STDIN_CHUNK]))
        except Exception as exc:  # the session ended; its status decides
            logger.debug("exec stdin stopped early: %s", type(exc).__name__)

    def wait(self, deadline: float) -> None:
        """Collect output until the exit status arrives, the connection ends, or time is up."""
        while parse_status(self.status) is None and self.ws.is_open():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._pump(remaining)
        # read_channel() runs update() itself when a channel is empty, so reading
        # stderr or the status can pull in stdout frames after our drain: one
        # more drain collects them (after the status only the close can come).
        self._pump(None)
        # Past the deadline without a status: either our loop ran out of time or
        # the socket timeout (set to the deadline) broke a blocked read.
        self.timed_out = parse_status(self.status) is None and time.monotonic() >= deadline

    def _pump(self, wait: float | None) -> None:
        """Receive for up to ``wait`` seconds (None: only drain), then drain the channels."""
        from websocket import WebSocketException

        try:
            if wait is not None:
                self.ws.update(timeout=wait)  # returns silently on timeout: the loop checks
            self._drain()
        except (WebSocketException, OSError) as exc:
            self.lost = f"{type(exc).__name__}: {exc}"
            _shutdown(self.ws)  # now is_open() is False and reads cannot touch the socket
            self._drain()

    def _drain(self) -> None:
        out = self.ws.read_channel(STDOUT_CH)
        if len(self.stdout) + len(out) > self.max_stdout:
            raise ExecError(f"command output exceeded max_stdout ({self.max_stdout} bytes)",
                            hint="the command printed more than expected; nothing was kept")
        self.stdout += out
        self.stderr = (self.stderr + self.ws.read_channel(STDERR_CH))[-STDERR_TAIL:]
        self.status += self.ws.read_channel(STATUS_CH)

    def close(self) -> None:
        _shutdown(self.ws)
        if self._feeder is not None:
            self._feeder.join(timeout=2.0)


def _result(session: _Session, argv: list[str], pod: str, container: str,
            timeout: float) -> ExecResult:
    """Turn what the session collected into an ExecResult, or the right error."""
    where = f"{argv[0]} in container {container} of pod {pod}"
    status = parse_status(session.status)
    if status is None:
        raise _no_status(session, where, timeout)
    code = exit_code(status)
    message = str(status.get("message") or status.get("reason") or "")
    if code is None:  # a Failure without an exit code: the command never ran
        if _says_missing(message):
            at = message.rfind('exec: "')  # the runtime's words, without its preamble
            said = message[at:].removesuffix(": unknown") if at >= 0 else message
            raise CommandNotFound(f"{argv[0]} is not installed in container {container} of "
                                  f"pod {pod} ({said})", hint="check the image, or give "
                                  "the full path of the program")
        raise ExecError(f"exec of {where} failed: {message}",
                        hint="check the pod's events and the kubelet")
    result = ExecResult(code, bytes(session.stdout), session.stderr)
    said = result.stderr_tail() + result.stdout[-400:].decode("utf-8", "replace")
    if code in (126, 127) and _says_missing(said):
        raise CommandNotFound(f"{argv[0]} is not installed in container {container} of pod "
                              f"{pod} (exit {code}: {result.stderr_tail(200) or said[-200:]})",
                              hint="check the image, or give the full path of the program")
    return result


def _no_status(session: _Session, where: str, timeout: float) -> ExecError:
    if session.timed_out:
        return ExecError(f"{where} did not finish within the {timeout:g} s timeout; the exec "
                         "session was closed", hint="raise the timeout, or check the pod (the "
                         "command may still be running there)")
    if session.status:
        return ExecError(f"unreadable exit status from the exec channel: {where}",
                         hint="report this with the Kubernetes version")
    tail = session.stderr.decode("utf-8", "replace").strip()[-300:]
    detail = f" (stderr: {tail})" if tail else ""
    lost = f"; {session.lost}" if session.lost else ""
    return ExecError(f"exec channel closed before the exit status arrived: {where}{lost}"
                     f"{detail}", hint="the connection to the API server or the pod was lost "
                     "(or the pod was killed); re-run, and check the pod's events")


def _says_missing(text: str) -> bool:
    lowered = text.lower()
    return any(marker in lowered for marker in _NOT_FOUND)


def parse_status(raw: bytes) -> dict[str, Any] | None:
    """The metav1.Status JSON of channel 3, or None while it is missing or incomplete."""
    if not raw:
        return None
    try:
        status = json.loads(raw)
    except ValueError:
        return None
    return status if isinstance(status, dict) else None


def exit_code(status: dict[str, Any]) -> int | None:
    """Success -> 0, NonZeroExitCode -> its ExitCode cause, anything else -> None."""
    if status.get("status") == "Success":
        return 0
    if status.get("reason") != "NonZeroExitCode":
        return None
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            with contextlib.suppress(TypeError, ValueError):
                return int(cause.get("message"))
    return None


