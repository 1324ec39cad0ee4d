"""Run the whole read side in order: raw -> orders, customers -> order_summary, daily metrics."""

from __future__ import annotations

from cqrs_dagster.eventbus.port import EventBus

from .delta_io import Clock, Fault, seq_app_id, utc_now
from .gold import build_daily_order_metrics, build_order_summary
from .raw_ingest import ingest_raw_events
from .report import StepReport
from .schemas import RAW_EVENTS
from .silver import project_customers, project_orders
from .tables import TableStore

# Bus events decoded per raw_events commit: raw ingest is linear in its batch (no MERGE), so a
# bounded batch costs nothing and bounds the resident set (bodies, DuckDB's parse, the writer).
RAW_BATCH = 25_000


def run_all(
    bus: EventBus,
    tables: TableStore,
    *,
    max_events: int,
    run_id: str,
    fault: Fault = None,
    clock: Clock = utc_now,
    batch_size: int | None = None,
    raw_batch_size: int = RAW_BATCH,
) -> list[StepReport]:
    """Raw + silver in batches of ``batch_size`` (default ``max_events``) until the bus is drained
    or ``max_events`` bus events were read, then the gold tables once. Returns every step's report.

    Each batch is ingested in raw commits of at most ``raw_batch_size`` events, then the silver
    tables catch up with it in one step each: a silver MERGE rewrites the files it touches, so
    fewer, larger silver batches cost less when far behind.
    """
    batch = max(1, min(batch_size or max_events, max_events))
    reports: list[StepReport] = []
    total = 0
    while True:
        read = 0
        while True:
            raw = ingest_raw_events(
                bus,
                tables,
                max_events=max(1, min(raw_batch_size, batch - read, max_events - total)),
                run_id=run_id,
                fault=fault,
                clock=clock,
            )
            reports.append(raw)
            read += raw.events_read
            total += raw.events_read
            if raw.events_read == 0 or read >= batch or total >= max_events:
                break
        raw_seq = raw.checkpoint[seq_app_id(RAW_EVENTS)]
        for project in (project_orders, project_customers):
            while True:  # catch up with raw (a crashed run may have left a backlog)
                step = project(tables, max_events=batch, run_id=run_id, fault=fault, clock=clock)
                reports.append(step)
                if step.checkpoint[seq_app_id(step.table)] >= raw_seq:
                    break
        if raw.events_read == 0 or total >= max_events:
            break
    reports.append(build_order_summary(tables, run_id=run_id, fault=fault))
    reports.append(build_daily_order_metrics(tables, run_id=run_id, fault=fault))
    return reports
