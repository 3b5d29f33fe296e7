"""The fake API server: objects a test declares, the REST reads, a server thread.

Only what ``KubernetesExecutor`` and the runbook's kubectl touch is served:
get/list pods, get deployments and statefulsets, a deployment's ``scale``
subresource (with real semantics: at 0 replicas its pods are gone, so the
deployment has no Ready pod; scaled back up, they return Ready), and exec.
With ``tls`` (an ``ssl.SSLContext``) it serves HTTPS, as a real API server does
for in-cluster clients. Objects are plain dicts in the wire
format, so the real client's own (pydantic) deserializer checks them, which
keeps the fake honest. Errors are ``metav1.Status`` bodies with the real
reasons and message shapes, because the executor's error messages are built
from them. aiohttp runs in a daemon thread on 127.0.0.1, port 0 (ephemeral).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import threading
from typing import Any

from aiohttp import web

from tests.k8s_fake.exec_session import ExecRecord, run_exec

V4 = "v4.channel.k8s.io"
V5 = "v5.channel.k8s.io"
_EPOCH = "2026-01-01T00:00:{:02d}Z"  # creationTimestamp of the n-th object


@dataclasses.dataclass
class Faults:
    """Fault modes a test switches on; all off by default."""

    drop_before_status: bool = False  # close the websocket after the output, no status
    drop_abruptly: bool = False  # with drop_before_status: TCP reset, not a close frame
    hang: bool = False  # the exec session never completes
    forbid: bool = False  # exec answers 403 like RBAC would
    stall_handshake: bool = False  # exec never answers the websocket upgrade
    user: str = "system:serviceaccount:airflow:afbackup"  # named in the 403 message


@dataclasses.dataclass
class FakePod:
    """A pod whose containers are all the local machine; ``env`` adds to os.environ."""

    name: str
    namespace: str
    labels: dict[str, str]
    containers: list[str]
    ready: bool = True
    terminating: bool = False
    env: dict[str, str] | None = None
    cwd: str | None = None
    created: str = _EPOCH.format(0)

    def environment(self) -> dict[str, str]:
        return {**os.environ, **(self.env or {})}

    def to_json(self) -> dict[str, Any]:
        metadata = {"name": self.name, "namespace": self.namespace, "labels": self.labels,
                    "uid": f"uid-{self.name}", "creationTimestamp": self.created}
        if self.terminating:
            metadata["deletionTimestamp"] = self.created
        ready = "True" if self.ready else "False"
        statuses = [{"name": c, "ready": self.ready, "restartCount": 0, "image": "fake",
                     "imageID": "fake"} for c in self.containers]
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": metadata,
            "spec": {"containers": [{"name": c, "image": "fake"} for c in self.containers]},
            "status": {"phase": "Running" if self.ready else "Pending",
                       "conditions": [{"type": "Ready", "status": ready}],
                       "containerStatuses": statuses},
        }


class FakeCluster:
    """Declared pods and workloads plus the HTTP server that serves them."""

    def __init__(self, *, protocols: tuple[str, ...] = (V5, V4), token: str | None = None,
                 tls: Any = None) -> None:
        self.protocols = protocols  # subprotocols offered; (V4,) mimics a pre-1.29 server
        self.token = token  # when set, requests must carry "Bearer <token>"
        self.tls = tls  # an ssl.SSLContext: serve HTTPS
        self.faults = Faults()
        self.execs: list[ExecRecord] = []
        self.pods: dict[tuple[str, str], FakePod] = {}
        self.workloads: dict[tuple[str, str, str], dict[str, str]] = {}
        self.replicas: dict[tuple[str, str], int] = {}  # (namespace, deployment) -> spec.replicas
        self.scaled_away: dict[tuple[str, str], list[FakePod]] = {}  # pods a scale to 0 removed
        self.scale_log: list[tuple[str, int]] = []  # (deployment, replicas) of every scale request
        self.port = 0
        self._procs: set = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- declaring objects -------------------------------------------------
    def add_pod(self, name: str, namespace: str = "airflow", labels: dict[str, str] | None = None,
                containers: list[str] | tuple[str, ...] = ("scheduler",), ready: bool = True,
                env: dict[str, str] | None = None, cwd: str | None = None,
                terminating: bool = False) -> FakePod:
        pod = FakePod(name, namespace, dict(labels or {}), list(containers), ready=ready,
                      terminating=terminating, env=env, cwd=cwd,
                      created=_EPOCH.format(len(self.pods) % 60))
        self.pods[(namespace, name)] = pod
        return pod

    def add_deployment(self, name: str, namespace: str, match_labels: dict[str, str], replicas: int = 1) -> None:
        self.workloads[("deployments", namespace, name)] = dict(match_labels)
        self.replicas[(namespace, name)] = replicas

    def scale(self, name: str, namespace: str, replicas: int) -> None:
        """What the deployment controller does: at 0 its pods go away; above 0 they come back Ready."""
        labels = self.workloads[("deployments", namespace, name)]
        self.replicas[(namespace, name)] = replicas
        self.scale_log.append((name, replicas))
        if replicas == 0:
            owned = [key for key, pod in self.pods.items()
                     if key[0] == namespace and all(pod.labels.get(k) == v for k, v in labels.items())]
            self.scaled_away.setdefault((namespace, name), []).extend(self.pods.pop(key) for key in owned)
        else:
            for pod in self.scaled_away.pop((namespace, name), []):
                self.pods[(namespace, pod.name)] = pod

    def add_statefulset(self, name: str, namespace: str, match_labels: dict[str, str]) -> None:
        self.workloads[("statefulsets", namespace, name)] = dict(match_labels)

    # -- what a client needs ---------------------------------------------
    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def api_client(self):
        """A real ``kubernetes.client.ApiClient`` pointed at this server."""
        from kubernetes import client

        configuration = client.Configuration(host=self.url)
        if self.token:
            configuration.api_key = {"BearerToken": self.token}
            configuration.api_key_prefix = {"BearerToken": "Bearer"}
        return client.ApiClient(configuration)

    def write_kubeconfig(self, path: str, *, context: str = "fake",
                         namespace: str = "airflow") -> str:
        """Write a kubeconfig whose ``context`` points here (JSON is valid YAML)."""
        user = {"token": self.token} if self.token else {}
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake-user", "user": user}],
            "contexts": [{"name": context, "context": {"cluster": "fake", "user": "fake-user",
                                                      "namespace": namespace}}],
            "current-context": "",
        }
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(document, handle)
        return path

    # -- lifecycle --------------------------------------------------------
    def start(self) -> FakeCluster:
        started = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, args=(started,), name="k8s-fake",
                                        daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("fake Kubernetes API server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = self._thread = None

    def __enter__(self) -> FakeCluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _serve(self, started: threading.Event) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        runner = web.AppRunner(self._app(), shutdown_timeout=1.0)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0, ssl_context=self.tls).start())
        self.port = runner.addresses[0][1]
        started.set()
        loop.run_forever()
        for proc in list(self._procs):
            if proc.returncode is None:
                proc.kill()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._authenticate])
        pods = "/api/v1/namespaces/{ns}/pods"
        app.router.add_get(pods, self._list_pods)
        app.router.add_get(pods + "/{name}", self._get_pod)
        app.router.add_route("GET", pods + "/{name}/exec", self._exec)
        app.router.add_route("POST", pods + "/{name}/exec", self._exec)
        app.router.add_get("/apis/apps/v1/namespaces/{ns}/{kind}/{name}", self._get_workload)
        app.router.add_patch("/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale", self._scale)
        return app

    # -- handlers ---------------------------------------------------------
    @web.middleware
    async def _authenticate(self, request: web.Request, handler):
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if self.token and (scheme.lower() != "bearer" or token != self.token):  # the scheme is case-insensitive
            return status_response(401, "Unauthorized", "Unauthorized")
        return await handler(request)

    async def _get_pod(self, request: web.Request) -> web.Response:
        pod = self.pods.get((request.match_info["ns"], request.match_info["name"]))
        if pod is None:
            return not_found("pods", request.match_info["name"])
        return web.json_response(pod.to_json())

    async def _list_pods(self, request: web.Request) -> web.Response:
        namespace = request.match_info["ns"]
        selector = request.query.get("labelSelector", "")
        items = [pod.to_json() for (ns, _), pod in self.pods.items()
                 if ns == namespace and selector_matches(selector, pod.labels)]
        return web.json_response({"apiVersion": "v1", "kind": "PodList",
                                  "metadata": {"resourceVersion": "1"}, "items": items})

    async def _get_workload(self, request: web.Request) -> web.Response:
        kind, namespace, name = (request.match_info[k] for k in ("kind", "ns", "name"))
        labels = self.workloads.get((kind, namespace, name))
        if labels is None:
            return not_found(f"{kind}.apps", name)
        return web.json_response(workload_json(kind, namespace, name, labels, self._ready_count(namespace, name),
                                               self.replicas.get((namespace, name))))

    def _ready_count(self, namespace: str, name: str) -> int:
        labels = self.workloads.get(("deployments", namespace, name)) or {}
        return sum(1 for (ns, _), pod in self.pods.items()
                   if ns == namespace and pod.ready and all(pod.labels.get(k) == v for k, v in labels.items()))

    async def _scale(self, request: web.Request) -> web.Response:
        namespace, name = request.match_info["ns"], request.match_info["name"]
        if ("deployments", namespace, name) not in self.workloads:
            return not_found("deployments.apps", name)
        body = await request.json()
        replicas = int(body["spec"]["replicas"])
        self.scale(name, namespace, replicas)
        return web.json_response({"apiVersion": "autoscaling/v1", "kind": "Scale",
                                  "metadata": {"name": name, "namespace": namespace},
                                  "spec": {"replicas": replicas}, "status": {"replicas": replicas}})

    async def _exec(self, request: web.Request) -> web.StreamResponse:
        namespace, name = request.match_info["ns"], request.match_info["name"]
        pod = self.pods.get((namespace, name))
        if pod is None:
            return not_found("pods", name)
        if self.faults.stall_handshake:
            await asyncio.sleep(3600)  # cancelled when the server stops
        if self.faults.forbid:
            return forbidden(self.faults.user, "create", "pods/exec", name, namespace)
        container = request.query.get("container", "")
        command = request.query.getall("command", [])
        if not command:
            return status_response(400, "BadRequest", "you must specify at least 1 command")
        if container not in pod.containers:
            message = f"container {container} is not valid for pod {name}"
            return status_response(400, "BadRequest", message)
        ws = web.WebSocketResponse(protocols=self.protocols, max_msg_size=0, timeout=2.0)
        await ws.prepare(request)
        record = ExecRecord(pod=name, container=container, command=command,
                            protocol=ws.ws_protocol or "",
                            stdin=is_true(request.query.get("stdin")))
        self.execs.append(record)
        await run_exec(request, ws, pod, record, self.faults, self._procs)
        return ws


def workload_json(kind: str, namespace: str, name: str, labels: dict[str, str], ready: int = 0,
                  replicas: int | None = None) -> dict[str, Any]:
    """A Deployment or StatefulSet with the fields the client's models require."""
    template = {"metadata": {"labels": labels},
                "spec": {"containers": [{"name": "main", "image": "fake"}]}}
    spec: dict[str, Any] = {"selector": {"matchLabels": labels}, "template": template}
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment" if kind == "deployments" else "StatefulSet",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
        "status": {"readyReplicas": ready, "replicas": replicas or 0},
    }


def selector_matches(selector: str, labels: dict[str, str]) -> bool:
    """True if ``labels`` match; a subset of the syntax.

    Supported: ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``,
    ``k`` and ``!k``, joined by commas.
    """
    for term in split_selector(selector):
        if " notin " in term or " in " in term:
            key, op, values = term.partition(" notin " if " notin " in term else " in ")
            allowed = {v.strip() for v in values.strip().strip("()").split(",")}
            if (labels.get(key.strip()) in allowed) != (op == " in "):
                return False
        elif "!=" in term:
            key, _, value = term.partition("!=")
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, _, value = term.replace("==", "=").partition("=")
            if labels.get(key.strip()) != value.strip():
                return False
        elif (term.startswith("!")) == (term.lstrip("!") in labels):
            return False
    return True


def split_selector(selector: str) -> list[str]:
    """Split on the commas that are not inside ``( )``."""
    terms, depth, current = [], 0, ""
    for char in selector:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            terms.append(current.strip())
            current = ""
        else:
            current += char
    return [t for t in terms + [current.strip()] if t]


def is_true(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1")


def status_response(code: int, reason: str, message: str,
                    details: dict | None = None) -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}
    if details:
        body["details"] = details
    return web.json_response(body, status=code)


def not_found(resource: str, name: str) -> web.Response:
    kind = resource.split(".")[0]
    return status_response(404, "NotFound", f'{resource} "{name}" not found',
                           {"name": name, "kind": kind})


def forbidden(user: str, verb: str, resource: str, name: str, namespace: str) -> web.Response:
    """The exact shape of an RBAC denial from the API server."""
    message = (f'pods "{name}" is forbidden: User "{user}" cannot {verb} resource "{resource}" '
               f'in API group "" in the namespace "{namespace}"')
    return status_response(403, "Forbidden", message, {"name": name, "kind": "pods"})
