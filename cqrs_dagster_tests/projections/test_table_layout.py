"""Table layout: order_summary is kept in small files (``delta.targetFileSize``), so a MERGE of a
few orders (a customer rename, a status change) rewrites the files holding them, not the table;
every table checkpoints its log every 10 commits (``delta.checkpointInterval``), so opening it
replays at most 9 JSON commits.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from cqrs_dagster.projections import tables as tables_module
from cqrs_dagster.projections.commit import upsert
from cqrs_dagster.projections.delta_io import seq_app_id, txn
from cqrs_dagster.projections.schemas import CUSTOMERS, ORDER_SUMMARY, SCHEMAS
from cqrs_dagster.projections.tables import TABLE_PROPERTIES, TableStore

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
