"""A thin client for the Airflow REST API: Airflow 2 (``/api/v1``) and Airflow 3 (``/api/v2``).

Over one ``requests.Session``: urllib3 retries with backoff on 502/503/504 and
connection errors (``Retry-After`` honoured), a timeout on every request,
errors turned into one ``AirflowApiError`` (RFC 7807 problem documents, and
FastAPI's 422 validation lists, read into status/title/detail), and a
paginating iterator with a stable ``order_by`` and a page limit (a server whose
``total_entries`` never ends cannot loop us forever).

Authentication: Airflow 2 takes basic auth (username + password) or a bearer
token; Airflow 3 takes a bearer token, from the config or from
``POST /auth/token`` with username + password (``GET /auth/token`` when the
deployment runs with ``simple_auth_manager_all_admins``). Credentials are never
logged: error messages carry the method, path and the server's problem text only.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from afbackup.config.model import AirflowApiConfig
from afbackup.config.secrets import read_secret
from afbackup.errors import AirflowApiError, ConfigError

logger = logging.getLogger(__name__)

RETRY_STATUSES = (502, 503, 504)
MAX_PAGES = 1000
PAGE_SIZE = 100


@dataclasses.dataclass(frozen=True)
class Credentials:
    username: str = ""
    password: str | None = None
    token: str | None = None

    def __repr__(self) -> str:  # never print a secret, not even in a traceback's locals
        return f"Credentials(username={self.username!r}, password={'***' if self.password else None}, " \
               f"token={'***' if self.token else None})"


def credentials_from(cfg: AirflowApiConfig) -> Credentials:
    password = read_secret(cfg.password_file, cfg.password_env, "airflow.api.password")
    token = read_secret(cfg.token_file, cfg.token_env, "airflow.api.token")
    if password and not cfg.username:
        raise ConfigError("airflow.api has a password but no username", hint="set airflow.api.username")
    return Credentials(cfg.username, password, token)


def problem_of(response: requests.Response) -> tuple[str, str]:
    """(title, detail) of an error answer: RFC 7807 fields, FastAPI's ``detail`` (a string or a 422 list)."""
    title, detail = response.reason or "", ""
    try:
        doc = response.json()
    except ValueError:
        return title, " ".join(response.text.split())[:300]
    if not isinstance(doc, dict):
        return title, str(doc)[:300]
    title = str(doc.get("title") or title)
    raw = doc.get("detail", "")
    if isinstance(raw, list):  # 422 from FastAPI: [{"loc": [...], "msg": "...", "type": "..."}]
        detail = "; ".join(f"{'.'.join(str(p) for p in item.get('loc', []))}: {item.get('msg', '')}"
                           if isinstance(item, dict) else str(item) for item in raw)
    elif isinstance(raw, dict):
        detail = str(raw.get("reason") or raw.get("message") or raw)
    else:
        detail = str(raw)
    return title, detail[:500]


class AirflowApi:
    """One Airflow's REST API. ``major`` is 2 or 3; ``detect_major`` asks the server when unknown."""

    def __init__(self, url: str, credentials: Credentials, *, major: int | None = None, timeout: float = 30.0,
                 retries: int = 5, backoff: float = 0.5, verify: bool = True) -> None:
        if not url:
            raise ConfigError("airflow.api.url is not set", hint="set it to the Airflow webserver / api-server URL")
        self.url = url.rstrip("/")
        self.credentials = credentials
        self.timeout = timeout
        self.session = requests.Session()
        self.session.verify = verify
        retry = Retry(total=retries, connect=retries, read=retries, status=retries, other=0,
                      status_forcelist=RETRY_STATUSES, backoff_factor=backoff, backoff_max=30,
                      respect_retry_after_header=True, raise_on_status=False, allowed_methods=None)
        adapter = HTTPAdapter(max_retries=retry)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self._major = major
        self._token: str | None = credentials.token

    @classmethod
    def from_config(cls, cfg: AirflowApiConfig, *, url: str = "") -> AirflowApi:
        major = None if cfg.version == "auto" else int(cfg.version)
        return cls(url or cfg.url, credentials_from(cfg), major=major, timeout=cfg.timeout, retries=cfg.retries,
                   verify=cfg.verify_tls)

    def close(self) -> None:
        self.session.close()

    # -------------------------------------------------------------------- version and authentication
    @property
    def major(self) -> int:
        if self._major is None:
            self._major = self.detect_major()
        return self._major

    @property
    def base(self) -> str:
        return f"{self.url}/api/v{2 if self.major >= 3 else 1}"

    def detect_major(self) -> int:
        """3 when ``/api/v2/monitor/health`` answers, 2 when ``/api/v1/health`` does (both need no login)."""
        for major, path in ((3, "/api/v2/monitor/health"), (2, "/api/v1/health")):
            response = self._send("GET", self.url + path, auth=False)
            if response.status_code == 200:
                return major
        raise AirflowApiError(f"no Airflow REST API at {self.url} (neither /api/v2 nor /api/v1 answers)",
                              hint="check airflow.api.url, or set airflow.api.version")

    def _auth_headers(self) -> dict[str, str]:
        if self.major >= 3 and self._token is None:
            self._token = self._fetch_token()
        if self._token:
            return {"Authorization": f"Bearer {self._token}"}
        return {}

    def _fetch_token(self) -> str:
        creds = self.credentials
        if creds.username and creds.password:
            response = self._send("POST", f"{self.url}/auth/token", auth=False,
                                  json={"username": creds.username, "password": creds.password})
        else:  # simple_auth_manager_all_admins hands out a token without credentials
            response = self._send("GET", f"{self.url}/auth/token", auth=False)
        if response.status_code not in (200, 201):
            raise self._error("POST" if creds.password else "GET", "/auth/token", response)
        token = response.json().get("access_token")
        if not token:
            raise AirflowApiError(f"{self.url}/auth/token answered without an access_token",
                                  status=response.status_code)
        return str(token)

    # -------------------------------------------------------------------- requests
    def _send(self, method: str, url: str, *, auth: bool = True, **kwargs: Any) -> requests.Response:
        headers = {"Accept": "application/json", **(self._auth_headers() if auth else {})}
        basic = None
        if auth and self.major < 3 and not self._token and self.credentials.password:
            basic = (self.credentials.username, self.credentials.password)
        try:
            return self.session.request(method, url, headers=headers, auth=basic, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            reason = type(exc).__name__
            raise AirflowApiError(f"{method} {url.removeprefix(self.url)}: no answer from {self.url} ({reason})",
                                  hint="is Airflow's webserver / api-server running and reachable?") from None

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """``method`` on ``base + path``; the decoded JSON (None when empty). Errors raise AirflowApiError."""
        response = self._send(method, self.base + path, **kwargs)
        if response.status_code == 401 and self.major >= 3 and self.credentials.token is None:
            self._token = None  # an expired token: fetch a new one once
            response = self._send(method, self.base + path, **kwargs)
        if response.status_code >= 400:
            raise self._error(method, path, response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise AirflowApiError(f"{method} {path}: the answer is not JSON", status=response.status_code) from None

    def _error(self, method: str, path: str, response: requests.Response) -> AirflowApiError:
        title, detail = problem_of(response)
        status = response.status_code
        hint = {401: "check airflow.api credentials (username and password_file/password_env, or token_file)",
                403: "the API user lacks a permission this check needs",
                404: "", 422: "afbackup sent a request this Airflow rejects: report it"}.get(status, "")
        if status in RETRY_STATUSES:
            hint = "Airflow kept answering with a server error after the retries"
        text = f"{method} {path}: HTTP {status} {title}" + (f": {detail}" if detail else "")
        return AirflowApiError(text, status=status, title=title, detail=detail, hint=hint)

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params or None)

    def paginate(self, path: str, key: str, *, order_by: str | None, params: dict[str, Any] | None = None,
                 page_size: int = PAGE_SIZE, max_pages: int = MAX_PAGES) -> Iterator[dict[str, Any]]:
        """Every item of a list endpoint, page by page in a stable ``order_by``. Raises AirflowApiError when the
        pages do not end within ``max_pages``, or a page repeats the previous one (the server ignores offset).
        ``order_by`` None: the endpoint's own order (Airflow 2's task instance list accepts no ``order_by``)."""
        offset, previous = 0, None
        for _page in range(max_pages):
            ordered = {"order_by": order_by} if order_by else {}
            doc = self.get(path, **(params or {}), **ordered, limit=page_size, offset=offset)
            items = doc.get(key) or []
            total = doc.get("total_entries")
            if not items:
                return
            if items == previous:
                raise AirflowApiError(f"GET {path}: offset {offset} returned the previous page again",
                                      hint="the server ignores pagination; report it")
            yield from items
            offset += len(items)
            previous = items
            if isinstance(total, int) and offset >= total:
                return
        raise AirflowApiError(f"GET {path}: still more pages after {max_pages} pages of {page_size} "
                              f"(total_entries keeps growing: {total})", hint="the server's pagination does not end")

    # -------------------------------------------------------------------- what afbackup asks
    def health(self) -> dict[str, Any]:
        path = "/monitor/health" if self.major >= 3 else "/health"
        return dict(self.request("GET", path, auth=False) or {})

    def patch_dag(self, dag_id: str, *, is_paused: bool) -> dict[str, Any]:
        return dict(self.request("PATCH", f"/dags/{dag_id}", params={"update_mask": "is_paused"},
                                 json={"is_paused": is_paused}))

    def trigger(self, dag_id: str, run_id: str, conf: dict[str, Any]) -> dict[str, Any]:
        """Create a DAG run. Airflow 3 needs ``logical_date`` present (null: "now", no data interval clash)."""
        body: dict[str, Any] = {"dag_run_id": run_id, "conf": conf}
        if self.major >= 3:
            body["logical_date"] = None
        try:
            return dict(self.request("POST", f"/dags/{dag_id}/dagRuns", json=body))
        except AirflowApiError as exc:
            if exc.status == 409:  # a retried POST that had gone through: the run exists
                return dict(self.get(f"/dags/{dag_id}/dagRuns/{run_id}"))
            raise
