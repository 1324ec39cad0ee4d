"""The customers projection (silver): one row per customer, folded from Customer events. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cqrs_dagster.domain.events import CUSTOMER_REGISTERED, CUSTOMER_UPDATED, EventEnvelope

from .folding import FoldResult, Row, fold

EVENT_TYPES = frozenset({CUSTOMER_REGISTERED, CUSTOMER_UPDATED})


def _text(value: object, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")
    return value


def apply_customer_event(row: Row | None, event: EventEnvelope) -> Row:
    """The customer row after ``event`` (raises for an event the projection cannot apply)."""
    data = event.data
    if event.event_type == CUSTOMER_REGISTERED:
        if row is not None:
            raise ValueError(
                f"CustomerRegistered v{event.version} for existing customer {event.aggregate_id}"
            )
        return {
            "customer_id": event.aggregate_id,
            "name": _text(data["name"], "name"),
            "email": _text(data["email"], "email"),
            "created_date": event.timestamp,
            "updated_date": event.timestamp,
            "version": event.version,
            "last_event_id": event.event_id,
        }
    if event.event_type == CUSTOMER_UPDATED:
        if row is None:
            raise ValueError(f"CustomerUpdated for unknown customer {event.aggregate_id}")
        new = dict(row)
        for key in ("name", "email"):
            if key in data:
                new[key] = _text(data[key], key)
        new.update(
            updated_date=event.timestamp, version=event.version, last_event_id=event.event_id
        )
        return new
    raise ValueError(f"customers cannot apply {event.event_type}")


def fold_customers(current: Mapping[str, Row], events: Sequence[EventEnvelope]) -> FoldResult:
    """Fold Customer events onto current customer rows: (changed rows, applied, skipped, errors)."""
    return fold(current, events, apply_customer_event)
