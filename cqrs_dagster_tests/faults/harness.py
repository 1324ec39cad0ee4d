"""Shared machinery of the fault tests: a data dir driven through the real write side, killable
child processes, and the end-state invariants every fault test checks.

Invariants (:func:`verify`):
- no committed event (the write store's outbox, in commit order) is missing from raw_events, and
  raw_events holds no event that was never committed;
- no read model holds a duplicate key; raw_events' ``ingest_seq`` runs 0..n-1 without a gap;
- every table equals (sorted, all columns but the wall-clock / run-identity ones and raw_events'
  bus positions) a clean replay of the committed events into a fresh data dir.
"""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from cqrs_dagster.command.handler import CommandHandler
from cqrs_dagster.command.relay import OutboxRelay
from cqrs_dagster.domain.events import EventEnvelope
from cqrs_dagster.eventbus.local import LocalEventBus
from cqrs_dagster.projections.context import StepContext
from cqrs_dagster.projections.pipeline import catch_up
from cqrs_dagster.projections.schemas import (
    ALL_TABLES,
    CUSTOMERS,
    DAILY_ORDER_METRICS,
    DEAD_LETTER_EVENTS,
    ORDER_SUMMARY,
    ORDERS,
    RAW_EVENTS,
)
from cqrs_dagster.projections.tables import TableStore
from cqrs_dagster.settings import Settings
from cqrs_dagster.wiring import make_engine, make_event_bus, make_table_store, make_write_store
from cqrs_dagster_tests.faults.children import handle_all
from cqrs_dagster_tests.fixtures.procs import ROOT, stop_group

PARTITIONS = 3
KEYS = {
    RAW_EVENTS: ("event_id",),
    ORDERS: ("order_id",),
    CUSTOMERS: ("customer_id",),
    ORDER_SUMMARY: ("order_id",),
    DAILY_ORDER_METRICS: ("order_date",),
    DEAD_LETTER_EVENTS: ("dead_letter_id",),
}
# Wall-clock and run-identity columns, and raw_events' bus positions (a redelivered batch moves
# later copies to later sequence numbers; ingest_seq depends on where runs cut their batches).
IGNORED = {"ingested_at", "enqueued_time", "dead_lettered_at", "resolved_at", "run_id"}
IGNORED_BY_TABLE = {
    RAW_EVENTS: {"sequence_number", "offset", "ingest_seq"},
    DEAD_LETTER_EVENTS: {"dead_letter_id", "sequence_number"},
}
SIGKILLED = -9


def local_settings(data_dir: Path, partitions: int = PARTITIONS) -> Settings:
    return Settings(env="local", data_dir=data_dir, bus_partitions=partitions)


# --- commands --------------------------------------------------------------------------------


@dataclass
class CommandModel:
    """Generates valid-looking commands with explicit ids (retries replay them) from a seed."""

    rng: random.Random
    prefix: str = ""
    customers: list[str] = field(default_factory=list)
    orders: dict[str, str] = field(default_factory=dict)  # id -> status this model expects
    n: int = 0

    def next(self) -> dict[str, Any]:
        self.n += 1
        command = self._pick()
        command["commandId"] = f"{self.prefix}cmd-{self.n}"
        return command

    def batch(self, count: int) -> list[dict[str, Any]]:
        return [self.next() for _ in range(count)]

    def _pick(self) -> dict[str, Any]:
        r = self.rng.random()
        if not self.customers or r < 0.15:
            cid = f"{self.prefix}c{len(self.customers)}"
            self.customers.append(cid)
            return {"type": "RegisterCustomer", "customerId": cid, "name": f"N {cid}",
                    "email": f"{cid}@x.io"}  # fmt: skip
        if r < 0.25:
            cid = self.rng.choice(self.customers)
            return {"type": "UpdateCustomer", "customerId": cid, "name": f"R{self.n} {cid}"}
        live = [o for o, s in self.orders.items() if s not in ("Delivered", "Cancelled")]
        if not live or r < 0.55:
            oid = f"{self.prefix}o{len(self.orders)}"
            self.orders[oid] = "Created"
            items = [
                {"sku": f"sku{self.rng.randrange(5)}", "quantity": self.rng.randint(1, 3),
                 "unitPrice": f"{self.rng.randint(1, 9999) / 100:.2f}"}
                for _ in range(self.rng.randint(1, 3))
            ]  # fmt: skip
            return {"type": "CreateOrder", "orderId": oid,
                    "customerId": self.rng.choice(self.customers), "items": items}  # fmt: skip
        oid = self.rng.choice(live)
        status = self.orders[oid]
        if status in ("Created", "Paid") and self.rng.random() < 0.15:
            self.orders[oid] = "Cancelled"
            return {"type": "CancelOrder", "orderId": oid, "reason": "fuzz"}
        nxt = {"Created": "Paid", "Paid": "Shipped", "Shipped": "Delivered"}[status]
        self.orders[oid] = nxt
        return {"type": "UpdateOrderStatus", "orderId": oid, "status": nxt}


def handle(settings: Settings, commands: Sequence[dict[str, Any]]) -> int:
    """Handle commands in this process (domain rejections ignored); returns how many applied."""
    store = make_write_store(settings)
    try:
        return handle_all(CommandHandler(store), commands)
    finally:
        store.close()


def relay(settings: Settings, batch: int = 500) -> int:
    """Drain the outbox onto the bus in this process; returns how many were published."""
    store, bus = make_write_store(settings), make_event_bus(settings)
    try:
        return OutboxRelay(store, bus, batch_size=batch).drain()
    finally:
        bus.close()
        store.close()


def project(settings: Settings, run_id: str = "run", batch: int = 100_000) -> int:
    """A clean projection run over everything on the bus; returns raw events applied."""
    bus, engine = make_event_bus(settings), make_engine(settings)  # CQRS_PROJECTION_ENGINE
    try:
        result = catch_up(
            StepContext(make_table_store(settings), run_id, engine=engine), bus,
            max_events=100_000, batch_size=batch,
        )  # fmt: skip
    finally:
        bus.close()
        engine.close()
    return sum(r.events_applied for r in result.reports if r.table == RAW_EVENTS)


def republish(settings: Settings, events: Sequence[EventEnvelope]) -> None:
    """The bus redelivering a batch: the same envelopes (same eventIds and bodies) again."""
    bus = make_event_bus(settings)
    try:
        bus.publish(events)
    finally:
        bus.close()


# --- child processes -------------------------------------------------------------------------


def run_child(settings: Settings, mode: str, args: dict[str, Any], timeout: float = 120) -> int:
    """Run a :mod:`children` mode in its own process group; its return code (-9: SIGKILLed)."""
    child = subprocess.Popen(
        [sys.executable, "-m", "cqrs_dagster_tests.faults.children", mode,
         str(settings.data_dir), str(settings.bus_partitions), orjson.dumps(args).decode()],
        cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        _, err = child.communicate(timeout=timeout)
    finally:
        stop_group(child)
    if child.returncode not in (SIGKILLED, 3):
        raise AssertionError(f"child {mode} failed ({child.returncode}): {err.decode()[-2000:]}")
    return child.returncode


# --- invariants ------------------------------------------------------------------------------


def committed_events(settings: Settings) -> list[EventEnvelope]:
    """Every event the write store committed, in commit order (the outbox, published or not)."""
    conn = sqlite3.connect(settings.write_db_path)
    try:
        rows = conn.execute("SELECT body FROM outbox ORDER BY seq").fetchall()
    finally:
        conn.close()
    return [EventEnvelope.from_json(body) for (body,) in rows]


def bus_redeliveries(settings: Settings) -> int:
    """Messages on the bus beyond the first copy of each event id (at-least-once at work)."""
    bus = make_event_bus(settings)
    try:
        ids = [
            orjson.loads(m.body).get("eventId")
            for p in range(bus.partition_count)
            for m in bus.read(p, -1, 1_000_000)
        ]
    finally:
        bus.close()
    return len(ids) - len(set(ids))


def table_rows(tables: TableStore, name: str) -> list[dict[str, Any]]:
    table = tables.open(name)
    return [] if table is None else table.to_pyarrow_table().to_pylist()


def normalized(
    tables: TableStore, also_ignored: Mapping[str, set[str]] | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Every table's rows without the ignored columns (and ``also_ignored``'s), sorted."""
    out: dict[str, list[dict[str, Any]]] = {}
    for name in ALL_TABLES:
        drop = IGNORED | IGNORED_BY_TABLE.get(name, set()) | (also_ignored or {}).get(name, set())
        rows = [{k: v for k, v in r.items() if k not in drop} for r in table_rows(tables, name)]
        out[name] = sorted(rows, key=lambda r: sorted((k, repr(v)) for k, v in r.items()))
    return out


def clean_replay(
    events: Iterable[EventEnvelope],
    root: Path,
    partitions: int = PARTITIONS,
    also_ignored: Mapping[str, set[str]] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """The tables one clean run gives for ``events`` published once, in order, to a fresh bus."""
    bus = LocalEventBus(root / "bus.sqlite", partition_count=partitions)
    tables = TableStore(root=str(root / "delta"))
    try:
        bus.publish(list(events))
        catch_up(StepContext(tables, "clean-replay"), bus, max_events=1_000_000)
    finally:
        bus.close()
    return normalized(tables, also_ignored)


@dataclass(frozen=True)
class Verdict:
    committed: int
    events_lost: int
    never_committed: int
    duplicates: int
    ingest_seq_ok: bool
    differing_tables: tuple[str, ...]

    def assert_ok(self) -> None:
        assert self.committed > 0
        assert self.events_lost == 0, self
        assert self.never_committed == 0, self
        assert self.duplicates == 0, self
        assert self.ingest_seq_ok, self
        assert self.differing_tables == (), self


def duplicate_keys(tables: TableStore) -> int:
    """Rows beyond the first per key, over every table."""
    extra = 0
    for name, key in KEYS.items():
        rows = table_rows(tables, name)
        extra += len(rows) - len({tuple(r[k] for k in key) for r in rows})
    return extra


def verify(settings: Settings, scratch: Path) -> Verdict:
    """Check the end state of ``settings``' data dir against its write store and a clean replay."""
    return verify_tables(
        make_table_store(settings), committed_events(settings), scratch, settings.bus_partitions
    )


def verify_tables(
    tables: TableStore,
    committed: Sequence[EventEnvelope],
    scratch: Path,
    partitions: int = PARTITIONS,
    also_ignored: Mapping[str, set[str]] | None = None,
) -> Verdict:
    """Check ``tables`` (local or on Azure storage) against the ``committed`` events (in commit
    order) and a clean replay of them into a fresh local data dir under ``scratch``."""
    raw = table_rows(tables, RAW_EVENTS)
    raw_ids = {r["event_id"] for r in raw}
    committed_ids = {e.event_id for e in committed}
    seqs = sorted(r["ingest_seq"] for r in raw)
    got = normalized(tables, also_ignored)
    want = clean_replay(committed, scratch, partitions, also_ignored)
    return Verdict(
        committed=len(committed),
        events_lost=len(committed_ids - raw_ids),
        never_committed=len(raw_ids - committed_ids),
        duplicates=duplicate_keys(tables),
        ingest_seq_ok=seqs == list(range(len(raw))),
        differing_tables=tuple(n for n in ALL_TABLES if got[n] != want[n]),
    )


def summary(test: str, *, faults: int, runs_survived: int, verdict: Verdict, **extra: int) -> None:
    """One line per test for the closing note's table (shown with ``pytest -s``)."""
    more = "".join(f" {k}={v}" for k, v in extra.items())
    print(
        f"\nFAULT-SUMMARY {test}: faults_injected={faults} runs_survived={runs_survived} "
        f"events_lost={verdict.events_lost} duplicates_found={verdict.duplicates} "
        f"committed_events={verdict.committed}{more}"
    )
