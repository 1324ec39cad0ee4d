"""Read-side status: committed checkpoints and projection lag (seconds and events)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cqrs_dagster.eventbus.port import EventBus

from .delta_io import enqueued_app_id, from_micros, seq_app_id, txn
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


def projection_lag(bus: EventBus, tables: TableStore, table: str) -> Lag:
    """Newest enqueued time on the bus vs newest applied by ``table`` (0 s when caught up).

    ``events_behind`` = bus events not yet in raw_events + raw events past the table's checkpoint.
    """
    raw = tables.open(RAW_EVENTS)
    heads = bus.partitions_info()
    bus_times = [h.last_enqueued_time for h in heads if h.last_enqueued_time is not None]
    newest_bus = max(bus_times) if bus_times else None
    behind = sum(
        max(0, h.last_sequence_number - txn(raw, partition_app_id(h.partition))) for h in heads
    )
    if table != RAW_EVENTS:
        target = tables.open(table)
        behind += max(0, txn(raw, seq_app_id(RAW_EVENTS)) - txn(target, seq_app_id(table)))
        applied_us = txn(target, enqueued_app_id(table))
    else:
        applied_us = txn(raw, enqueued_app_id(RAW_EVENTS))
    applied = from_micros(applied_us)
    if behind == 0 or newest_bus is None:
        seconds = 0.0
    elif applied is None:
        oldest = min(
            (
                events[0].enqueued_time
                for h in heads
                if (events := bus.read(h.partition, txn(raw, partition_app_id(h.partition)), 1))
            ),
            default=newest_bus,
        )
        seconds = (newest_bus - oldest).total_seconds()
    else:
        seconds = max(0.0, (newest_bus - applied).total_seconds())
    return Lag(table, seconds, behind, newest_bus, applied)
