"""The Airflow REST client against a real HTTP server on 127.0.0.1 that injects faults."""

from __future__ import annotations

import pytest

from afbackup.airflow_api import AirflowApi, Credentials, credentials_from
from afbackup.config.model import AirflowApiConfig
from afbackup.errors import AirflowApiError, ConfigError, ExitCode
from tests.harness.fake_airflow_api import FakeAirflowApi, problem

HEALTHY = {"metadatabase": {"status": "healthy"}, "scheduler": {"status": "healthy"}}


@pytest.fixture
def server():
    with FakeAirflowApi() as fake:
        yield fake


def client(server, major=2, creds=None, **kw) -> AirflowApi:
    return AirflowApi(server.url, creds or Credentials(), major=major, backoff=0.05, timeout=5, **kw)


def test_retries_503_and_honours_retry_after(server):
    # GIVEN two 503s, the first asking to wait 1 s
    server.route("GET", "/api/v1/health", (200, {}, HEALTHY))
    server.faults += [(503, {"Retry-After": "1"}, {"title": "Service Unavailable", "detail": "busy"}), (503, {}, None)]
    # WHEN the client asks
    assert client(server).health() == HEALTHY
    # THEN it asked three times, and waited at least the Retry-After before the second
    times = [r.at for r in server.requests]
    assert len(times) == 3 and times[1] - times[0] >= 0.95


def test_gives_up_after_the_retries_with_the_problem_detail(server):
    server.faults += [problem(503, "Service Unavailable", "the scheduler is down")] * 3
    with pytest.raises(AirflowApiError) as caught:
        client(server, retries=2).get("/dags")
    assert caught.value.status == 503 and caught.value.exit_code == ExitCode.SOURCE
    assert "HTTP 503 Service Unavailable: the scheduler is down" in caught.value.one_line()
    assert len(server.requests) == 3


def test_a_connection_reset_is_retried(server):
    server.route("GET", "/api/v1/dags/x", (200, {}, {"dag_id": "x"}))
    server.faults.append("reset")
    assert client(server).get("/dags/x") == {"dag_id": "x"}
    assert len(server.requests) == 2


def test_nothing_listening_is_a_source_error_naming_the_server():
    api = AirflowApi("http://127.0.0.1:9", Credentials(), major=2, retries=1, backoff=0.01, timeout=2)
    with pytest.raises(AirflowApiError) as caught:
        api.health()
    assert caught.value.status == 0 and "no answer from http://127.0.0.1:9" in caught.value.one_line()


def test_422_validation_list_becomes_one_typed_error(server):
    # GIVEN Airflow 3 rejecting a trigger (FastAPI's 422 list)
    server.route("GET", "/auth/token", (201, {}, {"access_token": "tok"}))
    server.route("POST", "/api/v2/dags/d/dagRuns", (422, {}, {"detail": [
        {"loc": ["body", "logical_date"], "msg": "Field required", "type": "missing"}]}))
    with pytest.raises(AirflowApiError) as caught:
        client(server, major=3).trigger("d", "run1", {})
    error = caught.value
    assert (error.status, error.title) == (422, "Unprocessable Entity")
    assert error.detail == "body.logical_date: Field required" and error.exit_code == ExitCode.SOURCE


def test_airflow3_trigger_sends_logical_date_null_and_a_token(server):
    server.route("POST", "/auth/token", (201, {}, {"access_token": "tok-1"}))
    server.route("POST", "/api/v2/dags/d/dagRuns", lambda r: (200, {}, {"dag_run_id": r.body["dag_run_id"]}))
    api = client(server, major=3, creds=Credentials("admin", "s3cret"))
    assert api.trigger("d", "run1", {"a": 1}) == {"dag_run_id": "run1"}
    login, trigger = server.requests
    assert login.body == {"username": "admin", "password": "s3cret"}
    assert trigger.body == {"dag_run_id": "run1", "conf": {"a": 1}, "logical_date": None}
    assert trigger.headers["Authorization"] == "Bearer tok-1"


def test_airflow2_uses_basic_auth_and_401_maps_to_config(server):
    server.route("GET", "/api/v1/dags", lambda r: (200, {}, {"dags": [], "total_entries": 0})
                 if r.headers.get("Authorization", "").startswith("Basic ") else problem(401, "Unauthorized", "x"))
    assert client(server, creds=Credentials("admin", "pw")).get("/dags")["total_entries"] == 0
    with pytest.raises(AirflowApiError) as caught:
        client(server).get("/dags")
    assert caught.value.exit_code == ExitCode.CONFIG and "credentials" in caught.value.one_line()


def test_an_expired_token_is_fetched_again_once(server):
    tokens = iter(["old", "new"])
    server.route("POST", "/auth/token", lambda r: (201, {}, {"access_token": next(tokens)}))
    server.route("GET", "/api/v2/dags/d", lambda r: (200, {}, {"dag_id": "d"})
                 if r.headers["Authorization"] == "Bearer new" else problem(401, "Unauthorized", "expired"))
    assert client(server, major=3, creds=Credentials("a", "b")).get("/dags/d") == {"dag_id": "d"}


def test_version_is_detected_from_the_health_endpoints(server):
    server.route("GET", "/api/v1/health", (200, {}, HEALTHY))
    assert AirflowApi(server.url, Credentials(), backoff=0.01).major == 2
    server.route("GET", "/api/v2/monitor/health", (200, {}, HEALTHY))
    assert AirflowApi(server.url, Credentials(), backoff=0.01).major == 3


def _pages(total, items, *, offset_ignored=False):
    def answer(r):
        offset, limit = int(r.query["offset"]), int(r.query["limit"])
        start = 0 if offset_ignored else offset
        return 200, {}, {"dags": items[start:start + limit], "total_entries": total(offset)}
    return answer


def test_pagination_walks_every_page_in_a_stable_order(server):
    items = [{"dag_id": f"d{i:03}"} for i in range(250)]
    server.route("GET", "/api/v1/dags", _pages(lambda _o: 250, items))
    got = list(client(server).paginate("/dags", "dags", order_by="dag_id"))
    assert got == items
    assert {r.query["order_by"] for r in server.requests} == {"dag_id"} and len(server.requests) == 3


def test_pagination_with_a_total_that_never_ends_stops_at_the_page_limit(server):
    # GIVEN a server that always has one more page (total_entries runs ahead, items never run out)
    def endless(r):
        offset = int(r.query["offset"])
        return 200, {}, {"dags": [{"dag_id": f"d{offset + i}"} for i in range(int(r.query["limit"]))],
                         "total_entries": offset + 1000}
    server.route("GET", "/api/v1/dags", endless)
    with pytest.raises(AirflowApiError) as caught:
        list(client(server).paginate("/dags", "dags", order_by="dag_id", page_size=10, max_pages=5))
    assert "still more pages after 5 pages" in caught.value.one_line() and len(server.requests) == 5


def test_pagination_that_ignores_offset_is_detected(server):
    items = [{"dag_id": f"d{i}"} for i in range(10)]
    server.route("GET", "/api/v1/dags", _pages(lambda _o: 50, items, offset_ignored=True))
    with pytest.raises(AirflowApiError, match="returned the previous page again"):
        list(client(server).paginate("/dags", "dags", order_by="dag_id", page_size=10))


def test_credentials_come_from_a_file_or_a_named_variable_and_are_never_shown(tmp_path, monkeypatch):
    secret = tmp_path / "pw"
    secret.write_text("hunter2\n")
    creds = credentials_from(AirflowApiConfig(url="http://x", username="admin", password_file=str(secret)))
    assert creds.password == "hunter2" and "hunter2" not in repr(creds)
    monkeypatch.setenv("MY_AIRFLOW_TOKEN", "tok-9")
    assert credentials_from(AirflowApiConfig(url="http://x", token_env="MY_AIRFLOW_TOKEN")).token == "tok-9"
    with pytest.raises(ConfigError, match="MY_UNSET_VAR"):
        credentials_from(AirflowApiConfig(url="http://x", username="a", password_env="MY_UNSET_VAR"))


def test_an_optional_component_is_reported_but_never_fails_health():
    from afbackup.errors import DrillFailed
    from afbackup.smoke import SmokeOptions, SmokeReport, _health

    health = {"metadatabase": {"status": "healthy"}, "scheduler": {"status": "healthy"},
              "dag_processor": {"status": "healthy"},
              "triggerer": {"status": "unhealthy", "latest_triggerer_heartbeat": "2023-12-31T00:00:00+00:00"}}
    with FakeAirflowApi() as server:
        server.route("GET", "/api/v2/monitor/health", (200, {}, health))
        api = AirflowApi(server.url, Credentials(), major=3)
        detail = _health(api, SmokeOptions(optional_components=("triggerer",)), SmokeReport())
        assert "triggerer unhealthy (heartbeat 2023-12-31T00:00:00+00:00) (optional)" in detail
        with pytest.raises(DrillFailed, match="unhealthy: triggerer unhealthy"):
            _health(api, SmokeOptions(), SmokeReport())
