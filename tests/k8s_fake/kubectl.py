"""A kubectl for the fake API server: exactly the calls the incident runbook makes, over real HTTP.

Run as ``python kubectl.py ARGS…`` with ``FAKE_K8S_URL`` (the fake's URL) set; every call is
appended to ``FAKE_KUBECTL_LOG`` when set. Unlike a canned stub, ``scale`` reaches the fake's
deployment controller, so the scheduler's pods really go away at 0 replicas (and the afbackup
executor then finds no Ready pod), and ``rollout status`` waits for them to be Ready again.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.parse
import urllib.request


def _call(method: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/merge-patch+json"} if body is not None else {}
    request = urllib.request.Request(os.environ["FAKE_K8S_URL"] + path, data=data, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _deployment(ns: str, name: str) -> dict:
    return _call("GET", f"/apis/apps/v1/namespaces/{ns}/deployments/{name.removeprefix('deployment/')}")


def main(argv: list[str]) -> int:
    if os.environ.get("FAKE_KUBECTL_LOG"):
        with open(os.environ["FAKE_KUBECTL_LOG"], "a", encoding="utf-8") as log:
            log.write(" ".join(argv) + "\n")
    if argv[:1] != ["-n"]:
        print(f"fake kubectl: expected -n NS first: {argv}", file=sys.stderr)
        return 1
    ns, args = argv[1], argv[2:]
    if args[:2] == ["get", "deployment"] and args[3] == "-o":
        doc = _deployment(ns, args[2])
        if args[4] == "jsonpath={.spec.replicas}":
            print(doc["spec"].get("replicas", ""), end="")
        else:  # the go-template over .spec.selector.matchLabels
            print("".join(f"{k}={v}," for k, v in sorted(doc["spec"]["selector"]["matchLabels"].items())), end="")
        return 0
    if args[:1] == ["scale"]:
        replicas = int(args[2].removeprefix("--replicas="))
        name = args[1].removeprefix("deployment/")
        _call("PATCH", f"/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale", {"spec": {"replicas": replicas}})
        print(f"deployment.apps/{name} scaled")
        return 0
    if args[:2] == ["get", "pods"]:
        selector = args[args.index("-l") + 1]
        pods = _call("GET", f"/api/v1/namespaces/{ns}/pods?labelSelector={urllib.parse.quote(selector)}")
        for pod in pods["items"]:
            print(f"pod/{pod['metadata']['name']}")
        return 0
    if args[:2] == ["rollout", "status"]:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            doc = _deployment(ns, args[2])
            if doc["status"].get("readyReplicas", 0) >= doc["spec"].get("replicas", 1):
                print(f'deployment "{args[2].removeprefix("deployment/")}" successfully rolled out')
                return 0
            time.sleep(0.2)
        print("error: timed out waiting for the condition", file=sys.stderr)
        return 1
    print(f"fake kubectl: unexpected call: {argv}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
