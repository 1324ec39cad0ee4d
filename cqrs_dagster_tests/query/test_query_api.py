"""The query API over the real app (TestClient) and read models built by the real pipeline.

Covers: GET /orders/{id} and /customers/{id} answer the view's row (decimal strings, UTC ``Z``
timestamps) and 404 problem+json for unknown ids; GET /orders pages through every row exactly
once in (created_date, order_id) order at several page sizes, and each filter (customer_id,
status, created range, combined) answers what the same filter over the view answers, across
pages; GET /metrics/daily equals the view in a date range; 422 problem+json for every invalid
parameter; SQL injection attempts in every parameter return nothing or 422 and leave every
table at its version; GET /projections reports each read model's checkpoint and zero lag once
projected; the reader role is enforced when API keys are set.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from cqrs_dagster.projections.schemas import READ_MODELS
from cqrs_dagster.query.rows import json_rows
from cqrs_dagster.query.views import ReadModels
from cqrs_dagster.settings import Settings
from cqrs_dagster.web.app import build_app
from cqrs_dagster.web.problems import PROBLEM_BASE, PROBLEM_MEDIA_TYPE
from cqrs_dagster.web.queries import encode_cursor
from cqrs_dagster_tests.query.conftest import Platform

INJECTIONS = [
    "' OR '1'='1",
    "o000' OR 1=1 --",
    "x'; DROP VIEW orders; --",
    "1); COPY orders TO '/tmp/pwned.csv'; --",
    'o000" OR ""="',
    "%' UNION SELECT * FROM raw_events --",
]


@pytest.fixture(scope="module")
def client(seeded: Platform) -> Iterator[TestClient]:
    with TestClient(build_app(seeded.settings, run_relay=False)) as c:
        yield c


@pytest.fixture(scope="module")
def views(seeded: Platform) -> Iterator[ReadModels]:
    with ReadModels(seeded.tables) as models:
        yield models


def view_rows(views: ReadModels, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    return json_rows(views.execute(sql, params))


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body: dict[str, Any] = response.json()
    assert body["type"] == PROBLEM_BASE + slug
    assert body["status"] == status and body["title"] and body["detail"]
    return body


def all_pages(client: TestClient, limit: int, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        response = client.get("/api/v1/orders", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= limit
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items
        assert len(page["items"]) == limit
    raise AssertionError("pagination did not end")


def versions(seeded: Platform) -> dict[str, int]:
    out = {}
    for name in READ_MODELS:
        table = seeded.tables.open(name)
        assert table is not None
        out[name] = table.version()
    return out


def test_get_order_is_the_order_summary_row(client: TestClient, views: ReadModels) -> None:
    for expected in view_rows(views, "SELECT * FROM order_summary ORDER BY order_id LIMIT 5"):
        response = client.get(f"/api/v1/orders/{expected['order_id']}")
        assert response.status_code == 200
        assert response.json() == expected
    body = client.get("/api/v1/orders/o037").json()
    assert body["customer_name"] == "Grace Hopper"
    assert body["total_amount"] == "8.02"
    assert body["created_date"] == "2026-03-01T09:00:00.000000Z"


def test_get_customer_is_the_customers_row(client: TestClient, views: ReadModels) -> None:
    expected = view_rows(views, "SELECT * FROM customers WHERE customer_id = 'c1'")[0]
    body = client.get("/api/v1/customers/c1").json()
    assert body == expected
    assert body["name"] == "Grace Hopper" and body["version"] == 2


def test_unknown_ids_are_404_problems(client: TestClient) -> None:
    body = assert_problem(client.get("/api/v1/orders/nope"), 404, "not-found")
    assert "nope" in body["detail"]
    assert_problem(client.get("/api/v1/customers/nope"), 404, "not-found")


@pytest.mark.parametrize("limit", [1, 7, 50, 500])
def test_pagination_covers_every_row_once_in_order(
    client: TestClient, views: ReadModels, limit: int
) -> None:
    expected = view_rows(views, "SELECT * FROM order_summary ORDER BY created_date, order_id")
    assert len(expected) == 60
    assert all_pages(client, limit) == expected


def test_default_page_is_50(client: TestClient) -> None:
    page = client.get("/api/v1/orders").json()
    assert len(page["items"]) == 50 and page["next_cursor"]


@pytest.mark.parametrize(
    ("params", "where", "args"),
    [
        ({"customer_id": "c3"}, "customer_id = ?", ["c3"]),
        ({"status": "Shipped"}, "status = ?", ["Shipped"]),
        (
            {"created_from": "2026-03-02T00:00:00Z", "created_to": "2026-03-03T00:00:00Z"},
            "created_date >= ? AND created_date < ?",
            [datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC)],
        ),
        (
            {"customer_id": "c1", "status": "Paid", "created_from": "2026-03-01T21:00:00"},
            "customer_id = ? AND status = ? AND created_date >= ?",
            ["c1", "Paid", datetime(2026, 3, 1, 21, tzinfo=UTC)],
        ),
    ],
)
def test_filters_equal_the_view(
    client: TestClient, views: ReadModels, params: dict[str, str], where: str, args: list[Any]
) -> None:
    expected = view_rows(
        views, f"SELECT * FROM order_summary WHERE {where} ORDER BY created_date, order_id", args
    )
    assert 0 < len(expected) < 60
    assert all_pages(client, 3, **params) == expected


def test_daily_metrics_equal_the_view(client: TestClient, views: ReadModels) -> None:
    everything = view_rows(views, "SELECT * FROM daily_order_metrics ORDER BY order_date")
    assert len(everything) == 4
    assert client.get("/api/v1/metrics/daily").json() == {"items": everything}
    got = client.get("/api/v1/metrics/daily", params={"from": "2026-03-02", "to": "2026-03-03"})
    assert got.json() == {"items": everything[1:3]}
    one = client.get("/api/v1/metrics/daily", params={"from": "2026-03-04", "to": "2026-03-04"})
    assert one.json()["items"] == everything[3:]
    assert set(everything[0]) == {
        "order_date",
        "order_count",
        "total_revenue",
        "avg_order_value",
        "unique_customers",
    }
    assert isinstance(everything[0]["total_revenue"], str)


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/api/v1/orders", {"limit": 0}, "query/limit"),
        ("/api/v1/orders", {"limit": 501}, "query/limit"),
        ("/api/v1/orders", {"limit": "ten"}, "query/limit"),
        ("/api/v1/orders", {"status": "Lost"}, "query/status"),
        ("/api/v1/orders", {"created_from": "yesterday"}, "query/created_from"),
        ("/api/v1/orders", {"cursor": "not-a-cursor"}, "query/cursor"),
        ("/api/v1/orders", {"cursor": "WzFd"}, "query/cursor"),  # no "<micros>." prefix
        ("/api/v1/orders", {"cursor": "123456789012345678.YQ"}, "query/cursor"),  # 18 digits
        ("/api/v1/orders", {"wait_ms": 30001}, "query/wait_ms"),
        ("/api/v1/orders", {"consistent_with": "Order:o1"}, "query/consistent_with"),
        ("/api/v1/orders/o000", {"consistent_with": "Invoice:o1:1"}, "query/consistent_with"),
        ("/api/v1/customers/c1", {"consistent_with": "Customer:c1:0"}, "query/consistent_with"),
        ("/api/v1/metrics/daily", {"from": "2026-13-01"}, "query/from"),
    ],
)
def test_invalid_parameters_are_422_problems(
    client: TestClient, path: str, params: dict[str, Any], field: str
) -> None:
    body = assert_problem(client.get(path, params=params), 422, "validation")
    assert field in [e["path"] for e in body["errors"]]


def test_a_reversed_range_is_empty_not_an_error(client: TestClient) -> None:
    # The document's parameters are independent; a range that ends before it starts holds nothing.
    reversed_orders = {"created_from": "2026-03-03T00:00:00Z", "created_to": "2026-03-02T00:00:00Z"}
    page = client.get("/api/v1/orders", params=reversed_orders)
    assert page.status_code == 200 and page.json() == {"items": [], "next_cursor": None}
    days = client.get("/api/v1/metrics/daily", params={"from": "2026-03-03", "to": "2026-03-01"})
    assert days.status_code == 200 and days.json() == {"items": []}


@pytest.mark.parametrize(
    ("created_from", "created_to", "expected"),
    [
        # UTC time in year 0: before every order (found by schemathesis as a 500).
        (None, "0001-01-01T00:03:46+07:06", 0),
        ("0001-01-01T00:03:46+07:06", None, 60),
        # UTC time in year 10000: after every order.
        ("9999-12-31T23:59:59-05:00", None, 0),
        (None, "9999-12-31T23:59:59-05:00", 60),
    ],
)
def test_bounds_outside_pythons_datetime_range_in_utc_are_clamped(
    client: TestClient, created_from: str | None, created_to: str | None, expected: int
) -> None:
    params: dict[str, Any] = {"limit": 500}
    if created_from is not None:
        params["created_from"] = created_from
    if created_to is not None:
        params["created_to"] = created_to
    page = client.get("/api/v1/orders", params=params)
    assert page.status_code == 200, page.text
    assert len(page.json()["items"]) == expected


def test_every_cursor_the_schema_allows_is_a_position(client: TestClient) -> None:
    # Any "<micros>.<base64url>" is accepted (an odd length or a non-UTF-8 id included).
    for cursor in ("0.", "1.A", "99999999999999999.____", "1772600000000000.b2Q"):
        assert client.get("/api/v1/orders", params={"cursor": cursor}).status_code == 200


def test_injection_attempts_are_inert(client: TestClient, seeded: Platform) -> None:
    before = versions(seeded)
    for attack in INJECTIONS:
        assert client.get(f"/api/v1/orders/{attack}").status_code == 404
        assert client.get(f"/api/v1/customers/{attack}").status_code == 404
        page = client.get("/api/v1/orders", params={"customer_id": attack}).json()
        assert page == {"items": [], "next_cursor": None}
        for param in ("status", "created_from", "created_to", "limit", "wait_ms"):
            assert client.get("/api/v1/orders", params={param: attack}).status_code == 422
        for param in ("from", "to"):
            assert client.get("/api/v1/metrics/daily", params={param: attack}).status_code == 422
        assert client.get("/api/v1/orders", params={"cursor": attack}).status_code == 422
        token = f"Order:{attack}:1"  # not an aggregate id: refused by the documented pattern
        assert_problem(
            client.get("/api/v1/orders/o000", params={"consistent_with": token}),
            422,
            "validation",
        )
        # A well-formed cursor carrying an injection as its order id is only a bound value.
        crafted = encode_cursor(datetime(2026, 3, 4, 9, tzinfo=UTC), attack)
        rest = client.get("/api/v1/orders", params={"cursor": crafted, "limit": 500}).json()
        assert all(item["created_date"] >= "2026-03-04T09:00" for item in rest["items"])
    assert versions(seeded) == before
    assert len(client.get("/api/v1/orders", params={"limit": 500}).json()["items"]) == 60


def test_projections_report_checkpoints_and_zero_lag(client: TestClient) -> None:
    body = client.get("/api/v1/projections").json()
    by_table = {item["table"]: item for item in body["items"]}
    assert list(by_table) == list(READ_MODELS)
    raw_seq = by_table["raw_events"]["checkpoint"]["raw_events/ingest_seq"]
    assert raw_seq == 156  # 157 events, positions from 0
    for name, item in by_table.items():
        assert item["checkpoint"][f"{name}/ingest_seq"] == raw_seq
        assert item["lag_events"] == 0 and item["lag_seconds"] == 0.0
        assert item["newest_applied_event_time"].endswith("Z")


def test_reader_role_is_required(seeded: Platform) -> None:
    settings = Settings(
        env="local", data_dir=seeded.settings.data_dir, api_keys="rk:reader,wk:writer"
    )
    with TestClient(build_app(settings, run_relay=False)) as c:
        assert_problem(c.get("/api/v1/orders/o000"), 401, "unauthorized")
        assert_problem(
            c.get("/api/v1/orders/o000", headers={"X-API-Key": "bad"}), 401, "unauthorized"
        )
        ok = c.get("/api/v1/orders/o000", headers={"X-API-Key": "rk"})
        assert ok.status_code == 200 and ok.json()["order_id"] == "o000"
        assert c.get("/api/v1/metrics/daily", headers={"X-API-Key": "wk"}).status_code == 200


def test_iso_dates_in_json(client: TestClient) -> None:
    items = client.get("/api/v1/metrics/daily").json()["items"]
    assert [i["order_date"] for i in items] == [date(2026, 3, d).isoformat() for d in (1, 2, 3, 4)]
