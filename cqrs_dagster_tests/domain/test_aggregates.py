"""The Order and Customer aggregates (pure decide/evolve), checked with hypothesis.

Covers: order totals are the exact decimal sum (checked against independent Fraction arithmetic),
item count is the sum of quantities, money in events and state is always a two-decimal string and
no float appears anywhere; every random sequence of status commands follows only the allowed
transitions, leaves state untouched when refused, and yields versions 1, 2, 3... without gaps;
replaying the events through ``evolve`` rebuilds the same state; customer register/update;
envelope stamping (causation, correlation, metadata) and JSON round-trip of the events.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cqrs_dagster.domain import customer, order
from cqrs_dagster.domain.commands import (
    CancelOrder,
    CreateOrder,
    RegisterCustomer,
    UpdateCustomer,
    UpdateOrderStatus,
)
from cqrs_dagster.domain.decision import CommandContext, State
from cqrs_dagster.domain.errors import AggregateNotFound, AlreadyExists, InvalidTransition
from cqrs_dagster.domain.events import (
    CUSTOMER_REGISTERED,
    CUSTOMER_UPDATED,
    ORDER_CREATED,
    ORDER_UPDATED,
    EventEnvelope,
)

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
ALLOWED = {
    ("Created", "Paid"),
    ("Paid", "Shipped"),
    ("Shipped", "Delivered"),
    ("Created", "Cancelled"),
    ("Paid", "Cancelled"),
}
STATUSES = ["Created", "Paid", "Shipped", "Delivered", "Cancelled"]
CUSTOMER_STATE: State = {"customerId": "c1", "name": "N", "email": "n@x.io", "version": 1}


def ctx(n: int = 0, *, correlation: str = "corr-1") -> CommandContext:
    return CommandContext(
        command_id=f"cmd-{n}",
        correlation_id=correlation,
        now=T0 + timedelta(seconds=n),
        user_id="alice",
        source="tests",
    )


def create_order(items: list[dict[str, Any]], order_id: str | None = "o1") -> CreateOrder:
    return CreateOrder.model_validate(
        {"type": "CreateOrder", "customerId": "c1", "orderId": order_id, "items": items}
    )


def walk(value: Any) -> Iterator[Any]:
    """Every scalar inside nested dicts and lists."""
    if isinstance(value, dict):
        for v in value.values():
            yield from walk(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from walk(v)
    else:
        yield value


def is_money_string(value: object) -> bool:
    if not isinstance(value, str) or value.startswith("-"):
        return False
    whole, _, cents = value.partition(".")
    return whole.isdigit() and len(cents) == 2 and cents.isdigit()


# Prices as whole cents, so the expected value is computed without Decimal at all.
LINES = st.lists(
    st.tuples(
        st.integers(1, 10_000),  # quantity
        st.integers(0, 10**14 - 1),  # unit price in cents (< 1e12 units)
        st.integers(0, 2),  # how many trailing decimal digits the client sends
    ),
    min_size=1,
    max_size=100,
)


def price_text(cents: int, places: int) -> str:
    if places == 0 and cents % 100 == 0:
        return str(cents // 100)
    if places == 1 and cents % 10 == 0:
        return f"{cents // 100}.{(cents % 100) // 10}"
    return f"{cents // 100}.{cents % 100:02d}"


# -- order totals ---------------------------------------------------------------------------------


@settings(deadline=None, max_examples=150)
@given(lines=LINES)
def test_order_total_is_the_exact_decimal_sum_and_count_the_sum_of_quantities(
    lines: list[tuple[int, int, int]],
) -> None:
    command = create_order(
        [
            {"sku": f"S{i}", "quantity": q, "unitPrice": price_text(c, p)}
            for i, (q, c, p) in enumerate(lines)
        ]
    )
    decision = order.create(command, None, CUSTOMER_STATE, ctx())
    (event,) = decision.events
    expected_total = sum((q * Fraction(c, 100) for q, c, _ in lines), Fraction(0))
    expected_count = sum(q for q, _, _ in lines)

    assert Fraction(event.data["totalAmount"]) == expected_total
    assert is_money_string(event.data["totalAmount"])
    assert event.data["itemCount"] == expected_count
    assert decision.state["totalAmount"] == event.data["totalAmount"]
    assert decision.state["itemCount"] == expected_count
    for sent, (q, c, _) in zip(event.data["items"], lines, strict=True):
        assert sent["quantity"] == q
        assert is_money_string(sent["unitPrice"])
        assert Fraction(sent["unitPrice"]) == Fraction(c, 100)
    everything = list(walk(event.to_dict())) + list(walk(decision.state))
    assert not any(isinstance(v, float) for v in everything)
    assert EventEnvelope.from_json(event.to_json()) == event


def test_order_totals_on_a_known_basket() -> None:
    command = create_order(
        [
            {"sku": "a", "quantity": 3, "unitPrice": "0.10"},
            {"sku": "b", "quantity": 1, "unitPrice": "0.20"},
        ]
    )
    decision = order.create(command, None, CUSTOMER_STATE, ctx())
    total, count = decision.state["totalAmount"], decision.state["itemCount"]
    assert total == "0.50"  # 0.1 * 3 + 0.2 is 0.5000000000000001 in binary floats
    assert count == 4


def test_order_for_missing_customer_or_taken_id_is_refused() -> None:
    command = create_order([{"sku": "a", "quantity": 1, "unitPrice": "1"}])
    with pytest.raises(AggregateNotFound, match="customer c1"):
        order.create(command, None, None, ctx())
    with pytest.raises(AlreadyExists, match="order o1"):
        order.create(command, {"status": "Created", "version": 1}, CUSTOMER_STATE, ctx())


def test_order_without_id_gets_a_uuid7() -> None:
    command = create_order([{"sku": "a", "quantity": 1, "unitPrice": "1"}], order_id=None)
    decision = order.create(command, None, CUSTOMER_STATE, ctx())
    assert uuid.UUID(decision.aggregate_id).version == 7


# -- order lifecycle ------------------------------------------------------------------------------

STATUS_COMMANDS = st.lists(
    st.one_of(
        st.sampled_from(STATUSES).map(lambda s: ("status", s)),
        st.sampled_from([None, "changed my mind"]).map(lambda r: ("cancel", r)),
    ),
    max_size=25,
)


@settings(deadline=None, max_examples=300)
@given(commands=STATUS_COMMANDS)
def test_random_status_commands_follow_only_allowed_transitions_with_gapless_versions(
    commands: list[tuple[str, str | None]],
) -> None:
    create = create_order([{"sku": "a", "quantity": 2, "unitPrice": "3.50"}])
    first = order.create(create, None, CUSTOMER_STATE, ctx(0))
    state, events = first.state, list(first.events)
    for n, (kind, arg) in enumerate(commands, start=1):
        before = dict(state)
        target = arg if kind == "status" else "Cancelled"
        try:
            if kind == "status":
                decision = order.update_status(
                    UpdateOrderStatus.model_validate(
                        {"type": "UpdateOrderStatus", "orderId": "o1", "status": arg}
                    ),
                    state,
                    ctx(n),
                )
            else:
                decision = order.cancel(
                    CancelOrder(type="CancelOrder", orderId="o1", reason=arg), state, ctx(n)
                )
        except InvalidTransition:
            assert (before["status"], target) not in ALLOWED
            assert state == before
            continue
        assert (before["status"], target) in ALLOWED
        assert decision.expected_version == before["version"]
        (event,) = decision.events
        assert event.event_type == ORDER_UPDATED
        assert event.data["previousStatus"] == before["status"]
        assert event.data["status"] == target
        if kind == "cancel" and arg:
            assert event.data["reason"] == arg
        state = decision.state
        events.append(event)

    assert [e.version for e in events] == list(range(1, len(events) + 1))
    assert state["version"] == len(events)
    replayed: State | None = None
    for e in events:
        replayed = order.evolve(replayed, e)
    assert replayed == state


def test_a_terminal_order_refuses_every_further_status() -> None:
    for terminal in ("Delivered", "Cancelled"):
        for target in STATUSES:
            assert not order.can_transition(terminal, target)
            with pytest.raises(InvalidTransition):
                order.change_status("o1", target, None, {"status": terminal, "version": 4}, ctx())


def test_status_change_of_missing_order_is_not_found() -> None:
    with pytest.raises(AggregateNotFound, match="order o9"):
        order.cancel(CancelOrder(type="CancelOrder", orderId="o9"), None, ctx())


def test_evolve_refuses_an_update_before_creation() -> None:
    event = ctx().event(ORDER_UPDATED, "Order", "o1", 1, {"status": "Paid"})
    with pytest.raises(ValueError, match="before OrderCreated"):
        order.evolve(None, event)


# -- customer -------------------------------------------------------------------------------------


@settings(deadline=None)
@given(
    updates=st.lists(
        st.tuples(st.none() | st.sampled_from(["Ann", "Bo", "Cy"]), st.none() | st.just("z@x.io")),
        max_size=10,
    )
)
def test_customer_updates_apply_in_order_with_gapless_versions(
    updates: list[tuple[str | None, str | None]],
) -> None:
    reg = customer.register(
        RegisterCustomer(type="RegisterCustomer", customerId="c1", name="Ann", email="a@x.io"),
        None,
        ctx(0),
    )
    assert reg.events[0].event_type == CUSTOMER_REGISTERED
    state, versions = reg.state, [1]
    name, email = "Ann", "a@x.io"
    for n, (new_name, new_email) in enumerate(updates, start=1):
        if new_name is None and new_email is None:
            continue
        d = customer.update(
            UpdateCustomer(type="UpdateCustomer", customerId="c1", name=new_name, email=new_email),
            state,
            ctx(n),
        )
        (event,) = d.events
        assert event.event_type == CUSTOMER_UPDATED
        assert d.expected_version == state["version"]
        name, email = new_name or name, new_email or email
        state = d.state
        versions.append(event.version)
        assert (state["name"], state["email"]) == (name, email)
    assert versions == list(range(1, len(versions) + 1))
    assert state["createdAt"] == "2026-11-26T12:00:00.000000Z"


def test_customer_register_twice_or_update_missing_is_refused() -> None:
    command = RegisterCustomer(type="RegisterCustomer", customerId="c1", name="A", email="a@x.io")
    with pytest.raises(AlreadyExists):
        customer.register(command, CUSTOMER_STATE, ctx())
    with pytest.raises(AggregateNotFound):
        customer.update(
            UpdateCustomer(type="UpdateCustomer", customerId="c2", name="B"), None, ctx()
        )


# -- envelope stamping ----------------------------------------------------------------------------


def test_events_are_stamped_with_command_context() -> None:
    decision = customer.register(
        RegisterCustomer(type="RegisterCustomer", name="A", email="a@x.io"),
        None,
        ctx(5, correlation="corr-xyz"),
    )
    (event,) = decision.events
    assert event.causation_id == "cmd-5"
    assert event.correlation_id == "corr-xyz"
    assert event.metadata == {"userId": "alice", "source": "tests"}
    assert event.timestamp == T0 + timedelta(seconds=5)
    assert uuid.UUID(event.event_id).version == 7
    assert event.event_type == CUSTOMER_REGISTERED and event.version == 1
    assert decision.version == 1 and decision.expected_version == 0
    assert event.aggregate_id == decision.aggregate_id == decision.state["customerId"]


def test_order_created_event_names_the_created_status() -> None:
    command = create_order([{"sku": "a", "quantity": 1, "unitPrice": "0"}])
    (event,) = order.create(command, None, CUSTOMER_STATE, ctx()).events
    assert event.event_type == ORDER_CREATED
    assert event.data["status"] == "Created"
    assert event.data["totalAmount"] == "0.00"
