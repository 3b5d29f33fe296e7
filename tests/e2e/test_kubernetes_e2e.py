"""Backup, verify and restore through the Kubernetes executor, end to end.

The real ``kubernetes`` client in the afbackup process talks to our API server
(tests/k8s_fake) over a real socket with a real kubeconfig; the "scheduler
pod" runs the agent with the real Airflow 2.x / 3.x CLI and that
deployment's environment. Fault modes: a dropped exec channel, a hung exec,
no Ready pod, RBAC refusing pods/exec.
"""

from __future__ import annotations

import json

import pytest

from tests.harness.airflow_env import AirflowInstance
from tests.k8s_fake import FakeCluster

# slow: every test runs a backup, restore or drill through the CLI with Airflow
pytestmark = [pytest.mark.airflow, pytest.mark.slow]

NS = "airflow"
LABELS = {"component": "scheduler", "release": "airflow"}


@pytest.fixture
def cluster():
    with FakeCluster() as fake:
        fake.add_deployment("airflow-scheduler", NS, LABELS)
        yield fake


def _k8s_config(env, cluster, db, airflow: AirflowInstance, tmp_path, **airflow_keys):
    """A config whose executor execs the agent in the fake scheduler pod of ``airflow``."""
    kubeconfig = cluster.write_kubeconfig(str(tmp_path / "kubeconfig"), context="laptop")
    cfg = env.config(db)
    cfg["airflow"] = {"executor": "kubernetes", "python": [airflow.python], "timeout": "120s",
                      "kubernetes": {"namespace": NS, "target": "deployment/airflow-scheduler",
                                     "container": "scheduler", "context": "laptop", "kubeconfig": kubeconfig},
                      **airflow_keys}
    return cfg


def _pod(cluster, airflow: AirflowInstance, name="airflow-scheduler-0", **kwargs):
    return cluster.add_pod(name, NS, LABELS, containers=["scheduler", "git-sync"], env=airflow.env({}), **kwargs)


def test_backup_verify_restore_through_the_kubernetes_api(env, cluster, airflow_major, tmp_path):
    # GIVEN an Airflow deployment whose scheduler runs "in a pod"
    airflow, db = env.airflow(airflow_major)
    _pod(cluster, airflow)
    cfg = _k8s_config(env, cluster, db, airflow, tmp_path)
    path = env.write_config(cfg)
    # WHEN it is backed up, verified and restored through the Kubernetes executor
    backup = env.afbackup(path, "backup", "--json")
    assert backup.returncode == 0, backup.stderr
    manifest = json.loads(backup.stdout)["manifest"]
    assert manifest["airflow"]["executor"] == "kubernetes" and manifest["exports"]["connections"] == 3
    verify = env.afbackup(path, "verify")
    assert verify.returncode == 0, verify.stderr
    target_db = env.unique("k8s_restored_")
    restore = env.afbackup(path, "restore", "--target-dsn", env.pg.dsn(target_db), "--json")
    assert restore.returncode == 0, restore.stderr
    # THEN the exec'd agent did the Airflow work (exports at backup, the target's version at restore) in the pod
    commands = [" ".join(record.command[:2]) for record in cluster.execs]
    assert len(commands) >= 2 and all(c.startswith(airflow.python) for c in commands)
    # AND the restored secrets were checked (the target holds the source key, so directly, without Airflow)
    fernet = json.loads(restore.stdout)["fernet"]
    assert fernet["reencrypted"] is False and fernet["checked"]["connections"] == 3
    assert all(record.pod == "airflow-scheduler-0" and record.container == "scheduler" for record in cluster.execs)
    # AND the restored deployment reads the same connections and variables
    restored = AirflowInstance(airflow.version, env.workdir / f"home-{target_db}", env.pg.sqlalchemy_url(target_db),
                               airflow.fernet_key)
    assert restored.probe() == airflow.probe()


@pytest.mark.parametrize("fault,code,words", [
    ("drop_before_status", 5, ["export: ", "exit status"]),
    ("hang", 5, ["export: ", "did not finish within"]),
    ("forbid", 4, ["RBAC", "pods/exec"]),
    ("not_ready", 4, ["Ready"]),
])
def test_exec_faults_give_clear_errors_and_commit_nothing(env, cluster, tmp_path, fault, code, words):
    airflow, db = env.airflow("3")
    _pod(cluster, airflow, ready=fault != "not_ready")
    if fault != "not_ready":
        setattr(cluster.faults, fault, True)
    # only the hang waits for the timeout; the others fail on their own, however slow the machine
    cfg = _k8s_config(env, cluster, db, airflow, tmp_path, timeout="4s" if fault == "hang" else "120s")
    path = env.write_config(cfg)
    done = env.afbackup(path, "backup")
    assert done.returncode == code, done.stderr
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and all(word in errors[0] for word in words), done.stderr
    assert json.loads(env.afbackup(path, "list", "--json").stdout) == []
