"""The Customer aggregate: decide (command -> events) and evolve (event -> state). Pure."""

from __future__ import annotations

from .commands import RegisterCustomer, UpdateCustomer
from .decision import CommandContext, Decision, State
from .errors import AggregateNotFound, AlreadyExists
from .events import CUSTOMER, CUSTOMER_REGISTERED, CUSTOMER_UPDATED, EventEnvelope, utc_iso
from .ids import uuid7


def evolve(state: State | None, event: EventEnvelope) -> State:
    """Apply one customer event to the state (None before the first event)."""
    data = event.data
    if event.event_type == CUSTOMER_REGISTERED:
        return {
            "customerId": event.aggregate_id,
            "name": data["name"],
            "email": data["email"],
            "createdAt": (at := utc_iso(event.timestamp)),
            "updatedAt": at,
            "version": event.version,
        }
    if state is None:
        raise ValueError(f"{event.event_type} before CustomerRegistered for {event.aggregate_id}")
    if event.event_type == CUSTOMER_UPDATED:
        new = dict(state)
        for key in ("name", "email"):
            if key in data:
                new[key] = data[key]
        new["updatedAt"] = utc_iso(event.timestamp)
        new["version"] = event.version
        return new
    raise ValueError(f"unknown customer event type {event.event_type}")


def register(command: RegisterCustomer, current: State | None, ctx: CommandContext) -> Decision:
    customer_id = command.customerId or uuid7()
    if current is not None:
        raise AlreadyExists(f"customer {customer_id} already exists")
    event = ctx.event(
        CUSTOMER_REGISTERED,
        CUSTOMER,
        customer_id,
        1,
        {"customerId": customer_id, "name": command.name, "email": command.email},
    )
    return Decision(CUSTOMER, customer_id, 0, (event,), evolve(None, event))


def update(command: UpdateCustomer, current: State | None, ctx: CommandContext) -> Decision:
    if current is None:
        raise AggregateNotFound(f"customer {command.customerId} does not exist")
    changes = {
        k: v
        for k, v in (("name", command.name), ("email", command.email))
        if v is not None and v != current.get(k)
    }
    version = int(current["version"])
    event = ctx.event(
        CUSTOMER_UPDATED,
        CUSTOMER,
        command.customerId,
        version + 1,
        {"customerId": command.customerId, **changes},
    )
    return Decision(CUSTOMER, command.customerId, version, (event,), evolve(current, event))
