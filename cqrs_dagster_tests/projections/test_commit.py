"""The committer when Delta reports a commit as lost to a concurrent one (issue 13 §6).

Storage that stores a commit file and dies before answering makes object_store's retried
conditional PUT meet the commit itself, and Delta reports "Concurrent transaction failed". Here
the same situation on a local table: a second writer, planned from the same snapshot, commits the
same batch with the same checkpoints after the first one landed. The committer re-reads the table,
finds exactly its checkpoints there and goes on (no duplicate rows, one commit); a commit whose
checkpoints are NOT in the table (a rebuild swap or another batch won) still fails. A commit whose
request broke in transport (OSError) is recognized when it landed, and committed once more when
it did not.
(The Azure end of it, Azurite SIGKILLed after storing the file: faults/test_azure_faults.py.)
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake.exceptions import CommitFailedError

from cqrs_dagster.projections.commit import (
    _committed,
    append,
    commit_checkpoints_only,
    merge_versioned,
)
from cqrs_dagster.projections.delta_io import seq_app_id, txn
from cqrs_dagster.projections.schemas import CUSTOMERS, SCHEMAS
from cqrs_dagster.projections.tables import TableStore

APP = seq_app_id(CUSTOMERS)
AT = datetime(2026, 12, 1, tzinfo=UTC)


def rows(*ids: str, version: int = 1) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {"customer_id": i, "name": f"N {i}", "email": f"{i}@x.io", "created_date": AT,
             "updated_date": AT, "version": version, "last_event_id": f"e-{i}-{version}"}
            for i in ids
        ],
        schema=SCHEMAS[CUSTOMERS],
    )  # fmt: skip


@pytest.fixture
def tables(tmp_path: Path) -> TableStore:
    store = TableStore(root=str(tmp_path / "delta"))
    store.ensure(CUSTOMERS)
    return store


def test_an_append_that_landed_is_recognized_not_doubled(tables: TableStore) -> None:
    first, second = tables.open(CUSTOMERS), tables.open(CUSTOMERS)
    assert first is not None and second is not None
    append(first, CUSTOMERS, rows("c1", "c2"), {APP: 5}, "run", "test")
    version = first.version()
    append(second, CUSTOMERS, rows("c1", "c2"), {APP: 5}, "run", "test")  # no exception
    table = tables.open(CUSTOMERS)
    assert table is not None
    assert table.version() == version and txn(table, APP) == 5
    assert sorted(table.to_pyarrow_table()["customer_id"].to_pylist()) == ["c1", "c2"]


def test_a_merge_and_a_checkpoint_commit_that_landed_are_recognized(tables: TableStore) -> None:
    live = tables.open(CUSTOMERS)
    assert live is not None
    append(live, CUSTOMERS, rows("c1"), {APP: 1}, "run", "test")
    first, second = tables.open(CUSTOMERS), tables.open(CUSTOMERS)
    assert first is not None and second is not None
    update = rows("c1", version=2)
    merge_versioned(first, CUSTOMERS, "customer_id", update, {APP: 2}, "run", "test")
    merge_versioned(second, CUSTOMERS, "customer_id", update, {APP: 2}, "run", "test")
    stale = tables.open(CUSTOMERS)
    assert stale is not None
    commit_checkpoints_only(first, CUSTOMERS, {APP: 3}, "run", "test")
    commit_checkpoints_only(stale, CUSTOMERS, {APP: 3}, "run", "test")
    table = tables.open(CUSTOMERS)
    assert table is not None and txn(table, APP) == 3
    assert table.to_pyarrow_table().to_pylist() == update.to_pylist()


def test_a_commit_whose_checkpoints_are_not_in_the_table_still_fails(tables: TableStore) -> None:
    first, stale = tables.open(CUSTOMERS), tables.open(CUSTOMERS)
    assert first is not None and stale is not None
    append(first, CUSTOMERS, rows("c1"), {APP: 5}, "run", "test")
    with pytest.raises(CommitFailedError):
        append(stale, CUSTOMERS, rows("c2"), {APP: 6}, "other", "test")
    table = tables.open(CUSTOMERS)
    assert table is not None and txn(table, APP) == 5
    assert table.to_pyarrow_table()["customer_id"].to_pylist() == ["c1"]


# -- a commit whose request failed in transport (OSError from object_store) ------------------------

RESET = (
    "Generic MicrosoftAzure error: error sending request: Connection reset by peer (os error 104)"
)


def test_a_commit_that_landed_before_its_connection_broke_is_recognized(
    tables: TableStore,
) -> None:
    table = tables.open(CUSTOMERS)
    assert table is not None
    calls: list[int] = []

    def landed_then_reset() -> None:
        calls.append(1)
        writer = tables.open(CUSTOMERS)
        assert writer is not None
        append(writer, CUSTOMERS, rows("c1", "c2"), {APP: 5}, "run", "test")
        raise OSError(RESET)

    _committed(table, {APP: 5}, landed_then_reset)  # no exception, not run again
    assert calls == [1]
    assert txn(table, APP) == 5
    assert sorted(table.to_pyarrow_table()["customer_id"].to_pylist()) == ["c1", "c2"]


def test_a_commit_whose_connection_broke_before_it_landed_is_committed_once_more(
    tables: TableStore,
) -> None:
    table = tables.open(CUSTOMERS)
    assert table is not None
    calls: list[int] = []

    def reset_then_commit() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise OSError(RESET)
        append(table, CUSTOMERS, rows("c1"), {APP: 7}, "run", "test")

    _committed(table, {APP: 7}, reset_then_commit)
    assert calls == [1, 1]
    reread = tables.open(CUSTOMERS)
    assert reread is not None and txn(reread, APP) == 7
    assert reread.to_pyarrow_table()["customer_id"].to_pylist() == ["c1"]


def test_a_transport_failure_is_raised_when_the_commit_cannot_be_repeated_or_fails_again(
    tables: TableStore,
) -> None:
    table = tables.open(CUSTOMERS)
    assert table is not None
    calls: list[int] = []

    def always_reset() -> None:
        calls.append(1)
        raise OSError(RESET)

    with pytest.raises(OSError, match="Connection reset"):
        _committed(table, {APP: 1}, always_reset)  # retried once, then raised
    assert len(calls) == 2
    with pytest.raises(OSError, match="Connection reset"):
        _committed(table, {APP: 1}, always_reset, repeatable=False)  # a stream: never retried
    assert len(calls) == 3
    with pytest.raises(OSError, match="Connection reset"):
        _committed(table, {}, always_reset)  # no checkpoints: landed or not is unknowable
    assert len(calls) == 4
    assert txn(table, APP) == -1
    assert table.to_pyarrow_table().num_rows == 0
