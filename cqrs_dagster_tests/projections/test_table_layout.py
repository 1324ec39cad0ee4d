"""Table layout: order_summary is kept in small files (``delta.targetFileSize``), so a MERGE of a
few orders (a customer rename, a status change) rewrites the files holding them, not the table;
every table checkpoints its log every 10 commits (``delta.checkpointInterval``), so opening it
replays at most 9 JSON commits; orders' files carry a Parquet bloom filter on customer_id, so
finding a customer's orders (:func:`lookup`) skips the row groups that cannot hold them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from urllib.parse import unquote

import duckdb
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from cqrs_dagster.projections import tables as tables_module
from cqrs_dagster.projections.commit import upsert
from cqrs_dagster.projections.context import StepContext
from cqrs_dagster.projections.delta_io import lookup, seq_app_id, txn
from cqrs_dagster.projections.maintenance import maintain_table
from cqrs_dagster.projections.pipeline import catch_up
from cqrs_dagster.projections.schemas import CUSTOMERS, ORDER_SUMMARY, ORDERS, RAW_EVENTS, SCHEMAS
from cqrs_dagster.projections.tables import TABLE_PROPERTIES, TableStore
from cqrs_dagster.settings import Settings
from cqrs_dagster.wiring import make_event_bus, make_table_store
from cqrs_dagster_tests.defs.seed import run_commands, seed_commands

AT = datetime(2026, 12, 1, tzinfo=UTC)
SIZE = "delta.targetFileSize"
INTERVAL = "delta.checkpointInterval"


def summary(ids: list[str], name: str = "Ada") -> pa.Table:
    n = len(ids)
    return pa.table(
        {
            "order_id": ids,
            "customer_id": [f"c{i % 50}" for i in range(n)],
            "customer_name": [name] * n,
            "status": ["Created"] * n,
            "total_amount": [Decimal("9.99")] * n,
            "item_count": [1] * n,
            "created_date": [AT] * n,
            "updated_date": [AT] * n,
        },
        schema=SCHEMAS[ORDER_SUMMARY],
    )


def test_order_summary_is_created_with_a_target_file_size(tmp_path: Path) -> None:
    store = TableStore(root=str(tmp_path))
    made = store.ensure(ORDER_SUMMARY).metadata().configuration
    assert made.get(SIZE) == str(4 * 1024 * 1024)
    assert SIZE not in store.ensure(CUSTOMERS).metadata().configuration


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_every_table_checkpoints_its_log_every_10_commits(tmp_path: Path, name: str) -> None:
    store = TableStore(root=str(tmp_path))
    assert store.ensure(name).metadata().configuration.get(INTERVAL) == "10"


def test_a_following_table_is_opened_from_a_recent_checkpoint(tmp_path: Path) -> None:
    # 25 commits after the create, as a follow run makes one per pass: checkpoints at 9 and 19.
    store = TableStore(root=str(tmp_path))
    target = store.ensure(ORDER_SUMMARY)
    for n in range(1, 26):
        upsert(
            target,
            ORDER_SUMMARY,
            "order_id",
            summary([f"o{n:04d}"]),
            {seq_app_id(ORDER_SUMMARY): n},
            "r",
            f"pass {n}",
        )
    log = tmp_path / ORDER_SUMMARY / "_delta_log"
    checkpoints = sorted(p.name for p in log.glob("*.checkpoint.parquet"))
    assert checkpoints == [
        "00000000000000000009.checkpoint.parquet",
        "00000000000000000019.checkpoint.parquet",
    ]
    reopened = store.open(ORDER_SUMMARY)
    assert reopened is not None and reopened.version() == 25
    assert reopened.to_pyarrow_table().num_rows == 25
    assert txn(reopened, seq_app_id(ORDER_SUMMARY)) == 25


def test_a_table_created_before_its_properties_gets_them_once(tmp_path: Path) -> None:
    store = TableStore(root=str(tmp_path))
    DeltaTable.create(store.uri(ORDER_SUMMARY), SCHEMAS[ORDER_SUMMARY], name=ORDER_SUMMARY)
    before = DeltaTable(store.uri(ORDER_SUMMARY)).version()
    made = store.ensure(ORDER_SUMMARY).metadata().configuration
    assert made[SIZE] == str(4 * 1024 * 1024) and made[INTERVAL] == "10"
    again = store.ensure(ORDER_SUMMARY)
    assert again.version() == before + 1  # one property commit, not one per ensure


def test_a_merge_of_one_order_rewrites_one_file_not_the_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A small target (32 KiB) so that a few thousand rows make several files.
    monkeypatch.setitem(TABLE_PROPERTIES, ORDER_SUMMARY, {SIZE: str(32 * 1024), INTERVAL: "10"})
    assert tables_module.TABLE_PROPERTIES[ORDER_SUMMARY][SIZE] == str(32 * 1024)
    store = TableStore(root=str(tmp_path))
    target = store.ensure(ORDER_SUMMARY)
    ids = [f"o{i:08d}" for i in range(20_000)]
    upsert(
        target, ORDER_SUMMARY, "order_id", summary(ids), {seq_app_id(ORDER_SUMMARY): 1}, "r", "b"
    )
    files = len(target.file_uris())
    assert files >= 4

    renamed = summary(ids[-1:], name="Grace")
    checkpoint = {seq_app_id(ORDER_SUMMARY): 2}
    upsert(target, ORDER_SUMMARY, "order_id", renamed, checkpoint, "r", "rename")
    metrics = target.history(1)[0]["operationMetrics"]
    assert metrics["num_target_files_removed"] == 1
    assert metrics["num_target_rows_copied"] < len(ids) // 2
    assert len(target.file_uris()) == files
    table = target.to_pyarrow_table()
    assert table.num_rows == len(ids)
    names = dict(
        zip(table["order_id"].to_pylist(), table["customer_name"].to_pylist(), strict=True)
    )
    assert names[ids[-1]] == "Grace" and names[ids[0]] == "Ada"
    assert txn(target, seq_app_id(ORDER_SUMMARY)) == 2


def _bloom_offsets(files: list[str], column: str) -> list[object]:
    rows = duckdb.execute(
        "SELECT bloom_filter_offset FROM parquet_metadata(?) WHERE path_in_schema = ?",
        [[unquote(f) for f in files], column],  # file_uris() are percent-encoded
    ).fetchall()
    return [r[0] for r in rows]


@pytest.fixture(params=["data", "data dir, it's"])
def projected(tmp_path: Path, request: pytest.FixtureRequest) -> TableStore:
    # Delta lists files percent-encoded: a space or a quote in the folder must still be found.
    settings = Settings(env="local", data_dir=tmp_path / request.param)
    seed_commands(settings, customers=6, orders_per_customer=5)
    tables = make_table_store(settings)
    bus = make_event_bus(settings)
    catch_up(StepContext(tables, "run-1"), bus, max_events=10_000)
    for n in range(3):  # new orders are appended in files of their own; the rename merges
        item = {"sku": "SKU-9", "quantity": 1, "unitPrice": "1.00"}
        create = {"type": "CreateOrder", "customerId": "cust-2", "items": [item]}
        rename = {"type": "UpdateCustomer", "customerId": "cust-1", "name": f"Z{n}"}
        run_commands(settings, [create, rename])
        catch_up(StepContext(tables, f"run-{n + 2}"), bus, max_events=10_000)
    bus.close()
    return tables


def test_orders_files_carry_a_customer_id_bloom_filter_after_merges_and_compaction(
    projected: TableStore,
) -> None:
    orders = projected.open(ORDERS)
    assert orders is not None
    offsets = _bloom_offsets(orders.file_uris(), "customer_id")
    assert offsets and all(o is not None for o in offsets)
    assert all(o is None for o in _bloom_offsets(orders.file_uris(), "order_id"))
    report = maintain_table(projected, ORDERS, retention_hours=0)
    assert report is not None and report.files_compacted > 0
    compacted = projected.open(ORDERS)
    assert compacted is not None
    offsets = _bloom_offsets(compacted.file_uris(), "customer_id")
    assert offsets and all(o is not None for o in offsets)


def _column_chunks(files: list[str], column: str) -> list[tuple[str, str]]:
    rows = duckdb.execute(
        "SELECT compression, encodings FROM parquet_metadata(?) WHERE path_in_schema = ?",
        [[unquote(f) for f in files], column],
    ).fetchall()
    return [(str(r[0]), str(r[1])) for r in rows]


@pytest.mark.parametrize(
    ("table", "column"),
    [
        (RAW_EVENTS, "event_id"),
        (ORDERS, "order_id"),
        (CUSTOMERS, "name"),
        (ORDER_SUMMARY, "status"),
    ],
)
def test_every_table_is_written_snappy_compressed(
    projected: TableStore, table: str, column: str
) -> None:
    """Every table's files are Snappy-compressed, orders too (its bloom-filter writer
    properties used to drop the codec: UNCOMPRESSED files)."""
    live = projected.open(table)
    assert live is not None
    chunks = _column_chunks(live.file_uris(), column)
    assert chunks and {c for c, _ in chunks} == {"SNAPPY"}


def test_raw_events_ids_and_bodies_are_plain_encoded_and_its_types_dictionary_encoded(
    projected: TableStore,
) -> None:
    """raw_events' all-distinct columns skip Parquet's dictionary try; the repeating ones keep it."""
    raw = projected.open(RAW_EVENTS)
    assert raw is not None
    for column in ("event_id", "data"):
        assert not any("DICTIONARY" in e for _, e in _column_chunks(raw.file_uris(), column))
    assert all("DICTIONARY" in e for _, e in _column_chunks(raw.file_uris(), "event_type"))


def test_lookup_finds_what_a_full_scan_finds(projected: TableStore) -> None:
    orders = projected.open(ORDERS)
    assert orders is not None
    everything = orders.to_pyarrow_table(columns=["order_id", "customer_id", "created_day"])
    for wanted in (["cust-1"], ["cust-0", "cust-4"], ["nobody"], []):
        expected = sorted(
            o
            for o, c in zip(
                everything["order_id"].to_pylist(),
                everything["customer_id"].to_pylist(),
                strict=True,
            )
            if c in wanted
        )
        found = lookup(orders, "customer_id", wanted, ["order_id"])
        assert found.column_names == ["order_id"]
        assert sorted(found["order_id"].to_pylist()) == expected
        # A partition column is not in the files: that lookup takes the pyarrow scan.
        with_day = lookup(orders, "customer_id", wanted, ["order_id", "created_day"])
        assert sorted(with_day["order_id"].to_pylist()) == expected
    assert lookup(orders, "customer_id", ["cust-1"], ["order_id"]).num_rows == 5


def test_a_lookup_pruned_to_a_partition_finds_that_days_rows_only(projected: TableStore) -> None:
    """daily_order_metrics looks up a pass's customers in one day's files of orders."""
    orders = projected.open(ORDERS)
    assert orders is not None
    rows = orders.to_pyarrow_table(columns=["order_id", "customer_id", "created_day"]).to_pylist()
    days = sorted({r["created_day"] for r in rows})
    customers = sorted({r["customer_id"] for r in rows})
    for day in days:
        prune = [("created_day", "=", day.isoformat())]
        found = lookup(orders, "customer_id", customers[:3], ["order_id", "customer_id"], prune)
        expected = sorted(
            r["order_id"]
            for r in rows
            if r["created_day"] == day and r["customer_id"] in customers[:3]
        )
        assert sorted(found["order_id"].to_pylist()) == expected
        assert lookup(orders, "customer_id", ["nobody"], ["order_id"], prune).num_rows == 0
    future = [("created_day", "=", "2099-01-01")]  # no file: no row, and no error
    assert lookup(orders, "customer_id", customers, ["order_id"], future).num_rows == 0
