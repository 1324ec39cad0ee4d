"""The Order aggregate: lifecycle Created -> Paid -> Shipped -> Delivered, or Cancelled. Pure."""

from __future__ import annotations

from decimal import Decimal

from .commands import CancelOrder, CreateOrder, UpdateOrderStatus
from .decision import CommandContext, Decision, State
from .errors import AggregateNotFound, AlreadyExists, InvalidTransition
from .events import ORDER, ORDER_CREATED, ORDER_UPDATED, EventEnvelope, utc_iso
from .ids import uuid7
from .money import CENT, money_str

TRANSITIONS: dict[str, frozenset[str]] = {
    "Created": frozenset({"Paid", "Cancelled"}),
    "Paid": frozenset({"Shipped", "Cancelled"}),
    "Shipped": frozenset({"Delivered"}),
    "Delivered": frozenset(),
    "Cancelled": frozenset(),
}


def can_transition(current: str, target: str) -> bool:
    return target in TRANSITIONS.get(current, frozenset())


def evolve(state: State | None, event: EventEnvelope) -> State:
    """Apply one order event to the state (None before the first event)."""
    data = event.data
    if event.event_type == ORDER_CREATED:
        return {
            "orderId": event.aggregate_id,
            "customerId": data["customerId"],
            "status": "Created",
            "items": [dict(item) for item in data["items"]],
            "totalAmount": data["totalAmount"],
            "itemCount": data["itemCount"],
            "createdAt": (at := utc_iso(event.timestamp)),
            "updatedAt": at,
            "version": event.version,
        }
    if state is None:
        raise ValueError(f"{event.event_type} before OrderCreated for {event.aggregate_id}")
    if event.event_type == ORDER_UPDATED:
        new = dict(state)
        new["status"] = data["status"]
        new["updatedAt"] = utc_iso(event.timestamp)
        new["version"] = event.version
        return new
    raise ValueError(f"unknown order event type {event.event_type}")


def create(
    command: CreateOrder, current: State | None, customer: State | None, ctx: CommandContext
) -> Decision:
    order_id = command.orderId or uuid7()
    if current is not None:
        raise AlreadyExists(f"order {order_id} already exists")
    if customer is None:
        raise AggregateNotFound(f"customer {command.customerId} does not exist")
    # Exact decimal total (sum of quantity x unitPrice) and item count (sum of quantities),
    # from the command's validated decimals (at most two places): never binary floats.
    items: list[dict[str, object]] = []
    total, count = Decimal(0), 0
    for i in command.items:
        price = i.unitPrice.quantize(CENT)
        items.append({"sku": i.sku, "quantity": i.quantity, "unitPrice": str(price)})
        total += price * i.quantity
        count += i.quantity
    event = ctx.event(
        ORDER_CREATED,
        ORDER,
        order_id,
        1,
        {
            "orderId": order_id,
            "customerId": command.customerId,
            "items": items,
            "totalAmount": money_str(total),
            "itemCount": count,
            "status": "Created",
        },
    )
    return Decision(ORDER, order_id, 0, (event,), evolve(None, event))


def change_status(
    order_id: str, target: str, reason: str | None, current: State | None, ctx: CommandContext
) -> Decision:
    if current is None:
        raise AggregateNotFound(f"order {order_id} does not exist")
    status = str(current["status"])
    if not can_transition(status, target):
        raise InvalidTransition(f"order {order_id} cannot go from {status} to {target}")
    version = int(current["version"])
    data: dict[str, object] = {"orderId": order_id, "previousStatus": status, "status": target}
    if reason:
        data["reason"] = reason
    event = ctx.event(ORDER_UPDATED, ORDER, order_id, version + 1, data)
    return Decision(ORDER, order_id, version, (event,), evolve(current, event))


def update_status(
    command: UpdateOrderStatus, current: State | None, ctx: CommandContext
) -> Decision:
    return change_status(command.orderId, command.status, None, current, ctx)


def cancel(command: CancelOrder, current: State | None, ctx: CommandContext) -> Decision:
    return change_status(command.orderId, "Cancelled", command.reason, current, ctx)
