"""The command API over the real app (FastAPI TestClient) and a real SQLite write store in tmp.

Covers: the 201 body shape and its events in the outbox; replaying a commandId (200, the original
body, nothing written); exact money through JSON numbers and strings; every error class (400,
404, 409 x3, 413 by header and by bytes, 415, 422 with field paths, unknown route 404 and 405),
each as problem+json and each leaving the write store byte-for-byte unchanged; the OpenAPI
document (path, request body schema, problem responses).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from cqrs_dagster.command.writestore.sqlite import SqliteWriteStore
from cqrs_dagster.settings import Settings
from cqrs_dagster.web.app import build_app
from cqrs_dagster.web.commands import MAX_BODY_BYTES, CommandFastPath
from cqrs_dagster.web.problems import PROBLEM_BASE, PROBLEM_MEDIA_TYPE

URL = "/api/v1/commands"
CUSTOMER = {
    "type": "RegisterCustomer",
    "customerId": "c1",
    "name": "Ada",
    "email": "ada@example.com",
}
ORDER = {
    "type": "CreateOrder",
    "orderId": "o1",
    "customerId": "c1",
    "items": [{"sku": "tea", "quantity": 2, "unitPrice": "4.50"}],
}


@pytest.fixture(params=["route-stack", "in-front"])
def client(settings: Settings, request: pytest.FixtureRequest) -> Iterator[TestClient]:
    """The app without its relay thread, so that the outbox keeps what commands wrote.

    Every test runs twice: with the command fast path inside the app's middleware stack (as
    ``build_app`` installs it) and in front of it (``CommandFastPath.in_front_of``, what
    ``cqrs api`` serves): both must answer alike.
    """
    app = build_app(settings, run_relay=False)
    served = app if request.param == "route-stack" else CommandFastPath.in_front_of(app)
    c = TestClient(served)
    c.app = app  # tests read app.state; requests still go through `served` (the transport)
    with c:
        yield c


@pytest.fixture
def seeded(client: TestClient) -> TestClient:
    """A customer c1 and an order o1 (status Created, version 1)."""
    assert client.post(URL, json=CUSTOMER).status_code == 201
    assert client.post(URL, json=ORDER).status_code == 201
    return client


def store_dump(settings: Settings) -> str:
    """Every row of every table of the write store."""
    with closing(sqlite3.connect(settings.write_db_path)) as conn:
        return "\n".join(conn.iterdump())


def pending_ids(client: TestClient) -> list[str]:
    app: Any = client.app
    return [e.event_id for e in app.state.store.pending_events(10_000)]


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body: dict[str, Any] = response.json()
    assert body["type"] == PROBLEM_BASE + slug
    assert body["status"] == status
    assert body["title"] and body["detail"]
    return body


@pytest.fixture
def unchanged(seeded: TestClient, settings: Settings) -> Iterator[Callable[[], None]]:
    """Call the yielded function after a rejected request: the store must be as it was."""
    before_dump, before_pending = store_dump(settings), pending_ids(seeded)
    assert len(before_pending) == 2

    def check() -> None:
        assert pending_ids(seeded) == before_pending
        assert store_dump(settings) == before_dump

    yield check


def post_raw(client: TestClient, body: bytes, content_type: str = "application/json") -> Any:
    return client.post(URL, content=body, headers={"content-type": content_type})


# -- success -------------------------------------------------------------------------------------


def test_created_command_returns_201_with_state_events_and_token(client: TestClient) -> None:
    response = client.post(URL, json=CUSTOMER)
    assert response.status_code == 201
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {
        "aggregateId",
        "aggregateType",
        "version",
        "eventIds",
        "state",
        "consistencyToken",
    }
    assert (body["aggregateId"], body["aggregateType"], body["version"]) == ("c1", "Customer", 1)
    assert body["state"]["email"] == "ada@example.com"
    assert body["consistencyToken"] == "Customer:c1:1"
    assert pending_ids(client) == body["eventIds"]


def test_server_generates_ids_when_the_command_has_none(client: TestClient) -> None:
    body = client.post(URL, json={**CUSTOMER, "customerId": None}).json()
    assert body["aggregateId"] and body["aggregateId"] != "c1"
    assert body["state"]["customerId"] == body["aggregateId"]


def test_replayed_command_id_returns_200_with_the_original_body(
    client: TestClient, settings: Settings
) -> None:
    first = client.post(URL, json={**CUSTOMER, "commandId": "cmd-1"})
    assert first.status_code == 201
    dump = store_dump(settings)
    # Same commandId, other fields changed: the original answer, nothing written.
    again = client.post(URL, json={**CUSTOMER, "commandId": "cmd-1", "name": "Someone else"})
    assert again.status_code == 200
    assert again.json() == first.json()
    assert store_dump(settings) == dump


@pytest.mark.parametrize("price", ["0.10", "0.1"])
def test_money_is_exact_for_decimal_strings(client: TestClient, price: str) -> None:
    client.post(URL, json=CUSTOMER)
    order = {**ORDER, "items": [{"sku": "x", "quantity": 3, "unitPrice": price}]}
    state = client.post(URL, json=order).json()["state"]
    assert state["totalAmount"] == "0.30"
    assert state["items"][0]["unitPrice"] == "0.10"


def test_money_is_exact_for_json_numbers(client: TestClient) -> None:
    """A JSON number is decoded as a Decimal: a float would be refused (422), not rounded."""
    client.post(URL, json=CUSTOMER)
    body = (
        b'{"type": "CreateOrder", "customerId": "c1", "items": ['
        b'{"sku": "a", "quantity": 3, "unitPrice": 0.10},'
        b'{"sku": "b", "quantity": 1, "unitPrice": 0.20}]}'
    )
    response = post_raw(client, body)
    assert response.status_code == 201, response.text
    state = response.json()["state"]
    assert state["totalAmount"] == "0.50"
    assert [i["unitPrice"] for i in state["items"]] == ["0.10", "0.20"]


def test_openapi_describes_the_command_endpoint(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    post = doc["paths"][URL]["post"]
    body_schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert body_schema == {"$ref": "#/components/schemas/Command"}
    schemas = doc["components"]["schemas"]
    command_refs = {ref["$ref"].rsplit("/", 1)[1] for ref in schemas["Command"]["oneOf"]}
    assert command_refs == {
        "RegisterCustomer",
        "UpdateCustomer",
        "CreateOrder",
        "UpdateOrderStatus",
        "CancelOrder",
    }
    assert command_refs <= set(schemas) and "OrderItem" in schemas and "Problem" in schemas
    assert {"200", "201", "400", "404", "409", "413", "415", "422"} <= set(post["responses"])
    assert PROBLEM_MEDIA_TYPE in post["responses"]["422"]["content"]
    assert "ORIGINAL" in post["description"]


# -- errors: each one is problem+json and writes nothing ---------------------------------------


@pytest.mark.parametrize(
    "body",
    [b'{"type": "RegisterCustomer",', b"", b"\xff\xfe{}", b'{"unitPrice": NaN}', b"[" * 100_000],
    ids=["truncated", "empty", "not-utf8", "nan", "deep"],
)
def test_malformed_json_is_400(
    seeded: TestClient, unchanged: Callable[[], None], body: bytes
) -> None:
    assert_problem(post_raw(seeded, body), 400, "malformed-request")
    unchanged()


@pytest.mark.parametrize(
    "command",
    [
        {"type": "UpdateCustomer", "customerId": "nobody", "name": "X"},
        {**ORDER, "orderId": "o2", "customerId": "nobody"},
        {"type": "CancelOrder", "orderId": "nothing"},
    ],
    ids=["update-customer", "order-for-unknown-customer", "cancel-unknown-order"],
)
def test_unknown_aggregate_is_404(
    seeded: TestClient, unchanged: Callable[[], None], command: dict[str, Any]
) -> None:
    body = assert_problem(seeded.post(URL, json=command), 404, "not-found")
    assert "nobody" in body["detail"] or "nothing" in body["detail"]
    unchanged()


def test_existing_id_is_409_already_exists(
    seeded: TestClient, unchanged: Callable[[], None]
) -> None:
    assert_problem(seeded.post(URL, json=CUSTOMER), 409, "already-exists")
    unchanged()


def test_forbidden_transition_is_409(seeded: TestClient, unchanged: Callable[[], None]) -> None:
    command = {"type": "UpdateOrderStatus", "orderId": "o1", "status": "Delivered"}
    body = assert_problem(seeded.post(URL, json=command), 409, "invalid-transition")
    assert "Created" in body["detail"] and "Delivered" in body["detail"]
    unchanged()


def test_stale_expected_version_is_409(seeded: TestClient, unchanged: Callable[[], None]) -> None:
    command = {"type": "UpdateOrderStatus", "orderId": "o1", "status": "Paid", "expectedVersion": 5}
    assert_problem(seeded.post(URL, json=command), 409, "version-conflict")
    unchanged()


def test_body_over_1_mib_by_content_length_is_413(
    seeded: TestClient, unchanged: Callable[[], None]
) -> None:
    big = b'{"type": "RegisterCustomer", "name": "' + b"x" * MAX_BODY_BYTES + b'"}'
    assert_problem(post_raw(seeded, big), 413, "payload-too-large")
    unchanged()


def test_body_over_1_mib_without_content_length_is_413(
    seeded: TestClient, unchanged: Callable[[], None]
) -> None:
    """A chunked body declares no length: the bytes read are counted."""

    def chunks() -> Iterator[bytes]:
        yield b'{"type": "RegisterCustomer", "name": "'
        for _ in range(20):
            yield b"x" * 65_536
        yield b'"}'

    response = seeded.post(URL, content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, "payload-too-large")
    unchanged()


def test_body_of_exactly_1_mib_is_not_413(seeded: TestClient) -> None:
    prefix = b'{"type": "RegisterCustomer", "customerId": "c9", "email": "a@b.co", "name": "x'
    body = prefix + b" " * (MAX_BODY_BYTES - len(prefix) - 2) + b'"}'
    assert len(body) == MAX_BODY_BYTES
    response = post_raw(seeded, body)
    assert_problem(response, 422, "validation")  # the name is too long, but the size was fine


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_non_json_content_type_is_415(
    seeded: TestClient, unchanged: Callable[[], None], content_type: str
) -> None:
    response = seeded.post(
        URL, content=b'{"type": "RegisterCustomer"}', headers={"content-type": content_type}
    )
    assert_problem(response, 415, "unsupported-media-type")
    unchanged()


def field_paths(response: httpx.Response) -> dict[str, str]:
    body = assert_problem(response, 422, "validation")
    return {e["path"]: e["message"] for e in body["errors"]}


def test_invalid_fields_are_422_with_each_path(
    seeded: TestClient, unchanged: Callable[[], None]
) -> None:
    command = {
        "type": "CreateOrder",
        "orderId": "o2",
        "customerId": "",
        "items": [
            {"sku": "ok", "quantity": 1, "unitPrice": "1.00"},
            {"sku": "x", "quantity": 0, "unitPrice": "1.234"},
        ],
        "expectedVersion": "1",
        "extra": True,
    }
    paths = field_paths(seeded.post(URL, json=command))
    assert set(paths) == {
        "customerId",
        "items/1/quantity",
        "items/1/unitPrice",
        "expectedVersion",
        "extra",
    }
    assert "2 decimal places" in paths["items/1/unitPrice"]
    unchanged()


def test_out_of_range_money_number_is_422_at_its_path(
    seeded: TestClient, unchanged: Callable[[], None]
) -> None:
    """1e400 is a JSON number Decimal can hold but money refuses (too large)."""
    body = b'{"type": "CreateOrder", "customerId": "c1", "items": [{"sku": "a", "quantity": 1, "unitPrice": 1e400}]}'
    paths = field_paths(post_raw(seeded, body))
    assert list(paths) == ["items/0/unitPrice"]
    unchanged()


@pytest.mark.parametrize(
    ("command", "message"),
    [({"type": "Teleport"}, "unknown"), ({"name": "no type"}, "required")],
    ids=["unknown-type", "missing-type"],
)
def test_unknown_or_missing_type_is_422_at_path_type(
    seeded: TestClient, unchanged: Callable[[], None], command: dict[str, Any], message: str
) -> None:
    paths = field_paths(seeded.post(URL, json=command))
    assert list(paths) == ["type"]
    assert message in paths["type"] and "CreateOrder" in paths["type"]
    unchanged()


@pytest.mark.parametrize("body", [b"[]", b'"RegisterCustomer"', b"42", b"null"])
def test_non_object_body_is_422_at_the_root(
    seeded: TestClient, unchanged: Callable[[], None], body: bytes
) -> None:
    paths = field_paths(post_raw(seeded, body))
    assert set(paths) <= {"", "type"} and paths
    unchanged()


def test_model_level_rule_is_422_at_the_root(
    seeded: TestClient, unchanged: Callable[[], None]
) -> None:
    paths = field_paths(seeded.post(URL, json={"type": "UpdateCustomer", "customerId": "c1"}))
    assert paths == {"": "UpdateCustomer needs at least one of name, email"}
    unchanged()


def test_unknown_route_is_404_and_wrong_method_405(seeded: TestClient) -> None:
    assert_problem(seeded.get("/api/v1/nothing-here"), 404, "not-found")
    response = seeded.get(URL)
    assert_problem(response, 405, "method-not-allowed")
    assert response.headers["allow"] == "POST"


def test_group_commit_serves_concurrent_clients(client: TestClient) -> None:
    """Concurrent requests share the app's group committer; each gets its own outcome."""
    assert client.app.state.committer is not None  # type: ignore[attr-defined]

    def send(i: int) -> int:
        body = {**CUSTOMER, "customerId": f"g{i}", "commandId": f"k{i % 8}"}
        return client.post(URL, json=body).status_code

    with ThreadPoolExecutor(16) as pool:
        statuses = sorted(pool.map(send, range(32)))
    # 8 command ids: 8 applied (201), the 24 retries of those ids replay (200).
    assert statuses == [200] * 24 + [201] * 8


def test_store_without_group_commit_runs_commands_in_the_thread_pool(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store whose batch is not one commit (Cosmos DB) keeps concurrent single writes."""
    monkeypatch.setattr(SqliteWriteStore, "group_commit", False)
    with TestClient(build_app(settings, run_relay=False)) as c:
        assert c.app.state.committer is None  # type: ignore[attr-defined]
        assert c.post(URL, json=CUSTOMER).status_code == 201
        assert c.post(URL, json={**CUSTOMER, "name": "Other"}).status_code == 409
        assert c.post(URL, json={**ORDER, "customerId": "nobody"}).status_code == 404
        assert c.post(URL, json=ORDER).status_code == 201


def test_command_after_the_committer_closed_is_503_and_writes_nothing(
    client: TestClient, settings: Settings
) -> None:
    client.app.state.committer.close()  # type: ignore[attr-defined]
    response = client.post(URL, json=CUSTOMER)
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/unavailable")
    with closing(sqlite3.connect(settings.write_db_path)) as conn:
        assert conn.execute("SELECT count(*) FROM commands").fetchone()[0] == 0


def test_in_front_an_unexpected_error_is_a_logged_500_problem(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """In front of the app, the fast path does the error middleware's work for commands."""
    app = build_app(settings, run_relay=False)
    with TestClient(CommandFastPath.in_front_of(app)) as c:

        async def broken(*args: Any) -> Any:
            raise RuntimeError("boom")

        app.state.committer.execute = broken
        response = c.post(URL, json=CUSTOMER)
        assert_problem(response, 500, "internal")
        assert "boom" not in response.text
        assert c.get("/api/v1/healthz").status_code == 200  # other routes: the app itself
    assert any("unhandled error on POST" in r.getMessage() for r in caplog.records)
