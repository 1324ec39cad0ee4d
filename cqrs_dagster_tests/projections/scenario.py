"""Deterministic event streams for the projection tests, made by the real domain decide functions."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pandas as pd

from cqrs_dagster.domain import customer, order
from cqrs_dagster.domain.commands import (
    CreateOrder,
    OrderItem,
    RegisterCustomer,
    UpdateCustomer,
    UpdateOrderStatus,
)
from cqrs_dagster.domain.decision import CommandContext
from cqrs_dagster.domain.events import EventEnvelope
from cqrs_dagster.eventbus.local import LocalEventBus
from cqrs_dagster.projections.tables import TableStore

T0 = datetime(2026, 11, 20, 22, 0, tzinfo=UTC)
FIXED_NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)

NEXT = {"Created": "Paid", "Paid": "Shipped", "Shipped": "Delivered"}


@dataclass
class Scenario:
    """Customers and orders evolving over a few UTC days; ``events`` in commit order."""

    seed: int = 7
    events: list[EventEnvelope] = field(default_factory=list)
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    clock: datetime = T0
    n: int = 0

    def ctx(self) -> CommandContext:
        self.n += 1
        self.clock += timedelta(minutes=7)
        return CommandContext(f"cmd-{self.seed}-{self.n}", f"corr-{self.n}", self.clock)

    def register(self, cid: str, name: str) -> EventEnvelope:
        d = customer.register(
            RegisterCustomer(
                type="RegisterCustomer", customerId=cid, name=name, email=f"{cid}@x.io"
            ),
            None,
            self.ctx(),
        )
        self.customers[cid] = d.state
        self.events.extend(d.events)
        return d.events[0]

    def rename(self, cid: str, name: str) -> EventEnvelope:
        d = customer.update(
            UpdateCustomer(type="UpdateCustomer", customerId=cid, name=name),
            self.customers[cid],
            self.ctx(),
        )
        self.customers[cid] = d.state
        self.events.extend(d.events)
        return d.events[0]

    def create_order(self, oid: str, cid: str, lines: list[tuple[str, int, str]]) -> EventEnvelope:
        cmd = CreateOrder(
            type="CreateOrder",
            orderId=oid,
            customerId=cid,
            items=[OrderItem(sku=s, quantity=q, unitPrice=p) for s, q, p in lines],  # type: ignore[arg-type]
        )
        d = order.create(cmd, None, self.customers[cid], self.ctx())
        self.orders[oid] = d.state
        self.events.extend(d.events)
        return d.events[0]

    def advance(self, oid: str, status: str | None = None) -> EventEnvelope | None:
        cur = self.orders[oid]
        target = status or NEXT.get(cur["status"])
        if target is None:
            return None
        cmd = UpdateOrderStatus(type="UpdateOrderStatus", orderId=oid, status=target)  # type: ignore[arg-type]
        d = order.update_status(cmd, cur, self.ctx())
        self.orders[oid] = d.state
        self.events.extend(d.events)
        return d.events[0]


def build(seed: int = 7, customers: int = 6, orders: int = 25) -> Scenario:
    """A mixed stream: registrations, orders with 1-3 lines, status moves, renames, cancels."""
    rng = random.Random(seed)
    sc = Scenario(seed=seed)
    for c in range(customers):
        sc.register(f"c{c}", f"Customer {c}")
    for o in range(orders):
        cid = f"c{rng.randrange(customers)}"
        lines = [
            (f"sku{rng.randrange(9)}", rng.randint(1, 4), f"{rng.randint(1, 9999) / 100:.2f}")
            for _ in range(rng.randint(1, 3))
        ]
        sc.create_order(f"o{o:03d}", cid, lines)
        for _ in range(rng.randint(0, 3)):
            oid = f"o{rng.randrange(o + 1):03d}"
            if rng.random() < 0.15 and sc.orders[oid]["status"] in ("Created", "Paid"):
                sc.advance(oid, "Cancelled")
            else:
                sc.advance(oid)
        if rng.random() < 0.2:
            c = f"c{rng.randrange(customers)}"
            sc.rename(c, f"{sc.customers[c]['name']}'")
    return sc


def new_bus(path: Path, partitions: int = 3) -> LocalEventBus:
    return LocalEventBus(path, partition_count=partitions)


def new_tables(path: Path) -> TableStore:
    return TableStore(root=str(path))


def fixed_clock() -> datetime:
    return FIXED_NOW


def poison_messages(sc: Scenario) -> list[tuple[str, bytes]]:
    """(partition key, body) of every poison kind, plus one legacy (schemaVersion 0) event."""
    import orjson

    from cqrs_dagster.domain.events import EventEnvelope as Env

    first_order = next(e for e in sc.events if e.event_type == "OrderCreated")
    version0 = orjson.loads(first_order.to_json())
    version0.update(eventId="legacy-1", aggregateId="legacy-order", schemaVersion=0)
    version0["data"] = {
        "orderId": "legacy-order",
        "customerId": first_order.data["customerId"],
        "items": [{"sku": "old", "quantity": 2, "price": "1.25"}],
    }
    bad_envelope = orjson.loads(first_order.to_json())
    bad_envelope.update(eventId="bad-version", version=0)
    unknown_type = orjson.loads(first_order.to_json())
    unknown_type.update(eventId="unknown-type", eventType="OrderTeleported")
    ghost = Env(
        "ghost-update",
        "OrderUpdated",
        "ghost-order",
        "Order",
        2,
        first_order.timestamp,
        "c",
        "c",
        {"orderId": "ghost-order", "status": "Paid"},
    )
    bad_total = orjson.loads(first_order.to_json())
    bad_total.update(eventId="bad-total", aggregateId="bad-total-order")
    bad_total["data"] = {**bad_total["data"], "totalAmount": "12.345"}
    return [
        ("x", b"{not json"),
        ("y", b"[1, 2]"),
        ("z", orjson.dumps(unknown_type)),
        ("w", orjson.dumps(bad_envelope)),
        ("ghost-order", ghost.to_json()),
        ("bad-total-order", orjson.dumps(bad_total)),
        ("legacy-order", orjson.dumps(version0)),
    ]


def snapshot(tables: TableStore) -> dict[str, list[dict[str, Any]]]:
    """Every table's rows, all columns, sorted (for equality with a clean pass). raw_events'
    ``enqueued_time`` is the bus's wall-clock stamp, which differs between two seeded buses."""
    from cqrs_dagster.projections.schemas import ALL_TABLES

    out: dict[str, list[dict[str, Any]]] = {}
    for name in ALL_TABLES:
        table = tables.open(name)
        rows = [] if table is None else table.to_pyarrow_table().to_pylist()
        for row in rows:
            row.pop("enqueued_time", None)
        out[name] = sorted(rows, key=lambda r: sorted((k, repr(v)) for k, v in r.items()))
    return out


def expected_daily(orders: dict[str, dict[str, object]]) -> list[dict[str, object]]:
    """Every day's daily_order_metrics row from orders in the domain's shape (createdAt,
    totalAmount, customerId), by pandas: not the engines' code."""
    df = pd.DataFrame(
        {
            "day": [pd.Timestamp(str(o["createdAt"])).date() for o in orders.values()],
            "total": [Decimal(str(o["totalAmount"])) for o in orders.values()],
            "customer": [o["customerId"] for o in orders.values()],
        }
    )
    out = []
    for day, g in df.groupby("day"):
        revenue = sum(g["total"], Decimal(0))
        out.append(
            {
                "order_date": day,
                "order_count": len(g),
                "total_revenue": revenue,
                "avg_order_value": (revenue / len(g)).quantize(Decimal("0.01"), ROUND_HALF_UP),
                "unique_customers": g["customer"].nunique(),
            }
        )
    return out
