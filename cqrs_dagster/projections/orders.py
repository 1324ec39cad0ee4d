"""The orders projection (silver): one row per order, folded from Order events. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import orjson

from cqrs_dagster.domain.events import ORDER_CREATED, ORDER_UPDATED, EventEnvelope
from cqrs_dagster.domain.money import CENT, to_money
from cqrs_dagster.domain.order import TRANSITIONS

from .folding import FoldResult, Row, fold

EVENT_TYPES = frozenset({ORDER_CREATED, ORDER_UPDATED})
MAX_MONEY = Decimal("1e16")


def _money(value: Any) -> Decimal:
    amount = to_money(value)
    if amount != amount.quantize(CENT) or not (0 <= amount < MAX_MONEY):
        raise ValueError(f"amount {value!r} does not fit decimal(18,2)")
    return amount.quantize(CENT)


def apply_order_event(row: Row | None, event: EventEnvelope) -> Row:
    """The order row after ``event`` (raises for an event the projection cannot apply)."""
    data = event.data
    if event.event_type == ORDER_CREATED:
        if row is not None:
            raise ValueError(
                f"OrderCreated v{event.version} for existing order {event.aggregate_id}"
            )
        items = data["items"]
        if not isinstance(items, list):
            raise ValueError("items must be a list")
        customer_id = data["customerId"]
        if not isinstance(customer_id, str) or not customer_id:
            raise ValueError("customerId must be a non-empty string")
        item_count = data["itemCount"]
        if not isinstance(item_count, int) or isinstance(item_count, bool):
            raise ValueError("itemCount must be an integer")
        return {
            "order_id": event.aggregate_id,
            "customer_id": customer_id,
            "status": str(data.get("status", "Created")),
            "total_amount": _money(data["totalAmount"]),
            "item_count": item_count,
            "items": orjson.dumps(items).decode(),
            "created_date": event.timestamp,
            "updated_date": event.timestamp,
            "version": event.version,
            "last_event_id": event.event_id,
            "created_day": event.timestamp.date(),
        }
    if event.event_type == ORDER_UPDATED:
        if row is None:
            raise ValueError(f"OrderUpdated for unknown order {event.aggregate_id}")
        status = data["status"]
        if status not in TRANSITIONS:
            raise ValueError(f"unknown order status {status!r}")
        return {
            **row,
            "status": status,
            "updated_date": event.timestamp,
            "version": event.version,
            "last_event_id": event.event_id,
        }
    raise ValueError(f"orders cannot apply {event.event_type}")


def fold_orders(current: Mapping[str, Row], events: Sequence[EventEnvelope]) -> FoldResult:
    """Fold Order events onto current order rows: (changed rows, applied, skipped, errors)."""
    return fold(current, events, apply_order_event)
