"""The incident runbook on Kubernetes, against the fake API server with real scale-down semantics.

afbackup's exec target is the scheduler Deployment (the documented default), which the runbook scales to
0: at 0 replicas the fake removes its pods, so the deployment has no Ready pod, as in a cluster. The runbook's
kubectl is tests/k8s_fake/kubectl.py, which scales through the same fake API server the executor reads.
Before the fix the runbook scaled the scheduler down and ``afbackup restore`` then failed with exit 4 after
downloading the whole archive.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest
import tomli_w

from tests.e2e.test_restore_drills import INCIDENT, database_exists, run_script
from tests.harness.airflow_env import AirflowInstance
from tests.k8s_fake import FakeCluster

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

NS = "airflow"
SCHEDULER = {"component": "scheduler", "release": "airflow"}
WEBSERVER = {"component": "webserver", "release": "airflow"}
KUBECTL = Path(__file__).resolve().parents[1] / "k8s_fake" / "kubectl.py"


@pytest.fixture(scope="module")
def deployment(env, tmp_path_factory):
    """A backed-up Airflow 3 deployment "in a cluster": scheduler and webserver pods, the exec target the scheduler."""
    tmp_path = tmp_path_factory.mktemp("incident-k8s")
    airflow, db = env.airflow("3")
    with FakeCluster() as cluster:
        cluster.add_deployment("airflow-scheduler", NS, SCHEDULER, replicas=1)
        cluster.add_deployment("airflow-webserver", NS, WEBSERVER, replicas=1)
        cluster.add_pod("airflow-scheduler-0", NS, SCHEDULER, containers=["scheduler"], env=airflow.env({}))
        cluster.add_pod("airflow-webserver-0", NS, WEBSERVER, containers=["webserver"], env=airflow.env({}))
        cfg = env.config(db)
        cfg["airflow"] = {"executor": "kubernetes", "python": [airflow.python], "timeout": "120s",
                          "kubernetes": {"namespace": NS, "target": "deployment/airflow-scheduler",
                                         "container": "scheduler", "context": "ops",
                                         "kubeconfig": cluster.write_kubeconfig(str(tmp_path / "kubeconfig"),
                                                                                context="ops")}}
        config = tmp_path / "afbackup.toml"
        config.write_text(tomli_w.dumps(cfg))
        done = env.afbackup(config, "backup")
        assert done.returncode == 0, done.stderr
        yield cluster, airflow, config


def _runbook(env, cluster, airflow: AirflowInstance, config: Path, target_db: str, tmp_path, *args: str):
    kubectl = {"KUBECTL": f"{shlex.quote(sys.executable)} {shlex.quote(str(KUBECTL))}", "FAKE_K8S_URL": cluster.url,
               "K8S_WAIT_TIMEOUT": "30"}
    return run_script(env, INCIDENT, "--yes", "--target-dsn", env.pg.dsn(target_db), "--k8s-namespace", NS,
                      "--k8s-scheduler", "airflow-scheduler", *args, airflow=airflow, config=config,
                      cwd=tmp_path, extra=kubectl)


def test_the_runbook_refuses_to_scale_down_the_pod_restore_execs_in(env, deployment, tmp_path):
    cluster, airflow, config = deployment
    target = env.unique("incident_k8s_")
    # WHEN the runbook is told to scale down the scheduler that afbackup execs its agent in
    done = _runbook(env, cluster, airflow, config, target, tmp_path)
    # THEN it refuses before changing anything, naming the way out
    assert done.returncode == 2, done.stderr
    assert "--k8s-agent-target" in done.stderr and "Nothing was changed" in done.stderr
    assert ("airflow-scheduler", 0) not in cluster.scale_log and not database_exists(env, target)


def test_the_runbook_runs_the_agent_elsewhere_while_the_scheduler_is_down(env, deployment, tmp_path):
    cluster, airflow, config = deployment
    target = env.unique("incident_k8s_")
    execs_before, scales_before = len(cluster.execs), len(cluster.scale_log)
    # WHEN the agent is pointed at the webserver
    done = _runbook(env, cluster, airflow, config, target, tmp_path,
                    "--k8s-agent-target", "deployment/airflow-webserver", "--k8s-agent-container", "webserver")
    # THEN the restore passes with the scheduler really down, its Airflow steps ran in the webserver pod,
    # and the scheduler is back with its pod Ready
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert cluster.scale_log[scales_before:] == [("airflow-scheduler", 0), ("airflow-scheduler", 1)]
    restore_execs = cluster.execs[execs_before:]
    assert restore_execs and {record.pod for record in restore_execs} == {"airflow-webserver-0"}
    assert (NS, "airflow-scheduler-0") in cluster.pods
    assert "Airflow agent: deployment/airflow-webserver (container webserver)" in done.stdout
    assert env.pg.execute(target, "SELECT count(*) FROM connection")[0][0] > 0
    env.pg.drop_database(target)


def test_restore_with_no_ready_pod_fails_with_4_before_downloading(env, deployment, tmp_path):
    cluster, airflow, config = deployment
    cluster.scale("airflow-scheduler", NS, 0)
    try:
        target = env.unique("incident_k8s_")
        done = env.afbackup(config, "restore", "--target-dsn", env.pg.dsn(target), "--yes")
    finally:
        cluster.scale("airflow-scheduler", NS, 1)
    assert done.returncode == 4, done.stderr
    # before the spool exists (nothing downloaded), and the target untouched
    assert "has no Ready pod" in done.stderr and "spooling" not in done.stderr
    assert not database_exists(env, target)
