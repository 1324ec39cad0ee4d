"""API security: keys with roles, the per-key rate limit, open mode, and secrets kept out of sight.

Covers: 401 without / with an unknown key (X-API-Key and Authorization: Bearer), checked before
the body is read; 403 for a role too low (reader POSTing a command, writer on an admin route);
reader < writer < admin on routes guarded by ``require_role``; the caller's key name (never the
key) in the events' metadata; 429 problem+json with Retry-After per key, and the token bucket's
refill; open mode with a WARNING when no keys are set; ``cqrs api`` refusing a non-loopback host
without keys and rejecting a bad key list with one line; no key in logs or error bodies. Every
rejected command leaves the write store unchanged.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, Depends
from fastapi.testclient import TestClient
from pydantic import SecretStr

from cqrs_dagster.cli import main as cqrs_main
from cqrs_dagster.settings import Settings
from cqrs_dagster.web.app import build_app
from cqrs_dagster.web.commands import CommandFastPath
from cqrs_dagster.web.problems import PROBLEM_BASE, PROBLEM_MEDIA_TYPE
from cqrs_dagster.web.security import (
    Principal,
    SecurityConfigError,
    TokenBucket,
    check_bind,
    is_loopback,
    parse_api_keys,
    require_role,
)

URL = "/api/v1/commands"
WRITER = "wk-7f3a9c1e5b2d4f60a8e1"
READER = "rk-0b9d8e7f6a5c4b3a2910"
ADMIN = "ak-5e4d3c2b1a0f9e8d7c6b"
UNKNOWN = "zz-1234567890abcdefabcd"
CUSTOMER = {"type": "RegisterCustomer", "customerId": "c1", "name": "Ada", "email": "a@b.co"}

# Routes guarded by each role, standing in for the query API (which reuses require_role).
probe = APIRouter(prefix="/probe")


@probe.get("/read")
def read_probe(who: Annotated[Principal, Depends(require_role("reader"))]) -> dict[str, str]:
    return {"id": who.id, "role": who.role}


@probe.get("/admin")
def admin_probe(who: Annotated[Principal, Depends(require_role("admin"))]) -> dict[str, str]:
    return {"id": who.id, "role": who.role}


def make_client(settings: Settings, *, fast_path: bool = False) -> TestClient:
    """The app as routed, or as ``cqrs api`` serves it: the command fast path in front of it."""
    app = build_app(settings, run_relay=False)
    app.include_router(probe)
    return TestClient(CommandFastPath.in_front_of(app) if fast_path else app)


@pytest.fixture
def keyed(tmp_path: Path) -> Settings:
    keys = f"{WRITER}:writer, {READER}:reader,{ADMIN}:admin"
    return Settings(env="local", data_dir=tmp_path / "data", api_keys=SecretStr(keys))


@pytest.fixture(params=["route-stack", "fast-path"])
def client(keyed: Settings, request: pytest.FixtureRequest) -> Iterator[TestClient]:
    """Both ways a command is served: the FastAPI route, and the fast path ``cqrs api`` uses."""
    with make_client(keyed, fast_path=request.param == "fast-path") as c:
        yield c


def key(k: str) -> dict[str, str]:
    return {"X-API-Key": k}


def bearer(k: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {k}"}


def store_dump(settings: Settings) -> str:
    with closing(sqlite3.connect(settings.write_db_path)) as conn:
        return "\n".join(conn.iterdump())


def assert_problem(response: Any, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body: dict[str, Any] = response.json()
    assert (body["type"], body["status"]) == (PROBLEM_BASE + slug, status)
    return body


@pytest.mark.parametrize(
    "headers",
    [{}, key(UNKNOWN), bearer(UNKNOWN), {"Authorization": f"Basic {WRITER}"}, key("")],
    ids=["none", "unknown-header", "unknown-bearer", "not-bearer", "empty"],
)
def test_missing_or_unknown_key_is_401_and_writes_nothing(
    client: TestClient, keyed: Settings, headers: dict[str, str]
) -> None:
    before = store_dump(keyed)
    response = client.post(URL, json=CUSTOMER, headers=headers)
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert store_dump(keyed) == before


def test_authentication_comes_before_reading_the_body(client: TestClient) -> None:
    response = client.post(URL, content=b"not json", headers={"content-type": "text/plain"})
    assert_problem(response, 401, "unauthorized")


def test_reader_cannot_send_commands_403(client: TestClient, keyed: Settings) -> None:
    before = store_dump(keyed)
    body = assert_problem(client.post(URL, json=CUSTOMER, headers=key(READER)), 403, "forbidden")
    assert "writer" in body["detail"]
    assert store_dump(keyed) == before


@pytest.mark.parametrize("headers", [key(WRITER), bearer(WRITER), key(ADMIN)])
def test_writer_and_admin_send_commands(client: TestClient, headers: dict[str, str]) -> None:
    response = client.post(URL, json=CUSTOMER, headers=headers)
    assert response.status_code == 201, response.text


def test_events_name_the_caller_by_key_name_never_by_key(client: TestClient) -> None:
    client.post(URL, json=CUSTOMER, headers=key(WRITER))
    app: Any = getattr(client.app, "front_of", None) or client.app  # the app behind a fast path
    [event] = app.state.store.pending_events(10)
    user_id = event.metadata["userId"]
    assert user_id.startswith("apikey-") and WRITER not in user_id
    assert client.get("/probe/read", headers=key(WRITER)).json()["id"] == user_id


@pytest.mark.parametrize(
    ("path", "k", "status"),
    [
        ("/probe/read", READER, 200),
        ("/probe/read", WRITER, 200),
        ("/probe/read", ADMIN, 200),
        ("/probe/admin", READER, 403),
        ("/probe/admin", WRITER, 403),
        ("/probe/admin", ADMIN, 200),
        ("/probe/read", UNKNOWN, 401),
    ],
)
def test_roles_nest_reader_writer_admin(client: TestClient, path: str, k: str, status: int) -> None:
    assert client.get(path, headers=key(k)).status_code == status


@pytest.mark.parametrize("fast_path", [False, True], ids=["route-stack", "fast-path"])
def test_rate_limit_is_429_with_retry_after_per_key(tmp_path: Path, fast_path: bool) -> None:
    settings = Settings(
        env="local",
        data_dir=tmp_path / "data",
        api_keys=SecretStr(f"{WRITER}:writer,{READER}:reader"),
        rate_limit_per_second=0.001,  # no refill within the test
        rate_limit_burst=2,
    )
    with make_client(settings, fast_path=fast_path) as client:
        assert client.post(URL, json=CUSTOMER, headers=key(WRITER)).status_code == 201
        assert client.get("/probe/read", headers=key(WRITER)).status_code == 200
        before = store_dump(settings)
        third = client.post(URL, json={**CUSTOMER, "customerId": "c2"}, headers=key(WRITER))
        assert_problem(third, 429, "rate-limited")
        assert int(third.headers["retry-after"]) >= 1
        assert store_dump(settings) == before
        # Another key has its own bucket.
        assert client.get("/probe/read", headers=key(READER)).status_code == 200


def test_no_keys_never_rate_limits_a_local_load_test(settings: Settings) -> None:
    # The shipped defaults (200/s, burst 400) apply per API key; the open, loopback-only
    # developer mode has no key to limit: well over a second's worth of requests pass.
    assert settings.rate_limit_per_second == 200 and settings.rate_limit_burst == 400
    with make_client(settings, fast_path=True) as client:
        started = time.monotonic()
        statuses = [client.get("/probe/read").status_code for _ in range(600)]
        statuses += [
            client.post(URL, json={**CUSTOMER, "customerId": f"c{i}"}).status_code
            for i in range(450)
        ]
    elapsed = time.monotonic() - started
    # 600 and 450 each > the burst (400) + a second's refill at 200/s, however fast they were
    # sent: neither the reads nor the commands (through the fast path cqrs api serves) throttle.
    assert statuses == [200] * 600 + [201] * 450, (
        f"{statuses.count(429)} answers were 429 in {elapsed:.2f} s"
    )


def test_no_keys_openapi_declares_no_security(settings: Settings) -> None:
    with make_client(settings) as client:
        doc = client.get("/openapi.json").json()
    assert "securitySchemes" not in doc.get("components", {})
    for operations in doc["paths"].values():
        for operation in operations.values():
            assert "security" not in operation
            assert not {"401", "403", "429"} & set(operation["responses"])


def test_token_bucket_refills_at_its_rate_up_to_the_burst() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=2.0, burst=3, clock=lambda: now[0])
    assert [bucket.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take("k") == pytest.approx(0.5)  # empty: one token in 1/rate s
    now[0] = 0.5
    assert bucket.take("k") == 0.0
    now[0] = 100.0  # long idle: capped at the burst
    assert [bucket.take("k") for _ in range(4)][-1] > 0
    assert bucket.take("other") == 0.0
    assert TokenBucket(rate=0, burst=1).take("k") == 0.0  # rate 0 disables the limit


def test_no_keys_runs_open_with_a_warning(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING), make_client(settings) as client:
        assert client.post(URL, json=CUSTOMER).status_code == 201
        assert client.get("/probe/admin").status_code == 200
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("OPEN" in r.getMessage() for r in warnings)


def test_no_key_or_secret_in_logs_or_error_bodies(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        texts = [
            client.post(URL, json=CUSTOMER, headers=key(UNKNOWN)).text,
            client.post(URL, json=CUSTOMER, headers=bearer(UNKNOWN)).text,
            client.post(URL, json=CUSTOMER, headers=key(READER)).text,
            client.get("/probe/admin", headers=key(WRITER)).text,
        ]
    assert caplog.records, "the rejections are logged"
    for secret in (UNKNOWN, READER, WRITER, ADMIN):
        assert secret not in caplog.text
        assert all(secret not in t for t in texts)


def test_bad_key_list_is_rejected_without_echoing_keys() -> None:
    with pytest.raises(SecurityConfigError) as info:
        parse_api_keys(f"{WRITER}:writer,{READER}:superuser")
    assert "entry 2" in str(info.value) and READER not in str(info.value)
    with pytest.raises(SecurityConfigError, match="entry 1"):
        parse_api_keys(WRITER)
    assert len(parse_api_keys(f" {WRITER}:writer ,, {READER}:reader")) == 2


def test_cqrs_api_refuses_non_loopback_without_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CQRS_API_KEYS", raising=False)
    code = cqrs_main(["api", "--data-dir", str(tmp_path), "--host", "0.0.0.0", "--port", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "0.0.0.0" in err and "CQRS_API_KEYS" in err


def test_cqrs_api_reports_a_bad_key_list_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CQRS_API_KEYS", f"{WRITER}:root")
    code = cqrs_main(["api", "--data-dir", str(tmp_path), "--host", "127.0.0.1", "--port", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "root" in err and WRITER not in err


def test_bind_check_allows_loopback_open_and_anything_with_keys(keyed: Settings) -> None:
    open_settings = Settings(env="local", data_dir=keyed.data_dir)
    for host in ("127.0.0.1", "::1", "[::1]", "localhost", "127.0.0.2"):
        assert is_loopback(host)
        check_bind(host, open_settings)
    for host in ("0.0.0.0", "::", "192.168.1.5", "example.com"):
        assert not is_loopback(host)
        with pytest.raises(SecurityConfigError):
            check_bind(host, open_settings)
    check_bind("0.0.0.0", keyed)


def test_openapi_declares_both_key_schemes(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    assert set(doc["components"]["securitySchemes"]) == {"ApiKey", "Bearer"}
    post = doc["paths"][URL]["post"]
    assert {"401", "403", "429"} <= set(post["responses"])
