"""Notifications against real servers: a local Slack webhook receiver and the real Prometheus Pushgateway.

The contract (afbackup/notify.py): Slack on failure (on success only when
asked), metrics after every run, and a failing channel never raises, never
hides the run's result, logs ONE WARNING line and never logs a secret.
"""

from __future__ import annotations

import logging
import time
import uuid

import pytest

from afbackup.config.model import NotifyConfig
from afbackup.notify import notify
from afbackup.outcome import Outcome
from tests.harness.clock import FakeClock
from tests.harness.pg import free_port
from tests.harness.pushgateway import BASIC_AUTH_PASSWORD, INSTALL_HINT, Pushgateway, find_pushgateway
from tests.harness.webhook import WebhookReceiver

FAILED_BACKUP = Outcome(
    command="backup", ok=False, exit_code=6, seconds=125.4, backup_id="20261124T040001Z-ab12cd",
    bytes=3 * 2**30, rows=48_213, error="upload: PutObject failed: AccessDenied (s3://airflow-backups/prod)",
)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    """urllib honours *_proxy variables; every server here is on loopback."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def gateway():
    """One real Pushgateway for the session; tests keep apart by a unique ``instance``."""
    if find_pushgateway() is None:
        pytest.skip(f"no Prometheus Pushgateway binary; {INSTALL_HINT}")
    with Pushgateway() as server:
        yield server


@pytest.fixture(scope="module")
def auth_gateway(gateway):
    """A second gateway that wants basic auth (``--web.config.file``)."""
    with Pushgateway(basic_auth=True) as server:
        yield server


@pytest.fixture(scope="module")
def receiver():
    with WebhookReceiver() as hook:
        yield hook


@pytest.fixture
def hook(receiver):
    receiver.reset()
    return receiver


@pytest.fixture
def webhook_file(tmp_path, hook):
    """The webhook URL in a secret file, with the trailing newline editors leave."""
    path = tmp_path / "slack-webhook-url"
    path.write_text(f"  {hook.url}\n")
    return str(path)


@pytest.fixture
def instance() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def logs(caplog, monkeypatch):
    """Every afbackup record, even when an earlier test ran configure_logging (propagate=False)."""
    monkeypatch.setattr(logging.getLogger("afbackup"), "propagate", True)
    caplog.set_level(logging.DEBUG, logger="afbackup")
    return caplog


def warnings_in(caplog) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.levelno == logging.WARNING]


def field_texts(body: dict) -> list[str]:
    return [field["text"] for block in body["blocks"] for field in block.get("fields", [])]


# --- Slack ---------------------------------------------------------------------------------------


def test_failure_posts_a_slack_message_with_id_size_duration_and_error(hook, webhook_file, logs):
    # GIVEN a webhook file; WHEN a backup fails
    problems = notify(NotifyConfig(slack_webhook_url_file=webhook_file), FAILED_BACKUP, instance="prod-eu")
    # THEN one JSON message reached the webhook URL read from the file (whitespace stripped)
    assert problems == []
    assert len(hook.received) == 1
    message = hook.received[0]
    assert message.path.endswith(hook.token)
    assert message.headers["content-type"].startswith("application/json")
    assert message.headers["user-agent"].startswith("afbackup/")
    body = message.body
    # … with a text fallback naming the failure, the backup id and the error line
    assert "backup FAILED on prod-eu" in body["text"]
    assert FAILED_BACKUP.backup_id in body["text"] and "AccessDenied" in body["text"]
    # … and blocks: a header, the fields, the error line in a code block
    assert body["blocks"][0]["type"] == "header"
    assert body["blocks"][0]["text"]["text"] == ":x: afbackup backup FAILED on prod-eu"
    fields = "\n".join(field_texts(body))
    for expected in ("*Command*\nbackup", FAILED_BACKUP.backup_id, "*Size*\n3.0 GiB", "*Duration*\n2m5s",
                     "*Exit code*\n6", "*Rows*\n48,213"):
        assert expected in fields
    error_block = body["blocks"][2]["text"]["text"]
    assert error_block == f"*Error*\n```{FAILED_BACKUP.error}```"
    assert not warnings_in(logs)


def test_success_sends_no_slack_message_unless_asked(hook, webhook_file):
    ok = Outcome(command="backup", ok=True, exit_code=0, seconds=3.2, backup_id="b-ok", bytes=1024)
    # GIVEN slack_on_success off (the default): nothing is sent
    assert notify(NotifyConfig(slack_webhook_url_file=webhook_file), ok, instance="prod") == []
    assert hook.received == []
    # GIVEN slack_on_success on: a success message
    assert notify(NotifyConfig(slack_webhook_url_file=webhook_file, slack_on_success=True), ok, instance="prod") == []
    assert len(hook.received) == 1
    body = hook.received[0].body
    assert body["blocks"][0]["text"]["text"] == ":white_check_mark: afbackup backup succeeded on prod"
    assert "b-ok" in body["text"]
    assert len(body["blocks"]) == 2  # header and fields; no error block


def test_the_webhook_url_is_read_at_send_time(hook, webhook_file):
    cfg = NotifyConfig(slack_webhook_url_file=webhook_file)
    # GIVEN the secret file is rotated after the config was loaded
    with open(webhook_file, "w") as handle:
        handle.write(hook.url.replace(hook.token, "ROTATED") + "\n")
    notify(cfg, FAILED_BACKUP, instance="prod")
    # THEN the new URL is used
    assert hook.received[0].path.endswith("/ROTATED")


def test_secrets_in_the_error_line_are_masked_in_the_message(hook, webhook_file):
    failed = Outcome(command="restore", ok=False, exit_code=5, seconds=1.0,
                     error="pg_restore: cannot connect to postgresql://airflow:hunter2@db:5432/airflow <x>")
    notify(NotifyConfig(slack_webhook_url_file=webhook_file), failed, instance="prod")
    raw = str(hook.received[0].body)
    assert "hunter2" not in raw
    assert "airflow:***@db" in raw and "&lt;x&gt;" in raw  # mrkdwn control characters escaped


@pytest.mark.parametrize(("mode", "expected"), [("error", "HTTP 500"), ("hang", "no answer within 1 s")])
def test_a_failing_webhook_is_one_warning_without_the_url(hook, webhook_file, logs, mode, expected):
    # GIVEN a webhook that answers 500, or never answers
    hook.reset(mode)
    started = time.monotonic()
    # WHEN a failure is notified with a 1 s timeout
    problems = notify(NotifyConfig(slack_webhook_url_file=webhook_file, timeout=1), FAILED_BACKUP, instance="prod")
    # THEN notify returns the problem instead of raising, within the timeout
    assert time.monotonic() - started < 5
    assert len(hook.received) == 1
    assert len(problems) == 1 and problems[0].startswith("slack: ") and expected in problems[0]
    # … and logs exactly one WARNING, which never holds the webhook URL (a secret)
    (warning,) = warnings_in(logs)
    assert expected in warning.getMessage() and "backup result is unaffected" in warning.getMessage()
    assert hook.token not in logs.text and hook.token not in problems[0]
    assert "127.0.0.1" not in warning.getMessage()


def test_an_unreadable_webhook_file_is_a_warning(tmp_path, logs):
    missing = str(tmp_path / "nope")
    problems = notify(NotifyConfig(slack_webhook_url_file=missing), FAILED_BACKUP, instance="prod")
    assert problems == [f"slack: cannot read notify.slack_webhook_url_file {missing}: No such file or directory"]
    assert len(warnings_in(logs)) == 1


# --- Pushgateway ---------------------------------------------------------------------------------


@pytest.mark.integration  # the real Pushgateway (make pushgateway)
def test_metrics_are_pushed_and_read_back(gateway, instance, logs):
    # GIVEN a successful drill with RTO/RPO and labels
    drill = Outcome(command="drill", ok=True, exit_code=0, seconds=95.5, backup_id="b-drill", bytes=123_456,
                    rows=789, extra={"rto_seconds": 95.5, "rpo_seconds": 3600.0},
                    labels={"reason": "quarterly", "team-name": "data", "job": "ignored"})
    before = time.time()
    # WHEN it is notified
    assert notify(NotifyConfig(pushgateway_url=gateway.url, pushgateway_job="afb-test"), drill,
                  instance=instance) == []
    # THEN the gateway holds the run group {job, instance, command} …
    group = {"job": "afb-test", "instance": instance, "command": "drill"}
    expected = {"afbackup_duration_seconds": 95.5, "afbackup_bytes": 123_456, "afbackup_rows": 789,
                "afbackup_success": 1, "afbackup_exit_code": 0, "afbackup_drill_rto_seconds": 95.5,
                "afbackup_drill_rpo_seconds": 3600}
    for name, value in expected.items():
        assert gateway.value(name, **group) == value, name
    last_run = gateway.value("afbackup_last_run_timestamp_seconds", **group)
    assert before <= last_run <= time.time()
    # … the info series with the backup id and the (valid) labels; grouping labels are not overridden
    (info,) = gateway.samples("afbackup_last_run_info", **group)
    assert info.labels == {**group, "backup_id": "b-drill", "reason": "quarterly", "team_name": "data",
                           "deployment": instance}
    # … and the success group
    assert gateway.value("afbackup_last_success_timestamp_seconds", **group, result="success") == last_run
    assert not warnings_in(logs)


@pytest.mark.integration  # the real Pushgateway (make pushgateway)
def test_a_failure_keeps_the_last_success_timestamp(gateway, instance):
    cfg = NotifyConfig(pushgateway_url=gateway.url)
    group = {"job": "afbackup", "instance": instance, "command": "backup"}
    clock = FakeClock()
    # GIVEN a successful backup
    ok = Outcome(command="backup", ok=True, exit_code=0, seconds=10, backup_id="b1", bytes=2048, rows=5)
    assert notify(cfg, ok, instance=instance, clock=clock) == []
    success_at = gateway.value("afbackup_last_success_timestamp_seconds", **group)
    assert success_at == clock.now().timestamp()
    # WHEN the next backup fails, an hour later
    clock.advance(3600)
    assert notify(cfg, FAILED_BACKUP, instance=instance, clock=clock) == []
    # THEN the last run shows the failure …
    assert gateway.value("afbackup_success", **group) == 0
    assert gateway.value("afbackup_exit_code", **group) == 6
    assert gateway.value("afbackup_last_run_timestamp_seconds", **group) > success_at
    # … and the last success is still the earlier one
    assert gateway.value("afbackup_last_success_timestamp_seconds", **group) == success_at


@pytest.mark.integration  # the real Pushgateway (make pushgateway)
def test_a_failed_run_replaces_every_metric_of_the_previous_run(gateway, instance):
    cfg = NotifyConfig(pushgateway_url=gateway.url)
    group = {"instance": instance, "command": "drill"}
    notify(cfg, Outcome(command="drill", ok=True, exit_code=0, seconds=5, extra={"rto_seconds": 5}), instance=instance)
    assert gateway.value("afbackup_drill_rto_seconds", **group) == 5
    # WHEN a drill fails before it measured anything
    notify(cfg, Outcome(command="drill", ok=False, exit_code=8, seconds=1, error="x"), instance=instance)
    # THEN no stale RTO is left over from the previous drill
    assert gateway.value("afbackup_drill_rto_seconds", **group) is None
    assert gateway.value("afbackup_success", **group) == 0


@pytest.mark.integration  # the real Pushgateway (make pushgateway)
def test_commands_have_their_own_groups(gateway, instance):
    cfg = NotifyConfig(pushgateway_url=gateway.url)
    notify(cfg, Outcome(command="backup", ok=True, exit_code=0, seconds=1), instance=instance)
    notify(cfg, Outcome(command="prune", ok=False, exit_code=9, seconds=1, extra={"deleted": 0}), instance=instance)
    assert gateway.value("afbackup_success", instance=instance, command="backup") == 1
    assert gateway.value("afbackup_success", instance=instance, command="prune") == 0
    assert gateway.value("afbackup_prune_deleted", instance=instance, command="prune") == 0


def test_a_gateway_that_is_down_is_one_warning_and_slack_still_goes_out(hook, webhook_file, logs):
    # GIVEN nothing listens where the gateway should be
    cfg = NotifyConfig(slack_webhook_url_file=webhook_file, pushgateway_url=f"http://127.0.0.1:{free_port()}",
                       timeout=1)
    # WHEN a failure is notified
    problems = notify(cfg, FAILED_BACKUP, instance="prod")
    # THEN Slack got it, the gateway is one problem and one WARNING, nothing raised
    assert len(hook.received) == 1
    assert len(problems) == 1 and problems[0].startswith("pushgateway: cannot connect")
    assert len(warnings_in(logs)) == 1


def test_a_bad_gateway_url_is_a_warning(logs):
    problems = notify(NotifyConfig(pushgateway_url="ftp://gateway:21"), FAILED_BACKUP, instance="prod")
    assert problems == ["pushgateway: notify.pushgateway_url must be an http:// or https:// URL"]
    assert len(warnings_in(logs)) == 1


@pytest.mark.integration  # the real Pushgateway (make pushgateway)
def test_basic_auth_from_the_url_works_and_is_never_logged(auth_gateway, instance, logs):
    ok = Outcome(command="verify", ok=True, exit_code=0, seconds=2.5)
    # GIVEN the credentials as URL userinfo: the push is accepted
    assert notify(NotifyConfig(pushgateway_url=auth_gateway.url_with_auth), ok, instance=instance) == []
    assert auth_gateway.value("afbackup_success", instance=instance, command="verify") == 1
    # GIVEN a wrong password: one warning (401), and neither password in any log line or problem
    wrong = auth_gateway.url_with_auth.replace(BASIC_AUTH_PASSWORD, "Wr0ng-Secret-99")
    problems = notify(NotifyConfig(pushgateway_url=wrong), ok, instance=instance)
    assert problems == ["pushgateway: HTTP 401 Unauthorized"]
    assert len(warnings_in(logs)) == 1
    for secret in (BASIC_AUTH_PASSWORD, "Wr0ng-Secret-99"):
        assert secret not in logs.text
    # GIVEN no credentials at all: refused
    assert notify(NotifyConfig(pushgateway_url=auth_gateway.url), ok, instance=instance) != []


@pytest.mark.integration  # the real Pushgateway (make pushgateway)
def test_every_series_is_labelled_by_deployment_and_a_backup_success_keeps_duration_size_and_max_age(
        gateway, instance):
    cfg = NotifyConfig(pushgateway_url=gateway.url)
    ok = Outcome(command="backup", ok=True, exit_code=0, seconds=42.5, backup_id="b1", bytes=4096,
                 extra={"max_age_seconds": 93600.0})
    assert notify(cfg, ok, instance=instance) == []
    success = {"instance": instance, "command": "backup", "result": "success", "deployment": instance}
    assert gateway.value("afbackup_backup_duration_seconds", **success) == 42.5
    assert gateway.value("afbackup_backup_size_bytes", **success) == 4096
    assert gateway.value("afbackup_backup_max_age_seconds", **success) == 93600
    ours = [s for s in gateway.samples(instance=instance) if s.name.startswith("afbackup_")]
    assert ours and all(s.labels.get("deployment") == instance for s in ours)
    # a failed backup afterwards leaves the last good backup's figures in place
    assert notify(cfg, FAILED_BACKUP, instance=instance) == []
    assert gateway.value("afbackup_backup_size_bytes", **success) == 4096
    assert gateway.value("afbackup_backup_max_age_seconds", instance=instance, command="backup") == 93600


@pytest.mark.integration  # the real Pushgateway (make pushgateway)
def test_failures_total_counts_failed_runs_across_pushes(gateway, instance):
    cfg = NotifyConfig(pushgateway_url=gateway.url)
    failures = {"instance": instance, "command": "backup", "result": "failure"}
    ok = Outcome(command="backup", ok=True, exit_code=0, seconds=1)
    assert notify(cfg, ok, instance=instance) == []
    assert gateway.value("afbackup_failures_total", **failures) == 0  # exists before the first failure
    notify(cfg, FAILED_BACKUP, instance=instance)
    notify(cfg, ok, instance=instance)
    notify(cfg, FAILED_BACKUP, instance=instance)
    assert gateway.value("afbackup_failures_total", **failures) == 2
    # another command, another counter
    notify(cfg, Outcome(command="prune", ok=False, exit_code=9, seconds=1), instance=instance)
    assert gateway.value("afbackup_failures_total", instance=instance, command="prune") == 1
    assert gateway.value("afbackup_failures_total", **failures) == 2


@pytest.mark.integration  # the real Pushgateway (make pushgateway)
def test_check_pushes_the_signing_key_expiry_under_its_own_name_and_sends_no_slack(
        gateway, instance, hook, webhook_file):
    cfg = NotifyConfig(pushgateway_url=gateway.url, slack_webhook_url_file=webhook_file)
    check = Outcome(command="check", ok=False, exit_code=8, seconds=1,
                    extra={"signing_key_expiry_timestamp_seconds": 1_900_000_000.0})
    assert notify(cfg, check, instance=instance) == []
    assert gateway.value("afbackup_signing_key_expiry_timestamp_seconds", instance=instance,
                         command="check", deployment=instance) == 1_900_000_000
    assert gateway.samples("afbackup_check_signing_key_expiry_timestamp_seconds") == []
    assert hook.received == []
