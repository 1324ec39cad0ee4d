"""The raw_events rows this step context committed last, kept in memory for the steps after it.

A catch-up ingests a batch into raw_events and then every silver table (and gold, on a small
pass) reads that very ``ingest_seq`` range back from Delta: Parquet decode of rows the process
held a moment before. raw_events is append-only and each ``ingest_seq`` is written by exactly one
commit (the checkpoint in the commit fences every other writer), so the rows of a committed range
never change: the steps may take them from here instead. A range not held whole (another
process's commits, an older range, a table of another schema) is read from Delta as before.

Bounded: at most ``limit`` rows, the newest (a catch-up's silver batch), whole commits at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pyarrow as pa

from .schemas import RAW_EVENTS_SCHEMA

# One silver batch of the benchmarks' catch-up (100k) fits; a 1M-event run's gold read does not
# (it reads Delta). ~60 MiB of Arrow at the platform's event sizes.
DEFAULT_LIMIT = 100_000


class RecentRaw:
    """Contiguous raw_events commits of one table (by URI), oldest first."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._uri = ""
        self._parts: list[pa.Table] = []
        self._after = 0  # the held rows are after < ingest_seq <= upto
        self._upto = 0
        self.hits = 0

    def add(self, uri: str, table_schema: pa.Schema, after: int, rows: pa.Table) -> None:
        """Rows one commit appended to the raw_events at ``uri``: ``ingest_seq`` after+1..after+n
        in order. Kept only when the table and the rows have today's raw_events schema (an older
        table, e.g. with integer offsets, scans to other types: it is read from Delta). A commit
        that does not follow the held ones starts over."""
        if rows.num_rows == 0 or rows.num_rows > self.limit:
            return
        if not (rows.schema.equals(RAW_EVENTS_SCHEMA) and table_schema.equals(RAW_EVENTS_SCHEMA)):
            self.clear()
            return
        with self._lock:
            if uri != self._uri or after != self._upto or not self._parts:
                self._uri, self._parts, self._after = uri, [], after
            self._parts.append(rows)
            self._upto = after + rows.num_rows
            held = sum(p.num_rows for p in self._parts)
            while held > self.limit:
                first = self._parts.pop(0)
                held -= first.num_rows
                self._after += first.num_rows

    def get(
        self, uri: str, after: int, upto: int, columns: Sequence[str] | None
    ) -> pa.Table | None:
        """The rows ``after < ingest_seq <= upto`` in ingest order, with the columns a Delta scan
        of ``columns`` gives (sorted, plus ``ingest_seq``; all of them for None), or None when
        the range is not held whole."""
        with self._lock:
            if uri != self._uri or not self._parts or after < self._after or upto > self._upto:
                return None
            parts = list(self._parts)
            base = self._after
            self.hits += 1
        rows = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
        rows = rows.slice(after - base, max(0, upto - after))
        if columns is not None:
            rows = rows.select(sorted({*columns, "ingest_seq"}))
        return rows

    def clear(self) -> None:
        with self._lock:
            self._uri, self._parts, self._after, self._upto = "", [], 0, 0
