"""The local views over Delta tables in Blob storage (Azurite, ``az://`` root, azure settings).

Covers: make_read_models on azure settings reads every table through the storage options
and each view equals the table it was copied from; a later commit in Blob storage is seen by the
next query; a string predicate works over the remote, MERGE-written files; the views and
caller SQL read the remote tables through the pyarrow path (key lookups, rows_where, copy the
files a key admits and read them with DuckDB: test_remote_lookups.py).
"""

from __future__ import annotations

import pyarrow as pa
import pytest
from deltalake import write_deltalake

from cqrs_dagster.projections.schemas import READ_MODELS
from cqrs_dagster.wiring import make_read_models, make_table_store
from cqrs_dagster_tests.fixtures.azurite import AzuriteServer
from cqrs_dagster_tests.query.conftest import Platform

pytestmark = pytest.mark.servers


def test_views_over_blob_storage(azurite_server: AzuriteServer, seeded: Platform) -> None:
    settings = azurite_server.settings(azurite_server.fresh_container())
    remote = make_table_store(settings)
    for name in READ_MODELS:
        local = seeded.tables.open(name)
        assert local is not None
        write_deltalake(
            remote.uri(name), local.to_pyarrow_table(), storage_options=remote.storage_options
        )
    orders = remote.open("orders")
    assert orders is not None
    (
        orders.merge(
            pa.table({"order_id": ["o000"], "status": ["Delivered"]}),
            "t.order_id = s.order_id",
            source_alias="s",
            target_alias="t",
        )
        .when_matched_update({"status": "s.status"})
        .execute()
    )
    with make_read_models(settings) as models:
        for name in READ_MODELS:
            local = seeded.tables.open(name)
            assert local is not None
            count = models.query(f"SELECT count(*) AS n FROM {name}").column("n")[0].as_py()
            assert count == local.to_pyarrow_table().num_rows
        got = models.query("SELECT status FROM orders WHERE order_id = 'o000'").to_pylist()
        assert got == [{"status": "Delivered"}]
        # Views and caller SQL read remote tables through the pyarrow path (no local files).
        assert not any(models.reads_parquet(name) for name in READ_MODELS)
        row = models.rows_where("orders", "order_id", "o000").select(["status"]).to_pylist()
        assert row == [{"status": "Delivered"}]
        summary = remote.open("order_summary")
        assert summary is not None
        write_deltalake(summary, summary.to_pyarrow_table().slice(0, 1), mode="append")
        after = models.query("SELECT count(*) AS n FROM order_summary").to_pylist()
        assert after == [{"n": 61}]
