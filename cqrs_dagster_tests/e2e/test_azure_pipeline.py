"""The whole platform with CQRS_ENV=azure against the local stand-ins of the Azure services.

Commands go through the real HTTP API (build_app under uvicorn, relay thread included) into Cosmos
DB (cosmosdb-server), the relay publishes them to Event Hubs (the AMQP test server), the Dagster
projection job (execute_in_process, PlatformResource(env="azure")) writes the Delta read models to
Blob storage (Azurite) with their checkpoints, every asset check passes, and the query API of the
same app serves exact values back. A second run applies nothing and changes no table.
Also `cqrs up --env azure --no-dagster` as real processes: a command sent to its API is served
back by its query API after a projection run.
"""

from __future__ import annotations

import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pyarrow as pa
import pytest

import cqrs_dagster
from cqrs_dagster.defs.names import PROJECTION_JOB
from cqrs_dagster.defs.resources import PlatformResource
from cqrs_dagster.projections import schemas
from cqrs_dagster.projections.context import StepContext
from cqrs_dagster.projections.pipeline import catch_up
from cqrs_dagster.projections.tables import TableStore
from cqrs_dagster.settings import Settings
from cqrs_dagster.web.app import build_app
from cqrs_dagster.wiring import make_event_bus, make_table_store, make_write_store
from cqrs_dagster_tests.e2e.azure_env import serve
from cqrs_dagster_tests.fixtures.procs import free_port, start_group, stop_group, wait_until

pytestmark = pytest.mark.servers


def post(client: httpx.Client, command: dict[str, Any]) -> dict[str, Any]:
    resp = client.post("/api/v1/commands", json=command)
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    return body


def get(client: httpx.Client, path: str) -> dict[str, Any]:
    resp = client.get(path)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def run_job(settings: Settings, job: str = PROJECTION_JOB) -> dg.ExecuteInJobResult:
    defs = dg.load_from_defs_folder(path_within_project=Path(cqrs_dagster.__file__).parent)
    platform = PlatformResource(
        env="azure", data_dir=str(settings.data_dir), delta_root=settings.delta_root
    )
    with dg.instance_for_test() as instance:
        return defs.resolve_job_def(job).execute_in_process(
            instance=instance, resources={"platform": platform}
        )


def applied(result: dg.ExecuteInJobResult, asset: str) -> Any:
    events = result.asset_materializations_for_node(asset)
    assert events, f"{asset} was not materialized"
    return events[-1].metadata["events_applied"].value


def snapshot(tables: TableStore) -> dict[str, pa.Table]:
    out: dict[str, pa.Table] = {}
    for name in schemas.READ_MODELS:
        table = tables.open(name)
        assert table is not None, f"{name} does not exist in Blob storage"
        data = table.to_pyarrow_table()
        out[name] = data.sort_by([(data.column_names[0], "ascending")])
    return out


def send_commands(client: httpx.Client) -> dict[str, Any]:
    ada = post(client, {"type": "RegisterCustomer", "customerId": "c-ada",
                        "name": "Ada Lovelace", "email": "ada@example.com"})  # fmt: skip
    post(client, {"type": "RegisterCustomer", "customerId": "c-grace",
                  "name": "Grace Hopper", "email": "grace@example.com"})  # fmt: skip
    post(client, {"type": "UpdateCustomer", "customerId": "c-grace", "name": "Grace B. Hopper"})
    post(client, {"type": "CreateOrder", "orderId": "o-1", "customerId": "c-ada", "items": [
        {"sku": "PEN", "quantity": 3, "unitPrice": "0.10"},
        {"sku": "BOOK", "quantity": 1, "unitPrice": "19.99"},
    ]})  # fmt: skip
    paid = post(client, {"type": "UpdateOrderStatus", "orderId": "o-1", "status": "Paid"})
    post(client, {"type": "CreateOrder", "orderId": "o-2", "customerId": "c-grace",
                  "items": [{"sku": "LAMP", "quantity": 1, "unitPrice": "11.11"}]})  # fmt: skip
    cancelled = post(client, {"type": "CancelOrder", "orderId": "o-2", "reason": "changed mind"})
    assert ada["aggregateId"] == "c-ada" and paid["version"] == 2 and cancelled["version"] == 2
    return {"events": 7, "token": cancelled["consistencyToken"]}


def test_commands_through_cosmos_event_hubs_and_blob_delta_to_the_query_api(
    azure_settings: Settings,
) -> None:
    settings = azure_settings
    assert settings.env == "azure" and settings.delta_root_uri.startswith("az://")
    app = build_app(settings)
    with serve(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        sent = send_commands(client)
        # The relay thread moves the outbox from Cosmos DB to Event Hubs.
        store = make_write_store(settings)
        try:
            assert wait_until(lambda: store.pending_events(1) == [], timeout=30, interval=0.2)
        finally:
            store.close()

        first = run_job(settings)
        assert first.success
        assert applied(first, schemas.RAW_EVENTS) == sent["events"]
        checks = first.get_asset_check_evaluations()
        names = {c.check_name for c in checks}
        assert {"raw_events_unique_event_ids", "orders_amounts"} <= names
        assert [c.check_name for c in checks if not c.passed] == []
        # Lag checks run in their own every-minute job, not in projection runs.
        lag = run_job(settings, "check_read_model_freshness")
        lag_checks = lag.get_asset_check_evaluations()
        assert {f"{m}_freshness_lag" for m in schemas.READ_MODELS} | {"outbox_relay_lag"} == {
            c.check_name for c in lag_checks
        }
        assert [c.check_name for c in lag_checks if not c.passed] == []

        order_1 = get(client, "/api/v1/orders/o-1")
        assert order_1["customer_name"] == "Ada Lovelace"
        assert order_1["status"] == "Paid"
        assert order_1["total_amount"] == "20.29" and order_1["item_count"] == 4
        order_2 = get(client, f"/api/v1/orders/o-2?consistent_with={sent['token']}")
        assert order_2["customer_name"] == "Grace B. Hopper"
        assert order_2["status"] == "Cancelled" and order_2["total_amount"] == "11.11"
        grace = get(client, "/api/v1/customers/c-grace")
        assert (grace["name"], grace["email"], grace["version"]) == (
            "Grace B. Hopper",
            "grace@example.com",
            2,
        )
        listed = get(client, "/api/v1/orders?customer_id=c-ada")["items"]
        assert [o["order_id"] for o in listed] == ["o-1"]
        days = get(client, "/api/v1/metrics/daily")["items"]
        assert sum(d["order_count"] for d in days) == 2
        assert sum(Decimal(d["total_revenue"]) for d in days) == Decimal("31.40")
        if len(days) == 1:  # both orders on one UTC day (unless the test straddles midnight)
            assert days[0]["avg_order_value"] == "15.70" and days[0]["unique_customers"] == 2

        status = get(client, "/api/v1/projections")["items"]
        assert {m["table"] for m in status} == set(schemas.READ_MODELS)
        assert all(m["lag_events"] == 0 and m["checkpoint"] for m in status), status

        tables = make_table_store(settings)
        assert tables.uri(schemas.ORDERS).startswith("az://")
        before = snapshot(tables)
        raw = before[schemas.RAW_EVENTS]
        assert raw.num_rows == sent["events"]
        assert len(set(raw.column("event_id").to_pylist())) == sent["events"]

        second = run_job(settings)
        assert second.success
        assert applied(second, schemas.RAW_EVENTS) == 0
        assert [c.check_name for c in second.get_asset_check_evaluations() if not c.passed] == []
        after = snapshot(tables)
        for name in schemas.READ_MODELS:
            assert after[name].equals(before[name]), f"{name} changed on the second run"
        assert get(client, "/api/v1/orders/o-1") == order_1


def test_cqrs_up_env_azure_serves_a_command_back_after_a_projection_run(
    azure_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`cqrs up --env azure --no-dagster` (API + relay processes) on the three local servers."""
    settings = azure_settings
    monkeypatch.delenv("CQRS_ENV")  # the flag alone selects the Azure adapters
    port = free_port()
    log = tmp_path / "cqrs-up.log"
    proc = start_group(
        [sys.executable, "-m", "cqrs_dagster.cli", "up", "--env", "azure", "--no-dagster",
         "--api-port", str(port)],
        log,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_until(lambda: _healthy(base) or proc.poll() is not None, 90, 0.3)
        assert proc.poll() is None, log.read_text()
        with httpx.Client(base_url=base, timeout=30) as client:
            post(client, {"type": "RegisterCustomer", "customerId": "c-up",
                          "name": "Katherine Johnson", "email": "kj@example.com"})  # fmt: skip
            order = post(client, {"type": "CreateOrder", "orderId": "o-up", "customerId": "c-up",
                                  "items": [{"sku": "SLIDE", "quantity": 4, "unitPrice": "2.50"}]})  # fmt: skip
            store = make_write_store(settings)
            try:
                assert wait_until(lambda: store.pending_events(1) == [], timeout=30, interval=0.2)
            finally:
                store.close()
            bus = make_event_bus(settings)
            try:
                catch_up(StepContext(make_table_store(settings), "up-azure"), bus, max_events=100)
            finally:
                bus.close()
            path = f"/api/v1/orders/o-up?consistent_with={order['consistencyToken']}"
            row = get(client, path)
        assert (row["customer_name"], row["status"], row["total_amount"], row["item_count"]) == (
            "Katherine Johnson",
            "Created",
            "10.00",
            4,
        )
    finally:
        stop_group(proc, timeout=30)
    assert proc.returncode is not None


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/api/v1/healthz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False
