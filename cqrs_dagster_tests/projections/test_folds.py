"""The pure silver folds: any interleaving / duplication of events, in any batch split, gives the
clean single-pass rows; older or duplicate events never overwrite newer; rejected events become
errors without stopping the others."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from cqrs_dagster.domain.events import EventEnvelope
from cqrs_dagster.projections.customers import fold_customers
from cqrs_dagster.projections.folding import FoldResult
from cqrs_dagster.projections.orders import fold_orders

from .scenario import build

SC = build(seed=3, customers=4, orders=12)
ORDER_EVENTS = [e for e in SC.events if e.aggregate_type == "Order"]
CUSTOMER_EVENTS = [e for e in SC.events if e.aggregate_type == "Customer"]
Fold = Callable[[Mapping[str, dict[str, Any]], Sequence[EventEnvelope]], FoldResult]


def fold_in_batches(fold: Fold, events: Sequence[EventEnvelope], cuts: list[int]) -> dict[str, Any]:
    state: dict[str, dict[str, Any]] = {}
    bounds = [0, *sorted(c % (len(events) + 1) for c in cuts), len(events)]
    for lo, hi in itertools.pairwise(bounds):
        result = fold(state, events[lo:hi])
        assert not result.errors
        state.update(result.rows)
    return state


@st.composite
def deliveries(draw: st.DrawFn, events: list[EventEnvelope]) -> list[EventEnvelope]:
    """Events interleaved across aggregates (per-aggregate order kept) with re-deliveries."""
    streams: dict[str, list[EventEnvelope]] = {}
    for e in events:
        streams.setdefault(e.aggregate_id, []).append(e)
    pos = dict.fromkeys(streams, 0)
    out: list[EventEnvelope] = []
    while any(pos[k] < len(v) for k, v in streams.items()):
        live = sorted(k for k in streams if pos[k] < len(streams[k]))
        key = draw(st.sampled_from(live))
        out.append(streams[key][pos[key]])
        pos[key] += 1
        if draw(st.integers(0, 5)) == 0:  # redeliver something already delivered
            out.append(draw(st.sampled_from(out)))
    return out


@settings(max_examples=60, deadline=None)
@given(data=st.data(), cuts=st.lists(st.integers(0, 10_000), max_size=6))
def test_orders_any_interleaving_duplication_and_split_equals_clean_pass(
    data: st.DataObject, cuts: list[int]
) -> None:
    clean = fold_orders({}, ORDER_EVENTS)
    delivered = data.draw(deliveries(ORDER_EVENTS))
    assert fold_in_batches(fold_orders, delivered, cuts) == clean.rows
    assert clean.applied == len(ORDER_EVENTS) and clean.skipped == 0


@settings(max_examples=40, deadline=None)
@given(data=st.data(), cuts=st.lists(st.integers(0, 10_000), max_size=4))
def test_customers_any_interleaving_duplication_and_split_equals_clean_pass(
    data: st.DataObject, cuts: list[int]
) -> None:
    clean = fold_customers({}, CUSTOMER_EVENTS)
    delivered = data.draw(deliveries(CUSTOMER_EVENTS))
    assert fold_in_batches(fold_customers, delivered, cuts) == clean.rows


@settings(max_examples=30, deadline=None)
@given(older=st.lists(st.sampled_from(ORDER_EVENTS), min_size=1, max_size=20))
def test_older_or_duplicate_events_never_overwrite_newer(older: list[EventEnvelope]) -> None:
    state = fold_orders({}, ORDER_EVENTS).rows
    again = fold_orders(state, older)
    assert again.rows == {} and again.applied == 0 and again.skipped == len(older)


def test_rows_match_the_domain_state() -> None:
    rows = fold_orders({}, ORDER_EVENTS).rows
    for oid, state in SC.orders.items():
        assert rows[oid]["status"] == state["status"]
        assert rows[oid]["version"] == state["version"]
        assert rows[oid]["total_amount"] == Decimal(state["totalAmount"])
    names = {k: v["name"] for k, v in fold_customers({}, CUSTOMER_EVENTS).rows.items()}
    assert names == {k: v["name"] for k, v in SC.customers.items()}


def test_bad_events_become_errors_and_the_others_apply() -> None:
    created = ORDER_EVENTS[0]
    unknown = replace(ORDER_EVENTS[1], aggregate_id="nope", event_type="OrderUpdated", version=2)
    bad_money = replace(
        created, aggregate_id="bad", event_id="x1", data={**created.data, "totalAmount": "abc"}
    )
    bad_status = replace(unknown, aggregate_id=created.aggregate_id, data={"status": "Lost"})
    result = fold_orders({}, [unknown, bad_money, created, bad_status])
    assert [e.event.event_id for e in result.errors] == [
        unknown.event_id,
        bad_money.event_id,
        bad_status.event_id,
    ]
    assert "unknown order" in result.errors[0].reason
    assert list(result.rows) == [created.aggregate_id] and result.applied == 1
    update = replace(
        CUSTOMER_EVENTS[0], event_type="CustomerUpdated", aggregate_id="ghost", version=2
    )
    assert "unknown customer" in fold_customers({}, [update]).errors[0].reason
