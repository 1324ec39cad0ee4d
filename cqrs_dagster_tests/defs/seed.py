"""Seed a data dir through the real write side: handler -> SQLite store -> relay -> local bus."""

from __future__ import annotations

from typing import Any

from cqrs_dagster.command.handler import CommandHandler
from cqrs_dagster.command.relay import OutboxRelay
from cqrs_dagster.domain.commands import parse_command
from cqrs_dagster.settings import Settings
from cqrs_dagster.wiring import make_event_bus, make_write_store


def run_commands(settings: Settings, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Handle each command and relay the events to the bus; returns the command results."""
    store = make_write_store(settings)
    bus = make_event_bus(settings)
    try:
        handler = CommandHandler(store)
        results = [handler.handle(parse_command(c)).body for c in commands]
        relay = OutboxRelay(store, bus)
        while relay.run_once():
            pass
        return results
    finally:
        bus.close()
        store.close()


def seed_commands(
    settings: Settings, *, customers: int, orders_per_customer: int
) -> dict[str, Any]:
    """Register customers, place orders, pay half of them; returns ids for assertions."""
    commands: list[dict[str, Any]] = []
    order_ids: list[str] = []
    for c in range(customers):
        cid = f"cust-{c}"
        commands.append(
            {
                "type": "RegisterCustomer",
                "customerId": cid,
                "name": f"Customer {c}",
                "email": f"c{c}@example.com",
            }
        )
        for o in range(orders_per_customer):
            oid = f"ord-{c}-{o}"
            order_ids.append(oid)
            commands.append(
                {
                    "type": "CreateOrder",
                    "orderId": oid,
                    "customerId": cid,
                    "items": [{"sku": "SKU-1", "quantity": o + 1, "unitPrice": "10.25"}],
                }
            )
    for i, oid in enumerate(order_ids):
        if i % 2 == 0:
            commands.append({"type": "UpdateOrderStatus", "orderId": oid, "status": "Paid"})
    run_commands(settings, commands)
    return {"customers": [f"cust-{c}" for c in range(customers)], "orders": order_ids}
