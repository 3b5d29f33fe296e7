"""An HTTP proxy in front of moto that injects S3 faults on a real socket.

Rules match a request by method and query (e.g. ``partNumber`` for UploadPart,
``uploadId`` on POST for CompleteMultipartUpload) and answer with an error
instead of forwarding it — or, like real S3 sometimes does, with
``200 OK`` and an ``<Error>`` body. Everything else is forwarded unchanged
(moto does not check signatures, so the Host header is kept as sent).
"""

from __future__ import annotations

import dataclasses
import http.client
import http.server
import threading
import urllib.parse
from collections.abc import Callable

from tests.harness.pg import free_port

ERROR_XML = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code>"
             "<Message>injected by the test fault proxy</Message><RequestId>afb</RequestId></Error>")


@dataclasses.dataclass
class Fault:
    matches: Callable[[str, dict], bool]  # (method, query) -> bool
    status: int = 500
    code: str = "InternalError"
    remaining: int = 10**9  # how many times to fire


def upload_part(min_part: int = 2) -> Callable[[str, dict], bool]:
    return lambda method, q: method == "PUT" and "partNumber" in q and int(q["partNumber"][0]) >= min_part


def complete_upload() -> Callable[[str, dict], bool]:
    return lambda method, q: method == "POST" and "uploadId" in q


def get_key(suffix: str) -> Callable[[str, dict], bool]:
    return lambda method, q, s=suffix: method == "GET" and q.get("__path__", [""])[0].endswith(s)


def put_key(suffix: str) -> Callable[[str, dict], bool]:
    return lambda method, q, s=suffix: method == "PUT" and q.get("__path__", [""])[0].endswith(s)


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        parsed = urllib.parse.urlparse(upstream)
        self.upstream = (parsed.hostname, parsed.port)
        self.faults: list[Fault] = []
        self.fired: list[str] = []
        self.seen: list[str] = []  # "METHOD path" of every request relayed
        # (matches, action): run ``action`` once after relaying a matching request, before answering it
        self.after: list[tuple[Callable[[str, dict], bool], Callable[[], None]]] = []
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _match(self, method: str, path: str) -> Fault | None:
        query = urllib.parse.parse_qs(urllib.parse.urlparse(path).query, keep_blank_values=True)
        query["__path__"] = [urllib.parse.urlparse(path).path]
        for fault in self.faults:
            if fault.remaining > 0 and fault.matches(method, query):
                fault.remaining -= 1
                self.fired.append(f"{method} {path}")
                return fault
        return None

    def _after(self, method: str, path: str) -> None:
        self.seen.append(f"{method} {urllib.parse.urlparse(path).path}")
        query = urllib.parse.parse_qs(urllib.parse.urlparse(path).query, keep_blank_values=True)
        query["__path__"] = [urllib.parse.urlparse(path).path]
        for hook in list(self.after):
            if hook[0](method, query):
                self.after.remove(hook)
                hook[1]()

    def _handler(self):
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fault = proxy._match(self.command, self.path)
                if fault is not None:
                    payload = ERROR_XML.format(code=fault.code).encode()
                    self.send_response(fault.status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                proxy._after(self.command, self.path)
                self.send_response(response.status)
                head = self.command == "HEAD"
                for key, value in response.getheaders():
                    hop_by_hop = key.lower() in ("transfer-encoding", "connection")
                    if not hop_by_hop and (head or key.lower() != "content-length"):
                        self.send_header(key, value)
                if not head:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if not head:
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

        return Handler
