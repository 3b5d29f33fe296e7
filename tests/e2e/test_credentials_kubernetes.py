"""Kubernetes credentials, end to end through the fake API server, the API token a canary.

Rows:
- a kubeconfig (found through KUBECONFIG, as kubectl finds it) with several contexts, the one to use named by
  ``[airflow.kubernetes] context`` (its current-context points at a dead server);
- in-cluster: a service account token and ca.crt in ``[airflow.kubernetes] service_account_dir``,
  KUBERNETES_SERVICE_HOST/PORT, and the API server on HTTPS with a CA made for this test.
Each row backs up through the exec channel (the agent runs "in the scheduler pod") and runs ``check``;
the fake refuses any request without the token.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path

import pytest
import tomli_w

from tests.harness.canary import files_containing, run_watched
from tests.k8s_fake import FakeCluster
from tests.k8s_fake.tls import make_tls

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

NS = "airflow"
LABELS = {"component": "scheduler", "release": "airflow"}


def _kubeconfig(path: Path, url: str, token: str) -> None:
    user = {"name": "ops", "user": {"token": token}}
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "dead",
        "clusters": [{"name": "fake", "cluster": {"server": url}},
                     {"name": "dead", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [user],
        "contexts": [{"name": "dead", "context": {"cluster": "dead", "user": "ops"}},
                     {"name": "prod-airflow", "context": {"cluster": "fake", "user": "ops", "namespace": NS}}],
    }))


@pytest.mark.parametrize("row", ["kubeconfig_context", "in_cluster"])
def test_kubernetes_credentials_for_backup_and_check(env, tmp_path, row):
    # GIVEN a scheduler pod of an Airflow 3 deployment behind an API server that wants a bearer token
    airflow, db = env.airflow("3")
    token = f"canary-k8s-{secrets.token_hex(16)}"
    vault = tmp_path / "secrets"
    vault.mkdir(mode=0o700)
    tls, ca = make_tls(vault / "tls") if row == "in_cluster" else (None, None)
    with FakeCluster(token=token, tls=tls) as cluster:
        cluster.add_deployment("airflow-scheduler", NS, LABELS)
        cluster.add_pod("airflow-scheduler-0", NS, LABELS, containers=["scheduler"], env=airflow.env({}))
        kubernetes = {"namespace": NS, "target": "deployment/airflow-scheduler", "container": "scheduler"}
        extra: dict[str, str] = {}
        if row == "kubeconfig_context":
            _kubeconfig(vault / "kubeconfig", cluster.url, token)
            kubernetes["context"] = "prod-airflow"
            extra["KUBECONFIG"] = str(vault / "kubeconfig")
        else:
            account = vault / "serviceaccount"
            account.mkdir()
            (account / "token").write_text(token)
            (account / "ca.crt").write_bytes(ca.read_bytes())
            (account / "namespace").write_text(NS)
            kubernetes["service_account_dir"] = str(account)
            extra.update({"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(cluster.port)})
        cfg = env.config(db)
        cfg["airflow"] = {"executor": "kubernetes", "python": [airflow.python], "timeout": "120s",
                          "kubernetes": kubernetes}
        config = tmp_path / "afbackup.toml"
        config.write_text(tomli_w.dumps(cfg))
        run_env = env.afbackup_env(None, extra)

        # WHEN a backup runs its exports through the exec channel, and check resolves the exec target
        for args in (("backup", "--json"), ("check", "--json")):
            watched = run_watched([sys.executable, "-m", "afbackup", "-v", "--config", str(config), *args],
                                  env=run_env, cwd=tmp_path)
            # THEN both pass, and the token is in no log, argv or file
            assert watched.done.returncode == 0, f"{args[0]} ({row}): {watched.done.stderr[-3000:]}"
            assert watched.leaks(token) == [], f"{args[0]} ({row}) leaked the token"
            if args[0] == "backup":
                assert json.loads(watched.done.stdout)["manifest"]["exports"]["connections"] == 3
        assert cluster.execs and all(record.pod == "airflow-scheduler-0" for record in cluster.execs)
    assert files_containing(token, [tmp_path, Path(os.environ["HOME"])], exclude=[vault]) == []
