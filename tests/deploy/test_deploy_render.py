"""``afbackup deploy render`` for a three-deployment fleet: deterministic bytes, the shipped base unchanged,
one overlay per deployment (namespace, names, Secret names, staggered schedules, its config as the
ConfigMap), checked by the real ``kubectl kustomize``, ``kubernetes-validate`` and ``checkov``."""

from __future__ import annotations

import filecmp
import json
import logging
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from afbackup.cli import run
from afbackup.config import load_settings
from afbackup.deploy_render import SPACING, WINDOW, asset, shift_schedule, stagger
from tests.deploy.test_manifests import K8S, K8S_VERSIONS, REPO, _failed_and_skipped, tool

FLEET = '''
[database]
dsn = "postgresql://afbackup@pg-shared.db.svc:5432/airflow"
password_file = "/run/secrets/afbackup-db/password"
[airflow]
executor = "kubernetes"
[storage]
region = "eu-west-1"
[encryption]
recipients = ["0123456789ABCDEF0123456789ABCDEF01234567"]
gnupghome = "/tmp/gnupg"
sign_with = "FEDCBA9876543210FEDCBA9876543210FEDCBA98"
trusted_signers = ["FEDCBA9876543210FEDCBA9876543210FEDCBA98"]
[retention]
keep_daily = 14
[check]
max_age = "26h"

[deployments.team-a]
airflow = { kubernetes = { namespace = "airflow-team-a" } }
storage = { url = "s3://fleet-backups/team-a" }

[deployments.team-b]
airflow = { kubernetes = { namespace = "airflow-team-b" } }
storage = { url = "s3://fleet-backups/team-b" }
retention = { keep_daily = 30 }

[deployments.analytics]
database = { dsn = "postgresql://afbackup@pg-analytics.db.svc:5432/airflow" }
airflow = { kubernetes = { namespace = "analytics" } }
storage = { url = "s3://analytics-backups/airflow" }
'''
NAMES = ["analytics", "team-a", "team-b"]
NAMESPACES = {"team-a": "airflow-team-a", "team-b": "airflow-team-b", "analytics": "analytics"}


@pytest.fixture(autouse=True)
def _restore_logging():
    yield
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("render")
    config = tmp / "fleet.toml"
    config.write_text(FLEET)
    out = tmp / "out"
    assert run(["--config", str(config), "deploy", "render", "--out", str(out)]) == 0
    return out


def kustomize(path: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not on PATH: `kubectl kustomize` validates the rendered overlays")
    result = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def built(rendered) -> list[dict[str, Any]]:
    return kustomize(rendered)


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_rendering_twice_gives_the_same_bytes(rendered, tmp_path):
    config = tmp_path / "fleet.toml"
    config.write_text(FLEET)
    again = tmp_path / "again"
    assert run(["--config", str(config), "deploy", "render", "--out", str(again)]) == 0
    assert files(again) == files(rendered)
    # rendering over an earlier render replaces it, with the same bytes again
    assert run(["--config", str(config), "deploy", "render", "--out", str(again)]) == 0
    assert files(again) == files(rendered)


def test_the_environment_of_the_rendering_machine_does_not_leak(rendered, tmp_path, monkeypatch):
    config = tmp_path / "fleet.toml"
    config.write_text(FLEET)
    monkeypatch.setenv("AFBACKUP_STORAGE_REGION", "from-my-laptop")
    monkeypatch.setenv("AFBACKUP_NOTIFY_PUSHGATEWAY_URL", "https://user:secret@gateway")
    assert run(["--config", str(config), "deploy", "render", "--out", str(tmp_path / "out")]) == 0
    assert files(tmp_path / "out") == files(rendered)


def test_a_foreign_non_empty_directory_is_refused(tmp_path):
    config = tmp_path / "fleet.toml"
    config.write_text(FLEET)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert run(["--config", str(config), "deploy", "render", "--out", str(tmp_path / "mine")]) == 2
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_the_base_is_the_shipped_manifests_byte_for_byte(rendered):
    shipped = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"] + ["kustomization.yaml"]
    match, mismatch, errors = filecmp.cmpfiles(K8S, rendered / "base", shipped, shallow=False)
    assert sorted(match) == sorted(shipped) and not mismatch and not errors
    # and the package data a `pip install` user renders from is the same files
    assert asset("kubernetes", "cronjob-backup.yaml").read_bytes() == (K8S / "cronjob-backup.yaml").read_bytes()


def test_each_deployment_gets_its_namespace_names_and_secrets(built):
    by_ns: dict[str, list[dict[str, Any]]] = {}
    for doc in built:
        by_ns.setdefault(doc["metadata"].get("namespace", ""), []).append(doc)
    assert set(by_ns) == set(NAMESPACES.values())
    for name, namespace in NAMESPACES.items():
        docs = by_ns[namespace]
        assert all(d["metadata"]["name"].endswith(f"-{name}") for d in docs)
        assert all(d["metadata"]["labels"]["afbackup.io/deployment"] == name for d in docs)
        cronjobs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "CronJob"}
        assert set(cronjobs) == {f"afbackup-{c}-{name}" for c in ("backup", "prune", "drill")}
        for cronjob in cronjobs.values():
            pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
            secrets = [v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v]
            assert secrets and all(s.endswith(f"-{name}") for s in secrets)
            config = [v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v]
            assert config == [f"afbackup-config-{name}"]
            assert pod["serviceAccountName"].endswith(f"-{name}")
        (binding,) = [d for d in docs if d["kind"] == "RoleBinding"]
        assert binding["roleRef"]["name"] == f"afbackup-exec-{name}"
        assert binding["subjects"][0] == {"kind": "ServiceAccount", "name": f"afbackup-{name}", "namespace": namespace}


def test_each_configmap_is_the_deployments_own_config(built, tmp_path):
    for doc in (d for d in built if d["kind"] == "ConfigMap"):
        name = doc["metadata"]["labels"]["afbackup.io/deployment"]
        path = tmp_path / f"{name}.toml"
        path.write_text(doc["data"]["config.toml"])
        settings = load_settings(path, environ={})  # a plain file: no [deployments], no selection needed
        expected = load_settings(_fleet_file(tmp_path), environ={}, deployment=name).config
        assert settings.config == expected
        assert settings.config.backup.name == name


def _fleet_file(tmp_path: Path) -> Path:
    path = tmp_path / "fleet.toml"
    path.write_text(FLEET)
    return path


def minutes(schedule: str) -> int:
    minute, hour = schedule.split()[:2]
    return int(hour) * 60 + int(minute)


def test_schedules_are_staggered_for_deployments_sharing_a_database_or_bucket(built):
    backup = {d["metadata"]["labels"]["afbackup.io/deployment"]: minutes(d["spec"]["schedule"])
              for d in built if d["kind"] == "CronJob" and d["metadata"]["name"].startswith("afbackup-backup-")}
    base = minutes(yaml.safe_load((K8S / "cronjob-backup.yaml").read_text())["spec"]["schedule"])
    assert all(base <= start < base + WINDOW for start in backup.values())
    # team-a and team-b share the database server and the bucket
    assert abs(backup["team-a"] - backup["team-b"]) >= SPACING


def test_stagger_is_deterministic_and_spreads_a_crowd():
    crowd = {f"team-{i:02d}": {"db:shared:5432"} for i in range(30)}
    offsets = stagger(crowd)
    assert offsets == stagger(dict(reversed(list(crowd.items()))))
    ordered = sorted(offsets.values())
    assert len(set(ordered)) == 30 and all(0 <= o < WINDOW for o in ordered)
    gaps = [(b - a) for a, b in zip(ordered, ordered[1:], strict=False)] + [ordered[0] + WINDOW - ordered[-1]]
    assert min(gaps) >= WINDOW // 30
    assert stagger({"a": {"x"}, "b": {"y"}}) == {"a": stagger({"a": {"x"}})["a"], "b": stagger({"b": {"y"}})["b"]}
    assert shift_schedule("0 4 * * *", 17) == "17 4 * * *"
    assert shift_schedule("50 23 * * *", 20) == "10 0 * * *"
    assert shift_schedule("*/5 * * * *", 20) == "*/5 * * * *"


def test_the_prometheus_rule_wraps_the_shipped_rules(rendered):
    (rule,) = kustomize(rendered / "monitoring")
    shipped = yaml.safe_load((REPO / "deploy" / "prometheus" / "afbackup-rules.yaml").read_text())
    assert rule["kind"] == "PrometheusRule" and rule["spec"]["groups"] == shipped["groups"]


def _split_by_deployment(built: list[dict[str, Any]], tmp_path: Path) -> list[Path]:
    paths = []
    for name in NAMES:
        docs = [d for d in built if d["metadata"]["labels"]["afbackup.io/deployment"] == name]
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        paths.append(path)
    return paths


@pytest.mark.parametrize("version", K8S_VERSIONS, ids=lambda v: v or "newest")
@pytest.mark.integration  # kubernetes-validate from the tools venv
def test_rendered_fleet_validates_strictly_against_the_kubernetes_schema(built, tmp_path, version):
    validate = tool("kubernetes-validate")
    argv = [str(validate), "--strict", "--quiet"] + (["--kubernetes-version", version] if version else [])
    result = subprocess.run(argv + [str(p) for p in _split_by_deployment(built, tmp_path)], capture_output=True,
                            text=True, timeout=300, cwd=REPO)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "WARN" not in output and "ERROR" not in output, output


@pytest.mark.slow
@pytest.mark.integration  # checkov from the tools venv
def test_checkov_finds_nothing_beyond_the_documented_skips(built, tmp_path):
    checkov = tool("checkov")
    folder = tmp_path / "fleet"
    folder.mkdir()
    _split_by_deployment(built, folder)
    result = subprocess.run([str(checkov), "--directory", str(folder), "--framework", "kubernetes",
                             "--skip-download", "--output", "json"], capture_output=True, text=True, timeout=600,
                            cwd=REPO)
    assert result.returncode in (0, 1), result.stderr[-2000:]
    reports = json.loads(result.stdout)
    failed, skipped = _failed_and_skipped(reports if isinstance(reports, list) else [reports])
    assert failed == []
    accepted = {("CKV_K8S_38", f"CronJob.{NAMESPACES[name]}.afbackup-{job}-{name}")
                for name in NAMES for job in ("backup", "drill")}
    assert skipped == accepted


def test_the_drill_record_policy_only_writes_drill_records():
    doc = json.loads((REPO / "deploy" / "iam" / "drill-record-policy.json").read_text())
    (statement,) = doc["Statement"]
    assert statement["Effect"] == "Allow" and statement["Action"] == "s3:PutObject"
    assert statement["Resource"] == "arn:aws:s3:::airflow-backups/prod/v1/drills/*"
