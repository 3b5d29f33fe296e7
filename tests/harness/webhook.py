"""A Slack incoming-webhook stand-in: a real HTTP server on loopback that records what it is sent.

``mode`` decides the answer: ``"ok"`` (200 ``ok``, like Slack), ``"error"``
(500) or ``"hang"`` (read the request, never answer until the receiver stops),
for the timeout path. The URL's path carries a random token, like a real
webhook's, so tests can check that it never reaches a log line.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import secrets
import threading
from typing import Any


@dataclasses.dataclass
class Received:
    """One POST: its path, headers (lower-cased names) and decoded JSON body (None if not JSON)."""

    path: str
    headers: dict[str, str]
    body: Any


class WebhookReceiver:
    """``with WebhookReceiver() as hook: write hook.url to a file; …; hook.received``"""

    def __init__(self) -> None:
        self.token = secrets.token_hex(12)
        self.mode = "ok"
        self.received: list[Received] = []
        self._release = threading.Event()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/services/T0TEST/B0TEST/{self.token}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()  # let hanging handlers return
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def reset(self, mode: str = "ok") -> None:
        """Forget what was received and answer with ``mode`` from now on."""
        self.received.clear()
        self.mode = mode

    def _record(self, path: str, headers: dict[str, str], raw: bytes) -> None:
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        self.received.append(Received(path, headers, body))

    def _handler(self):
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver._record(self.path, {k.lower(): v for k, v in self.headers.items()}, raw)
                if receiver.mode == "hang":
                    receiver._release.wait(60)
                    return
                status, payload = (500, b"internal_error") if receiver.mode == "error" else (200, b"ok")
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler
