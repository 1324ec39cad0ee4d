"""Where the read-model Delta tables live, and opening / creating them with their fixed layout."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from deltalake import BloomFilterProperties, ColumnProperties, DeltaTable, WriterProperties
from deltalake.exceptions import TableNotFoundError

from .schemas import ORDER_SUMMARY, ORDERS, RAW_EVENTS, SCHEMAS

# Partition columns per table (absent: unpartitioned). raw_events by the event's own UTC date (a
# republished duplicate shares it); orders by creation day (recent orders -> few files to rewrite).
PARTITION_BY: dict[str, list[str]] = {RAW_EVENTS: ["event_date"], ORDERS: ["created_day"]}
# Delta table properties per table, set at creation (and on tables created before they were
# listed).
#
# Every table: a log checkpoint every 10 commits instead of delta-rs's 100. Opening a table (and
# every write, which loads the log first) replays the JSON commits since the last checkpoint; a
# following run commits each table once per pass, so at the default the 99th commit after a
# checkpoint opened in ~36 ms and appended in ~34 ms, against ~7 ms and ~13 ms at 10 (95 small
# commits, this machine). A pass opens its tables ~25 times. The price is a checkpoint (one
# Parquet file of the live file list) written every 10th commit.
#
# order_summary is unpartitioned and sorted by order_id: with delta-rs's default file size one
# file held the whole table, so a customer rename's MERGE rewrote every row (1M rows: ~1.5 s,
# even for a customer with 3 orders). In ~4 MiB files (~70k rows) a MERGE rewrites only the files
# holding the touched orders (3 recent orders at 1M rows: ~0.1 s), and a key lookup's pruned read
# is one such file. Writers and MERGEs both honour the property.
CHECKPOINT_INTERVAL = {"delta.checkpointInterval": "10"}
TABLE_PROPERTIES: dict[str, dict[str, str]] = {name: dict(CHECKPOINT_INTERVAL) for name in SCHEMAS}
TABLE_PROPERTIES[ORDER_SUMMARY]["delta.targetFileSize"] = str(4 * 1024 * 1024)

# Parquet bloom filters, per table and column, written into every file of the table (appends,
# MERGEs, swaps, compaction): a lookup of a few values of the column reads only the row groups
# whose filter may hold them. orders.customer_id: a customer rename finds that customer's orders
# without reading the column of every order (2M orders in 100 files, one customer: ~30 ms with
# the filters, ~90 ms without, DuckDB's Parquet reader; :func:`.delta_io.lookup`).
BLOOM_FILTERED: dict[str, tuple[str, ...]] = {ORDERS: ("customer_id",)}
BLOOM_FPP = 0.01
BLOOM_NDV = 100_000  # distinct values per row group the filter is sized for (~120 KiB at 1%)


# Every table's files are Snappy-compressed: delta-rs's default, which DuckDB, Spark and
# Synapse serverless all read. Passing any WriterProperties without a codec writes UNCOMPRESSED
# Parquet, which is how orders (the one table with writer properties, for its bloom filter) was
# written until 12-04: 3.46 MB per 31k orders against 2.49 MB Snappy.
COMPRESSION: Final = "SNAPPY"
# Columns whose values are (nearly) all distinct: Parquet's writer tries a dictionary per column
# chunk and falls back to plain encoding, so the try is pure cost. raw_events, 25k rows: 31.4 ->
# 26.3 ms per append (median of 8), the same size.
PLAIN_ENCODED: dict[str, tuple[str, ...]] = {
    RAW_EVENTS: (
        "event_id",
        "aggregate_id",
        "correlation_id",
        "causation_id",
        "data",
        "metadata",
        "offset",
    ),
}


def writer_properties(name: str) -> WriterProperties:
    """The Parquet writer properties of ``name``'s files: Snappy, plus the table's bloom filters
    (:data:`BLOOM_FILTERED`) and plain-encoded columns (:data:`PLAIN_ENCODED`)."""
    bloom = BloomFilterProperties(set_bloom_filter_enabled=True, fpp=BLOOM_FPP, ndv=BLOOM_NDV)
    columns = {
        c: ColumnProperties(bloom_filter_properties=bloom) for c in BLOOM_FILTERED.get(name, ())
    }
    for c in PLAIN_ENCODED.get(name, ()):
        columns[c] = ColumnProperties(dictionary_enabled=False)
    return WriterProperties(compression=COMPRESSION, column_properties=columns or None)


@dataclass(frozen=True)
class TableStore:
    """The folder (local path or abfss:// / az:// URI) holding every read-model Delta table.

    A read model ``name`` is the Delta table at ``<root>/<name>``, always: a rebuild swaps its
    content in with one commit on that table (:mod:`.rebuild`), so any reader of the path is
    current. ``overrides`` pins names to other table URIs (a rebuild's shadow, an audit's
    scratch copy) for the projection steps run against them.
    """

    root: str
    storage_options: dict[str, str] | None = None
    overrides: tuple[tuple[str, str], ...] = ()

    def uri(self, name: str) -> str:
        """The table's URI: ``<root>/<name>`` (or its override)."""
        for logical, uri in self.overrides:
            if logical == name:
                return uri
        return f"{self.root.rstrip('/')}/{name}"

    def with_overrides(self, overrides: dict[str, str]) -> TableStore:
        """This store with some logical names pinned to other table URIs."""
        merged = dict(self.overrides) | overrides
        return TableStore(self.root, self.storage_options, tuple(sorted(merged.items())))

    def open(self, name: str) -> DeltaTable | None:
        """The table at its latest version, or None if it was never created."""
        try:
            return DeltaTable(self.uri(name), storage_options=self.storage_options)
        except TableNotFoundError:
            return None

    def exists(self, name: str) -> bool:
        return self.open(name) is not None

    def ensure(self, name: str) -> DeltaTable:
        """Open the table, creating it empty with its schema, partitioning and properties if
        missing (a table created before its properties were listed gets them here, once)."""
        properties = TABLE_PROPERTIES.get(name, {})
        table = self.open(name)
        if table is not None:
            have = table.metadata().configuration
            missing = {k: v for k, v in properties.items() if have.get(k) != v}
            if missing:
                table.alter.set_table_properties(missing)
                table.update_incremental()
            return table
        DeltaTable.create(
            self.uri(name),
            SCHEMAS[name],
            mode="ignore",
            partition_by=PARTITION_BY.get(name),
            name=name,
            configuration=dict(properties) or None,
            storage_options=self.storage_options,
        )
        created = self.open(name)
        if created is None:  # pragma: no cover - create just succeeded
            raise RuntimeError(f"Delta table {self.uri(name)} could not be created")
        return created


@dataclass(frozen=True)
class PinnedTables(TableStore):
    """A store whose :meth:`open` returns the version it first opened, for a read-only sequence
    of reads that must agree on one snapshot and need not see newer commits (a pass's blocking
    checks after a layer: they would otherwise open the same table's log once per rule, ~5-30 ms
    each). Never write through it: a writer takes the latest version from :class:`TableStore`."""

    opened: dict[str, DeltaTable | None] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, tables: TableStore) -> PinnedTables:
        return cls(tables.root, tables.storage_options, tables.overrides)

    def open(self, name: str) -> DeltaTable | None:
        if name not in self.opened:
            self.opened[name] = super().open(name)
        return self.opened[name]

    def ensure(self, name: str) -> DeltaTable:
        raise TypeError(f"PinnedTables is read-only: ensure {name!r} through a TableStore")
