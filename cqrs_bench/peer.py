"""The peer: the same work done with the ``eventsourcing`` library (9.5.6) on SQLite.

``eventsourcing`` is the established Python library for event-sourced applications. Its SQLite
persistence is used as it ships: a file database in WAL mode at SQLite's default durability
(``synchronous=FULL`` in WAL mode, the same as ours), one transaction per saved aggregate.

- :func:`command_rate`: ``Orders.create_order`` creates one ``Order`` aggregate (one event) per
  command, each saved in its own transaction: commands/s, one caller, as the library is used.
- :func:`projection_rate`: a :class:`~eventsourcing.projection.Projection` reads those events
  and upserts an order-summary row per customer (count and
  total) in a view database, recording the tracking position in the same transaction as the
  upsert (its exactly-once mechanism): events/s from start until the view has caught up. The
  library's ``ProjectionRunner`` needs a recorder with subscriptions, which its SQLite recorder
  does not have (``NotImplementedError``), so the loop below does what its runner does: read the
  notification log in pages after the view's tracking position, map each notification to its
  domain event, call ``process_event``.

Each function runs in a fresh folder and returns one rate; the benchmarks call them in the same
run as our own figures, so their ratios are not disturbed by a machine that is faster or slower
on another day.
"""

from __future__ import annotations

import time
from decimal import Decimal
from functools import singledispatchmethod
from pathlib import Path
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import InfrastructureFactory, Tracking
from eventsourcing.projection import Projection
from eventsourcing.sqlite import SQLiteTrackingRecorder
from eventsourcing.utils import Environment

PAGE = 1_000  # notifications read per page


class Order(Aggregate):
    """One order: created with its customer, total and item count (one ``Created`` event)."""

    @event("Created")
    def __init__(self, customer_id: str, total: str, item_count: int) -> None:
        self.customer_id = customer_id
        self.total = total
        self.item_count = item_count


class Orders(Application[UUID]):
    """The write side: one command creates one order aggregate and saves its event."""

    def create_order(self, customer_id: str, total: str, item_count: int) -> UUID:
        order = Order(customer_id, total, item_count)
        self.save(order)
        return order.id


class OrderSummaryView(SQLiteTrackingRecorder):
    """An order-summary read model (orders and total per customer) in a SQLite database."""

    def construct_create_table_statements(self) -> list[str]:
        return [
            *super().construct_create_table_statements(),
            "CREATE TABLE IF NOT EXISTS order_summary ("
            "customer_id TEXT PRIMARY KEY, order_count INTEGER NOT NULL, "
            "total_amount TEXT NOT NULL) WITHOUT ROWID",
        ]

    def add_order(self, customer_id: str, total: str, tracking: Tracking) -> None:
        """Upsert the customer's summary and record the tracking position, in one transaction."""
        with self.datastore.transaction(commit=True) as cursor:
            cursor.execute(
                "SELECT total_amount FROM order_summary WHERE customer_id = ?", (customer_id,)
            )
            row = cursor.fetchone()
            new_total = Decimal(total) + (Decimal(row[0]) if row is not None else Decimal(0))
            cursor.execute(
                "INSERT INTO order_summary VALUES (?, 1, ?) ON CONFLICT (customer_id) DO UPDATE"
                " SET order_count = order_count + 1, total_amount = excluded.total_amount",
                (customer_id, str(new_total)),
            )
            self._insert_tracking(cursor, tracking)

    def summary(self) -> tuple[int, Decimal]:
        """(orders counted, grand total) over all customers."""
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute("SELECT order_count, total_amount FROM order_summary")
            rows = cursor.fetchall()
        return sum(int(r[0]) for r in rows), sum((Decimal(r[1]) for r in rows), Decimal(0))


class OrderSummaryProjection(Projection[OrderSummaryView]):
    """Projects ``Order.Created`` events into :class:`OrderSummaryView`."""

    name = "ordersummary"
    topics = ()

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        self.view.insert_tracking(tracking)  # not ours: only move the position on

    @process_event.register
    def _(self, domain_event: Order.Created, tracking: Tracking) -> None:
        self.view.add_order(domain_event.customer_id, domain_event.total, tracking)


def _app_env(folder: Path) -> dict[str, str]:
    return {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": str(folder / "peer-events.sqlite"),
    }


def _create_orders(app: Orders, n: int) -> None:
    for i in range(n):
        app.create_order(f"c{i % 1000}", "21.10", 3)


def command_rate(folder: Path, n: int) -> float:
    """Commands/s creating ``n`` orders with ``eventsourcing`` (one event, one commit each)."""
    folder.mkdir(parents=True, exist_ok=True)
    app = Orders(env=_app_env(folder))
    try:
        start = time.perf_counter()
        _create_orders(app, n)
        return n / (time.perf_counter() - start)
    finally:
        app.close()


def projection_rate(folder: Path, n: int) -> float:
    """Events/s: ``eventsourcing``'s projection runner catching up on ``n`` stored order events."""
    folder.mkdir(parents=True, exist_ok=True)
    env = _app_env(folder)
    app = Orders(env=env)
    try:
        _create_orders(app, n)
        last = app.recorder.max_notification_id()
    finally:
        app.close()
    view = (
        InfrastructureFactory[OrderSummaryView]
        .construct(
            env=Environment(
                OrderSummaryProjection.name,
                {**env, "SQLITE_DBNAME": str(folder / "peer-view.sqlite")},
            )
        )
        .tracking_recorder(OrderSummaryView)
    )
    projection = OrderSummaryProjection(view=view)
    app = Orders(env=env)
    try:
        start = time.perf_counter()
        position = view.max_tracking_id(app.name) or 0
        while position < last:
            for notification in app.recorder.select_notifications(
                start=position + 1, limit=PAGE, inclusive_of_start=True
            ):
                domain_event = app.mapper.to_domain_event(notification)
                projection.process_event(domain_event, Tracking(app.name, notification.id))
                position = notification.id
        elapsed = time.perf_counter() - start
        count, total = view.summary()
    finally:
        app.close()
    if count != n or total != Decimal("21.10") * n:  # the peer's view must be right, too
        raise RuntimeError(f"peer projection counted {count} orders, total {total}; expected {n}")
    return n / elapsed
