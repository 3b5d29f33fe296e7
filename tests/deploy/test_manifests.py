"""The deployment files under deploy/: Kubernetes manifests, Dockerfile, IAM, SQL.

The heavy linters (kubernetes-validate, checkov, yamllint) run as subprocesses
from a separate tools venv (``AFBACKUP_TOOLS_VENV``, default
``.cache/venvs/tools``), so the project venv needs only PyYAML. Those tests skip,
saying why, when the tools venv is missing; everything else parses the files
directly.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import tier

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "kubernetes"
IAM = DEPLOY / "iam"
DOCS = REPO / "docs" / "kubernetes.md"
EXAMPLE_SECRETS = "secrets.example.yaml"
TOOLS_VENV = Path(os.environ.get("AFBACKUP_TOOLS_VENV", REPO / ".cache" / "venvs" / "tools"))

# Oldest Kubernetes minor we support, and the newest kubernetes-validate knows.
K8S_VERSIONS = ["1.30.0", None]

# checkov findings we accept, each with a skip annotation in the manifest and an
# entry in docs/kubernetes.md ("Accepted checkov findings").
ACCEPTED_CHECKOV = {
    ("CKV_K8S_38", "CronJob.airflow.afbackup-backup"),
    ("CKV_K8S_38", "CronJob.airflow.afbackup-drill"),
}

# What the Kubernetes executor calls (afbackup/executors/kubernetes.py), as
# (apiGroup, resource, verb). pods/exec needs "get" too: the Python client
# execs over a WebSocket (an HTTP GET); 1.35+ servers also check "create".
EXECUTOR_PERMISSIONS = {
    ("", "pods", "get"),
    ("", "pods", "list"),
    ("apps", "deployments", "get"),
    ("apps", "statefulsets", "get"),
    ("", "pods/exec", "create"),
    ("", "pods/exec", "get"),
}

BUILD_TOOLS = re.compile(
    r"\b(gcc|g\+\+|cc|clang|make|build-essential|[\w.+-]+-dev|libpq-dev|python3-dev|"
    r"git|curl|wget|pip)\b"
)


# --------------------------------------------------------------------------- helpers
def tool(name: str) -> Path:
    tier.require(f"{name} from the tools venv (make tools)")
    path = TOOLS_VENV / "bin" / name
    if not path.exists():
        pytest.skip(
            f"{name} is not installed: no tools venv at {TOOLS_VENV} "
            "(see docs/kubernetes.md, \"Testing these files\"; or point AFBACKUP_TOOLS_VENV at one)"
        )
    return path


def kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def manifest_files() -> list[Path]:
    """The files kustomization.yaml lists, in order."""
    return [K8S / name for name in kustomization()["resources"]]


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def resources() -> list[dict[str, Any]]:
    """Every object `kubectl apply -k deploy/kubernetes` creates (before transformers)."""
    return [doc for path in manifest_files() for doc in documents(path)]


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in resources() if doc["kind"] == kind]


def cronjob(component: str) -> dict[str, Any]:
    (found,) = [cj for cj in by_kind("CronJob") if cj["metadata"]["name"] == f"afbackup-{component}"]
    return found


def pod_spec(cj: dict[str, Any]) -> dict[str, Any]:
    return cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def all_containers(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def main_container(cj: dict[str, Any]) -> dict[str, Any]:
    (found,) = [c for c in pod_spec(cj)["containers"] if c["name"] == "afbackup"]
    return found


def secret_volumes(spec: dict[str, Any]) -> dict[str, str]:
    """Volume name -> Secret name."""
    return {v["name"]: v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}


def mounted_secrets(spec: dict[str, Any]) -> set[str]:
    secrets = secret_volumes(spec)
    return {
        secrets[m["name"]]
        for c in all_containers(spec)
        for m in c.get("volumeMounts", [])
        if m["name"] in secrets
    }


def env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def config_toml() -> dict[str, Any]:
    (cm,) = [cm for cm in by_kind("ConfigMap") if cm["metadata"]["name"] == "afbackup-config"]
    return tomllib.loads(cm["data"]["config.toml"])


def policy(name: str) -> dict[str, Any]:
    return json.loads((IAM / name).read_text())


def actions(doc: dict[str, Any], effect: str) -> set[str]:
    found: set[str] = set()
    for statement in doc["Statement"]:
        if statement["Effect"] == effect:
            value = statement["Action"]
            found.update([value] if isinstance(value, str) else value)
    return found


def run(argv: list[Any], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kwargs)


COMPONENTS = ["backup", "prune", "drill"]


# --------------------------------------------------------------------------- (g) kustomization, yamllint
def test_kustomization_lists_every_manifest_except_the_example():
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    listed = kustomization()["resources"]
    assert len(listed) == len(set(listed)), "a resource is listed twice"
    assert set(listed) == on_disk - {EXAMPLE_SECRETS}
    assert EXAMPLE_SECRETS not in listed
    assert kustomization()["namespace"] == "airflow"


def test_every_object_is_in_the_airflow_namespace_and_nothing_is_cluster_scoped():
    for doc in resources():
        assert doc["metadata"].get("namespace") == "airflow", doc["metadata"]["name"]
        assert doc["kind"] not in {"ClusterRole", "ClusterRoleBinding", "Namespace"}


def test_example_secrets_hold_only_placeholders():
    text = (K8S / EXAMPLE_SECRETS).read_text()
    assert "DO NOT APPLY" in text
    for doc in documents(K8S / EXAMPLE_SECRETS):
        assert doc["kind"] == "Secret"
        for key, value in doc["stringData"].items():
            assert "REPLACE_ME" in value, f"{doc['metadata']['name']}.{key} is not a placeholder"


def test_no_tracked_file_holds_private_key_material():
    """Keys are generated at test time (tests/harness/gpgkeys.py); examples hold placeholders, not key blocks."""
    armor = re.compile(r"-----BEGIN [A-Z ]*" + "PRIVATE KEY")  # split so this file does not match itself
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    offenders = []
    for name in filter(None, tracked.decode().split("\0")):
        path = REPO / name
        if path.is_file() and armor.search(path.read_text(errors="ignore")):
            offenders.append(name)
    assert offenders == []


def test_every_mounted_secret_is_described_by_the_example():
    described = {doc["metadata"]["name"]: set(doc["stringData"]) for doc in documents(K8S / EXAMPLE_SECRETS)}
    for component in COMPONENTS:
        assert mounted_secrets(pod_spec(cronjob(component))) <= set(described), component


@pytest.mark.integration  # needs the tools venv (make tools)
def test_yaml_lints_clean():
    yamllint = tool("yamllint")
    result = run([yamllint, "--strict", "-c", DEPLOY / ".yamllint.yaml", K8S], cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- (a) schema
@pytest.mark.integration  # needs the tools venv (make tools)
@pytest.mark.parametrize("version", K8S_VERSIONS, ids=lambda v: v or "newest")
def test_manifests_validate_strictly_against_the_kubernetes_schema(version):
    validate = tool("kubernetes-validate")
    files = manifest_files() + [K8S / EXAMPLE_SECRETS]
    argv: list[Any] = [validate, "--strict", "--quiet"]
    if version:
        argv += ["--kubernetes-version", version]
    result = run(argv + files, cwd=REPO)
    output = result.stdout + result.stderr
    # An unknown kind/apiVersion is only a warning for the tool: fail on it too.
    assert result.returncode == 0 and "WARN" not in output and "ERROR" not in output, output


# --------------------------------------------------------------------------- (b) checkov
def _checkov(*target: str) -> list[dict[str, Any]]:
    checkov = tool("checkov")
    result = run(
        [checkov, *target, "--skip-download", "--output", "json"],
        cwd=REPO,
        timeout=600,
    )
    assert result.returncode in (0, 1), result.stderr[-2000:]
    reports = json.loads(result.stdout)
    return reports if isinstance(reports, list) else [reports]


def _failed_and_skipped(reports: list[dict[str, Any]]) -> tuple[list[str], set[tuple[str, str]]]:
    failed, skipped = [], set()
    for report in reports:
        assert report["summary"]["parsing_errors"] == 0, report["summary"]
        assert report["summary"]["passed"] > 0, "checkov checked nothing"
        for check in report["results"]["failed_checks"]:
            failed.append(f"{check['check_id']} {check['check_name']} ({check['resource']}, {check['file_path']})")
        for check in report["results"]["skipped_checks"]:
            skipped.add((check["check_id"], check["resource"]))
    return failed, skipped


@pytest.mark.slow  # checkov takes about 5 s
@pytest.mark.integration  # needs the tools venv (make tools)
def test_checkov_kubernetes_has_no_finding_beyond_the_documented_skips():
    failed, skipped = _failed_and_skipped(_checkov("--directory", str(K8S), "--framework", "kubernetes"))
    assert failed == []
    assert skipped <= ACCEPTED_CHECKOV, f"undocumented skips: {skipped - ACCEPTED_CHECKOV}"


@pytest.mark.slow  # checkov takes about 5 s
@pytest.mark.integration  # needs the tools venv (make tools)
def test_checkov_dockerfile_has_no_finding():
    failed, skipped = _failed_and_skipped(
        _checkov("--file", str(DEPLOY / "Dockerfile"), "--framework", "dockerfile")
    )
    assert failed == []
    assert skipped == set()


def test_every_checkov_skip_is_explained_in_the_manifest_and_the_docs():
    docs = DOCS.read_text()
    annotated = set()
    for path in sorted(K8S.glob("*.yaml")):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if "checkov.io/skip" not in line:
                continue
            check_id = line.split(":", 1)[1].strip().split("=", 1)[0]
            assert "=" in line and len(line.split("=", 1)[1].strip()) > 20, f"{path.name}: skip without reason"
            assert lines[i - 1].lstrip().startswith("#"), f"{path.name}:{i + 1}: no comment above the skip"
            assert check_id in docs, f"{check_id} is not documented in {DOCS.name}"
            annotated.add(check_id)
    assert annotated == {check for check, _ in ACCEPTED_CHECKOV}


# --------------------------------------------------------------------------- (c) RBAC
def test_role_grants_exactly_what_the_executor_uses():
    (role,) = by_kind("Role")
    assert role["metadata"]["namespace"] == "airflow"
    granted = set()
    for rule in role["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, f"unexpected rule fields: {rule}"
        for value in (*rule["apiGroups"], *rule["resources"], *rule["verbs"]):
            assert "*" not in value, f"wildcard in {rule}"
        granted |= {(g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    assert granted == EXECUTOR_PERMISSIONS


def test_only_the_backup_identity_is_bound_to_the_role():
    (binding,) = by_kind("RoleBinding")
    (role,) = by_kind("Role")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "afbackup", "namespace": "airflow"}]
    accounts = {sa["metadata"]["name"]: sa for sa in by_kind("ServiceAccount")}
    assert set(accounts) == {"afbackup", "afbackup-prune"}
    for sa in accounts.values():
        assert sa["automountServiceAccountToken"] is False


def test_prune_runs_under_its_own_identity_without_an_api_token():
    spec = pod_spec(cronjob("prune"))
    assert spec["serviceAccountName"] == "afbackup-prune"
    assert spec["automountServiceAccountToken"] is False
    for component in ("backup", "drill"):
        spec = pod_spec(cronjob(component))
        assert spec["serviceAccountName"] == "afbackup"
        assert spec["automountServiceAccountToken"] is True


# --------------------------------------------------------------------------- (d) IAM
BUCKET_ARN = "arn:aws:s3:::airflow-backups"
NEVER_FOR_WRITER = re.compile(r"^s3:(Delete|Bypass|PutLifecycle)", re.IGNORECASE)


def _assert_scoped(doc: dict[str, Any]) -> None:
    storage = config_toml()["storage"]["url"]  # s3://airflow-backups/prod
    bucket, prefix = storage.removeprefix("s3://").split("/", 1)
    assert f"arn:aws:s3:::{bucket}" == BUCKET_ARN
    for statement in doc["Statement"]:
        if statement["Effect"] != "Allow":
            continue
        acts = [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
        assert all("*" not in a for a in acts), f"wildcard action in {statement['Sid']}"
        res = statement["Resource"]
        assert isinstance(res, str), statement["Sid"]
        assert res in (BUCKET_ARN, f"{BUCKET_ARN}/{prefix}/*", f"{BUCKET_ARN}/{prefix}/v1/locks/*"), \
            f"{statement['Sid']}: {res}"
        if "s3:ListBucket" in acts:
            assert statement["Condition"] == {"StringLike": {"s3:prefix": [prefix, f"{prefix}/*"]}}


def test_backup_writer_cannot_delete_bypass_or_change_lifecycle():
    """The writer may delete nothing but its own lock object (v1/locks/*), which it must release."""
    doc = policy("backup-writer-policy.json")
    allowed = actions(doc, "Allow")
    lock_release = [s for s in doc["Statement"] if s["Effect"] == "Allow" and s["Action"] == "s3:DeleteObject"]
    assert [s["Resource"] for s in lock_release] == [f"{BUCKET_ARN}/prod/v1/locks/*"]
    assert [a for a in allowed - {"s3:DeleteObject"} if NEVER_FOR_WRITER.match(a)] == []
    deny = next(s for s in doc["Statement"] if s["Effect"] == "Deny")
    assert deny["NotResource"] == [f"{BUCKET_ARN}/prod/v1/locks/*"] and "Resource" not in deny
    assert {
        "s3:PutObject", "s3:GetObject", "s3:ListBucket", "s3:AbortMultipartUpload",
        "s3:ListMultipartUploadParts", "s3:ListBucketMultipartUploads", "s3:PutObjectRetention",
    } <= allowed
    denied = actions(doc, "Deny")
    assert {"s3:DeleteObject", "s3:DeleteObjectVersion", "s3:BypassGovernanceRetention",
            "s3:PutLifecycleConfiguration"} <= denied
    _assert_scoped(doc)


def test_prune_policy_adds_deletion_but_never_bypasses_object_lock():
    doc = policy("prune-policy.json")
    allowed = actions(doc, "Allow")
    assert {
        "s3:DeleteObject", "s3:DeleteObjectVersion", "s3:GetObjectRetention",
        "s3:GetObjectLegalHold", "s3:ListBucketVersions", "s3:ListBucket", "s3:GetObject",
    } <= allowed
    assert not any(a.startswith(("s3:Bypass", "s3:PutLifecycle")) for a in allowed)
    assert {"s3:BypassGovernanceRetention", "s3:PutLifecycleConfiguration"} <= actions(doc, "Deny")
    _assert_scoped(doc)


def test_restore_reader_only_reads():
    doc = policy("restore-reader-policy.json")
    allowed = actions(doc, "Allow")
    assert all(a.startswith(("s3:Get", "s3:List")) for a in allowed), allowed
    assert {"s3:GetObject", "s3:ListBucket"} <= allowed
    _assert_scoped(doc)


def test_lifecycle_aborts_incomplete_multipart_uploads_after_seven_days():
    (rule,) = json.loads((IAM / "lifecycle.json").read_text())["Rules"]
    prefix = config_toml()["storage"]["url"].removeprefix("s3://").split("/", 1)[1]
    assert rule["Status"] == "Enabled"
    assert rule["Filter"] == {"Prefix": f"{prefix}/"}
    assert rule["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}


# --------------------------------------------------------------------------- (e) pod security
@pytest.mark.parametrize("component", COMPONENTS)
def test_pod_runs_non_root_read_only_and_unprivileged(component):
    spec = pod_spec(cronjob(component))
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == 10001 and pod["runAsGroup"] == 10001 and pod["fsGroup"] == 10001
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["restartPolicy"] == "Never"
    assert spec["enableServiceLinks"] is False
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(key)
    for container in all_containers(spec):
        sc = container["securityContext"]
        name = container["name"]
        assert sc["runAsNonRoot"] is True, name
        assert sc.get("runAsUser", pod["runAsUser"]) == 10001, name
        assert sc["readOnlyRootFilesystem"] is True, name
        assert sc["allowPrivilegeEscalation"] is False, name
        assert sc.get("privileged", False) is False, name
        assert sc["capabilities"] == {"drop": ["ALL"]}, name
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for kind in ("requests", "limits"):
            assert set(container["resources"][kind]) == {"cpu", "memory"}, f"{name} {kind}"
        assert container["imagePullPolicy"] == "IfNotPresent", name
        image = container["image"]
        assert re.search(r"@sha256:[0-9a-f]{64}$", image) or re.search(r":[\w][\w.-]*$", image), image
        assert not image.endswith(":latest"), image


@pytest.mark.parametrize("component", COMPONENTS)
def test_tmp_is_a_memory_backed_emptydir_in_every_container(component):
    spec = pod_spec(cronjob(component))
    volumes = {v["name"]: v for v in spec["volumes"]}
    for container in all_containers(spec):
        (tmp,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
        empty_dir = volumes[tmp["name"]]["emptyDir"]
        assert empty_dir["medium"] == "Memory"
        assert empty_dir["sizeLimit"]


@pytest.mark.parametrize("component", COMPONENTS)
def test_secrets_and_config_are_mounted_read_only(component):
    spec = pod_spec(cronjob(component))
    read_only_volumes = {v["name"] for v in spec["volumes"] if "secret" in v or "configMap" in v}
    for container in all_containers(spec):
        for mount in container["volumeMounts"]:
            if mount["name"] in read_only_volumes:
                assert mount.get("readOnly") is True, f"{container['name']}: {mount['name']}"
        for var in container.get("env", []):
            assert "valueFrom" not in var, f"{container['name']}: secrets come as files, not env"
        assert "envFrom" not in container


def test_backup_resources_match_the_sizing():
    resources_ = main_container(cronjob("backup"))["resources"]
    assert resources_ == {
        "requests": {"cpu": "250m", "memory": "256Mi"},
        "limits": {"cpu": "1", "memory": "512Mi"},
    }


def test_each_pod_gets_only_the_keys_and_credentials_its_job_needs():
    assert mounted_secrets(pod_spec(cronjob("backup"))) == {
        "afbackup-db", "afbackup-s3-writer", "afbackup-gpg-public", "afbackup-gpg-signing",
    }
    assert mounted_secrets(pod_spec(cronjob("prune"))) == {"afbackup-s3-prune", "afbackup-gpg-public"}
    assert mounted_secrets(pod_spec(cronjob("drill"))) == {
        "afbackup-s3-reader", "afbackup-gpg-public", "afbackup-gpg-drill", "afbackup-scratch-db",
    }


# --------------------------------------------------------------------------- (f) schedules and commands
def test_backup_cronjob_runs_nightly_at_four_never_overlapping():
    cj = cronjob("backup")
    assert cj["spec"]["schedule"] == "0 4 * * *"
    assert cj["spec"]["concurrencyPolicy"] == "Forbid"
    assert main_container(cj)["args"][-2:] == ["backup", "--json"]


@pytest.mark.parametrize("component", COMPONENTS)
def test_cronjob_bounds_its_runs_and_history(component):
    cj = cronjob(component)
    spec = cj["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] > 0
    assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
    job = spec["jobTemplate"]["spec"]
    assert job["activeDeadlineSeconds"] > 0
    assert job["backoffLimit"] >= 0
    assert job["ttlSecondsAfterFinished"] > 0


def test_prune_and_drill_commands():
    assert main_container(cronjob("prune"))["args"][2:4] == ["prune", "--confirm"]
    args = main_container(cronjob("drill"))["args"]
    assert "drill" in args
    assert args[args.index("--scratch-dsn") + 1].startswith("postgresql://")
    assert args[args.index("--report") + 1] == "/tmp/report"


# --------------------------------------------------------------------------- the configuration
def test_config_toml_loads_with_afbackup_and_matches_the_mounts(tmp_path):
    from afbackup.config.load import load_settings

    path = tmp_path / "config.toml"
    (cm,) = [cm for cm in by_kind("ConfigMap") if cm["metadata"]["name"] == "afbackup-config"]
    path.write_text(cm["data"]["config.toml"])
    config = load_settings(path, environ={}).config
    assert config.airflow.executor == "kubernetes"
    assert config.airflow.kubernetes.namespace == "airflow"
    assert config.airflow.kubernetes.target == "deployment/airflow-scheduler"
    assert config.airflow.kubernetes.container == "scheduler"
    assert config.airflow.kubernetes.context == ""
    assert config.airflow.tmp_dir == "/dev/shm"
    assert ":" not in config.database.dsn.split("@")[0].removeprefix("postgresql://"), "password in DSN"

    for component in COMPONENTS:
        container = main_container(cronjob(component))
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/etc/afbackup" in mounts and env(container)["AFBACKUP_CONFIG"] == "/etc/afbackup/config.toml"
        assert env(container)["GNUPGHOME"] == config.encryption.gnupghome
        assert config.encryption.gnupghome.startswith("/tmp/")
        creds = env(container)["AWS_SHARED_CREDENTIALS_FILE"]
        assert str(Path(creds).parent) in mounts
    backup_mounts = {m["mountPath"] for m in main_container(cronjob("backup"))["volumeMounts"]}
    assert str(Path(config.database.password_file).parent) in backup_mounts


# --------------------------------------------------------------------------- the keyring init containers
def _gpg(home: Path, *args: str) -> str:
    result = run(["gpg", "--homedir", home, "--batch", "--no-tty", *args])
    assert result.returncode == 0, result.stderr
    return result.stdout


def _fingerprints(home: Path, *args: str) -> set[str]:
    out = _gpg(home, *args, "--with-colons")
    lines = out.splitlines()
    # the primary key's fpr line follows its pub/sec line
    return {
        lines[i + 1].split(":")[9]
        for i, line in enumerate(lines[:-1])
        if line.startswith(("pub:", "sec:")) and lines[i + 1].startswith("fpr:")
    }


@pytest.fixture(scope="module")
def gpg_keys() -> Iterator[dict[str, Any]]:
    if not shutil.which("gpg") or not shutil.which("gpgconf"):
        pytest.skip("gpg is not installed")
    home = Path(tempfile.mkdtemp(prefix="afbk"))
    try:
        _gpg(home, "--passphrase", "", "--quick-gen-key", "signer <signer@example.invalid>", "ed25519", "sign", "never")
        _gpg(home, "--passphrase", "", "--quick-gen-key", "drill <drill@example.invalid>", "future-default", "default",
             "never")
        # the first fpr after each pub line is the primary's
        by_uid = {}
        lines = _gpg(home, "--list-keys", "--with-colons").splitlines()
        for i, line in enumerate(lines):
            if line.startswith("pub:"):
                fpr = lines[i + 1].split(":")[9]
                uid = next(x for x in lines[i:] if x.startswith("uid:")).split(":")[9].split()[0]
                by_uid[uid] = fpr
        yield {
            "home": home,
            "signer": by_uid["signer"],
            "drill": by_uid["drill"],
            "public": _gpg(home, "--armor", "--export", by_uid["signer"], by_uid["drill"]),
            "signing-key.asc": _gpg(home, "--armor", "--export-secret-keys", by_uid["signer"]),
            "decryption-key.asc": _gpg(home, "--armor", "--export-secret-keys", by_uid["drill"]),
        }
    finally:
        run(["gpgconf", "--homedir", home, "--kill", "all"])
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.parametrize("component", COMPONENTS)
def test_keyring_init_container_builds_the_expected_keyring(component, gpg_keys):
    spec = pod_spec(cronjob(component))
    (init,) = spec["initContainers"]
    assert init["command"] == ["/bin/sh", "-ec"]
    script = init["args"][0]
    secrets = secret_volumes(spec)
    root = Path(tempfile.mkdtemp(prefix="afbk"))  # short: gpg-agent's socket path is limited
    try:
        # Lay out the Secret files this pod mounts, with test keys as content.
        for mount in init["volumeMounts"]:
            if mount["name"] not in secrets:
                continue
            target = root / mount["mountPath"].lstrip("/")
            target.mkdir(parents=True)
            secret = secrets[mount["name"]]
            content = {
                "afbackup-gpg-public": {"public-keys.asc": gpg_keys["public"]},
                "afbackup-gpg-signing": {"signing-key.asc": gpg_keys["signing-key.asc"]},
                "afbackup-gpg-drill": {"decryption-key.asc": gpg_keys["decryption-key.asc"]},
                "afbackup-scratch-db": {"pgpass": "db:5432:*:afbackup_restore:pw\n"},
            }[secret]
            for name, text in content.items():
                (target / name).write_text(text)
                (target / name).chmod(0o440)
        home = root / "tmp" / "gnupg"
        local = re.sub(r"(?<![\w/])/(run/secrets|tmp)/", lambda m: f"{root}/{m.group(1)}/", script)
        (root / "tmp").mkdir()
        result = run(["/bin/sh", "-ec", local], env={**os.environ, "GNUPGHOME": str(home)}, timeout=120)
        assert result.returncode == 0, result.stderr
        assert home.stat().st_mode & 0o077 == 0, "GNUPGHOME must be private"
        agent_conf = (home / "gpg-agent.conf").read_text()
        assert "default-cache-ttl 0" in agent_conf and "max-cache-ttl 0" in agent_conf
        assert _fingerprints(home, "--list-keys") == {gpg_keys["signer"], gpg_keys["drill"]}
        secret_keys = _fingerprints(home, "--list-secret-keys")
        expected = {"backup": {gpg_keys["signer"]}, "prune": set(), "drill": {gpg_keys["drill"]}}
        assert secret_keys == expected[component]
        if component == "drill":
            assert (root / "tmp" / "pgpass").stat().st_mode & 0o777 == 0o600
    finally:
        run(["gpgconf", "--homedir", root / "tmp" / "gnupg", "--kill", "all"])
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- Dockerfile
def _stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages of (INSTRUCTION, arguments), continuations joined."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    stages: list[list[tuple[str, str]]] = [[]]  # stage 0: instructions before the first FROM
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), rest.strip()))
    return stages


def test_dockerfile_is_multi_stage_with_a_slim_final_stage():
    stages = _stages()
    assert ("ARG", "PG_MAJOR=16") in stages[0]
    froms = [stage[0][1] for stage in stages[1:]]
    assert len(froms) >= 2
    assert froms[0].endswith(" AS builder")
    assert froms[-1].split()[0] == "python:3.12-slim-bookworm"
    final = stages[-1]
    copies = [args for ins, args in final if ins == "COPY"]
    assert any(a.startswith("--from=builder /opt/afbackup") for a in copies)
    assert all(a.startswith("--from=builder ") for a in copies), "the final stage copies only built artifacts"


def test_dockerfile_final_stage_runs_non_root_with_no_build_tools():
    final = _stages()[-1]
    (user,) = [args for ins, args in final if ins == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) == 10001, "USER must be numeric (runAsNonRoot verifies it)"
    order = [ins for ins, _ in final]
    assert order.index("USER") > max(i for i, ins in enumerate(order) if ins == "RUN"), "USER after the last RUN"
    assert ("ENTRYPOINT", '["afbackup"]') in final
    assert ("HEALTHCHECK", "NONE") in final
    runs = " ".join(args for ins, args in final if ins == "RUN")
    installs = re.findall(r"apt-get install ([^&]*)", runs)
    packages = {p.strip('"') for chunk in installs for p in chunk.split() if not p.startswith("-")}
    assert packages == {"ca-certificates", "gpg", "gpg-agent", "zstd", "postgresql-client-${PG_MAJOR}"}
    assert [p for p in packages if BUILD_TOOLS.search(p)] == []
    assert "apt.postgresql.org" in runs and "signed-by=" in runs
    assert "rm -rf /var/lib/apt/lists/*" in runs
    envs = " ".join(args for ins, args in final if ins == "ENV")
    for needed in ("HOME=/tmp", "GNUPGHOME=/tmp/", "/usr/lib/postgresql/${PG_MAJOR}/bin"):
        assert needed in envs
    labels = " ".join(args for ins, args in final if ins == "LABEL")
    for label in ("title", "description", "version", "licenses"):
        assert f"org.opencontainers.image.{label}=" in labels


def test_dockerfile_bakes_in_no_secret_and_checks_the_pgdg_key():
    text = (DEPLOY / "Dockerfile").read_text()
    assert "B97B0AFCAA1A47F044F244A07FCC7D46ACCC4CF8" in text  # PGDG signing key fingerprint
    from_context = [
        args.split()[:-1]
        for stage in _stages()[1:]
        for ins, args in stage
        if ins in ("COPY", "ADD") and not args.startswith("--from=")
    ]
    assert [src for srcs in from_context for src in srcs] == ["pyproject.toml", "README.md", "afbackup"]
    envs = " ".join(args for stage in _stages() for ins, args in stage if ins in ("ENV", "ARG"))
    assert not re.search(r"PASSWORD|PASSPHRASE|SECRET|TOKEN|AWS_", envs)


def test_build_context_is_an_allow_list():
    lines = [
        line.strip()
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    assert set(lines[1:]) >= {"!pyproject.toml", "!README.md", "!afbackup/"}


# --------------------------------------------------------------------------- PostgreSQL roles
def _pg_bin() -> Path | None:
    for name in ("initdb", "pg_ctl"):
        found = shutil.which(name)
        if found:
            return Path(os.path.realpath(found)).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return versions[-1].parent if versions else None


@pytest.fixture(scope="module")
def postgres() -> Iterator[dict[str, Any]]:
    tier.require("a PostgreSQL server")
    bindir = _pg_bin()
    if bindir is None or not (bindir / "pg_dump").exists():
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) to test roles.sql with")
    as_user: list[str] = []
    if os.geteuid() == 0:
        try:
            pg_user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server")
        as_user = ["runuser", "-u", "postgres", "--"]
    data = Path(tempfile.mkdtemp(prefix="afbkpg"))
    if as_user:
        os.chown(data, pg_user.pw_uid, pg_user.pw_gid)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run([*as_user, bindir / "initdb", "-D", data / "db", "-U", "admin", "--auth=trust", "-E", "UTF8"])
    assert result.returncode == 0, result.stderr
    result = run([*as_user, bindir / "pg_ctl", "-D", data / "db", "-l", data / "log", "-w", "start",
                  "-o", f"-c listen_addresses=127.0.0.1 -p {port} -k {data}"])
    assert result.returncode == 0, result.stderr + (data / "log").read_text()
    try:
        yield {"bin": bindir, "port": port, "tmp": data}
    finally:
        run([*as_user, bindir / "pg_ctl", "-D", data / "db", "-m", "immediate", "stop"])
        shutil.rmtree(data, ignore_errors=True)


def _psql(pg: dict[str, Any], user: str, db: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run([pg["bin"] / "psql", "-X", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", pg["port"],
                "-U", user, "-d", db, *args])


@pytest.mark.slow  # initdb + start + stop: about 5 s
@pytest.mark.integration  # starts its own PostgreSQL server
def test_roles_sql_gives_a_read_only_dump_role_and_a_createdb_restore_role(postgres):
    pg = postgres
    setup = _psql(pg, "admin", "postgres", "-c", "CREATE ROLE airflow LOGIN",
                  "-c", "CREATE DATABASE airflow OWNER airflow")
    assert setup.returncode == 0, setup.stderr
    tables = """
        CREATE TABLE dag (dag_id text PRIMARY KEY);
        CREATE TABLE dag_run (id serial PRIMARY KEY, dag_id text REFERENCES dag);
        INSERT INTO dag VALUES ('a'), ('b');
        INSERT INTO dag_run (dag_id) VALUES ('a'), ('a'), ('b');
    """
    assert _psql(pg, "airflow", "airflow", "-c", tables).returncode == 0
    sql = DEPLOY / "postgres" / "roles.sql"
    for _ in range(2):  # idempotent
        result = _psql(pg, "admin", "airflow", "-f", str(sql))
        assert result.returncode == 0, result.stderr
    # A table created after the grants, as a later Airflow migration would.
    created = _psql(pg, "airflow", "airflow", "-c", "CREATE TABLE asset (id int); INSERT INTO asset VALUES (1)")
    assert created.returncode == 0

    dump = pg["tmp"] / "airflow.dump"
    result = run([pg["bin"] / "pg_dump", "-h", "127.0.0.1", "-p", pg["port"], "-U", "afbackup",
                  "-d", "airflow", "-Fc", "-f", dump])
    assert result.returncode == 0, result.stderr
    refused = _psql(pg, "afbackup", "airflow", "-c", "INSERT INTO dag VALUES ('x')")
    assert refused.returncode != 0 and "read-only" in refused.stderr
    refused = _psql(pg, "afbackup", "postgres", "-c", "CREATE DATABASE nope")
    assert refused.returncode != 0

    assert _psql(pg, "afbackup_restore", "postgres", "-c", "CREATE DATABASE scratch").returncode == 0
    result = run([pg["bin"] / "pg_restore", "-h", "127.0.0.1", "-p", pg["port"], "-U", "afbackup_restore",
                  "-d", "scratch", "--no-owner", "--no-privileges", "--exit-on-error", dump])
    assert result.returncode == 0, result.stderr
    counted = _psql(pg, "afbackup_restore", "scratch", "-At", "-c",
                    "SELECT (SELECT count(*) FROM dag_run) || ',' || (SELECT count(*) FROM asset)")
    assert counted.stdout.strip() == "3,1"
    # The restore role has no business in the live database.
    refused = _psql(pg, "afbackup_restore", "airflow", "-c", "SELECT count(*) FROM dag")
    assert refused.returncode != 0
