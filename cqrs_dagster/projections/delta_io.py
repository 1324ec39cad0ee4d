"""Delta reads shared by the projection steps: checkpoints (txn app ids), pruned scans, counts."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from .engines.duckdb.connection import duck
from .local_files import local_files
from .recent_raw import RecentRaw


def seq_app_id(table: str) -> str:
    """Txn app id of a table's checkpoint: the last raw ``ingest_seq`` it covers."""
    return f"{table}/ingest_seq"


def enqueued_app_id(table: str) -> str:
    """Txn app id holding the newest bus enqueued time (µs since epoch) a table has applied."""
    return f"{table}/enqueued_us"


def txn(table: DeltaTable | None, app_id: str, default: int = -1) -> int:
    """A checkpoint committed with the rows (``default`` when absent)."""
    if table is None:
        return default
    value = table.transaction_version(app_id)
    return default if value is None else int(value)


def to_micros(ts: datetime) -> int:
    delta = ts.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime | None:
    if value < 0:
        return None
    return datetime.fromtimestamp(value // 1_000_000, UTC).replace(microsecond=value % 1_000_000)


def isin(column: str, values: Sequence[Any], type_: pa.DataType | None = None) -> pc.Expression:
    """``column IN values`` as a dataset filter (typed, so file statistics prune)."""
    return pc.field(column).isin(pa.array(list(values), type_ or pa.string()))


def scan(
    table: DeltaTable,
    prune: list[tuple[str, str, Any]] | None,
    exact: pc.Expression | None = None,
    columns: list[str] | None = None,
) -> pa.Table:
    """Rows of the files that ``prune`` keeps (pruned on the log's partition values and min/max
    stats), then filtered exactly by ``exact`` in memory.

    (deltalake 1.6.6 attaches string statistics as string_view, which pyarrow 26 cannot compare
    with string columns in a dataset filter: so the exact filter runs on the loaded table.)
    """
    data = table.to_pyarrow_dataset(file_pruning_predicate=prune or None).to_table(columns=columns)
    return data if exact is None else data.filter(exact)


def lookup(
    table: DeltaTable,
    column: str,
    values: Sequence[str],
    columns: list[str],
    prune: list[tuple[str, str, Any]] | None = None,
) -> pa.Table:
    """The ``columns`` of the rows whose string ``column`` holds one of ``values``, in the files
    ``prune`` keeps (a delta-rs file-pruning predicate: partitions, min/max stats) or in all.

    On a local table, DuckDB's Parquet reader over the table's live files skips the row groups
    whose min/max statistics or Parquet bloom filter (:data:`.tables.BLOOM_FILTERED`) rule the
    values out, so a lookup costs the row groups that may hold them, not a read of the whole
    column (pyarrow's dataset reads every row group: 2M orders, one customer, ~430 ms against
    ~30 ms). Elsewhere (az://, abfss://), or for a partition column, a pyarrow scan.
    """
    partitioned = set(table.metadata().partition_columns)
    files = local_files(table, prune)
    if not files or not values or partitioned & {column, *columns}:
        read = list(dict.fromkeys([column, *columns]))  # the exact filter needs the column
        return scan(table, prune, isin(column, values), read).select(columns)
    listed = ", ".join(f'"{c}"' for c in columns)
    return (
        duck()
        .sql(
            f"SELECT {listed} FROM read_parquet($files, union_by_name = true) "
            f'WHERE "{column}" IN (SELECT unnest($values::VARCHAR[]))',
            params={"files": files, "values": sorted(set(values))},
        )
        .to_arrow_table()
    )


def read_raw_range(
    raw: DeltaTable,
    after: int,
    upto: int,
    columns: list[str] | None = None,
    *,
    ordered: bool = True,
    recent: RecentRaw | None = None,
) -> pa.Table:
    """raw_events rows with ``after < ingest_seq <= upto`` (files pruned by stats), in ingest order
    unless ``ordered`` is False (then see :func:`in_ingest_order`). From ``recent`` (in ingest
    order) when it holds the whole range."""
    if recent is not None:
        held = recent.get(raw.table_uri, after, upto, columns)
        if held is not None:
            return held
    wanted = None if columns is None else sorted({*columns, "ingest_seq"})
    data = scan(
        raw,
        [("ingest_seq", ">", after), ("ingest_seq", "<=", upto)],
        (pc.field("ingest_seq") > after) & (pc.field("ingest_seq") <= upto),
        wanted,
    )
    return in_ingest_order(data) if ordered else data


def in_ingest_order(rows: pa.Table) -> pa.Table:
    """``rows`` sorted by ingest_seq; as is (no copy) when they already are, as files read in
    commit order usually give them."""
    seq = rows.column("ingest_seq")
    if rows.num_rows < 2 or pc.all(pc.less(seq[:-1], seq[1:])).as_py():
        return rows
    return rows.sort_by("ingest_seq")


def use_jemalloc() -> None:
    """This process's Arrow allocations go to jemalloc (the system allocator where pyarrow was
    built without it), unless ``ARROW_DEFAULT_MEMORY_POOL`` names a pool. A catch-up allocates
    on several threads (silver beside bronze, a read-ahead), and mimalloc, Arrow's default here,
    keeps each thread's freed pages until that thread collects them. 1M-event catch-up, three
    interleaved runs each: peak RSS 993 / 967 / 994 MiB with mimalloc, 828 / 892 / 902 with glibc
    malloc, 896 / 838 / 853 with jemalloc, at the same speed (issue 14 (c), (f)). Called by the
    composition root when it builds a projection engine (the projection's process)."""
    if "ARROW_DEFAULT_MEMORY_POOL" in os.environ:
        return
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    except NotImplementedError:  # a pyarrow wheel built without jemalloc
        pa.set_memory_pool(pa.system_memory_pool())


def release_memory() -> None:
    """Return Arrow's freed memory to the OS (mimalloc keeps it otherwise): called at the end of
    every step, so a long catch-up's resident set stays near one batch's working set."""
    pa.default_memory_pool().release_unused()


def row_count(table: DeltaTable) -> int:
    """Rows in the table's current version, from the log's file statistics (no data read).
    Unflattened: flattening builds a column per statistic of every column (12.6 against 0.3 ms
    for raw_events' 40 files after 1M events; every step's report calls this)."""
    actions = pa.table(table.get_add_actions(flatten=False))
    if actions.num_rows == 0:
        return 0
    return int(pc.sum(actions.column("num_records")).as_py() or 0)
