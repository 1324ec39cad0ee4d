"""Plain key lookups under a staleness bound: answered from the loaded snapshot, refreshed behind.

Real pipeline, real ``ReadModels`` and the app under uvicorn on 127.0.0.1. With a bound far longer
than the test (``CQRS_QUERY_MAX_STALENESS_MS=60000``), a plain ``GET /orders/{id}`` right after a
projection commit still answers the row of the snapshot the API had loaded (seen to be the newest
commit within the bound) and starts ONE background refresh of the table; the following lookups
answer the new row without any further commit or request-side refresh. The default bound (250 ms)
is the setting's default, checked here too.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from cqrs_dagster.query.snapshot_rows import SnapshotRows
from cqrs_dagster.settings import Settings
from cqrs_dagster.web.app import build_app
from cqrs_dagster_tests.query.conftest import Platform, Server


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(env="local", data_dir=tmp_path / "data", query_max_staleness_ms=60_000)


def test_the_shipped_bound_is_a_quarter_second() -> None:
    assert Settings().query_max_staleness_ms == 250


def test_a_plain_lookup_within_the_bound_answers_the_loaded_snapshot_then_the_refreshed_one(
    platform: Platform, server: Server
) -> None:
    platform.send(
        {"type": "RegisterCustomer", "customerId": "c1", "name": "Ada", "email": "a@x.io"}
    )
    items = [{"sku": "tea", "quantity": 2, "unitPrice": "1.50"}]
    platform.send({"type": "CreateOrder", "orderId": "o1", "customerId": "c1", "items": items})
    platform.project()
    api_rows: SnapshotRows = server.app.state.query_api.rows
    with httpx.Client(base_url=server.url, timeout=10) as http:
        first = http.get("/api/v1/orders/o1")  # reads the table (a refresh, in a thread)
        assert first.status_code == 200 and first.json()["status"] == "Created"
        assert http.get("/api/v1/orders/o1").json() == first.json()  # from memory, newest
        assert api_rows.behind == 0
        platform.send({"type": "UpdateOrderStatus", "orderId": "o1", "status": "Paid"})
        platform.project()
        # The API's snapshot was the newest commit moments ago: answered from it, marked behind.
        stale = http.get("/api/v1/orders/o1")
        assert stale.status_code == 200 and stale.json()["status"] == "Created"
        assert api_rows.behind >= 1
        # The background refresh loads the commit; no further commit and no request refreshes.
        deadline = time.monotonic() + 10
        while (now := http.get("/api/v1/orders/o1").json())["status"] != "Paid":
            assert time.monotonic() < deadline, "the background refresh never loaded the commit"
            time.sleep(0.02)
        assert now["status"] == "Paid"
        # Now the newest commit again: answered from memory, not behind.
        behind, hits = api_rows.behind, api_rows.hits
        assert http.get("/api/v1/orders/o1").json()["status"] == "Paid"
        assert api_rows.hits == hits + 1 and api_rows.behind == behind


@pytest.mark.parametrize(
    ("bound", "says"),
    [(250, "at most 250 ms before the request"), (0, "as of the read model's newest commit")],
)
def test_the_openapi_document_states_the_configured_bound(
    tmp_path: Path, bound: int, says: str
) -> None:
    app = build_app(
        Settings(env="local", data_dir=tmp_path / "data", query_max_staleness_ms=bound),
        run_relay=False,
    )
    paths = app.openapi()["paths"]
    for path in ("/api/v1/orders/{order_id}", "/api/v1/customers/{customer_id}"):
        assert says in paths[path]["get"]["description"], path
