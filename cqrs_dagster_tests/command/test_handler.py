"""CommandHandler over a real SqliteWriteStore file.

Covers: each command type (state, result body, outbox event); CreateOrder for a missing customer
raises AggregateNotFound and writes nothing; a replayed commandId returns the original result
(replayed=True) and writes nothing, also when the replay raced the original (lookup before the
original committed); expectedVersion honoured (stale -> VersionConflict, nothing written); event
envelopes carry causationId = commandId, the propagated correlationId, metadata userId/source, a
UUIDv7 eventId and the handler clock's timestamp.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cqrs_dagster.command.handler import CommandHandler, CommandResult
from cqrs_dagster.command.writestore.sqlite import SqliteWriteStore
from cqrs_dagster.domain.commands import parse_command
from cqrs_dagster.domain.errors import (
    AggregateNotFound,
    AlreadyExists,
    InvalidTransition,
    VersionConflict,
)
from cqrs_dagster.domain.events import (
    CUSTOMER,
    CUSTOMER_REGISTERED,
    CUSTOMER_UPDATED,
    ORDER,
    ORDER_CREATED,
    ORDER_UPDATED,
    EventEnvelope,
)

NOW = datetime(2026, 11, 26, 8, 0, 0, 250000, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteWriteStore]:
    s = SqliteWriteStore(tmp_path / "write.sqlite")
    yield s
    s.close()


@pytest.fixture
def handler(store: SqliteWriteStore) -> CommandHandler:
    return CommandHandler(store, clock=lambda: NOW, source="test-api")


def run(handler: CommandHandler, user: str = "alice", **raw: Any) -> CommandResult:
    return handler.handle(parse_command(raw), user_id=user)


def outbox(store: SqliteWriteStore) -> list[EventEnvelope]:
    return store.pending_events(1000)


def register(handler: CommandHandler, customer_id: str = "c1") -> CommandResult:
    return run(
        handler,
        type="RegisterCustomer",
        customerId=customer_id,
        name="Ada",
        email="ada@example.com",
        commandId=f"reg-{customer_id}",
    )


def place(handler: CommandHandler, order_id: str = "o1", **extra: Any) -> CommandResult:
    return run(
        handler,
        type="CreateOrder",
        orderId=order_id,
        customerId="c1",
        items=[
            {"sku": "A", "quantity": 3, "unitPrice": "0.10"},
            {"sku": "B", "quantity": 1, "unitPrice": "19.99"},
        ],
        **extra,
    )


# -- each command type ----------------------------------------------------------------------------


def test_register_customer_writes_state_result_and_event(
    handler: CommandHandler, store: SqliteWriteStore
) -> None:
    result = register(handler)
    assert not result.replayed
    assert result.body["aggregateType"] == CUSTOMER and result.body["version"] == 1
    assert result.body["consistencyToken"] == "Customer:c1:1"
    stored = store.load(CUSTOMER, "c1")
    assert stored is not None and stored.version == 1
    assert stored.state == result.body["state"]
    assert stored.state["email"] == "ada@example.com"
    (event,) = outbox(store)
    assert event.event_type == CUSTOMER_REGISTERED
    assert result.body["eventIds"] == [event.event_id]
    assert store.command_result("reg-c1") == result.body


def test_update_customer_bumps_version_and_records_changes(
    handler: CommandHandler, store: SqliteWriteStore
) -> None:
    register(handler)
    result = run(handler, type="UpdateCustomer", customerId="c1", email="ada@new.io")
    assert result.body["version"] == 2
    stored = store.load(CUSTOMER, "c1")
    assert stored is not None and stored.state["email"] == "ada@new.io"
    assert stored.state["name"] == "Ada"
    event = outbox(store)[-1]
    assert event.event_type == CUSTOMER_UPDATED and event.version == 2
    assert event.data == {"customerId": "c1", "email": "ada@new.io"}


def test_create_order_records_exact_totals(
    handler: CommandHandler, store: SqliteWriteStore
) -> None:
    register(handler)
    result = place(handler)
    assert result.body["aggregateType"] == ORDER and result.body["version"] == 1
    stored = store.load(ORDER, "o1")
    assert stored is not None
    assert stored.state["totalAmount"] == "20.29"
    assert stored.state["itemCount"] == 4
    assert stored.state["status"] == "Created"
    event = outbox(store)[-1]
    assert event.event_type == ORDER_CREATED
    assert event.data["items"][0] == {"sku": "A", "quantity": 3, "unitPrice": "0.10"}


def test_status_updates_and_cancel_walk_the_lifecycle(
    handler: CommandHandler, store: SqliteWriteStore
) -> None:
    register(handler)
    place(handler)
    paid = run(handler, type="UpdateOrderStatus", orderId="o1", status="Paid")
    cancelled = run(handler, type="CancelOrder", orderId="o1", reason="out of stock")
    assert (paid.body["version"], cancelled.body["version"]) == (2, 3)
    stored = store.load(ORDER, "o1")
    assert stored is not None and stored.state["status"] == "Cancelled"
    updates = [e for e in outbox(store) if e.event_type == ORDER_UPDATED]
    assert [(e.data["previousStatus"], e.data["status"]) for e in updates] == [
        ("Created", "Paid"),
        ("Paid", "Cancelled"),
    ]
    assert updates[-1].data["reason"] == "out of stock"
    with pytest.raises(InvalidTransition):
        run(handler, type="UpdateOrderStatus", orderId="o1", status="Shipped")
    assert len(outbox(store)) == 4


# -- refusals write nothing -----------------------------------------------------------------------


def test_create_order_for_missing_customer_is_not_found_and_writes_nothing(
    handler: CommandHandler, store: SqliteWriteStore
) -> None:
    with pytest.raises(AggregateNotFound, match="customer c1"):
        place(handler, commandId="cmd-1")
    assert store.load(ORDER, "o1") is None
    assert store.load(CUSTOMER, "c1") is None
    assert store.command_result("cmd-1") is None
    assert outbox(store) == []


def test_register_existing_customer_is_refused_and_writes_nothing(
    handler: CommandHandler, store: SqliteWriteStore
) -> None:
    register(handler)
    with pytest.raises(AlreadyExists):
        run(handler, type="RegisterCustomer", customerId="c1", name="Eve", email="e@x.io")
    stored = store.load(CUSTOMER, "c1")
    assert stored is not None and stored.state["name"] == "Ada" and stored.version == 1
    assert len(outbox(store)) == 1


# -- idempotency ----------------------------------------------------------------------------------


def test_replayed_command_id_returns_the_original_result_and_writes_nothing(
    handler: CommandHandler, store: SqliteWriteStore
) -> None:
    register(handler)
    first = place(handler, commandId="order-cmd")
    before = outbox(store)
    again = place(handler, commandId="order-cmd")
    different_payload = place(handler, order_id="o2", commandId="order-cmd")
    assert not first.replayed
    assert again.replayed and different_payload.replayed
    assert again.body == first.body == different_payload.body
    assert outbox(store) == before
    assert store.load(ORDER, "o2") is None
    stored = store.load(ORDER, "o1")
    assert stored is not None and stored.version == 1


class LateSeeingStore(SqliteWriteStore):
    """A real store whose first command-id lookup misses, as when a retry's lookup ran just
    before the original request committed (the race window between two API workers)."""

    missed = False

    def command_result(self, command_id: str) -> dict[str, Any] | None:
        if not self.missed:
            self.missed = True
            return None
        return super().command_result(command_id)


RETRIES = {
    "register": {
        "type": "RegisterCustomer",
        "customerId": "c1",
        "name": "Ada",
        "email": "ada@example.com",
        "commandId": "reg-c1",
    },
    "order-status": {
        "type": "UpdateOrderStatus",
        "orderId": "o1",
        "status": "Paid",
        "commandId": "p",
    },
}


@pytest.mark.parametrize("retry_of", sorted(RETRIES))
def test_retry_racing_its_original_replays_instead_of_failing(
    tmp_path: Path, retry_of: str
) -> None:
    """Without the re-check, the retry would decide against the already-changed aggregate and
    answer AlreadyExists / InvalidTransition for a command that in fact succeeded."""
    raw = RETRIES[retry_of]
    original = SqliteWriteStore(tmp_path / "write.sqlite")
    late = LateSeeingStore(tmp_path / "write.sqlite")
    try:
        first_handler = CommandHandler(original, clock=lambda: NOW)
        register(first_handler)  # the original of the "register" retry
        place(first_handler)
        if retry_of == "order-status":
            run(first_handler, **raw)
        recorded = original.command_result(raw["commandId"])
        before = outbox(original)

        retried = run(CommandHandler(late, clock=lambda: NOW), **raw)

        assert late.missed
        assert retried.replayed
        assert recorded is not None and retried.body == recorded
        assert outbox(original) == before
    finally:
        late.close()
        original.close()


# -- expectedVersion ------------------------------------------------------------------------------


def test_expected_version_is_honoured(handler: CommandHandler, store: SqliteWriteStore) -> None:
    register(handler)
    place(handler, expectedVersion=0)
    ok = run(handler, type="UpdateOrderStatus", orderId="o1", status="Paid", expectedVersion=1)
    assert ok.body["version"] == 2
    before = outbox(store)
    with pytest.raises(VersionConflict, match="at version 2, command expected 1"):
        run(
            handler,
            type="UpdateOrderStatus",
            orderId="o1",
            status="Shipped",
            expectedVersion=1,
            commandId="stale",
        )
    with pytest.raises(VersionConflict):
        run(handler, type="UpdateCustomer", customerId="c1", name="Bo", expectedVersion=0)
    assert outbox(store) == before
    assert store.command_result("stale") is None
    stored = store.load(ORDER, "o1")
    assert stored is not None and stored.state["status"] == "Paid"


# -- envelope stamping ----------------------------------------------------------------------------


def test_events_carry_causation_correlation_metadata_and_a_uuid_event_id(
    handler: CommandHandler, store: SqliteWriteStore
) -> None:
    register(handler)
    place(handler, commandId="cmd-42", correlationId="checkout-7")
    run(handler, user="bob", type="UpdateOrderStatus", orderId="o1", status="Paid", commandId="p1")
    _, created, paid = outbox(store)

    assert created.causation_id == "cmd-42"
    assert created.correlation_id == "checkout-7"
    assert created.metadata == {"userId": "alice", "source": "test-api"}
    assert paid.causation_id == "p1"
    assert paid.correlation_id == "p1"  # no correlationId given: the command starts its own chain
    assert paid.metadata == {"userId": "bob", "source": "test-api"}
    for event in (created, paid):
        assert uuid.UUID(event.event_id).version == 7
        assert event.timestamp == NOW
    assert created.event_id != paid.event_id


@pytest.mark.parametrize("batched", [False, True], ids=["handle", "handle_batch"])
def test_command_without_id_gets_a_generated_one_that_is_not_recorded(
    handler: CommandHandler, store: SqliteWriteStore, batched: bool
) -> None:
    """The events carry the server-made id; no result is recorded under it (no client holds it
    to retry with), while a client's commandId is recorded in the same batch."""
    register(handler)
    update = parse_command({"type": "UpdateCustomer", "customerId": "c1", "name": "Bo"})
    again = parse_command({"type": "UpdateCustomer", "customerId": "c1", "name": "Cy"})
    keyed = parse_command(
        {"type": "UpdateCustomer", "customerId": "c1", "name": "Di", "commandId": "k-1"}
    )
    if batched:
        outcomes = handler.handle_batch([(update, "u"), (again, "u"), (keyed, "u")])
        assert all(isinstance(o, CommandResult) for o in outcomes)
        results = [o for o in outcomes if isinstance(o, CommandResult)]
    else:
        results = [handler.handle(c) for c in (update, again, keyed)]
    events = outbox(store)[-3:]
    assert [e.version for e in events] == [2, 3, 4]
    for event in events[:2]:
        assert uuid.UUID(event.causation_id).version == 7
        assert event.correlation_id == event.causation_id
        assert store.command_result(event.causation_id) is None
    assert events[0].causation_id != events[1].causation_id
    assert events[2].causation_id == "k-1"
    assert store.command_result("k-1") == results[2].body
    conn = sqlite3.connect(store.path)
    try:
        rows = conn.execute("SELECT command_id FROM commands ORDER BY 1").fetchall()
        assert rows == [("k-1",), ("reg-c1",)]  # register() sends its own commandId
    finally:
        conn.close()


def test_a_subclass_of_a_command_type_is_decided_as_its_base(
    handler: CommandHandler, store: SqliteWriteStore
) -> None:
    """The handler dispatches on the exact type; a subclass takes the isinstance fallback, and
    its aggregates (not prefetched in a batch) are loaded when it is decided."""
    from cqrs_dagster.domain.commands import CreateOrder, RegisterCustomer

    class ImportedCustomer(RegisterCustomer):
        pass

    class ImportedOrder(CreateOrder):
        pass

    customer = ImportedCustomer(
        type="RegisterCustomer", customerId="c9", name="Ada", email="a@b.co"
    )
    assert handler.handle(customer).body["version"] == 1
    items = [{"sku": "tea", "quantity": 1, "unitPrice": "2.00"}]
    order = ImportedOrder(type="CreateOrder", orderId="o9", customerId="c9", items=items)
    (created,) = handler.handle_batch([(order, "alice")])
    assert isinstance(created, CommandResult) and created.body["state"]["customerId"] == "c9"
    assert [(e.aggregate_id, e.version) for e in outbox(store)] == [("c9", 1), ("o9", 1)]
