"""Prometheus Pushgateway metrics for one afbackup run, built with prometheus-client.

Two groups per (job, instance, command), because a PUT replaces every metric
of its group and a POST keeps stale ones:

* the *run* group ``{job, instance, command}`` is replaced (PUT) after every
  run, successful or not: timestamp, duration, bytes, rows, result, exit
  code, the command's extras (``afbackup_drill_rto_seconds``, …) and an info
  series with the backup id and the run's labels. Nothing from an older run
  survives in it, so a failed drill never shows the previous drill's RTO.
* the *success* group ``{job, instance, command, result="success"}`` holds only
  ``afbackup_last_success_timestamp_seconds`` and is replaced only when a run
  succeeds, so a failed run cannot erase the time of the last good one.

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
from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.exposition import basic_auth_handler, default_handler, push_to_gateway

from afbackup.outcome import Outcome

if TYPE_CHECKING:  # pragma: no cover
    from afbackup.config.model import NotifyConfig

logger = logging.getLogger(__name__)

PREFIX = "afbackup_"
SUCCESS_GROUP = {"result": "success"}
# Labels the Pushgateway sets from the grouping key: a pushed series may not carry them.
RESERVED_LABELS = frozenset({"job", "instance", "command", "result"})
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


def _gauge(registry: CollectorRegistry, name: str, doc: str, value: float) -> None:
    Gauge(PREFIX + name, doc, registry=registry).set(value)


def _extra_metrics(registry: CollectorRegistry, outcome: Outcome) -> None:
    """``extra={"rto_seconds": 42}`` of a drill -> ``afbackup_drill_rto_seconds 42``."""
    for key, value in sorted(outcome.extra.items()):
        token = metric_token(key)
        try:
            number = float(value)
        except (TypeError, ValueError):
            logger.debug("metric %s_%s skipped: %r is not a number", outcome.command, token, value)
            continue
        if token and not math.isnan(number):
            _gauge(registry, f"{outcome.command}_{token}", f"{key} reported by the last {outcome.command} run.", number)


def _info_labels(outcome: Outcome) -> dict[str, str]:
    """The info series' labels: the run's own labels (made valid) and the backup id."""
    labels: dict[str, str] = {}
    for key, value in sorted(outcome.labels.items()):
        name = metric_token(key)
        if name and not name.startswith("__") and name not in RESERVED_LABELS:
            labels[name] = str(value)
    labels["backup_id"] = outcome.backup_id
    return labels


def build_run_registry(outcome: Outcome, now: float) -> CollectorRegistry:
    """Every metric of the run group, in a fresh registry (``now``: Unix seconds)."""
    registry = CollectorRegistry()
    _gauge(registry, "last_run_timestamp_seconds", "Unix time at which the last run ended.", now)
    _gauge(registry, "duration_seconds", "Wall-clock duration of the last run, in seconds.", outcome.seconds)
    _gauge(registry, "bytes", "Bytes written or read by the last run (stored object size for a backup).",
           outcome.bytes)
    _gauge(registry, "rows", "Table rows captured or checked by the last run.", outcome.rows)
    _gauge(registry, "success", "1 when the last run succeeded, 0 when it failed.", 1 if outcome.ok else 0)
    _gauge(registry, "exit_code", "Exit code of the last run (0 on success).", outcome.exit_code)
    _extra_metrics(registry, outcome)
    labels = _info_labels(outcome)
    info = Gauge(PREFIX + "last_run_info", "Always 1; labels: the last run's backup id and labels.",
                 labelnames=sorted(labels), registry=registry)
    info.labels(**labels).set(1)
    return registry


def build_success_registry(now: float) -> CollectorRegistry:
    """The success group: only the time of this (successful) run."""
    registry = CollectorRegistry()
    _gauge(registry, "last_success_timestamp_seconds", "Unix time at which the last successful run ended.", now)
    return registry


def push_metrics(cfg: NotifyConfig, outcome: Outcome, *, instance: str, now: float) -> None:
    """Replace the run group, and the success group when the run succeeded. Raises on any failure."""
    gateway = parse_gateway(cfg.pushgateway_url)
    key = {"instance": instance, "command": outcome.command}
    push_to_gateway(gateway.url, job=cfg.pushgateway_job, registry=build_run_registry(outcome, now),
                    grouping_key=key, timeout=cfg.timeout, handler=gateway.handler)
    if outcome.ok:
        push_to_gateway(gateway.url, job=cfg.pushgateway_job, registry=build_success_registry(now),
                        grouping_key={**key, **SUCCESS_GROUP}, timeout=cfg.timeout, handler=gateway.handler)
