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
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from cqrs_dagster.projections.schemas import SCHEMAS

from .rows import json_rows
from .views import ReadModels

Snapshot = tuple[str, int | None]  # a table's URI and Delta version (None: absent)
Rows = Sequence[dict[str, Any]]  # read-only: shared by every caller that gets them

DEFAULT_CAPACITY = 4096


class SnapshotRows:
    """An LRU of key lookups' JSON-ready rows keyed by (snapshot, column, value); thread-safe."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._capacity = capacity
        self._lock = threading.Lock()
        self._rows: OrderedDict[tuple[str, Snapshot, str, str], Rows] = OrderedDict()
        self.hits = 0  # lookups answered from memory (counters for tests and figures)
        self.misses = 0  # lookups that queried the table
        self.filled = 0  # keys read ahead by fill (batched)

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
        if found is not None:
            return found
        rows = json_rows(models.rows_where(name, column, value))
        with self._lock:
            self.misses += 1
            self._store(name, at, column, {value: rows})
        return rows

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
