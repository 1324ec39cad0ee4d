"""Read-your-writes: query endpoints with ``consistent_with`` (command tokens) and ``wait_ms``.

Covers: a token already included answers at once; a write projected by another thread while the
request waits is answered with the new state; a write not projected within ``wait_ms`` gives 412
problem+json ``not-yet-consistent`` with each token's state and the current answer; silver ahead
of gold is not enough (the gold checkpoint must cover the token's raw event); a Customer token
waits for order_summary; several tokens at once; token parsing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cqrs_dagster.projections.context import StepContext
from cqrs_dagster.projections.gold import build_daily_order_metrics, build_order_summary
from cqrs_dagster.projections.raw_ingest import ingest_raw_events
from cqrs_dagster.projections.silver import project_customers, project_orders
from cqrs_dagster.query.consistency import Token, TokenError, parse_tokens
from cqrs_dagster.web.app import build_app
from cqrs_dagster.web.problems import PROBLEM_BASE, PROBLEM_MEDIA_TYPE
from cqrs_dagster_tests.query.conftest import Platform

COMMANDS = "/api/v1/commands"


@pytest.fixture
def client(platform: Platform) -> Iterator[TestClient]:
    """The app on the platform's data dir; its relay is off: tests publish and project."""
    with TestClient(build_app(platform.settings, run_relay=False)) as c:
        yield c


def command(client: TestClient, body: dict[str, Any]) -> str:
    response = client.post(COMMANDS, json=body)
    assert response.status_code == 201, response.text
    token: str = response.json()["consistencyToken"]
    return token


@pytest.fixture
def order(client: TestClient, platform: Platform) -> str:
    """Customer k1 and order q1 (version 1), projected; returns q1's token."""
    command(
        client, {"type": "RegisterCustomer", "customerId": "k1", "name": "Kim", "email": "k@x.io"}
    )
    items = [{"sku": "tea", "quantity": 2, "unitPrice": "4.50"}]
    token = command(
        client, {"type": "CreateOrder", "orderId": "q1", "customerId": "k1", "items": items}
    )
    platform.project()
    return token


def pay(client: TestClient) -> str:
    return command(client, {"type": "UpdateOrderStatus", "orderId": "q1", "status": "Paid"})


def test_included_token_answers_at_once(client: TestClient, order: str) -> None:
    assert order == "Order:q1:1"
    response = client.get("/api/v1/orders/q1", params={"consistent_with": order})
    assert response.status_code == 200
    assert response.json()["status"] == "Created"


def test_write_projected_during_the_wait_is_answered(
    client: TestClient, platform: Platform, order: str
) -> None:
    token = pay(client)
    assert token == "Order:q1:2"
    stale = client.get("/api/v1/orders/q1")
    assert stale.json()["status"] == "Created"

    def project_later() -> None:
        time.sleep(0.3)  # let the request below start waiting (a delay, not an assertion)
        platform.project()

    worker = threading.Thread(target=project_later)
    worker.start()
    try:
        response = client.get(
            "/api/v1/orders/q1", params={"consistent_with": token, "wait_ms": 30_000}
        )
    finally:
        worker.join(60)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "Paid"
    listed = client.get("/api/v1/orders", params={"consistent_with": token, "customer_id": "k1"})
    assert [i["status"] for i in listed.json()["items"]] == ["Paid"]


def test_not_projected_within_the_wait_is_412(
    client: TestClient, platform: Platform, order: str
) -> None:
    token = pay(client)
    platform.publish()  # on the bus, not yet in any read model
    response = client.get("/api/v1/orders/q1", params={"consistent_with": token, "wait_ms": 150})
    assert response.status_code == 412
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body = response.json()
    assert body["type"] == PROBLEM_BASE + "not-yet-consistent"
    assert body["status"] == 412 and "Order:q1:2" in body["detail"]
    assert body["consistency"] == [
        {
            "token": "Order:q1:2",
            "satisfied": False,
            "silver_table": "orders",
            "silver_version": 1,
            "event_ingest_seq": None,
            "gold_checkpoints": {"order_summary": 1, "daily_order_metrics": 1},
        }
    ]
    assert body["current"]["status"] == "Created"
    missing = client.get("/api/v1/orders/zz", params={"consistent_with": "Order:zz:1"})
    assert missing.status_code == 412 and missing.json()["current"] is None


def test_silver_ahead_of_gold_is_not_enough(
    client: TestClient, platform: Platform, order: str
) -> None:
    token = pay(client)
    platform.publish()
    run = StepContext(platform.tables, "partial")
    ingest_raw_events(run, platform.bus, max_events=100)
    project_orders(run, max_events=100)
    project_customers(run, max_events=100)
    waiting = client.get("/api/v1/orders/q1", params={"consistent_with": token})
    assert waiting.status_code == 412
    state = waiting.json()["consistency"][0]
    assert state["silver_version"] == 2 and state["event_ingest_seq"] == 2
    assert state["gold_checkpoints"] == {"order_summary": 1, "daily_order_metrics": 1}
    build_order_summary(run)
    still = client.get("/api/v1/orders/q1", params={"consistent_with": token})
    assert still.status_code == 412  # daily_order_metrics does not cover it yet
    assert still.json()["consistency"][0]["gold_checkpoints"]["order_summary"] == 2
    build_daily_order_metrics(run)
    done = client.get("/api/v1/orders/q1", params={"consistent_with": token})
    assert done.status_code == 200 and done.json()["status"] == "Paid"


def test_customer_token_waits_for_order_summary(
    client: TestClient, platform: Platform, order: str
) -> None:
    token = command(client, {"type": "UpdateCustomer", "customerId": "k1", "name": "Kim Lee"})
    assert token == "Customer:k1:2"
    assert client.get("/api/v1/customers/k1", params={"consistent_with": token}).status_code == 412
    platform.project()
    customer = client.get("/api/v1/customers/k1", params={"consistent_with": token})
    assert customer.status_code == 200 and customer.json()["name"] == "Kim Lee"
    summary = client.get("/api/v1/orders/q1", params={"consistent_with": token})
    assert summary.json()["customer_name"] == "Kim Lee"


def test_several_tokens_all_must_be_included(
    client: TestClient, platform: Platform, order: str
) -> None:
    paid = pay(client)
    platform.project()
    renamed = command(client, {"type": "UpdateCustomer", "customerId": "k1", "name": "Kim Lee"})
    both = f"{paid},{renamed}"
    response = client.get("/api/v1/metrics/daily", params={"consistent_with": both})
    assert response.status_code == 412
    assert [s["satisfied"] for s in response.json()["consistency"]] == [True, False]
    platform.project()
    ok = client.get("/api/v1/metrics/daily", params={"consistent_with": both})
    assert ok.status_code == 200 and ok.json()["items"][0]["order_count"] == 1


def test_parse_tokens() -> None:
    assert parse_tokens("Order:a:b:3, Customer:c1:12") == [
        Token("Order", "a:b", 3),
        Token("Customer", "c1", 12),
    ]
    for bad in ("Order:x", "Order::1", "Order:x:0", "Order:x:-1", "Order:x:1.5", "Thing:x:1", ""):
        with pytest.raises(TokenError):
            parse_tokens(bad)
    with pytest.raises(TokenError, match="at most 100"):
        parse_tokens(",".join(["Order:x:1"] * 101))
