"""A small Airflow-shaped REST server on 127.0.0.1 that misbehaves on purpose (a real socket, no mocks).

Routes are a dict ``(method, path) -> handler(request) -> (status, headers, body)``; ``faults`` is a
queue of answers served before the route (503s with ``Retry-After``, resets, ...). Every request is
recorded (method, path, query, headers, JSON body, arrival time) for assertions.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from tests.harness.pg import free_port

Answer = tuple[int, dict[str, str], Any]


@dataclasses.dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    at: float


class FakeAirflowApi:
    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Callable[[Request], Answer]] = {}
        self.faults: list[Answer | str] = []  # "reset": close the connection without an answer
        self.requests: list[Request] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> FakeAirflowApi:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def route(self, method: str, path: str, answer: Callable[[Request], Answer] | Answer) -> None:
        self.routes[(method, path)] = answer if callable(answer) else (lambda _r, a=answer: a)

    def _answer(self, request: Request) -> Answer | str:
        self.requests.append(request)
        if self.faults:
            return self.faults.pop(0)
        handler = self.routes.get((request.method, request.path))
        if handler is None:
            return 404, {"Content-Type": "application/problem+json"}, {
                "type": "about:blank", "title": "Not Found", "status": 404, "detail": f"no route {request.path}"}
        return handler(request)

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                parsed = urllib.parse.urlparse(self.path)
                query = {k: v[-1] for k, v in urllib.parse.parse_qs(parsed.query).items()}
                body = json.loads(raw) if raw else None
                answer = fake._answer(Request(self.command, parsed.path, query, dict(self.headers), body,
                                              time.monotonic()))
                if answer == "reset":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                status, headers, payload = answer  # type: ignore[misc]
                data = json.dumps(payload).encode() if payload is not None else b""
                self.send_response(status)
                headers = {"Content-Type": "application/json", **headers}
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = _serve

        return Handler


def problem(status: int, title: str, detail: Any) -> Answer:
    return status, {"Content-Type": "application/problem+json"}, {
        "type": "about:blank", "title": title, "status": status, "detail": detail}
