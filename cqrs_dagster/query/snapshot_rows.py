"""Key lookups remembered per table snapshot: a Delta version never changes, so neither do its rows.

The query API's key lookups (``GET /api/v1/orders/{id}``, ``/customers/{id}``) run one DuckDB
query each (~3 ms of CPU, most of it holding the GIL and the read models' one lock). Read-your-writes
readers ask for the same few newest rows again and again between two projection commits, and a
watcher pass wakes hundreds of them at once: :class:`SnapshotRows` keeps each lookup's rows under
the snapshot it read, ``(table URI, Delta version, column, value)``, so a snapshot's row is looked
up once, and a woken waiter whose row is already known is answered on the event loop
(:meth:`SnapshotRows.peek`) without a thread.

The key is the snapshot read *before* the query: the query reads that snapshot or a newer one (a
refresh by another thread in between only moves the table forward), so an entry is never older than
its key says, and whoever asks for "at least snapshot v" gets rows at least that new.

Rows outlive their snapshot when the next one did not touch them. A lookup on the local Parquet
path reads only the files whose Delta-log stats admit the key (its *read set*), and Delta data
files are never rewritten in place, so a newer snapshot with the same read set has the same rows:
each lookup's rows are also remembered with the read set they were read from, and a lookup at a
new snapshot whose read set is unchanged takes them without a query (a projection commit that
adds new orders' files leaves every older order's read set as it was).

A lookup without a consistency token (a plain ``GET /orders/{id}``) reads a snapshot that was the
newest commit at most ``CQRS_QUERY_MAX_STALENESS_MS`` before it arrived (0: the newest commit).
:meth:`SnapshotRows.peek_latest` answers it on the event loop when the read models' snapshot is
still the newest (two ``stat`` calls on the log: :meth:`.views.Current.is_latest`), or was seen
to be within that bound, and its rows are known there, or carried to it; in the second case the
caller refreshes the table in the background. Otherwise the lookup takes a thread and refreshes
the table first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from cqrs_dagster.projections.schemas import SCHEMAS

from .rows import json_rows
from .views import Current, ReadModels, ReadSet

Snapshot = tuple[str, int | None]  # a table's URI and Delta version (None: absent)
Rows = Sequence[dict[str, Any]]  # read-only: shared by every caller that gets them

DEFAULT_CAPACITY = 4096


class SnapshotRows:
    """An LRU of key lookups' JSON-ready rows keyed by (snapshot, column, value); thread-safe."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._capacity = capacity
        self._lock = threading.Lock()
        self._rows: OrderedDict[tuple[str, Snapshot, str, str], Rows] = OrderedDict()
        # (name, table URI, column, value) -> the read set and rows of its newest lookup
        self._read: OrderedDict[tuple[str, str, str, str], tuple[ReadSet, Rows]] = OrderedDict()
        self.carried = 0  # lookups answered with rows of an older snapshot, same read set
        self.hits = 0  # lookups answered from memory (counters for tests and figures)
        self.misses = 0  # lookups that queried the table
        self.filled = 0  # keys read ahead by fill (batched)
        self.behind = 0  # peek_latest answers from a snapshot seen newest within max_age

    def peek(self, name: str, at: Snapshot | None, column: str, value: str) -> Rows | None:
        """The rows of ``name`` at snapshot ``at`` with ``column = value``, if remembered (no I/O)."""
        if at is None:
            return None
        with self._lock:
            found = self._rows.get((name, at, column, value))
            if found is not None:
                self._rows.move_to_end((name, at, column, value))
                self.hits += 1
            return found

    def lookup(
        self, models: ReadModels, name: str, column: str, value: str, *, refresh: bool
    ) -> Rows:
        """The rows of ``name`` with ``column = value`` on the current snapshot (``refresh``: load
        the table's new commits first), from memory when that snapshot's rows are known."""
        if refresh:
            version = models.refresh([name]).get(name)
        else:
            table = models.table(name)
            version = None if table is None else int(table.version())
        at: Snapshot = (models.tables.uri(name), version)
        found = self.peek(name, at, column, value)
        if found is None:
            found = self._carry(models.current(name), name, at, column, value)
        if found is not None:
            return found
        table, read = models.lookup_rows(name, column, value)
        rows = json_rows(table)
        with self._lock:
            self.misses += 1
            self._store(name, at, column, {value: rows})
            if read is not None:
                self._remember_read(name, at[0], column, value, read, rows)
        return rows

    def peek_latest(
        self, models: ReadModels, name: str, column: str, value: str, max_age: float = 0.0
    ) -> tuple[Rows, bool] | None:
        """What :meth:`lookup` with ``refresh`` would answer, when that is known without a query
        or a refresh: the read models' snapshot of ``name`` is the newest commit (a local table;
        two ``stat`` calls), or was seen to be at most ``max_age`` seconds ago
        (:meth:`.views.ReadModels.newest_within`), and the rows are remembered there, or
        carried to it from an older snapshot with the same read set. Returns the rows and
        whether the snapshot is behind (a newer commit exists or may: the caller refreshes the
        table, off the request's path). None: the caller looks up (in a thread)."""
        newest = models.newest_within(name, max_age)
        if newest is None:
            return None
        current, behind = newest
        at: Snapshot = current.snapshot
        found = self.peek(name, at, column, value)
        if found is None:
            found = self._carry(current, name, at, column, value)
        if found is None:
            return None
        if behind:
            with self._lock:
                self.behind += 1
        return found, behind

    def _carry(
        self, current: Current | None, name: str, at: Snapshot, column: str, value: str
    ) -> Rows | None:
        """The rows of an older lookup of ``value`` when snapshot ``at`` (the read models'
        current one) reads the same files for it, remembered at ``at`` as well; else None."""
        if current is None or current.source is None or current.snapshot != at:
            return None
        key = (name, at[0], column, value)
        with self._lock:
            known = self._read.get(key)
        if known is None or current.source.read_set(column, value) != known[0]:
            return None
        with self._lock:
            self.carried += 1
            self._store(name, at, column, {value: known[1]})
        return known[1]

    def _remember_read(
        self, name: str, uri: str, column: str, value: str, read: ReadSet, rows: Rows
    ) -> None:
        """Keep ``rows`` with the files they came from (called with the lock held)."""
        key = (name, uri, column, value)
        self._read[key] = (read, rows)
        self._read.move_to_end(key)
        while len(self._read) > self._capacity:
            self._read.popitem(last=False)

    def fill(
        self, models: ReadModels, name: str, at: Snapshot, column: str, values: Sequence[str]
    ) -> None:
        """Read the rows of every ``value`` not yet known at snapshot ``at`` in ONE query, on the
        current snapshot (``at`` or newer: call it after the refresh that read ``at``).

        What a watcher pass calls before it wakes waiters: their rows are then answered from
        memory, on the event loop, instead of one lookup (and one thread) per distinct row.
        """
        if column not in SCHEMAS[name].names:
            raise KeyError(f"{name} has no column {column!r}")
        with self._lock:
            missing = [v for v in dict.fromkeys(values) if (name, at, column, v) not in self._rows]
        if not missing:
            return
        table = models.execute(
            f'SELECT * FROM {name} WHERE "{column}" IN (SELECT unnest(?::VARCHAR[]))', [missing]
        )
        found: dict[str, list[dict[str, Any]]] = {v: [] for v in missing}
        for row in json_rows(table):
            found[str(row[column])].append(row)
        with self._lock:
            self.filled += len(missing)
            self._store(name, at, column, found)

    def _store(self, name: str, at: Snapshot, column: str, rows: Mapping[str, Rows]) -> None:
        """Remember ``rows`` (value -> its rows) at ``at`` (called with the lock held)."""
        for value, found in rows.items():
            self._rows[(name, at, column, value)] = found
            self._rows.move_to_end((name, at, column, value))
        while len(self._rows) > self._capacity:
            self._rows.popitem(last=False)
