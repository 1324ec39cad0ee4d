"""The embedded event bus: a durable, partitioned append-only log in one SQLite file.

It keeps Event Hubs semantics so that everything downstream (sensors, projections, checkpoints)
works unchanged when the bus is swapped for Event Hubs. How each concept maps:

- **Partition ids.** Partitions are numbered ``0..partition_count-1``; Event Hubs names them
  ``"0".."N-1"``. The count is fixed when the log is created (as an event hub's partition count
  is fixed on the Standard tier); opening an existing log with another count raises
  :class:`PartitionCountMismatch` instead of silently re-hashing keys to other partitions.
- **Partition key hashing.** A message's partition key picks its partition through a STABLE hash
  (the first 8 bytes of BLAKE2b over the UTF-8 key, modulo the partition count), so the mapping is
  the same in every process and across restarts (Python's ``hash()`` is salted per process).
  Event Hubs hashes keys with its own function: the mapping differs, the guarantee is the same:
  one key -> one partition -> order kept.
- **Sequence number.** Per partition, from 0, +1 per event, without gaps; ``read`` takes
  "after sequence number" exactly like an Event Hubs ``EventPosition(seq, inclusive=False)``.
- **Offset.** The event's byte position within its partition (sum of the body sizes before it),
  like the Event Hubs offset; informational, never used as a cursor here.
- **Enqueued time.** UTC, stamped by the bus inside the append transaction and never decreasing
  within a partition (a clock step back is clamped to the partition's last time).
- **Consumer position.** The bus keeps none: consumers store their own checkpoints (the read
  models commit ``partition -> last sequence number`` with their rows), as an Event Hubs
  checkpoint store would.
- **Canonical bodies.** Each row records whether its body is canonical (the exact bytes orjson
  writes: :mod:`.canonical`), checked once when ``send`` appends it and read back with the
  columns (``read_columns``), so a catch-up does not round-trip every body through orjson again
  (~1.9 s of a 1M-event catch-up's critical path). The flag is computed by the bus from the
  bytes it stores, never taken from a producer. Rows appended before the column existed, or
  flagged under another :data:`.canonical.RULE`, hold NULL (cleared on open) and are checked on
  read instead. Every process writing a log must run this version: an older one's append names
  six columns and fails on a migrated log.
- **Retention.** The local log keeps everything (Event Hubs drops events after its retention
  period; rebuilding read models from the bus then needs ``raw_events`` instead).

Writes: ``send`` appends a whole batch in one ``BEGIN IMMEDIATE`` transaction (WAL,
``synchronous=FULL``), so several processes (the API's relay and ``cqrs relay``) may append at
once: SQLite serializes the writers and each batch gets contiguous, gap-free numbers.
One connection per instance, guarded by a lock: instances are thread-safe.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .canonical import RULE, canonical, canonical_flags
from .port import EventBus, OutgoingEvent, PartitionInfo, ReceivedColumns, ReceivedEvent

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bus_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bus_partitions (
    partition INTEGER PRIMARY KEY,
    last_sequence_number INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    last_enqueued_us INTEGER
);
CREATE TABLE IF NOT EXISTS bus_events (
    partition INTEGER NOT NULL,
    sequence_number INTEGER NOT NULL,
    byte_offset INTEGER NOT NULL,
    enqueued_us INTEGER NOT NULL,
    partition_key TEXT,
    body BLOB NOT NULL,
    canonical INTEGER,
    PRIMARY KEY (partition, sequence_number)
) WITHOUT ROWID;
"""

_BUSY_TIMEOUT_S = 60.0


class PartitionCountMismatch(ValueError):
    """The log on disk was created with a different partition count."""


def partition_for_key(partition_key: str, partition_count: int) -> int:
    """The partition a key maps to: stable across processes, platforms and restarts."""
    digest = hashlib.blake2b(partition_key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % partition_count


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _migrate_canonical(conn: sqlite3.Connection) -> None:
    """Give a log created before the canonical flag its column (NULL: checked on read), and
    clear the flags stored under another rule than :data:`.canonical.RULE`. Runs inside the
    schema transaction."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(bus_events)")}
    if "canonical" not in columns:
        conn.execute("ALTER TABLE bus_events ADD COLUMN canonical INTEGER")
    row = conn.execute("SELECT value FROM bus_meta WHERE key = 'canonical_rule'").fetchone()
    if row is not None and row[0] != RULE:
        conn.execute("UPDATE bus_events SET canonical = NULL WHERE canonical IS NOT NULL")
    if row is None or row[0] != RULE:
        conn.execute(
            "INSERT OR REPLACE INTO bus_meta (key, value) VALUES ('canonical_rule', ?)", (RULE,)
        )


def _now_us() -> int:
    return time.time_ns() // 1_000


def _from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


class LocalEventBus(EventBus):
    """A partitioned log in one SQLite file with Event Hubs semantics (see the module docstring)."""

    def __init__(self, path: Path, partition_count: int = 4) -> None:
        if partition_count < 1:
            raise ValueError(f"partition_count must be >= 1, got {partition_count}")
        self._path = Path(path)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._closed = False
        self._conn = sqlite3.connect(
            self._path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        try:
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = FULL")
            self._partition_count = self._init_schema(partition_count)
        except BaseException:
            self._conn.close()
            raise

    def _init_schema(self, partition_count: int) -> int:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            row = conn.execute(
                "SELECT value FROM bus_meta WHERE key = 'partition_count'"
            ).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO bus_meta (key, value) VALUES ('partition_count', ?)",
                    (str(partition_count),),
                )
                conn.executemany(
                    "INSERT INTO bus_partitions VALUES (?, -1, 0, NULL)",
                    [(p,) for p in range(partition_count)],
                )
            elif int(row[0]) != partition_count:
                raise PartitionCountMismatch(
                    f"event bus log {self._path} has {int(row[0])} partitions, but "
                    f"{partition_count} were requested; the count is fixed when the log is "
                    "created (set CQRS_BUS_PARTITIONS to match, or start a new data dir)"
                )
            _migrate_canonical(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return partition_count

    @property
    def path(self) -> Path:
        return self._path

    @property
    def partition_count(self) -> int:
        return self._partition_count

    def partition_for(self, partition_key: str) -> int:
        """The partition ``partition_key`` maps to on this bus."""
        return partition_for_key(partition_key, self._partition_count)

    def send(self, events: Sequence[OutgoingEvent]) -> None:
        if not events:
            return
        bodies = [bytes(event.body) for event in events]
        flags = canonical_flags(bodies)  # before the lock: the one per-body cost of an append
        by_partition: dict[int, list[tuple[OutgoingEvent, bytes, bool]]] = {}
        for event, body, flag in zip(events, bodies, flags, strict=True):
            by_partition.setdefault(self.partition_for(event.partition_key), []).append(
                (event, body, flag)
            )
        with self._lock:
            self._check_open()
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                now = _now_us()
                for partition, batch in sorted(by_partition.items()):
                    last_seq, next_offset, last_us = conn.execute(
                        "SELECT last_sequence_number, next_offset, last_enqueued_us "
                        "FROM bus_partitions WHERE partition = ?",
                        (partition,),
                    ).fetchone()
                    enqueued = now if last_us is None else max(now, last_us)
                    rows = []
                    for event, body, flag in batch:
                        last_seq += 1
                        rows.append(
                            (
                                partition,
                                last_seq,
                                next_offset,
                                enqueued,
                                event.partition_key,
                                body,
                                flag,
                            )
                        )
                        next_offset += len(body)
                    conn.executemany(
                        "INSERT INTO bus_events (partition, sequence_number, byte_offset, "
                        "enqueued_us, partition_key, body, canonical) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        rows,
                    )
                    conn.execute(
                        "UPDATE bus_partitions SET last_sequence_number = ?, next_offset = ?, "
                        "last_enqueued_us = ? WHERE partition = ?",
                        (last_seq, next_offset, enqueued, partition),
                    )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _rows(
        self, columns: str, partition: int, after_sequence_number: int, max_count: int
    ) -> list[Any]:
        """``columns`` of a partition's events after a sequence number, in order, at most
        ``max_count`` (the one query both reads share)."""
        self._check_partition(partition)
        if max_count <= 0:
            return []
        with self._lock:
            self._check_open()
            rows: list[Any] = self._conn.execute(
                f"SELECT {columns} FROM bus_events WHERE partition = ? AND sequence_number > ? "
                "ORDER BY sequence_number LIMIT ?",
                (partition, after_sequence_number, max_count),
            ).fetchall()
        return rows

    def read(
        self, partition: int, after_sequence_number: int, max_count: int
    ) -> list[ReceivedEvent]:
        rows = self._rows(
            "sequence_number, byte_offset, enqueued_us, partition_key, body",
            partition,
            after_sequence_number,
            max_count,
        )
        # One send shares one enqueued time: build each distinct datetime once.
        times = {us: _from_us(us) for us in {row[2] for row in rows}}
        return [
            ReceivedEvent(
                partition=partition,
                sequence_number=seq,
                offset=str(offset),
                enqueued_time=times[us],
                partition_key=key,
                body=bytes(body),
            )
            for seq, offset, us, key, body in rows
        ]

    def read_columns(
        self, partition: int, after_sequence_number: int, max_count: int
    ) -> ReceivedColumns:
        """One query, transposed: no object per event (a ``ReceivedEvent`` and its datetime cost
        ~5x the SQLite fetch itself). The canonical flags recorded on append come along; a row
        without one (appended before the column, or under another rule) is checked here."""
        rows = self._rows(
            "sequence_number, CAST(byte_offset AS TEXT), enqueued_us, body, canonical",
            partition,
            after_sequence_number,
            max_count,
        )
        if not rows:
            return ReceivedColumns(partition, [], [], [], [], [])
        seqs, offsets, enqueued, bodies, stored = map(list, zip(*rows, strict=True))
        if None in stored:
            stored = [canonical(b) if f is None else f for b, f in zip(bodies, stored, strict=True)]
        flags = [bool(f) for f in stored]
        return ReceivedColumns(partition, seqs, offsets, enqueued, bodies, flags)

    def partition_info(self, partition: int) -> PartitionInfo:
        self._check_partition(partition)
        with self._lock:
            self._check_open()
            last_seq, last_us = self._conn.execute(
                "SELECT last_sequence_number, last_enqueued_us FROM bus_partitions "
                "WHERE partition = ?",
                (partition,),
            ).fetchone()
        return PartitionInfo(
            partition=partition,
            last_sequence_number=int(last_seq),
            last_enqueued_time=None if last_us is None else _from_us(last_us),
        )

    def partitions_info(self) -> list[PartitionInfo]:
        with self._lock:
            self._check_open()
            rows = self._conn.execute(
                "SELECT partition, last_sequence_number, last_enqueued_us FROM bus_partitions "
                "ORDER BY partition"
            ).fetchall()
        return [
            PartitionInfo(p, int(seq), None if us is None else _from_us(us)) for p, seq, us in rows
        ]

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"event bus {self._path} is closed")

    def _check_partition(self, partition: int) -> None:
        if not 0 <= partition < self._partition_count:
            raise ValueError(
                f"partition {partition} does not exist (partitions 0..{self._partition_count - 1})"
            )
