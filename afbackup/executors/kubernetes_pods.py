"""Which pod a Kubernetes exec goes to, and what the API's refusals mean.

A target (``deployment/NAME``, ``statefulset/NAME``, ``pod/NAME`` or
``selector:k=v,…``) is resolved to ONE Ready pod on every run: pods are
replaced by rollouts, so a name remembered from the last run may be gone. A
workload is followed through its ``spec.selector`` (the labels its pods
carry), and of the Ready, non-terminating pods the newest wins (during a
rollout it runs the current image). Everything that can go wrong here -- no
such object, no Ready pod, no such container, RBAC -- is found before any
command runs, so it is a ``PreflightError`` (exit 4) whose message says what to
fix. Split from ``kubernetes.py`` to keep the exec session readable.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from afbackup.errors import AfbackupError, ConfigError, PreflightError
from afbackup.executors.base import ExecError

API_TIMEOUT = 30.0  # seconds, upper bound for each REST call of the lookup
_KINDS = {"deployment/": "deployment", "statefulset/": "statefulset", "pod/": "pod",
          "selector:": "selector"}
_TARGET_HINT = "use deployment/NAME, statefulset/NAME, pod/NAME or selector:KEY=VALUE[,…]"
_RBAC = re.compile(r'User "(?P<user>[^"]*)" cannot (?P<verb>\S+) resource "(?P<resource>[^"]+)"')


def parse_target(target: str) -> tuple[str, str]:
    """Split a target into (kind, name or label selector); ConfigError if malformed."""
    for prefix, kind in _KINDS.items():
        rest = target[len(prefix):].strip() if target.startswith(prefix) else ""
        if rest:
            return kind, rest
    raise ConfigError(f"kubernetes target {target!r} is not understood", hint=_TARGET_HINT)


class PodLocator:
    """Finds the Ready pod of a target and checks that it has the container."""

    def __init__(self, api_client: Any, *, namespace: str, target: str, container: str) -> None:
        from kubernetes import client

        self.kind, self.ref = parse_target(target)
        self.namespace, self.target, self.container = namespace, target, container
        self.host = getattr(api_client.configuration, "host", "?")
        self.core = client.CoreV1Api(api_client)
        self._apps = client.AppsV1Api(api_client)

    def ready_pod(self, *, timeout: float = API_TIMEOUT) -> Any:
        """The Ready pod the target names (a V1Pod); PreflightError if there is none."""
        if self.kind == "pod":
            pod = self._call(self.core.read_namespaced_pod, ("get", "pods"), f"pod {self.ref}",
                             self.ref, self.namespace, _request_timeout=timeout)
            if not is_ready(pod):
                raise PreflightError(
                    f"pod {self.namespace}/{self.ref} is not Ready ({pod_state(pod)})",
                    hint="wait until it is Ready, or point kubernetes.target at a Ready pod")
        else:
            selector = self._selector(timeout)
            pods = self._call(self.core.list_namespaced_pod, ("list", "pods"), "pods",
                              self.namespace, label_selector=selector,
                              _request_timeout=timeout).items or []
            pod = pick_ready(pods)
            if pod is None:
                raise PreflightError(
                    f"{self.target} has no Ready pod in namespace {self.namespace} "
                    f"({describe_pods(pods)}; selector {selector})",
                    hint=f"check `kubectl get pods -n {self.namespace} -l '{selector}'`")
        self._check_container(pod)
        return pod

    def _selector(self, timeout: float) -> str:
        """The label selector of the target: given, or read from the workload's spec."""
        if self.kind == "selector":
            return self.ref
        read: Callable[..., Any]
        if self.kind == "deployment":
            read, resource = self._apps.read_namespaced_deployment, "deployments"
        else:
            read, resource = self._apps.read_namespaced_stateful_set, "statefulsets"
        workload = self._call(read, ("get", resource), self.target, self.ref, self.namespace,
                              _request_timeout=timeout)
        selector = label_selector(workload.spec.selector)
        if not selector:
            raise PreflightError(f"{self.target} has an empty pod selector",
                                 hint="point kubernetes.target at a pod or a label selector")
        return selector

    def _check_container(self, pod: Any) -> None:
        names = [c.name for c in pod.spec.containers or []]
        if self.container not in names:
            raise PreflightError(
                f"container {self.container!r} is not in pod {self.namespace}/"
                f"{pod.metadata.name} (it has: {', '.join(names) or 'none'})",
                hint="set kubernetes.container to one of them")

    def _call(self, method: Any, access: tuple[str, str], what: str, *args: Any, **kwargs: Any) -> Any:
        """One REST call, with API failures translated into our error tree."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return method(*args, **kwargs)
        except ApiException as exc:
            raise api_error(exc.status, status_message(exc.body) or str(exc.reason), access,
                            what, self.namespace) from exc
        except (HTTPError, OSError) as exc:
            raise self.unreachable(exc) from exc

    def unreachable(self, exc: BaseException) -> ExecError:
        return ExecError(f"cannot reach the Kubernetes API at {self.host}: {exc}",
                         hint="check the network path and kubernetes.context")


def api_error(code: int, message: str, access: tuple[str, str], what: str,
              namespace: str) -> AfbackupError:
    """An API refusal as a one-line error that says what to fix.

    ``access`` is the (verb, resource) we needed; for a 403 the API server's own
    message names what it checked, which is preferred (older servers checked
    ``get`` on pods/exec for websocket exec, newer ones ``create``).
    """
    if code == 403:
        match = _RBAC.search(message)
        who, verb, resource = (match.group("user", "verb", "resource") if match
                               else ("the service account", *access))
        verbs = "create and get" if resource == "pods/exec" else verb  # websocket exec is checked as either
        return PreflightError(f"RBAC: {who} cannot {verb} {resource} in namespace {namespace}",
                              hint=f"grant {verbs} on {resource} (Role + RoleBinding, see deploy/kubernetes/role.yaml)")
    if code == 401:
        return PreflightError("the Kubernetes API rejected the credentials (401 Unauthorized)",
                              hint="refresh the token or check kubernetes.context")
    if code == 404:
        return PreflightError(f"{what} not found in namespace {namespace}",
                              hint="check kubernetes.target and kubernetes.namespace")
    return ExecError(f"Kubernetes API refused to {access[0]} {access[1]} for {what}: "
                     f"HTTP {code} {message}".rstrip(), hint="check the API server")


def status_message(body: Any) -> str:
    """The ``message`` of a metav1.Status response body, or ""."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        return str(json.loads(body or "").get("message") or "")
    except (ValueError, AttributeError):
        return ""


def is_ready(pod: Any) -> bool:
    """Running, condition Ready=True, and not being deleted."""
    status = pod.status
    if pod.metadata.deletion_timestamp or status is None or status.phase != "Running":
        return False
    return any(c.type == "Ready" and c.status == "True" for c in status.conditions or [])


def pod_state(pod: Any) -> str:
    if pod.metadata.deletion_timestamp:
        return "Terminating"
    phase = (pod.status.phase if pod.status else None) or "Unknown"
    return f"{phase}, not Ready" if phase == "Running" else phase


def pick_ready(pods: list[Any]) -> Any:
    """The newest Ready pod, or None."""
    ready = [pod for pod in pods if is_ready(pod)]
    ready.sort(key=lambda pod: str(pod.metadata.creation_timestamp or ""), reverse=True)
    return ready[0] if ready else None


def describe_pods(pods: list[Any]) -> str:
    if not pods:
        return "no pods match"
    shown = ", ".join(f"{p.metadata.name}: {pod_state(p)}" for p in pods[:5])
    return shown + (f", … {len(pods) - 5} more" if len(pods) > 5 else "")


def label_selector(selector: Any) -> str:
    """A V1LabelSelector (matchLabels and matchExpressions) as a selector string."""
    if selector is None:
        return ""
    terms = [f"{k}={v}" for k, v in sorted((selector.match_labels or {}).items())]
    for expr in selector.match_expressions or []:
        values = ",".join(expr.values or [])
        terms.append({"In": f"{expr.key} in ({values})", "NotIn": f"{expr.key} notin ({values})",
                      "Exists": expr.key, "DoesNotExist": f"!{expr.key}"}[expr.operator])
    return ",".join(terms)
