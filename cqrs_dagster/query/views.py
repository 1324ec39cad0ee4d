"""SQL over the read models: an in-memory DuckDB connection with one view per Delta table.

Each read-model Delta table is registered as ``_delta_<name>`` (its pyarrow dataset; an empty table
of the right schema until the table exists) and the view ``<name>`` is created from
``cqrs_dagster/query/sql/<name>.sql`` (``sql/local`` in the repository is a link to that folder).
External access is switched off and the configuration locked before any caller's SQL runs, and
caller SQL must be exactly one SELECT (or WITH ... SELECT) statement.

Tables are re-read on every :meth:`ReadModels.refresh` (``update_incremental``: only new log
entries), so each query sees the newest commit.

This package's own SQL (:meth:`ReadModels.execute`: the query API's lookups, read-your-writes
checks) runs on a second, unlocked connection where a local table with a plain protocol (and
date or integer partition columns) is read by DuckDB's own Parquet reader over exactly the snapshot's files: it prunes files
and row groups on their statistics and decodes the other columns only for matching rows, so a
lookup by id in 5M rows reads one row group's id column (milliseconds) where the pyarrow dataset
scan decodes every row (about 1 s). Every other table is read through its pyarrow dataset there too.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from importlib import resources
from typing import Any
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

import duckdb
import pyarrow as pa
from deltalake import DeltaTable

from cqrs_dagster.projections.schemas import READ_MODELS, SCHEMAS
from cqrs_dagster.projections.tables import TableStore
from cqrs_dagster.settings import Settings

VIEW_NAMES: tuple[str, ...] = READ_MODELS
REGISTERED_PREFIX = "_delta_"
ARROW_PREFIX = "_arrow_"  # the pyarrow dataset a trusted-connection view falls back to

# Arrow type -> DuckDB type of the columns the Parquet path casts to (the pyarrow path's types).
_DUCK_TYPES: dict[pa.DataType, str] = {
    pa.string(): "VARCHAR",
    pa.large_string(): "VARCHAR",
    pa.string_view(): "VARCHAR",
    pa.int64(): "BIGINT",
    pa.int32(): "INTEGER",
    pa.bool_(): "BOOLEAN",
    pa.date32(): "DATE",
    pa.timestamp("us", tz="UTC"): "TIMESTAMPTZ",
    pa.float64(): "DOUBLE",
}


class QueryError(ValueError):
    """Caller SQL that cannot run: not read-only, not parsable, or failing in the engine."""


class NotReadOnly(QueryError):
    """Caller SQL that is not a single SELECT statement."""


def view_sql(name: str) -> str:
    """The ``CREATE OR REPLACE VIEW`` text of one local view (packaged with the module)."""
    if name not in VIEW_NAMES:
        raise KeyError(f"no local view named {name!r}")
    return (resources.files(__package__) / "sql" / f"{name}.sql").read_text(encoding="utf-8")


def check_read_only(sql: str) -> str:
    """Return ``sql`` if it is exactly one SELECT / WITH statement, else raise NotReadOnly."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"SQL does not parse: {_first_line(exc)}") from exc
    if len(statements) != 1:
        raise NotReadOnly(f"only one SELECT statement is allowed, got {len(statements)} statements")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise NotReadOnly(f"only SELECT queries are allowed (read-only), not {kind.name}")
    return sql


def _dataset(table: DeltaTable) -> Any:
    """The table as a pyarrow dataset whose string columns are declared ``string_view``.

    Files written by a delta-rs MERGE store strings as Utf8View; pyarrow 26 cannot evaluate a
    pushed-down string predicate against them when the dataset declares ``string`` ("no kernel
    matching (string, string_view)"). Declaring ``string_view`` reads both layouts, and DuckDB
    then filters itself instead of pushing predicates into the pyarrow scan.
    """
    declared = pa.schema(table.schema().to_arrow())
    view = pa.schema(
        [f.with_type(pa.string_view()) if pa.types.is_string(f.type) else f for f in declared]
    )
    return table.to_pyarrow_dataset(schema=view)


def _duck_type(type_: pa.DataType) -> str | None:
    if pa.types.is_decimal(type_):
        return f"DECIMAL({type_.precision}, {type_.scale})"
    return _DUCK_TYPES.get(type_)


def _quoted(text: str, quote: str = "'") -> str:
    return quote + text.replace(quote, quote * 2) + quote


# Partition column types whose value DuckDB reads back exactly from a ``col=value`` folder.
_HIVE_TYPES = {pa.date32(): "DATE", pa.int32(): "INTEGER", pa.int64(): "BIGINT"}


def _local_root(table: DeltaTable) -> str | None:
    uri = table.table_uri
    if uri.startswith("file://"):
        return url2pathname(unquote(urlparse(uri).path))
    return None if "://" in uri else uri


def _partition_text(value: Any) -> str:
    return value.isoformat() if isinstance(value, date) else str(value)


def _local_files(table: DeltaTable, partition_columns: Sequence[str]) -> list[str] | None:
    """The snapshot's data files as local paths; None for a remote table, remote files, or a
    partitioned file whose ``col=value`` folders are not exactly its partition values in the log.

    The log's paths are percent-encoded and relative to the table root (``file_uris()`` leaves
    them encoded, which a folder named ``it's data`` shows).
    """
    root = _local_root(table)
    actions = pa.table(table.get_add_actions(flatten=True))
    if root is None or actions.num_rows == 0:
        return None
    paths = [unquote(p) for p in actions.column("path").to_pylist()]
    if any("://" in p for p in paths):
        return None
    values = [actions.column(f"partition.{c}").to_pylist() for c in partition_columns]
    for n, path in enumerate(paths):
        folders = path.split("/")[:-1]
        expected = []
        for column, column_values in zip(partition_columns, values, strict=True):
            if column_values[n] is None:
                return None  # a null partition value has no exact folder form
            expected.append(f"{column}={_partition_text(column_values[n])}")
        if folders != expected:
            return None
    return [os.path.join(root, p) for p in paths]


def parquet_select(table: DeltaTable) -> str | None:
    """A SELECT reading the table's current files with DuckDB's Parquet reader, typed as the
    pyarrow dataset is; None where that would not be exactly the Delta snapshot or cannot read it.

    Exact for reader protocol 1 (no deletion vectors, no column mapping) on local files. Delta
    keeps partition values in the log, not in the files: DuckDB reads them from the ``col=value``
    folders (hive partitioning), so partition columns must be dates or integers and every file's
    folders must match its logged values.
    """
    if table.protocol().min_reader_version != 1:
        return None
    schema = pa.schema(table.schema().to_arrow())
    partition_columns = list(table.metadata().partition_columns)
    hive = []
    for column in partition_columns:
        hive_type = _HIVE_TYPES.get(schema.field(column).type)
        if hive_type is None:
            return None
        hive.append(f"{_quoted(column)}: {hive_type}")
    files = _local_files(table, partition_columns)
    if not files:
        return None
    columns = []
    for f in schema:
        duck = _duck_type(f.type)
        if duck is None:
            return None
        name = _quoted(f.name, '"')
        columns.append(f"CAST({name} AS {duck}) AS {name}")
    options = "union_by_name = true, hive_partitioning = " + (
        f"true, hive_types = {{{', '.join(hive)}}}" if hive else "false"
    )
    listed = ", ".join(_quoted(f) for f in files)
    return f"SELECT {', '.join(columns)} FROM read_parquet([{listed}], {options})"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class ReadModels:
    """A locked-down DuckDB connection over the read-model tables; thread-safe (one lock)."""

    def __init__(self, tables: TableStore, names: Sequence[str] = VIEW_NAMES) -> None:
        self.tables = tables
        self.names = tuple(names)
        self._lock = threading.RLock()
        self._open: dict[str, DeltaTable] = {}
        self._open_uri: dict[str, str] = {}  # the physical table each open DeltaTable reads
        self._registered: dict[str, tuple[str, int] | None] = {}
        self._con = duckdb.connect(":memory:")  # caller SQL: locked below
        self._own = duckdb.connect(":memory:")  # this package's SQL: may read the tables' files
        self._parquet: dict[str, bool] = {}  # table -> read by the Parquet path on _own
        for con in (self._con, self._own):
            con.execute("SET TimeZone = 'UTC'")
        self._own.execute("SET parquet_metadata_cache = true")  # Delta data files never change
        self.refresh()
        for name in self.names:
            self._con.execute(view_sql(name))
            self._own.execute(view_sql(name))
        self._con.execute("SET enable_external_access = false")
        self._con.execute("SET lock_configuration = true")

    @classmethod
    def from_settings(cls, settings: Settings) -> ReadModels:
        return cls(TableStore.from_settings(settings))

    def refresh(self, names: Iterable[str] | None = None) -> dict[str, int | None]:
        """Load new commits of the tables (default: all); returns their Delta versions (None: absent)."""
        with self._lock:
            versions: dict[str, int | None] = {}
            for name in self.names if names is None else names:
                table = self._load(name)
                version = None if table is None else table.version()
                snapshot = None if table is None else (self._open_uri[name], int(table.version()))
                if name not in self._registered or self._registered[name] != snapshot:
                    data: Any = SCHEMAS[name].empty_table() if table is None else _dataset(table)
                    self._con.register(REGISTERED_PREFIX + name, data)
                    self._register_own(name, table, data)
                    self._registered[name] = snapshot
                versions[name] = version
            return versions

    def _register_own(self, name: str, table: DeltaTable | None, data: Any) -> None:
        """Point ``_delta_<name>`` on the trusted connection at the snapshot's Parquet files, or
        at the same pyarrow data as the locked connection when that path does not apply."""
        select = None if table is None else parquet_select(table)
        if select is not None:
            try:
                self._own.execute(f"CREATE OR REPLACE VIEW {REGISTERED_PREFIX}{name} AS {select}")
                self._parquet[name] = True
                return
            except duckdb.Error:  # e.g. a column no file has yet: the pyarrow path reads it
                pass
        self._own.register(ARROW_PREFIX + name, data)
        self._own.execute(
            f"CREATE OR REPLACE VIEW {REGISTERED_PREFIX}{name} AS SELECT * FROM {ARROW_PREFIX}{name}"
        )
        self._parquet[name] = False

    def reads_parquet(self, name: str) -> bool:
        """Whether :meth:`execute` reads ``name`` with DuckDB's Parquet reader (as of the last refresh)."""
        with self._lock:
            return self._parquet.get(name, False)

    def _load(self, name: str) -> DeltaTable | None:
        """The table's latest version; reopened when a rebuild switched it to a new physical table."""
        uri = self.tables.uri(name)
        table = self._open.get(name)
        if table is None or self._open_uri.get(name) != uri:
            table = self.tables.open(name)
            if table is not None:
                self._open[name] = table
                self._open_uri[name] = uri
            return table
        table.update_incremental()
        return table

    def table(self, name: str) -> DeltaTable | None:
        """The DeltaTable as of the last refresh (None if it did not exist then)."""
        with self._lock:
            return self._open.get(name) if self._registered.get(name) is not None else None

    def execute(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> pa.Table:
        """Run trusted SQL (this package's own, with bound ``params``) on the current snapshot."""
        with self._lock:
            relation = self._own.sql(sql, params=params)
            if relation is None:
                return pa.table({})
            result: pa.Table = relation.to_arrow_table()
            return result

    def query(self, sql: str) -> pa.Table:
        """Run caller SQL: one read-only SELECT over the views, on freshly refreshed tables."""
        check_read_only(sql)
        with self._lock:
            self.refresh()
            try:
                relation = self._con.sql(sql)
                return pa.table({}) if relation is None else relation.to_arrow_table()
            except duckdb.Error as exc:
                raise QueryError(_first_line(exc)) from exc

    def close(self) -> None:
        with self._lock:
            self._con.close()
            self._own.close()

    def __enter__(self) -> ReadModels:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
