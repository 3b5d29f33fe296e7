"""Notifications from the real CLI: Slack on a failed backup, metrics after a good one, and a
broken notification channel that never changes the backup's own result."""

from __future__ import annotations

import json
import time

import pytest

from tests.harness.pushgateway import Pushgateway, find_pushgateway
from tests.harness.webhook import WebhookReceiver

# slow: every test runs a backup, restore or drill through the CLI with Airflow
pytestmark = [pytest.mark.airflow, pytest.mark.slow]


@pytest.fixture
def hook():
    with WebhookReceiver() as receiver:
        yield receiver


def _notify_config(env, db, airflow, tmp_path, **notify):
    cfg = env.config(db, airflow=airflow)
    cfg["notify"] = notify
    cfg["backup"] = {"name": env.unique("instance-")}
    return cfg


def test_failed_backup_posts_to_slack_and_keeps_its_exit_code(env, hook, tmp_path):
    airflow, db = env.airflow("3")
    webhook = tmp_path / "slack-url"
    webhook.write_text(hook.url + "\n")
    cfg = _notify_config(env, db, airflow, tmp_path, slack_webhook_url_file=str(webhook))
    cfg["encryption"]["recipients"] = [env.keys.fingerprints["stranger"]]
    cfg["encryption"]["gnupghome"] = str(env.backup_keys.home)  # the stranger's key is not in it: exit 7
    done = env.afbackup(env.write_config(cfg), "backup", airflow=airflow)
    assert done.returncode == 7, done.stderr
    assert len(hook.received) == 1
    text = json.dumps(hook.received[0].body)
    assert "backup" in text and "FAILED" in text and "is not in the keyring" in text
    assert hook.token not in done.stderr  # the webhook URL is a secret: never logged


def test_successful_backup_pushes_metrics_and_no_slack_by_default(env, hook, tmp_path):
    if find_pushgateway() is None:
        pytest.skip("no Pushgateway binary: `make pushgateway` installs it")
    airflow, db = env.airflow("3")
    webhook = tmp_path / "slack-url"
    webhook.write_text(hook.url)
    with Pushgateway() as gateway:
        cfg = _notify_config(env, db, airflow, tmp_path, slack_webhook_url_file=str(webhook),
                             pushgateway_url=gateway.url)
        done = env.afbackup(env.write_config(cfg), "backup", "--json", airflow=airflow)
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout)
        instance = cfg["backup"]["name"]
        assert gateway.value("afbackup_success", command="backup", instance=instance) == 1
        assert gateway.value("afbackup_bytes", command="backup", instance=instance) == summary["size"]
        assert gateway.value("afbackup_last_success_timestamp_seconds", command="backup", instance=instance) > 0
        # the fleet metrics: labelled by deployment, the backup's size/duration/max_age kept with the success
        success = {"command": "backup", "instance": instance, "deployment": instance, "result": "success"}
        assert gateway.value("afbackup_backup_size_bytes", **success) == summary["size"]
        assert 0 < gateway.value("afbackup_backup_duration_seconds", **success) < 600
        assert gateway.value("afbackup_backup_max_age_seconds", **success) == 26 * 3600  # [check] max_age
        assert gateway.value("afbackup_failures_total", command="backup", instance=instance) == 0
        assert cfg["encryption"]["sign_with"]  # signed, with a test key that expires after a day
        expiry = gateway.value("afbackup_signing_key_expiry_timestamp_seconds", command="backup", instance=instance)
        assert 0 < expiry - time.time() <= 366 * 86400  # the test keys live a year
    assert hook.received == []


def test_unreachable_notification_channels_do_not_fail_the_backup(env, tmp_path):
    airflow, db = env.airflow("3")
    webhook = tmp_path / "slack-url"
    webhook.write_text("http://127.0.0.1:9/services/T/B/unreachable\n")
    cfg = _notify_config(env, db, airflow, tmp_path, slack_webhook_url_file=str(webhook),
                         slack_on_success=True, pushgateway_url="http://127.0.0.1:9", timeout="2s")
    done = env.afbackup(env.write_config(cfg), "backup", airflow=airflow)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if " WARNING " in line]
    assert any("slack" in line for line in warnings) and any("pushgateway" in line for line in warnings)
    assert "unreachable" not in done.stderr  # the URL path (the secret part) is masked
