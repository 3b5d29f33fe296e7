"""The alert rules and the Grafana dashboard: real ``promtool check rules`` / ``promtool test rules``, every
alert both fires and stays silent in its unit tests, and every metric they use is one afbackup pushes.

promtool comes from Debian's prometheus package, unpacked into .cache/promtool by
tests/harness/install_debian_tool.sh (``make promtool``, a dependency of ``make test``),
or from ``PROMTOOL_BIN``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from afbackup.metrics import build_failure_registry, build_run_registry, build_success_registry
from afbackup.notify import Outcome

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "afbackup-rules.yaml"
RULE_TESTS = Path(__file__).with_name("prometheus-rules-test.yaml")
DASHBOARD = REPO / "deploy" / "grafana" / "afbackup-dashboard.json"
METRIC = re.compile(r"\bafbackup_[a-z_]+\b")

# What each command records as extras (afbackup/cli/*.py); the metric names follow from them.
EXTRAS = {
    "backup": {"max_age_seconds": 93600.0},
    "drill": {"rto_seconds": 1.0, "rpo_seconds": 1.0, "rto_live_seconds": 1.0, "rto_target_seconds": 1.0},
    "check": {"signing_key_expiry_timestamp_seconds": 1.0},
    "prune": {"deleted": 1, "kept": 1},
    "verify": {},
}


def promtool() -> str:
    candidates = [os.environ.get("PROMTOOL_BIN", ""), str(REPO / ".cache" / "promtool" / "usr" / "bin" / "promtool"),
                  shutil.which("promtool") or ""]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.skip("promtool is not installed: run `make promtool` (tests/harness/install_debian_tool.sh) "
                "or set PROMTOOL_BIN")


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=RULE_TESTS.parent)


def test_promtool_check_rules():
    result = run(promtool(), "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 7 rules found" in result.stdout


def test_promtool_rule_unit_tests_pass():
    result = run(promtool(), "test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.integration  # yamllint from the tools venv
def test_rules_and_their_tests_lint_clean():
    from tests.deploy.test_manifests import DEPLOY, tool

    yamllint = tool("yamllint")
    result = subprocess.run([str(yamllint), "--strict", "-c", str(DEPLOY / ".yamllint.yaml"), str(RULES),
                             str(RULE_TESTS)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def alerts() -> set[str]:
    return {rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]}


def test_every_alert_fires_for_one_deployment_and_not_for_another():
    fired: dict[str, set[str]] = {}
    silent: set[str] = set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        deployments = {re.search(r'deployment="([^"]+)"', s["series"]).group(1) for s in case["input_series"]}
        for check in case["alert_rule_test"]:
            firing = {alert["exp_labels"]["deployment"] for alert in check.get("exp_alerts") or []}
            fired.setdefault(check["alertname"], set()).update(firing)
            if deployments - firing:
                silent.add(check["alertname"])
    assert alerts() == {name for name, who in fired.items() if who}
    assert alerts() <= silent


def pushed_metrics() -> set[str]:
    names = set()
    for command, extra in EXTRAS.items():
        for ok in (True, False):
            outcome = Outcome(command=command, ok=ok, exit_code=0 if ok else 8, seconds=1, extra=dict(extra))
            registries = [build_run_registry(outcome, 1.0, "d"), build_failure_registry(1, "d")]
            if ok:
                registries.append(build_success_registry(1.0, outcome, "d"))
            names |= {sample.name for r in registries for family in r.collect() for sample in family.samples}
    return names


def test_the_issue_names_are_pushed():
    assert {"afbackup_last_success_timestamp_seconds", "afbackup_backup_duration_seconds",
            "afbackup_backup_size_bytes", "afbackup_drill_rto_seconds", "afbackup_drill_rto_live_seconds",
            "afbackup_failures_total", "afbackup_signing_key_expiry_timestamp_seconds"} <= pushed_metrics()


def test_rules_use_only_metrics_afbackup_pushes():
    used = set(METRIC.findall(RULES.read_text().split("groups:", 1)[1]))
    assert used and used <= pushed_metrics(), used - pushed_metrics()


def test_dashboard_is_valid_json_over_pushed_metrics_only():
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    used = {name for expr in exprs for name in METRIC.findall(expr)}
    assert used <= pushed_metrics(), used - pushed_metrics()
    assert {"afbackup_backup_size_bytes", "afbackup_backup_duration_seconds", "afbackup_drill_rto_seconds",
            "afbackup_failures_total", "afbackup_signing_key_expiry_timestamp_seconds"} <= used
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    assert all('deployment=~"$deployment"' in expr for expr in exprs[:-1])
