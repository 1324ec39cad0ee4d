"""SQL over the read models: an in-memory DuckDB connection with one view per Delta table.

Each read-model Delta table is registered as ``_delta_<name>`` (its pyarrow dataset; an empty table
of the right schema until the table exists) and the view ``<name>`` is created from
``cqrs_dagster/query/sql/<name>.sql`` (``sql/local`` in the repository is a link to that folder),
plus the reference architecture's names ``vw_order_summary`` and ``vw_daily_order_metrics``
(:data:`REFERENCE_VIEWS`) over the gold views.
External access is switched off and the configuration locked before any caller's SQL runs, and
caller SQL must be exactly one SELECT (or WITH ... SELECT) statement.

Tables are re-read on every :meth:`ReadModels.refresh` (``update_incremental``: only new log
entries), so each query sees the newest commit.

This package's own SQL (:meth:`ReadModels.execute`, :meth:`ReadModels.rows_where`: the query
API's lookups, read-your-writes checks) runs on a second, unlocked connection where each table
whose files alone are exactly its snapshot is read by DuckDB's own Parquet reader
(:mod:`.parquet`); every other table through its pyarrow dataset there too. A key lookup
(:meth:`ReadModels.rows_where`) on a remote table (``az://``, ``abfss://``) reads only the files
whose Delta-log min/max admit the key, copied locally once (:mod:`.remote`), with the same reader
and SQL as a local table.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import duckdb
import pyarrow as pa
from deltalake import DeltaTable

from cqrs_dagster.projections.schemas import READ_MODELS, SCHEMAS
from cqrs_dagster.projections.tables import TableStore

from .parquet import ParquetSource, is_remote, local_log, parquet_source
from .remote import FileMirror

VIEW_NAMES: tuple[str, ...] = READ_MODELS
# The reference architecture's own view names, each over the view of one gold table (created
# when that table's view is).
REFERENCE_VIEWS: dict[str, str] = {
    "vw_order_summary": "order_summary",
    "vw_daily_order_metrics": "daily_order_metrics",
}
REGISTERED_PREFIX = "_delta_"
ARROW_PREFIX = "_arrow_"  # the pyarrow dataset a trusted-connection view falls back to


class QueryError(ValueError):
    """Caller SQL that cannot run: not read-only, not parsable, or failing in the engine."""


class NotReadOnly(QueryError):
    """Caller SQL that is not a single SELECT statement."""


@functools.cache
def view_sql(name: str) -> str:
    """The ``CREATE OR REPLACE VIEW`` text of one local view (packaged with the module)."""
    if name not in VIEW_NAMES and name not in REFERENCE_VIEWS:
        raise KeyError(f"no local view named {name!r}")
    return (resources.files(__package__) / "sql" / f"{name}.sql").read_text(encoding="utf-8")


def view_body(name: str) -> str:
    """The SELECT of a local view (its ``CREATE OR REPLACE VIEW <name> AS`` stripped), which
    reads ``_delta_<name>`` exactly once (a test holds every view to that)."""
    text = view_sql(name)
    head = f"CREATE OR REPLACE VIEW {name} AS"
    return text[text.index(head) + len(head) :].strip().rstrip(";")


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


def _data(name: str, table: DeltaTable | None) -> Any:
    """What a connection registers for a table: its pyarrow dataset, or an empty table."""
    return SCHEMAS[name].empty_table() if table is None else _dataset(table)


ReadSet = tuple[str, ...]  # the data files a key lookup read (ParquetSource.read_set)


@dataclass(frozen=True)
class Current:
    """A table as of the last refresh: its snapshot, how the trusted connection reads it, and
    its log folder (local tables)."""

    snapshot: tuple[str, int]  # (table URI, Delta version)
    source: ParquetSource | None  # the Parquet path's files (None: the pyarrow path)
    log: str | None  # the table's local _delta_log folder (None: remote)

    def is_latest(self) -> bool:
        """Whether no commit has followed this snapshot (local tables: two ``stat`` calls, no
        log read; False for a remote table, whose log only a refresh can read)."""
        if self.log is None:
            return False
        version = self.snapshot[1]
        return os.path.exists(os.path.join(self.log, f"{version:020d}.json")) and not (
            os.path.exists(os.path.join(self.log, f"{version + 1:020d}.json"))
        )


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
        self._open_uri: dict[str, str] = {}  # the URI each open DeltaTable reads
        # Each table as of the last refresh (None: absent then), replaced whole: read without
        # the lock by current().
        self._registered: dict[str, Current | None] = {}
        self._con = duckdb.connect(":memory:")  # caller SQL: locked below
        self._own = duckdb.connect(":memory:")  # this package's SQL: may read the tables' files
        self._sources: dict[str, ParquetSource | None] = {}  # the Parquet path's, per table
        # Remote tables: the key lookups' Parquet source over local copies of the files.
        self._remote: dict[str, ParquetSource | None] = {}
        self.mirror = FileMirror()
        self._locked_behind: dict[str, DeltaTable | None] = {}  # newer than the locked con has
        # Per table: a snapshot and the monotonic time it was last seen to be the newest commit
        # (by a refresh or Current.is_latest); replaced whole, read without the lock.
        self._newest_at: dict[str, tuple[tuple[str, int], float]] = {}
        for con in (self._con, self._own):
            con.execute("SET TimeZone = 'UTC'")
        self._own.execute("SET parquet_metadata_cache = true")  # Delta data files never change
        self.refresh()
        self._register_locked()
        views = [*self.names, *(v for v, base in REFERENCE_VIEWS.items() if base in self.names)]
        for name in views:
            self._con.execute(view_sql(name))
            self._own.execute(view_sql(name))
        self._con.execute("SET enable_external_access = false")
        self._con.execute("SET lock_configuration = true")

    def refresh(self, names: Iterable[str] | None = None) -> dict[str, int | None]:
        """Load new commits of the tables (default: all); returns their Delta versions (None: absent).

        The trusted connection is pointed at the new snapshot at once; the locked one (caller
        SQL) only when :meth:`query` next runs, since its pyarrow dataset costs 0.15-0.4 s for a
        365-partition table and the query API never uses it.

        The lock is taken per table, not around them all: the consistency watcher's full pass
        refreshes five tables, and a key lookup (which takes the lock to choose its files) waits
        for one table's refresh at most, not for the five. Each table only moves forward, so
        callers see no older snapshot than before; a refresh of several tables was never one
        snapshot of them all (each projection step commits on its own).
        """
        versions: dict[str, int | None] = {}
        for name in self.names if names is None else names:
            with self._lock:
                versions[name] = self._refresh_one(name)
        return versions

    def _refresh_one(self, name: str) -> int | None:
        """:meth:`refresh` of one table (called with the lock)."""
        started = time.monotonic()  # the log is read after this: its newest commit is loaded
        table = self._load(name)
        version = None if table is None else table.version()
        snapshot = None if table is None else (self._open_uri[name], int(table.version()))
        if snapshot is not None:
            self._newest_at[name] = (snapshot, started)
        known = self._registered.get(name)
        if name not in self._registered or (known.snapshot if known else None) != snapshot:
            self._register_own(name, table)
            self._locked_behind[name] = table
            self._registered[name] = (
                None
                if table is None or snapshot is None
                else Current(snapshot, self._sources.get(name), local_log(table))
            )
        return version

    def _register_locked(self) -> None:
        """Bring the locked connection to the snapshots the last refresh loaded."""
        for name, table in self._locked_behind.items():
            self._con.register(REGISTERED_PREFIX + name, _data(name, table))
        self._locked_behind.clear()

    def _register_own(self, name: str, table: DeltaTable | None) -> None:
        """Point ``_delta_<name>`` on the trusted connection at the snapshot's Parquet files, or
        at the same pyarrow data as the locked connection when that path does not apply."""
        remote = table is not None and is_remote(table)
        source = None if table is None or remote else parquet_source(table)
        self._remote[name] = None
        if table is not None and remote:
            self._remote[name] = parquet_source(table, self.mirror.folder(table.table_uri))
        if source is not None:
            try:
                self._own.execute(
                    f"CREATE OR REPLACE VIEW {REGISTERED_PREFIX}{name} AS {source.select()}"
                )
                self._sources[name] = source
                return
            except duckdb.Error:  # e.g. a column no file has yet: the pyarrow path reads it
                pass
        self._own.register(ARROW_PREFIX + name, _data(name, table))
        self._own.execute(
            f"CREATE OR REPLACE VIEW {REGISTERED_PREFIX}{name} AS SELECT * FROM {ARROW_PREFIX}{name}"
        )
        self._sources[name] = None

    def reads_parquet(self, name: str) -> bool:
        """Whether :meth:`execute` reads ``name`` with DuckDB's Parquet reader (as of the last refresh)."""
        with self._lock:
            return self._sources.get(name) is not None

    def current(self, name: str) -> Current | None:
        """``name`` as of the last refresh (None: absent then). Takes no lock and does no I/O:
        what an event loop may ask before it decides that a request needs a thread."""
        return self._registered.get(name)

    def newest_within(self, name: str, max_age: float) -> tuple[Current, bool] | None:
        """``name``'s current snapshot when it is the newest commit now (``(current, False)``),
        or was seen to be at most ``max_age`` seconds ago (``(current, True)``: a newer commit
        exists or may, and a refresh would load it); None otherwise (or absent).

        Takes no lock and does no I/O but :meth:`Current.is_latest`'s two ``stat`` calls (a
        remote table: none, so only a refresh within ``max_age`` counts). A snapshot "seen to be
        the newest" at time t holds every commit made before t: whoever answers from it answers
        what a read at t would have, at most ``max_age`` late (bounded staleness).
        """
        current = self._registered.get(name)
        if current is None:
            return None
        now = time.monotonic()  # before the stat calls: it was the newest at least until now
        if current.is_latest():
            self._newest_at[name] = (current.snapshot, now)
            return current, False
        seen = self._newest_at.get(name)
        if seen is not None and seen[0] == current.snapshot and now - seen[1] <= max_age:
            return current, True
        return None

    def rows_where(self, name: str, column: str, value: str) -> pa.Table:
        """:meth:`lookup_rows`' rows."""
        return self.lookup_rows(name, column, value)[0]

    def lookup_rows(self, name: str, column: str, value: str) -> tuple[pa.Table, ReadSet | None]:
        """The view's rows whose string ``column`` equals ``value``, on the current snapshot, and
        the data files they were read from (None off the local Parquet path).

        On the Parquet path only the files whose logged min/max admit ``value`` are read (the
        view's SQL over them): a lookup opens one file, not one per partition. A remote table's
        files are pruned the same way and read from local copies (:class:`.remote.FileMirror`,
        fetched once each); where DuckDB cannot read them, the lookup scans its pyarrow dataset.
        """
        if column not in SCHEMAS[name].names:
            raise KeyError(f"{name} has no column {column!r}")
        where = f'"{column}" = ?'  # a schema column name (checked above)
        with self._lock:
            local = self._sources.get(name)
            if local is not None:
                # Chosen under the lock (one snapshot), read outside it on a cursor of its own:
                # the SQL names the snapshot's files, so a refresh or a long query of another
                # thread (the consistency watcher's pass) does not hold a key lookup up.
                chosen = local.read_indexes(column, value)
                sql = self._select_where_sql(name, local, chosen, where)
                cursor = self._own.cursor()
        if local is not None:
            try:
                cursor.execute("SET TimeZone = 'UTC'")
                return self._run(cursor, sql, [value]), tuple(local.files[n] for n in chosen)
            finally:
                cursor.close()
        with self._lock:
            remote = self._remote.get(name)
            if remote is None:
                return self.execute(f"SELECT * FROM {name} WHERE {where}", [value]), None
            chosen = remote.indexes_with(column, value)
            if not chosen:  # no file can hold it: the view's columns, no rows, nothing read
                return self.execute(f"SELECT * FROM {name} WHERE false"), None
            self.mirror.ensure(
                self._open[name].table_uri,
                self.tables.storage_options,
                [(remote.paths[n], remote.sizes[n]) for n in chosen],
            )
            try:
                return self._select_where(name, remote, chosen, where, value), None
            except duckdb.Error:  # e.g. a column no file has yet: the pyarrow path reads it
                self._remote[name] = None
                return self.execute(f"SELECT * FROM {name} WHERE {where}", [value]), None

    def _select_where(
        self, name: str, source: ParquetSource, chosen: Sequence[int], where: str, value: str
    ) -> pa.Table:
        """The view's rows in the ``chosen`` files of ``source`` that satisfy ``where``."""
        return self.execute(self._select_where_sql(name, source, chosen, where), [value])

    @staticmethod
    def _select_where_sql(
        name: str, source: ParquetSource, chosen: Sequence[int], where: str
    ) -> str:
        """SQL of the view's rows in the ``chosen`` files of ``source`` that satisfy ``where``
        (it reads those files and nothing else of the catalog)."""
        files = [source.files[n] for n in chosen]
        body = view_body(name).replace(
            REGISTERED_PREFIX + name, f"({source.select(files)}) AS {REGISTERED_PREFIX}{name}"
        )
        return f"SELECT * FROM ({body}) WHERE {where}"

    def _load(self, name: str) -> DeltaTable | None:
        """The table's latest version (a rebuild swaps rows in by a commit like any other)."""
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
        """Run trusted SQL (this package's own, with bound ``params``) on the current snapshot.

        When every table is read by DuckDB's Parquet reader (views over the snapshot's files, in
        the database's catalog) the query runs on a cursor of its own, outside the lock, so one
        thread's query (the consistency watcher's batched lookups) does not hold up another's (a
        key lookup); a table on the pyarrow path (registered on this connection only) keeps the
        query under the lock."""
        with self._lock:
            if not self._catalog_only():
                return self._run(self._own, sql, params)
            cursor = self._own.cursor()
        try:
            cursor.execute("SET TimeZone = 'UTC'")
            return self._run(cursor, sql, params)
        except duckdb.CatalogException:  # a table went to the pyarrow path meanwhile
            with self._lock:
                return self._run(self._own, sql, params)
        finally:
            cursor.close()

    def _catalog_only(self) -> bool:
        """Whether every view reads Parquet files through the catalog (called with the lock)."""
        return all(self._sources.get(n) is not None for n in self.names)

    @staticmethod
    def _run(
        con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | Mapping[str, Any] | None
    ) -> pa.Table:
        relation = con.sql(sql, params=params)
        if relation is None:
            return pa.table({})
        result: pa.Table = relation.to_arrow_table()
        return result

    def query(self, sql: str) -> pa.Table:
        """Run caller SQL: one read-only SELECT over the views, on freshly refreshed tables."""
        check_read_only(sql)
        with self._lock:
            self.refresh()
            self._register_locked()
            try:
                relation = self._con.sql(sql)
                return pa.table({}) if relation is None else relation.to_arrow_table()
            except duckdb.Error as exc:
                raise QueryError(_first_line(exc)) from exc

    def close(self) -> None:
        with self._lock:
            self._con.close()
            self._own.close()
            self.mirror.close()

    def __enter__(self) -> ReadModels:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
