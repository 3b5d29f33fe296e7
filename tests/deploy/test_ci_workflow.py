"""The DR drill's CI workflow (deploy/ci/dr-drill.yml) and the restore_drills/ scripts, statically.

yamllint and shellcheck run from the tools venv (``AFBACKUP_TOOLS_VENV``, default ``.cache/venvs/tools``) and
skip, saying why, when missing; everything else parses the files directly. The scripts themselves are run
against the embedded environment by tests/e2e/test_restore_drills.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import tier

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
WORKFLOW = DEPLOY / "ci" / "dr-drill.yml"
DRILLS = REPO / "restore_drills"
SCRIPTS = [DRILLS / "quarterly_drill.sh", DRILLS / "incident_restore.sh"]
TOOLS_VENV = Path(os.environ.get("AFBACKUP_TOOLS_VENV", REPO / ".cache" / "venvs" / "tools"))

QUARTERLY_CRON = "0 6 1 1,4,7,10 *"
PINNED_BY_MAJOR = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@v\d+$")
EXPRESSION = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)
# What key material looks like when pasted where it does not belong.
KEY_MATERIAL = re.compile(
    r"-----BEGIN [A-Z ]*(PRIVATE|PGP)|AKIA[0-9A-Z]{16}|aws_secret_access_key\s*=|[A-Za-z0-9+/_-]{40,}={0,2}"
)


def tool(name: str) -> Path:
    tier.require(f"{name} from the tools venv (make tools)")
    path = TOOLS_VENV / "bin" / name
    if path.exists():
        return path
    found = shutil.which(name)
    if found:
        return Path(found)
    pytest.skip(f"{name} is not installed: not in the tools venv ({TOOLS_VENV}) nor on PATH (see the Makefile's tools)")


def run(argv: list[Any], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    doc = yaml.safe_load(WORKFLOW.read_text())
    if True in doc:  # YAML 1.1 reads the key `on` as a boolean
        doc["on"] = doc.pop(True)
    return doc


@pytest.fixture(scope="module")
def job(workflow) -> dict[str, Any]:
    (only,) = workflow["jobs"].values()
    return only


def steps_using(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [step for step in job["steps"] if step.get("uses", "").split("@")[0] == action]


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)
    elif node is not None:
        yield str(node)


# --------------------------------------------------------------------------------------------- workflow
@pytest.mark.integration  # needs the tools venv (make tools)
def test_workflow_yaml_lints_clean():
    yamllint = tool("yamllint")
    result = run([yamllint, "--strict", "-c", DEPLOY / ".yamllint.yaml", WORKFLOW], cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr


def test_runs_quarterly_and_on_demand_with_a_backup_input(workflow):
    triggers = workflow["on"]
    assert set(triggers) == {"schedule", "workflow_dispatch"}
    assert triggers["schedule"] == [{"cron": QUARTERLY_CRON}]
    backup = triggers["workflow_dispatch"]["inputs"]["backup"]
    assert backup["default"] == "latest" and backup.get("required", False) is False


def test_permissions_are_minimal(workflow, job):
    assert workflow["permissions"] == {"contents": "read", "checks": "write"}
    assert "permissions" not in job  # nothing widened per job


def test_a_postgres_service_with_a_health_check_is_the_scratch_server(job):
    assert job["runs-on"] == "ubuntu-latest"
    services = job["services"]
    (name,) = [n for n, s in services.items() if str(s["image"]).startswith("postgres:")]
    service = services[name]
    assert service["image"] == "postgres:16"
    assert "--health-cmd" in service["options"] and "pg_isready" in service["options"]
    assert "5432:5432" in service["ports"]
    (drill,) = [s for s in job["steps"] if "restore_drills/quarterly_drill.sh" in s.get("run", "")]
    dsn = drill["env"]["DRILL_SCRATCH_DSN"]
    assert re.fullmatch(r"postgresql://postgres@(localhost|127\.0\.0\.1):5432/\w+", dsn), dsn  # no password


def test_installs_afbackup_and_its_tools_on_python_312(job):
    (python,) = steps_using(job, "actions/setup-python")
    assert str(python["with"]["python-version"]) == "3.12"
    assert steps_using(job, "actions/checkout")
    runs = "\n".join(s.get("run", "") for s in job["steps"])
    assert re.search(r"pip install .*\.$", runs, re.MULTILINE)
    assert re.search(r"apt-get install .*gnupg.*zstd.*postgresql-client", runs)


def test_calls_the_quarterly_drill_script_with_the_drill_inputs(job):
    (drill,) = [s for s in job["steps"] if "restore_drills/quarterly_drill.sh" in s.get("run", "")]
    assert "if" not in drill
    script = (DRILLS / "quarterly_drill.sh").read_text()
    for name in drill["env"]:
        if name.startswith("DRILL_"):
            assert name in script, f"{name} is set by the workflow but unknown to quarterly_drill.sh"
    assert drill["env"]["DRILL_BACKUP"] == "${{ inputs.backup || 'latest' }}"
    assert job["env"]["DRILL_REPORT_DIR"].split()[0] == "drill-report"


def test_the_report_is_uploaded_and_the_junit_report_published_always(job):
    (upload,) = steps_using(job, "actions/upload-artifact")
    assert upload["if"] == "always()" and upload["with"]["path"] == "drill-report"
    (junit,) = steps_using(job, "mikepenz/action-junit-report")
    assert junit["if"] == "always()"
    assert junit["with"]["report_paths"] == "drill-report/drill-junit.xml"
    order = [s.get("uses", s.get("run", "")) for s in job["steps"]]
    drill_at = next(i for i, s in enumerate(order) if "quarterly_drill.sh" in s)
    assert order.index(upload["uses"]) > drill_at and order.index(junit["uses"]) > drill_at


def test_actions_are_pinned_by_major_version(job):
    uses = [s["uses"] for s in job["steps"] if "uses" in s]
    assert uses
    assert [u for u in uses if not PINNED_BY_MAJOR.match(u)] == []
    assert "mikepenz/action-junit-report@v5" in uses


def test_gpg_key_and_cloud_credentials_come_from_secrets(job):
    env = {k: v for s in job["steps"] for k, v in s.get("env", {}).items()}
    assert env["AFBACKUP_GPG_PRIVATE_KEY"] == "${{ secrets.AFBACKUP_GPG_PRIVATE_KEY }}"
    assert env["AFBACKUP_GPG_PASSPHRASE"] == "${{ secrets.AFBACKUP_GPG_PASSPHRASE }}"
    assert env["AWS_ACCESS_KEY_ID"] == "${{ secrets.AWS_ACCESS_KEY_ID }}"
    assert env["AWS_SECRET_ACCESS_KEY"] == "${{ secrets.AWS_SECRET_ACCESS_KEY }}"
    (importer,) = [s for s in job["steps"] if "AFBACKUP_GPG_PRIVATE_KEY" in s.get("env", {})]
    assert "gpg --batch" in importer["run"] and "--import" in importer["run"]
    assert "GNUPGHOME" in importer["run"] and "RUNNER_TEMP" in importer["run"]  # a fresh keyring


def test_secrets_are_only_referenced_as_expressions_never_inlined(job):
    text = WORKFLOW.read_text()
    outside = EXPRESSION.sub("", text)
    code = "\n".join(line for line in outside.splitlines() if not line.lstrip().startswith("#"))
    assert "secrets." not in code, "a secrets.* reference outside ${{ }}"
    for expression in EXPRESSION.findall(text):
        for ref in re.findall(r"secrets\.(\w+)", expression):
            assert re.fullmatch(r"[A-Z][A-Z0-9_]*", ref), ref
    # Never interpolated into a shell script (injection, and leaking into the rendered script): env only.
    for step in job["steps"]:
        assert "secrets." not in step.get("run", ""), step.get("name")
    assert KEY_MATERIAL.findall("\n".join(strings(job))) == []
    assert not KEY_MATERIAL.search(code.replace("${{", "").replace("}}", "")), "literal key material?"


# --------------------------------------------------------------------------------------------- scripts
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_parses_with_bash(script):
    result = run(["bash", "-n", script])
    assert result.returncode == 0, result.stderr
    assert os.access(script, os.X_OK), f"{script.name} is not executable"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
@pytest.mark.integration  # needs the tools venv (make tools)
def test_script_is_shellcheck_clean(script):
    shellcheck = tool("shellcheck")
    result = run([shellcheck, "--shell=bash", "--severity=info", script], cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_readme_documents_every_input_of_the_scripts():
    readme = (DRILLS / "README.md").read_text()
    quarterly = (DRILLS / "quarterly_drill.sh").read_text()
    for name in sorted(set(re.findall(r"\$\{(DRILL_\w+|PG_BIN|AFBACKUP|PYTHON)\b", quarterly))):
        assert f"`{name}`" in readme, name
    incident = (DRILLS / "incident_restore.sh").read_text()
    for option in sorted(set(re.findall(r"^\s+(--[a-z0-9-]+)\)", incident, re.MULTILINE))):
        assert f"`{option}" in readme, option
    for name in ("KUBECTL", "K8S_WAIT_TIMEOUT"):
        assert name in incident and f"`{name}`" in readme
