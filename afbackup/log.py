"""Logging: stderr only, text or JSON lines, structured events, redaction.

stdout is reserved for results (backup ids, ``--json`` documents). Modules log
with ``logging.getLogger(__name__)`` and pass structured fields through
``extra={"event": {...}}`` (see ``event()``), so tests and log pipelines can
match on ``action``, ``stage``, ``state``, ``bytes`` without parsing prose.
Nothing is configured at import time.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
from typing import Any, TextIO

_URL_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]+):(?P<secret>[^@/\s]+)@", re.I)
_KV_SECRET = re.compile(r"(?P<key>\b(?:password|passwd|passphrase|secret|token)\s*[=:]\s*)(?P<value>[^\s,;&]+)", re.I)


def redact(text: str) -> str:
    """Mask credentials in URLs (``scheme://user:SECRET@``) and ``password=…`` pairs."""
    text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return _KV_SECRET.sub(lambda m: f"{m['key']}***", text)


class RedactingFilter(logging.Filter):
    """Last line of defence: whatever a message says, credentials are masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class TextFormatter(logging.Formatter):
    """``2026-11-24T04:00:01Z INFO  backup: message key=value …``"""

    def format(self, record: logging.LogRecord) -> str:
        stamp = dt.datetime.fromtimestamp(record.created, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        fields = getattr(record, "event", None) or {}
        tail = " ".join(f"{key}={_text_value(value)}" for key, value in fields.items())
        name = record.name.removeprefix("afbackup.")
        line = f"{stamp} {record.levelname:<5} {name}: {record.getMessage()}"
        if tail:
            line += f" [{tail}]"
        if record.exc_info and record.levelno <= logging.DEBUG:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for CronJob log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(getattr(record, "event", None) or {})
        if record.exc_info and record.levelno <= logging.DEBUG:
            doc["traceback"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, separators=(",", ":"))


def _text_value(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if (" " in text or not text) else text


def event(**fields: Any) -> dict[str, Any]:
    """``logger.info("msg", extra=event(stage="upload", state="complete", bytes=n))``."""
    return {"event": fields}


# Libraries whose loggers speak only with -vv (configure_logging).
THIRD_PARTY_LOGGERS = ("gnupg", "botocore", "boto3", "s3transfer", "urllib3", "kubernetes")


def configure_logging(verbosity: int = 0, log_format: str = "text", stream: TextIO | None = None) -> None:
    """Set up the root ``afbackup`` logger on stderr. ``verbosity``: -2..2 (-q/-v counts)."""
    level = {-2: logging.ERROR, -1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}.get(
        max(-2, min(verbosity, 1)), logging.DEBUG
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger("afbackup")
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
    # Third-party loggers speak only when asked twice (-vv): python-gnupg logs
    # tracebacks of our own stream errors, boto logs request details.
    third_party = logging.DEBUG if verbosity >= 2 else logging.CRITICAL
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(third_party)
