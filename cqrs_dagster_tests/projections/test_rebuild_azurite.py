"""Blue/green on Azure Blob storage (Azurite): the pointer document is written with one PUT
through deltalake's object store and read back by a fresh TableStore; a rebuild of orders at an
``az://`` root switches readers (the old table stays readable), rollback switches back, and
dropping the retired table deletes its blobs."""

from __future__ import annotations

from pathlib import Path

from deltalake import DeltaTable

from cqrs_dagster.projections import pointers
from cqrs_dagster.projections.rebuild import rebuild
from cqrs_dagster.projections.retired import drop_retired, rollback
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
    assert tables.physical(ORDERS) == ORDERS  # no document yet
    bus = new_bus(tmp_path / "bus.sqlite")
    seed(bus, events=80)
    project_all(bus, tables)
    before = tables.open(ORDERS).to_pyarrow_table().sort_by("order_id")

    report = rebuild(tables, ORDERS, run_id="rb", batch_size=40)
    assert report.switched and report.equal
    assert blobs(azurite_server, container, f"delta/{pointers.DOCUMENT}") == [
        f"delta/{pointers.DOCUMENT}"
    ]
    other = make_table_store(azurite_server.settings(container))
    assert other.physical(ORDERS) == report.new_physical
    assert other.open(ORDERS).to_pyarrow_table().sort_by("order_id") == before
    old = DeltaTable(tables.physical_uri(ORDERS), storage_options=tables.storage_options)
    assert old.to_pyarrow_table().sort_by("order_id") == before  # kept for rollback

    assert rollback(tables, ORDERS, run_id="rb") == ORDERS
    assert other.physical(ORDERS) == ORDERS
    assert drop_retired(tables) == [report.new_physical]
    assert blobs(azurite_server, container, f"delta/{report.new_physical}/") == []
    assert blobs(azurite_server, container, "delta/orders/_delta_log/")
