"""Read-side status: committed checkpoints and projection lag (seconds and events)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from deltalake import DeltaTable

from cqrs_dagster.eventbus.port import EventBus, PartitionInfo

from .delta_io import enqueued_app_id, from_micros, read_raw_range, seq_app_id, txn
from .raw_ingest import partition_app_id
from .schemas import RAW_EVENTS, READ_MODELS
from .tables import TableStore


@dataclass(frozen=True)
class Lag:
    """How far a read model is behind the bus."""

    table: str
    lag_seconds: float
    events_behind: int
    newest_bus_time: datetime | None
    newest_applied_time: datetime | None
    oldest_unapplied_time: datetime | None = None


def read_checkpoints(tables: TableStore) -> dict[str, dict[str, int]]:
    """Every read model's committed checkpoints: ``{table: {txn app id: version}}``.

    raw_events commits every bus partition's checkpoint each run, so its partitions are numbered
    contiguously from 0. Tables never written are absent.
    """
    out: dict[str, dict[str, int]] = {}
    for name in READ_MODELS:
        table = tables.open(name)
        if table is None:
            continue
        points: dict[str, int] = {}
        if name == RAW_EVENTS:
            p = 0
            while (value := table.transaction_version(partition_app_id(p))) is not None:
                points[partition_app_id(p)] = int(value)
                p += 1
        for app in (seq_app_id(name), enqueued_app_id(name)):
            value = table.transaction_version(app)
            if value is not None:
                points[app] = int(value)
        out[name] = points
    return out


def _oldest_unread_on_bus(
    bus: EventBus, raw: DeltaTable | None, heads: Sequence[PartitionInfo]
) -> datetime | None:
    """Enqueued time of the oldest bus event raw_events has not ingested (one event per partition)."""
    times = []
    for head in heads:
        checkpoint = txn(raw, partition_app_id(head.partition))
        if head.last_sequence_number > checkpoint:
            events = bus.read(head.partition, checkpoint, 1)
            if events:
                times.append(events[0].enqueued_time)
    return min(times, default=None)


def _oldest_unapplied_in_raw(raw: DeltaTable, after_seq: int) -> datetime | None:
    """Enqueued time of the raw event right after a table's checkpoint (file-pruned read)."""
    rows = read_raw_range(raw, after_seq, after_seq + 1, ["enqueued_time"])
    if rows.num_rows == 0:
        return None
    value: datetime = rows.column("enqueued_time")[0].as_py()
    return value


def _bus_behind(raw: DeltaTable | None, heads: Sequence[PartitionInfo]) -> int:
    """Bus events raw_events has not ingested yet."""
    return sum(
        max(0, h.last_sequence_number - txn(raw, partition_app_id(h.partition))) for h in heads
    )


def _raw_behind(raw: DeltaTable | None, target: DeltaTable | None, table: str) -> int:
    """raw_events rows past ``table``'s checkpoint (0 for raw_events itself)."""
    if table == RAW_EVENTS:
        return 0
    return max(0, txn(raw, seq_app_id(RAW_EVENTS)) - txn(target, seq_app_id(table)))


def events_behind(
    tables: TableStore, heads: Sequence[PartitionInfo], names: Sequence[str] = READ_MODELS
) -> dict[str, int]:
    """Events each read model has still to apply, from the bus heads and the checkpoints only
    (no event is read): what the sensor needs on every tick."""
    raw = tables.open(RAW_EVENTS)
    bus_behind = _bus_behind(raw, heads)
    return {
        name: bus_behind + _raw_behind(raw, raw if name == RAW_EVENTS else tables.open(name), name)
        for name in names
    }


def projection_lag(
    bus: EventBus,
    tables: TableStore,
    table: str,
    *,
    now: datetime | None = None,
    heads: Sequence[PartitionInfo] | None = None,
) -> Lag:
    """How long the oldest event not yet applied by ``table`` has been waiting (0 s when caught up).

    Measured from the bus enqueued time of the oldest unapplied event to ``now``, so the figure
    keeps growing while a projection is stuck (a stalled sensor or failing run is caught even when
    no new event arrives). ``events_behind`` = bus events not yet in raw_events + raw events past
    the table's checkpoint. ``heads`` lets a caller share one read of the bus heads across tables.
    """
    now = now or datetime.now(UTC)
    raw = tables.open(RAW_EVENTS)
    heads = list(heads) if heads is not None else bus.partitions_info()
    bus_times = [h.last_enqueued_time for h in heads if h.last_enqueued_time is not None]
    newest_bus = max(bus_times) if bus_times else None
    bus_behind = _bus_behind(raw, heads)
    target = raw if table == RAW_EVENTS else tables.open(table)
    raw_behind = _raw_behind(raw, target, table)
    table_seq = txn(target, seq_app_id(table)) if table != RAW_EVENTS else -1
    applied = from_micros(txn(target, enqueued_app_id(table)))
    oldest: datetime | None = None
    if raw_behind and raw is not None:
        oldest = _oldest_unapplied_in_raw(raw, table_seq)
    if oldest is None and bus_behind:
        oldest = _oldest_unread_on_bus(bus, raw, heads)
    seconds = 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())
    return Lag(table, seconds, bus_behind + raw_behind, newest_bus, applied, oldest)
