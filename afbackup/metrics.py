"""Prometheus Pushgateway metrics for one afbackup run, built with prometheus-client.

Three groups per (job, instance, command), because a PUT replaces every metric
of its group and a POST keeps stale ones:

* the *run* group ``{job, instance, command}`` is replaced (PUT) after every
  run, successful or not: timestamp, duration, bytes, rows, result, exit
  code, the command's extras (``afbackup_drill_rto_seconds``, …) and an info
  series with the backup id and the run's labels. Nothing from an older run
  survives in it, so a failed drill never shows the previous drill's RTO.
* the *success* group ``{job, instance, command, result="success"}`` holds
  ``afbackup_last_success_timestamp_seconds`` (for a backup also
  ``afbackup_backup_duration_seconds``, ``afbackup_backup_size_bytes`` and
  ``afbackup_backup_max_age_seconds``) and is replaced only when a run
  succeeds, so a failed run cannot erase the time of the last good one.
* the *failure* group ``{job, instance, command, result="failure"}`` holds the
  counter ``afbackup_failures_total``: the value read back from the gateway
  plus one for a failed run (plus zero for a success, so the series exists
  before the first failure). When the gateway cannot be read, the counter is
  left alone rather than reset.

Every series carries the label ``deployment`` (the deployment's name, its
``backup.name``; equal to ``instance``), which the alert rules and the
dashboard (deploy/prometheus, deploy/grafana) select on.

Basic auth comes from the URL's userinfo (``https://user:pass@host``); the
credentials are moved into an ``Authorization`` header and never appear in a
request URL, an error message or a log line.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import urllib.parse
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.exposition import basic_auth_handler, default_handler, push_to_gateway
from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from afbackup.outcome import Outcome

if TYPE_CHECKING:  # pragma: no cover
    from afbackup.config.model import NotifyConfig

logger = logging.getLogger(__name__)

PREFIX = "afbackup_"
SUCCESS_GROUP = {"result": "success"}
FAILURE_GROUP = {"result": "failure"}
# Labels the Pushgateway sets from the grouping key: a pushed series may not carry them.
RESERVED_LABELS = frozenset({"job", "instance", "command", "result", "deployment"})
# Extras named without the command's prefix (``afbackup_<name>``), e.g. pushed by ``check``.
GLOBAL_EXTRAS = frozenset({"signing_key_expiry_timestamp_seconds"})
# Extras that go only into the success group (``afbackup_<command>_<name>``).
SUCCESS_EXTRAS = frozenset({"max_age_seconds"})
_NOT_A_NAME_CHAR = re.compile(r"[^a-zA-Z0-9_]")


@dataclasses.dataclass(frozen=True)
class Gateway:
    """A Pushgateway address split into a credential-free URL and its basic-auth pair."""

    url: str
    username: str | None = None
    password: str | None = None

    def handler(self, url: str, method: str, timeout: float | None, headers: list, data: bytes) -> Callable[[], None]:
        """The prometheus-client push handler: basic auth when the URL had userinfo."""
        if self.username is None:
            return default_handler(url, method, timeout, headers, data)
        return basic_auth_handler(url, method, timeout, headers, data, self.username, self.password or "")

    def secrets(self) -> list[str]:
        """Strings that must be masked wherever an error about this gateway is shown."""
        if not self.password:
            return []
        return [f"{self.username}:{self.password}", self.password]


def parse_gateway(url: str) -> Gateway:
    """Split ``[http[s]://][user:pass@]host[:port][/prefix]``; a bare host means http."""
    if "://" not in url:
        url = "http://" + url
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError("notify.pushgateway_url must be an http:// or https:// URL")
    host = parts.netloc.rpartition("@")[2]
    clean = urllib.parse.urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))
    if parts.username is None:
        return Gateway(clean)
    return Gateway(clean, urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or ""))


def metric_token(text: str) -> str:
    """``"rto-seconds"`` -> ``"rto_seconds"``: a safe fragment of a metric or label name."""
    token = _NOT_A_NAME_CHAR.sub("_", text.strip()).strip("_").lower()
    return f"_{token}" if token[:1].isdigit() else token


def _gauge(registry: CollectorRegistry, name: str, doc: str, value: float, deployment: str) -> None:
    Gauge(PREFIX + name, doc, labelnames=["deployment"], registry=registry).labels(deployment=deployment).set(value)


def _extra_metrics(registry: CollectorRegistry, outcome: Outcome, deployment: str) -> None:
    """``extra={"rto_seconds": 42}`` of a drill -> ``afbackup_drill_rto_seconds 42``."""
    for key, value in sorted(outcome.extra.items()):
        token = metric_token(key)
        if token in SUCCESS_EXTRAS:
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            logger.debug("metric %s_%s skipped: %r is not a number", outcome.command, token, value)
            continue
        if token and not math.isnan(number):
            name = token if token in GLOBAL_EXTRAS else f"{outcome.command}_{token}"
            _gauge(registry, name, f"{key} reported by the last {outcome.command} run.", number, deployment)


def _info_labels(outcome: Outcome, deployment: str) -> dict[str, str]:
    """The info series' labels: the run's own labels (made valid) and the backup id."""
    labels: dict[str, str] = {}
    for key, value in sorted(outcome.labels.items()):
        name = metric_token(key)
        if name and not name.startswith("__") and name not in RESERVED_LABELS:
            labels[name] = str(value)
    labels["backup_id"] = outcome.backup_id
    labels["deployment"] = deployment
    return labels


def build_run_registry(outcome: Outcome, now: float, deployment: str = "") -> CollectorRegistry:
    """Every metric of the run group, in a fresh registry (``now``: Unix seconds)."""
    registry = CollectorRegistry()
    d = deployment
    _gauge(registry, "last_run_timestamp_seconds", "Unix time at which the last run ended.", now, d)
    _gauge(registry, "duration_seconds", "Wall-clock duration of the last run, in seconds.", outcome.seconds, d)
    _gauge(registry, "bytes", "Bytes written or read by the last run (stored object size for a backup).",
           outcome.bytes, d)
    _gauge(registry, "rows", "Table rows captured or checked by the last run.", outcome.rows, d)
    _gauge(registry, "success", "1 when the last run succeeded, 0 when it failed.", 1 if outcome.ok else 0, d)
    _gauge(registry, "exit_code", "Exit code of the last run (0 on success).", outcome.exit_code, d)
    _extra_metrics(registry, outcome, d)
    labels = _info_labels(outcome, d)
    info = Gauge(PREFIX + "last_run_info", "Always 1; labels: the last run's backup id and labels.",
                 labelnames=sorted(labels), registry=registry)
    info.labels(**labels).set(1)
    return registry


def build_success_registry(now: float, outcome: Outcome | None = None, deployment: str = "") -> CollectorRegistry:
    """The success group: the time of this (successful) run; for a backup also its duration, size and max_age."""
    registry = CollectorRegistry()
    d = deployment
    _gauge(registry, "last_success_timestamp_seconds", "Unix time at which the last successful run ended.", now, d)
    if outcome is not None and outcome.command == "backup":
        _gauge(registry, "backup_duration_seconds", "Wall-clock duration of the last successful backup.",
               outcome.seconds, d)
        _gauge(registry, "backup_size_bytes", "Stored (encrypted) size of the last successful backup.",
               outcome.bytes, d)
        max_age = outcome.extra.get("max_age_seconds")
        if max_age is not None:
            _gauge(registry, "backup_max_age_seconds", "check.max_age: the newest backup may not be older.",
                   float(max_age), d)
    return registry


def build_failure_registry(total: float, deployment: str = "") -> CollectorRegistry:
    """The failure group: the failed runs of this command so far (as far as the gateway remembers)."""
    registry = CollectorRegistry()
    family = CounterMetricFamily(PREFIX + "failures", "Failed runs of this command.", labels=["deployment"])
    family.add_metric([deployment], total)

    registry.register(_FixedCollector([family]))
    return registry


class _FixedCollector(Collector):
    """Collects metric families built beforehand (a counter whose total the gateway holds, not this process)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return list(self._families)


def read_failures(gateway: Gateway, job: str, instance: str, command: str, timeout: float) -> float:
    """``afbackup_failures_total`` of the failure group as the gateway holds it now (0 when absent)."""
    import urllib.request

    request = urllib.request.Request(gateway.url + "/metrics")
    if gateway.username is not None:
        import base64

        token = base64.b64encode(f"{gateway.username}:{gateway.password or ''}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http(s) only (parse_gateway)
        text = response.read().decode("utf-8", "replace")
    wanted = {"job": job, "instance": instance, "command": command, **FAILURE_GROUP}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == PREFIX + "failures_total" and all(sample.labels.get(k) == v for k, v in wanted.items()):
                return float(sample.value)
    return 0.0


def push_metrics(cfg: NotifyConfig, outcome: Outcome, *, instance: str, now: float) -> None:
    """Replace the run group, the success group when the run succeeded, and count failures. Raises on failure."""
    gateway = parse_gateway(cfg.pushgateway_url)
    key = {"instance": instance, "command": outcome.command}
    push_to_gateway(gateway.url, job=cfg.pushgateway_job, registry=build_run_registry(outcome, now, instance),
                    grouping_key=key, timeout=cfg.timeout, handler=gateway.handler)
    if outcome.ok:
        push_to_gateway(gateway.url, job=cfg.pushgateway_job, registry=build_success_registry(now, outcome, instance),
                        grouping_key={**key, **SUCCESS_GROUP}, timeout=cfg.timeout, handler=gateway.handler)
    total = read_failures(gateway, cfg.pushgateway_job, instance, outcome.command, cfg.timeout)
    push_to_gateway(gateway.url, job=cfg.pushgateway_job,
                    registry=build_failure_registry(total + (0 if outcome.ok else 1), instance),
                    grouping_key={**key, **FAILURE_GROUP}, timeout=cfg.timeout, handler=gateway.handler)
