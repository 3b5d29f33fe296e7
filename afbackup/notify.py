"""Notifications after a run: a Slack message and Prometheus Pushgateway metrics.

A notification is a side channel: it must never fail, delay for long, or hide
the run's own result. ``notify()`` therefore sends each channel in its own
``try``, with ``notify.timeout`` seconds per network operation, turns every
failure into ONE WARNING line plus an entry in the returned list, and raises
nothing (a terminating signal, ``Interrupted``, still goes through).

The Slack incoming-webhook URL is a secret: it is read from
``notify.slack_webhook_url_file`` at send time, and masked in every message
that could mention it. Pushgateway credentials in the URL's userinfo are
treated the same way (see ``afbackup.metrics``).
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from email.message import Message
from pathlib import Path
from typing import IO, Any

from afbackup import __version__
from afbackup.clock import SYSTEM_CLOCK, Clock
from afbackup.config.model import NotifyConfig
from afbackup.config.units import format_bytes, format_duration
from afbackup.errors import Interrupted
from afbackup.log import event, redact
from afbackup.metrics import parse_gateway, push_metrics
from afbackup.outcome import Outcome

logger = logging.getLogger(__name__)

USER_AGENT = f"afbackup/{__version__} (+notify)"
SLACK_HEADER_MAX = 150  # Slack's limit for a header block's text
SLACK_ERROR_MAX = 2800  # a section's text is limited to 3000 characters
SLACK_FIELDS_MAX = 10  # a section holds at most 10 fields
MASK = "***"
# ``check`` runs often (a probe, a cron monitor) and only pushes metrics (the signing key's expiry).
METRICS_ONLY = frozenset({"check"})


class NotificationError(Exception):
    """A channel could not deliver; the message is already free of secrets."""


def notify(cfg: NotifyConfig, outcome: Outcome, *, instance: str, clock: Clock = SYSTEM_CLOCK) -> list[str]:
    """Send what ``cfg`` asks for; return one line per channel that failed (never raises).

    ``clock`` gives the run's timestamp for the metrics (last run, last success).
    """
    problems: list[str] = []
    slack = outcome.command not in METRICS_ONLY and (not outcome.ok or cfg.slack_on_success)
    if cfg.slack_webhook_url_file and slack:
        _deliver("slack", lambda: send_slack(cfg, outcome, instance=instance), outcome, problems)
    if cfg.pushgateway_url:
        now = clock.now().timestamp()
        _deliver("pushgateway", lambda: _push(cfg, outcome, instance=instance, now=now), outcome, problems)
    return problems


def _deliver(channel: str, send: Callable[[], None], outcome: Outcome, problems: list[str]) -> None:
    """Run one channel; a failure becomes a single WARNING line and an entry in ``problems``."""
    started = time.monotonic()
    try:
        send()
    except Interrupted:
        raise
    except Exception as exc:  # a notification must never fail the run
        if not isinstance(exc, NotificationError):  # a bug, not a delivery problem: keep the traceback at DEBUG
            logger.debug("%s notification raised", channel, exc_info=True)
        text = redact(str(exc) if isinstance(exc, NotificationError) else f"unexpected {type(exc).__name__}: {exc}")
        problems.append(f"{channel}: {text}")
        logger.warning("%s notification failed (the %s result is unaffected): %s", channel, outcome.command, text,
                       extra=event(action="notify", channel=channel, state="failed", command=outcome.command))
        return
    logger.info("%s notification sent", channel,
                extra=event(action="notify", channel=channel, state="complete", command=outcome.command,
                            seconds=round(time.monotonic() - started, 3)))


def _push(cfg: NotifyConfig, outcome: Outcome, *, instance: str, now: float) -> None:
    """``push_metrics`` with its errors described and the gateway's credentials masked."""
    try:
        secrets = parse_gateway(cfg.pushgateway_url).secrets()
    except ValueError as exc:
        raise NotificationError(str(exc)) from None
    try:
        push_metrics(cfg, outcome, instance=instance, now=now)
    except Interrupted:
        raise
    except Exception as exc:  # described, masked and re-raised
        raise NotificationError(mask(describe_error(exc, cfg.timeout), secrets)) from None


def send_slack(cfg: NotifyConfig, outcome: Outcome, *, instance: str) -> None:
    """Post the message to the incoming webhook named by ``cfg.slack_webhook_url_file``."""
    url = read_webhook_url(cfg.slack_webhook_url_file)
    payload = build_slack_payload(outcome, instance=instance)
    try:
        post_json(url, payload, timeout=cfg.timeout)
    except Interrupted:
        raise
    except Exception as exc:  # described, masked and re-raised
        raise NotificationError(mask(describe_error(exc, cfg.timeout), webhook_secrets(url))) from None


def read_webhook_url(path: str) -> str:
    """The webhook URL from its file (surrounding whitespace stripped); http(s) only."""
    try:
        url = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise NotificationError(f"cannot read notify.slack_webhook_url_file {path}: {exc.strerror}") from None
    if not url:
        raise NotificationError(f"notify.slack_webhook_url_file {path} is empty")
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise NotificationError(f"notify.slack_webhook_url_file {path} does not hold an https:// URL")
    return url


def webhook_secrets(url: str) -> list[str]:
    """The whole URL and its path (which carries the token), longest first, for ``mask``."""
    path = urllib.parse.urlsplit(url).path
    return [url, path] if len(path) > 1 else [url]


def mask(text: str, secrets: list[str]) -> str:
    """Replace every occurrence of each secret, then any ``user:pass@`` left, with ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return redact(text)


def describe_error(exc: BaseException, timeout: float) -> str:
    """A short, URL-free description of a failed HTTP exchange."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}".strip()
    if isinstance(exc, urllib.error.URLError):
        if isinstance(exc.reason, TimeoutError):
            return f"no answer within {timeout:g} s"
        return f"cannot connect: {exc.reason}"
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, NotificationError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A webhook that redirects is misconfigured: report the 3xx instead of following it."""

    def redirect_request(self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str,
                         headers: Message, newurl: str) -> urllib.request.Request | None:
        return None


def post_json(url: str, doc: dict[str, Any], *, timeout: float) -> None:
    """POST ``doc`` as JSON; any status other than 2xx raises (``timeout``: seconds per operation)."""
    request = urllib.request.Request(
        url, data=json.dumps(doc).encode("utf-8"), method="POST",
        headers={"Content-Type": "application/json; charset=utf-8", "User-Agent": USER_AGENT},
    )
    opener = urllib.request.build_opener(_NoRedirect)
    with opener.open(request, timeout=timeout) as response:
        response.read(4096)  # Slack answers "ok"; drain a little so the connection closes cleanly
        if not 200 <= response.status < 300:
            raise NotificationError(f"HTTP {response.status} {response.reason}")


def _escape(text: str) -> str:
    """Slack mrkdwn control characters (``&``, ``<``, ``>``) as entities."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_header(outcome: Outcome, instance: str) -> str:
    """``:x: afbackup backup FAILED on prod`` / ``:white_check_mark: afbackup backup succeeded on prod``."""
    if outcome.ok:
        return f":white_check_mark: afbackup {outcome.command} succeeded on {instance}"
    return f":x: afbackup {outcome.command} FAILED on {instance}"


def _extra_field(key: str, value: float) -> tuple[str, str]:
    """``("rto_seconds", 3600)`` -> ``("RTO", "1h 00m 00s")``; ``("deleted", 3)`` -> ``("Deleted", "3")``."""
    title = key.removesuffix("_seconds").replace("_", " ")
    title = title.upper() if len(title) <= 3 else title.capitalize()
    number = float(value)
    return title, format_duration(number, rough=True) if key.endswith("_seconds") else f"{number:g}"


def slack_fields(outcome: Outcome) -> list[tuple[str, str]]:
    """(title, value) pairs for the message: what ran, on what, how big, how long, how it ended."""
    fields = [("Command", outcome.command), ("Backup id", f"`{outcome.backup_id}`" if outcome.backup_id else "—")]
    if outcome.bytes:
        fields.append(("Size", format_bytes(outcome.bytes)))
    if outcome.rows:
        fields.append(("Rows", f"{outcome.rows:,}"))
    fields += [("Duration", format_duration(outcome.seconds, rough=True)), ("Exit code", str(outcome.exit_code))]
    for key, value in sorted(outcome.extra.items()):
        try:
            fields.append(_extra_field(key, value))
        except (TypeError, ValueError):
            continue
    return fields[:SLACK_FIELDS_MAX]


def _error_block(error: str) -> dict[str, Any]:
    text = redact(error)
    if len(text) > SLACK_ERROR_MAX:
        text = text[:SLACK_ERROR_MAX] + " …"
    code = _escape(text).replace("```", "'''")
    return {"type": "section", "text": {"type": "mrkdwn", "text": f"*Error*\n```{code}```"}}


def build_slack_payload(outcome: Outcome, *, instance: str) -> dict[str, Any]:
    """The incoming-webhook document: ``text`` for notifications and old clients, ``blocks`` to show."""
    header = slack_header(outcome, instance)
    fields = slack_fields(outcome)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header[:SLACK_HEADER_MAX], "emoji": True}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f"*{_escape(title)}*\n{_escape(value)}"}
                                       for title, value in fields]},
    ]
    if outcome.error:
        blocks.append(_error_block(outcome.error))
    if outcome.labels:
        labels = ", ".join(f"{key}={value}" for key, value in sorted(outcome.labels.items()))
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _escape(f"labels: {labels}")}]})
    summary = ", ".join(f"{title} {value.strip('`')}" for title, value in fields[1:] if value != "—")
    text = f"{header}: {redact(outcome.error)}" if outcome.error else header
    return {"text": _escape(f"{text} ({summary})"), "blocks": blocks}
