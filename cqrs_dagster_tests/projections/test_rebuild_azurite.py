"""Rebuild on Azure Blob storage (Azurite): a rebuild of orders at an ``az://`` root swaps the
rows into ``<root>/orders`` with one commit (a fresh reader of that path sees them), the
scratch shadow's blobs are deleted, and rollback (time travel) puts the previous rows back."""

from __future__ import annotations

from pathlib import Path

from deltalake import DeltaTable

from cqrs_dagster.projections.rebuild import SWAP, rebuild, rollback
from cqrs_dagster.projections.schemas import ORDERS
from cqrs_dagster.wiring import make_table_store
from cqrs_dagster_tests.fixtures.azurite import AzuriteServer

from .scenario import new_bus
from .test_rebuild import project_all, seed


def blobs(server: AzuriteServer, container: str, prefix: str) -> list[str]:
    with server.blob_service() as service:
        client = service.get_container_client(container)
        return [b.name for b in client.list_blobs(name_starts_with=prefix)]


def test_rebuild_switches_and_rolls_back_on_blob_storage(
    azurite_server: AzuriteServer, tmp_path: Path
) -> None:
    container = azurite_server.fresh_container()
    tables = make_table_store(azurite_server.settings(container))
    bus = new_bus(tmp_path / "bus.sqlite")
    seed(bus, events=80)
    project_all(bus, tables)
    before = tables.open(ORDERS).to_pyarrow_table().sort_by("order_id")

    report = rebuild(tables, ORDERS, run_id="rb", batch_size=40)
    assert report.switched and report.equal
    path = f"{tables.root.rstrip('/')}/{ORDERS}"
    fresh = DeltaTable(path, storage_options=tables.storage_options)  # another process
    assert fresh.version() == report.version and fresh.history(1)[0]["cqrs.operation"] == SWAP
    assert fresh.to_pyarrow_table().sort_by("order_id") == before
    assert blobs(azurite_server, container, "delta/_rebuild/") == []  # the shadow is gone

    assert rollback(tables, ORDERS, run_id="rb") == report.version + 1
    back = DeltaTable(path, storage_options=tables.storage_options)
    assert back.to_pyarrow_table().sort_by("order_id") == before
    assert blobs(azurite_server, container, "delta/orders/_delta_log/")
