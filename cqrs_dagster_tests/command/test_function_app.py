"""The Azure Functions app (Python v2 model), called with real ``func.HttpRequest`` objects.

Covers: the declared triggers (POST route ``v1/commands`` under ``/api``, function-key auth, the
relay's timer schedule); a command applied through the HTTP function against a SQLite write
store chosen by the settings (``CQRS_*`` env), replay of a commandId with 200 and the original
body, and every error class answered as problem+json with nothing written (400, 404, 409, 413,
415, 422); API keys and roles (401, 403) when ``CQRS_API_KEYS`` is set; and the timer-triggered
relay moving the committed events onto the local bus with their eventIds.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import azure.functions as func
import orjson
import pytest
from azure.functions.timer import TimerRequest

from cqrs_dagster import function_app
from cqrs_dagster.command.handler import CommandHandler
from cqrs_dagster.command.writestore.port import StoreUnavailable
from cqrs_dagster.command.writestore.sqlite import SqliteWriteStore
from cqrs_dagster.domain.events import CUSTOMER, EventEnvelope
from cqrs_dagster.eventbus.local import LocalEventBus
from cqrs_dagster.web.execution import MAX_BODY_BYTES
from cqrs_dagster.web.functions import (
    FunctionsHost,
    default_host,
    execute_command,
    reset_default_host,
)

URL = "http://localhost/api/v1/commands"
PROBLEM = "application/problem+json"


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """App settings as the Functions host would give them: environment variables."""
    data = tmp_path / "data"
    monkeypatch.setenv("CQRS_ENV", "local")
    monkeypatch.setenv("CQRS_DATA_DIR", str(data))
    monkeypatch.delenv("CQRS_API_KEYS", raising=False)
    reset_default_host()
    yield data
    reset_default_host()


@functools.cache
def declared() -> dict[str, Any]:
    """The app's functions by name (the SDK indexes an app only once, as the worker does)."""
    return {f.get_function_name(): f for f in function_app.app.get_functions()}


def user_function(name: str) -> Any:
    return declared()[name].get_user_function()


def post(body: Any, headers: dict[str, str] | None = None) -> func.HttpResponse:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    req = func.HttpRequest(
        "POST", URL, headers={"Content-Type": "application/json", **(headers or {})}, body=raw
    )
    response: func.HttpResponse = user_function("post_command")(req)
    return response


def payload(response: func.HttpResponse) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(response.get_body())
    return loaded


REGISTER = {
    "type": "RegisterCustomer",
    "commandId": "cmd-1",
    "customerId": "c1",
    "name": "Ada",
    "email": "ada@example.com",
}


def test_triggers_are_declared_as_deployed() -> None:
    functions = declared()
    assert set(functions) == {"post_command", "relay_outbox"}
    http = json.loads(functions["post_command"].get_function_json())
    trigger = next(b for b in http["bindings"] if b["type"] == "httpTrigger")
    assert trigger["route"] == "v1/commands"
    assert [m.upper() for m in trigger["methods"]] == ["POST"]
    assert trigger["authLevel"].upper() == "FUNCTION"
    timer = json.loads(functions["relay_outbox"].get_function_json())
    (binding,) = timer["bindings"]
    assert binding["type"] == "timerTrigger"
    assert binding["schedule"] == function_app.RELAY_SCHEDULE


def test_command_is_applied_and_replayed(data_dir: Path) -> None:
    first = post(REGISTER)
    assert first.status_code == 201
    assert first.mimetype == "application/json"
    body = payload(first)
    assert body["aggregateId"] == "c1" and body["version"] == 1
    assert body["state"]["email"] == "ada@example.com"

    again = post({**REGISTER, "name": "Someone Else"})
    assert again.status_code == 200
    assert payload(again) == body

    store = SqliteWriteStore(data_dir / "write.sqlite")
    try:
        stored = store.load(CUSTOMER, "c1")
        assert stored is not None and stored.state["name"] == "Ada"
        assert [e.event_id for e in store.pending_events(10)] == body["eventIds"]
    finally:
        store.close()


@pytest.mark.parametrize(
    ("body", "headers", "status", "slug"),
    [
        (b"{not json", {}, 400, "malformed-request"),
        (REGISTER, {"Content-Type": "text/plain"}, 415, "unsupported-media-type"),
        (b"[" * 10 + b" " * MAX_BODY_BYTES + b"]" * 10, {}, 413, "payload-too-large"),
        ({"type": "UpdateCustomer", "customerId": "ghost", "name": "X"}, {}, 404, "not-found"),
        ({"type": "CancelOrder", "orderId": "nope"}, {}, 404, "not-found"),
    ],
)
def test_errors_are_problems_and_write_nothing(
    data_dir: Path, body: Any, headers: dict[str, str], status: int, slug: str
) -> None:
    response = post(body, headers)
    assert response.status_code == status
    assert response.mimetype == PROBLEM
    problem = payload(response)
    assert problem["status"] == status and problem["type"].endswith("/" + slug)
    assert default_host().store.pending_events(10) == []


def test_validation_errors_point_at_the_field(data_dir: Path) -> None:
    response = post({**REGISTER, "email": "not-an-email"})
    assert response.status_code == 422
    problem = payload(response)
    assert [e["path"] for e in problem["errors"]] == ["email"]
    assert default_host().store.load(CUSTOMER, "c1") is None


def test_conflicts_are_409(data_dir: Path) -> None:
    assert post(REGISTER).status_code == 201
    taken = post({**REGISTER, "commandId": "cmd-2"})
    assert taken.status_code == 409
    assert payload(taken)["type"].endswith("/already-exists")
    stale = post({"type": "UpdateCustomer", "customerId": "c1", "name": "B", "expectedVersion": 0})
    assert stale.status_code == 409
    assert payload(stale)["type"].endswith("/version-conflict")
    stored = default_host().store.load(CUSTOMER, "c1")
    assert stored is not None and stored.version == 1


def test_api_keys_and_roles(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CQRS_API_KEYS", "w-key:writer,r-key:reader")
    reset_default_host()
    missing = post(REGISTER)
    assert missing.status_code == 401 and missing.mimetype == PROBLEM
    reader = post(REGISTER, {"X-API-Key": "r-key"})
    assert reader.status_code == 403
    assert default_host().store.load(CUSTOMER, "c1") is None
    writer = post(REGISTER, {"Authorization": "Bearer w-key"})
    assert writer.status_code == 201
    stored = default_host().store.pending_events(1)[0]
    assert stored.metadata["userId"].startswith("apikey-")


def test_timer_relay_publishes_committed_events(data_dir: Path) -> None:
    ids = payload(post(REGISTER))["eventIds"]
    ids += payload(
        post({"type": "UpdateCustomer", "commandId": "cmd-u", "customerId": "c1", "name": "B"})
    )["eventIds"]

    user_function("relay_outbox")(TimerRequest(past_due=False))

    assert default_host().store.pending_events(10) == []
    bus = LocalEventBus(data_dir / "bus.sqlite", partition_count=4)
    try:
        received = [
            EventEnvelope.from_json(r.body)
            for p in range(bus.partition_count)
            for r in bus.read(p, -1, 100)
        ]
    finally:
        bus.close()
    assert [e.event_id for e in received] == ids
    assert [e.version for e in received] == [1, 2]


def test_execute_command_without_any_framework(tmp_path: Path) -> None:
    store = SqliteWriteStore(tmp_path / "w.sqlite")
    try:
        status, headers, body = execute_command(orjson.dumps(REGISTER), CommandHandler(store))
        assert status == 201 and headers == {"Content-Type": "application/json"}
        assert json.loads(body)["consistencyToken"] == "Customer:c1:1"
        status, headers, body = execute_command(b"{}", CommandHandler(store))
        assert status == 422 and headers["Content-Type"] == PROBLEM
        assert json.loads(body)["errors"][0]["path"] == "type"
    finally:
        store.close()


class _UnreachableStore(SqliteWriteStore):
    """A store whose backend stopped answering (as the Cosmos adapter reports it)."""

    def command_result(self, command_id: str) -> dict[str, Any] | None:
        raise StoreUnavailable("Cosmos DB did not answer: connection refused")


def test_a_store_that_is_down_answers_503_with_retry_after(tmp_path: Path) -> None:
    store = _UnreachableStore(tmp_path / "w.sqlite")
    try:
        command = {**REGISTER, "commandId": "retry-me"}
        status, headers, body = execute_command(orjson.dumps(command), CommandHandler(store))
    finally:
        store.close()
    assert status == 503 and headers["Content-Type"] == PROBLEM
    assert headers["Retry-After"] == "2"
    problem = json.loads(body)
    assert problem["type"].endswith("/unavailable") and problem["status"] == 503
    assert "same commandId" in problem["detail"] and "connection refused" in problem["detail"]


def test_host_builds_from_settings(settings: Any) -> None:
    host = FunctionsHost(settings)
    try:
        assert isinstance(host.store, SqliteWriteStore)
        assert host.run_relay() == 0
    finally:
        host.close()
