"""The real Prometheus Pushgateway (Debian's ``prometheus-pushgateway``) on loopback, and reading it back.

The binary comes from ``PUSHGATEWAY_BIN``, else ``prometheus-pushgateway`` or
``pushgateway`` on PATH, else ``.cache/pushgateway`` where
``make pushgateway`` (tests/harness/install_debian_tool.sh) unpacks the Debian package.
The gateway keeps metrics in memory only (``--persistence.file=``: Debian's
default would write to /var/lib/prometheus).
"""

from __future__ import annotations

import base64
import dataclasses
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.harness import tier
from tests.harness.pg import free_port

REPO = Path(__file__).resolve().parents[2]
CACHED_BINARY = REPO / ".cache" / "pushgateway" / "usr" / "bin" / "prometheus-pushgateway"
INSTALL_HINT = "run `make pushgateway` (or set PUSHGATEWAY_BIN)"

# Basic-auth user for the gateway's --web.config.file. The hash is bcrypt (cost 4, the
# minimum, to keep logins fast) of BASIC_AUTH_PASSWORD, made once with libxcrypt:
# python3 -c 'import crypt; print(crypt.crypt(PASSWORD, "$2b$04$abcdefghijklmnopqrstuv"))'
BASIC_AUTH_USER = "pusher"
BASIC_AUTH_PASSWORD = "pg-s3cret-Pa55"
BASIC_AUTH_BCRYPT = "$2b$04$abcdefghijklmnopqrstuuxRYOGn2AhvRzVks/r.LL8x1tCq/NHu."


def find_pushgateway() -> str | None:
    """The Pushgateway binary to run, or None when there is none."""
    explicit = os.environ.get("PUSHGATEWAY_BIN")
    if explicit:
        return explicit
    for name in ("prometheus-pushgateway", "pushgateway"):
        found = shutil.which(name)
        if found:
            return found
    return str(CACHED_BINARY) if os.access(CACHED_BINARY, os.X_OK) else None


@dataclasses.dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


class Pushgateway:
    """``with Pushgateway() as gw: push to gw.url; gw.value("afbackup_success", instance="x")``

    With ``basic_auth=True`` every endpoint wants BASIC_AUTH_USER/PASSWORD;
    ``url_with_auth`` carries them as userinfo, and the read-back helpers send them.
    """

    def __init__(self, binary: str | None = None, *, basic_auth: bool = False) -> None:
        self.binary = binary or find_pushgateway()
        if not self.binary:
            raise FileNotFoundError(f"no Prometheus Pushgateway binary; {INSTALL_HINT}")
        self.basic_auth = basic_auth
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.url_with_auth = f"http://{BASIC_AUTH_USER}:{BASIC_AUTH_PASSWORD}@127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="afbackup-pushgateway-")
        self.log_path = Path(self._dir.name) / "pushgateway.log"

    def _argv(self) -> list[str]:
        argv = [self.binary, f"--web.listen-address=127.0.0.1:{self.port}", "--persistence.file=",
                "--log.level=info"]
        if self.basic_auth:
            config = Path(self._dir.name) / "web.yml"
            config.write_text(f"basic_auth_users:\n  {BASIC_AUTH_USER}: '{BASIC_AUTH_BCRYPT}'\n")
            argv.append(f"--web.config.file={config}")
        return argv

    def start(self, timeout: float = 15.0) -> Pushgateway:
        tier.require("the Prometheus Pushgateway")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self._argv(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pushgateway exited at start:\n{self.log_path.read_text()}")
            try:
                self._get("/-/ready", timeout=1)
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"pushgateway not ready within {timeout:g} s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._dir.cleanup()

    def __enter__(self) -> Pushgateway:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _get(self, path: str, timeout: float = 5) -> bytes:
        request = urllib.request.Request(self.url + path)
        if self.basic_auth:
            token = base64.b64encode(f"{BASIC_AUTH_USER}:{BASIC_AUTH_PASSWORD}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy
        with direct.open(request, timeout=timeout) as response:
            return response.read()

    def samples(self, name: str | None = None, **labels: str) -> list[Sample]:
        """Every sample on the gateway's /metrics (optionally one name, matching ``labels``)."""
        text = self._get("/metrics").decode("utf-8")
        found = []
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if name is not None and sample.name != name:
                    continue
                if all(sample.labels.get(key) == value for key, value in labels.items()):
                    found.append(Sample(sample.name, dict(sample.labels), sample.value))
        return found

    def value(self, name: str, **labels: str) -> float | None:
        """The value of the one sample ``name{labels}``; None when absent; an error when ambiguous."""
        found = self.samples(name, **labels)
        if len(found) > 1:
            raise AssertionError(f"{len(found)} samples match {name}{labels}: {found}")
        return found[0].value if found else None
