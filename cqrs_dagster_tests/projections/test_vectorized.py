"""The vectorized paths give exactly what the Python paths give.

- Silver: ``silver.fold_batch`` (clean keys in DuckDB, the others through the Python fold) equals
  the Python fold alone on arbitrary streams: duplicates, stale and out-of-order versions, gaps,
  OrderCreated for existing keys, updates of unknown keys, invalid data of every kind, with and
  without current rows.
- Ingest: a body the vectorized decoder takes (``fast``) is one ``parse_body`` accepts, with the
  same columns; odd bodies (old schema versions, bad types, invalid JSON or UTF-8) are left to it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from cqrs_dagster.domain.events import EnvelopeError, EventEnvelope
from cqrs_dagster.eventbus.port import ReceivedEvent
from cqrs_dagster.projections.engines import DuckDBEngine
from cqrs_dagster.projections.engines.duckdb.decode import decode_bodies
from cqrs_dagster.projections.raw_ingest import _row, parse_body
from cqrs_dagster.projections.schemas import CUSTOMERS, ORDERS, RAW_EVENTS_SCHEMA, SCHEMAS
from cqrs_dagster.projections.silver import RAW_COLUMNS, SPECS, SilverSpec, fold_batch

T0 = datetime(2026, 11, 20, 23, 59, 59, tzinfo=UTC)
KEYS = ["k1", "k2", "k3", "k4"]

ORDER_DATA = [
    {"customerId": "c1", "items": [{"sku": "a", "quantity": 2, "unitPrice": "5.00"}],
     "totalAmount": "10.00", "itemCount": 2, "status": "Created"},
    {"customerId": "c2", "items": [{"sku": "é", "quantity": 1, "unitPrice": 1.5}],
     "totalAmount": "1.5", "itemCount": 1, "status": "Created"},
    {"customerId": "", "items": [], "totalAmount": "1.00", "itemCount": 1, "status": "Created"},
    {"customerId": "c3", "items": [], "totalAmount": "1.001", "itemCount": 1},
    {"customerId": "c3", "items": [], "totalAmount": 7, "itemCount": 1, "status": "Created"},
    {"customerId": "c3", "items": "x", "totalAmount": "1.00", "itemCount": 1, "status": "X"},
    {"customerId": "c3", "items": [], "totalAmount": "1.00", "itemCount": True, "status": "X"},
    {"customerId": 5, "items": [], "totalAmount": "-1.00", "itemCount": 1, "status": "Created"},
    {"customerId": "c4", "items": [1.0e16], "totalAmount": " 2.50", "itemCount": 3,
     "status": None},
    {"status": "Paid"},
    {"status": "Lost"},
    {"status": 3},
    {},
]  # fmt: skip
CUSTOMER_DATA = [
    {"name": "Ada", "email": "ada@x.io"},
    {"name": "Bob"},
    {"email": "b@x.io"},
    {},
    {"name": ""},
    {"name": None},
    {"name": 5, "email": "x@y.z"},
    {"name": "Ünï", "email": "u@x.io", "extra": [1, 2]},
]
ORDER_TYPES = ["OrderCreated", "OrderUpdated"]
CUSTOMER_TYPES = ["CustomerRegistered", "CustomerUpdated"]


def raw_table(events: list[EventEnvelope]) -> pa.Table:
    rows = []
    for i, event in enumerate(events):
        msg = ReceivedEvent(0, i, str(i), event.timestamp, event.aggregate_id, b"")
        rows.append(_row(event, msg, event.timestamp, i))
    return pa.Table.from_pylist(rows, schema=RAW_EVENTS_SCHEMA).select(RAW_COLUMNS)


@st.composite
def streams(draw: st.DrawFn, types: list[str], datas: list[dict[str, Any]]) -> list[EventEnvelope]:
    n = draw(st.integers(0, 14))
    out = []
    for i in range(n):
        kind = draw(st.sampled_from(types))
        if kind in ("OrderCreated", "CustomerRegistered"):
            version = draw(st.sampled_from([1, 1, 2, 3]))
        else:
            version = draw(st.integers(1, 6))
        out.append(
            EventEnvelope(
                event_id=f"e{i}",
                event_type=kind,
                aggregate_id=draw(st.sampled_from(KEYS)),
                aggregate_type="X",
                version=version,
                timestamp=T0 + timedelta(seconds=draw(st.integers(0, 5))),
                correlation_id="c",
                causation_id="c",
                data=draw(st.sampled_from(datas)),
            )
        )
    return out


def current_of(spec: SilverSpec, seed: list[EventEnvelope], keep: list[bool]) -> pa.Table:
    """Current rows: what the Python fold makes of ``seed``, for some of its keys."""
    rows = spec.fold({}, seed).rows
    kept = [row for (key, row), k in zip(sorted(rows.items()), keep, strict=False) if k]
    return pa.Table.from_pylist(kept, schema=SCHEMAS[spec.table])


def check_same(spec: SilverSpec, current: pa.Table, events: list[EventEnvelope]) -> None:
    mine = raw_table(events)
    fast, result, _ = fold_batch(spec, DuckDBEngine(), mine, current)
    expected = spec.fold({r[spec.key]: r for r in current.to_pylist()}, events)
    got = {r[spec.key]: r for t in fast for r in t.to_pylist()}
    assert not set(got) & set(result.rows)
    got.update(result.rows)
    assert got == expected.rows
    assert (result.applied, result.skipped) == (expected.applied, expected.skipped)
    errors = sorted((e.event.event_id, e.reason) for e in result.errors)
    assert errors == sorted((e.event.event_id, e.reason) for e in expected.errors)


@settings(max_examples=300, deadline=None)
@given(
    seed=streams(ORDER_TYPES, ORDER_DATA[:2] + ORDER_DATA[9:10]),
    keep=st.lists(st.booleans(), min_size=4, max_size=4),
    events=streams(ORDER_TYPES, ORDER_DATA),
)
def test_orders_vectorized_equals_python_fold(
    seed: list[EventEnvelope], keep: list[bool], events: list[EventEnvelope]
) -> None:
    spec = SPECS[ORDERS]
    check_same(spec, current_of(spec, seed, keep), events)


@settings(max_examples=300, deadline=None)
@given(
    seed=streams(CUSTOMER_TYPES, CUSTOMER_DATA[:3]),
    keep=st.lists(st.booleans(), min_size=4, max_size=4),
    events=streams(CUSTOMER_TYPES, CUSTOMER_DATA),
)
def test_customers_vectorized_equals_python_fold(
    seed: list[EventEnvelope], keep: list[bool], events: list[EventEnvelope]
) -> None:
    spec = SPECS[CUSTOMERS]
    check_same(spec, current_of(spec, seed, keep), events)


def test_a_clean_batch_is_folded_vectorized() -> None:
    """The common case really takes the vectorized path (no key left to the Python fold)."""
    created = EventEnvelope("e1", "OrderCreated", "o1", "Order", 1, T0, "c", "c", ORDER_DATA[0])
    paid = EventEnvelope("e2", "OrderUpdated", "o1", "Order", 2, T0, "c", "c", ORDER_DATA[9])
    fast, result, folded = fold_batch(
        SPECS[ORDERS], DuckDBEngine(), raw_table([created, paid]), SCHEMAS[ORDERS].empty_table()
    )
    assert folded == [] and result.applied == 2
    assert [(r["order_id"], r["status"], r["version"]) for r in fast[0].to_pylist()] == [
        ("o1", "Paid", 2)
    ]


CANONICAL = {
    "eventId": "e-1",
    "eventType": "OrderUpdated",
    "aggregateId": "o-1",
    "aggregateType": "Order",
    "version": 2,
    "timestamp": "2026-11-20T23:59:59.123456Z",
    "correlationId": "corr",
    "causationId": "cmd",
    "data": {"orderId": "o-1", "status": "Paid", "note": '\u00e9\u0000"', "n": [1, 2.5]},
    "metadata": {"userId": None, "source": "api"},
    "schemaVersion": 1,
}
MUTATIONS: list[tuple[str, Any]] = [
    ("eventId", ""), ("eventId", 5), ("eventId", "e\\u00e9"), ("eventType", "Nope"),
    ("aggregateId", None), ("version", 0), ("version", 2.0), ("version", True), ("version", "2"),
    ("timestamp", "2026-11-20T23:59:59"), ("timestamp", "2026-11-20T23:59:59+02:00"),
    ("timestamp", "2026-11-20T23:59:59.5Z"), ("timestamp", "yesterday"), ("timestamp", 5),
    ("correlationId", None), ("correlationId", 7), ("causationId", ""), ("data", []),
    ("data", None), ("metadata", None), ("metadata", "x"), ("schemaVersion", 0),
    ("schemaVersion", 2), ("schemaVersion", None), ("extra", {"a": 1}),
]  # fmt: skip


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    body: dict[str, Any] = dict(CANONICAL)
    for key, value in draw(st.lists(st.sampled_from(MUTATIONS), max_size=3)):
        body[key] = value
    for key in draw(st.lists(st.sampled_from(sorted(CANONICAL)), max_size=2)):
        body.pop(key, None)
    raw = orjson.dumps(body)
    cut = draw(st.sampled_from([None, None, None, 5, -1]))
    if cut is not None:
        raw = raw[:cut]
    if draw(st.integers(0, 9)) == 0:
        raw = b"\xff" + raw
    return raw


@settings(max_examples=200, deadline=None)
@given(batch=st.lists(bodies(), min_size=1, max_size=8))
def test_decoded_bodies_equal_parse_body(batch: list[bytes]) -> None:
    decoded = decode_bodies(batch).to_pylist()
    assert [d["i"] for d in decoded] == list(range(len(batch)))
    for body, row in zip(batch, decoded, strict=True):
        if not row["fast"]:
            continue
        event = parse_body(body)  # must not raise: the fast path only takes valid envelopes
        msg = ReceivedEvent(0, 0, "0", T0, None, body)
        expected = _row(event, msg, T0, 0)
        for name in ("data", "metadata"):
            assert orjson.loads(row.pop(name)) == orjson.loads(expected[name])
        assert {k: row[k] for k in row if k not in ("i", "fast")} == {
            k: expected[k] for k in row if k not in ("i", "fast")
        }


def test_canonical_body_is_decoded_vectorized_and_poison_is_not() -> None:
    good = orjson.dumps(CANONICAL)
    rows = decode_bodies([good, b"{not json", b"\xff\xfe", b"[1]"]).to_pylist()
    assert [r["fast"] for r in rows] == [True, False, False, False]
    for body in (b"{not json", b"\xff\xfe", b"[1]"):
        try:
            parse_body(body)
        except EnvelopeError:
            continue
        raise AssertionError(f"{body!r} should be rejected")


# JSON values as orjson reads them back (strings of any code point but lone surrogates, 64-bit
# integers, finite floats): items of any shape, for the items text the vectorized orders fold
# writes with DuckDB (where it may) and the Python fold with orjson.
JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=["Cs"]), max_size=8)
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)
ITEMS = st.fixed_dictionaries(
    {"sku": JSON_LEAVES, "quantity": JSON_LEAVES, "unitPrice": JSON_LEAVES},
    optional={"note": JSON_VALUES},
)


def created(oid: str, items: Any) -> EventEnvelope:
    data = {"customerId": "c1", "items": items, "totalAmount": "1.00", "itemCount": 1,
            "status": "Created"}  # fmt: skip
    return EventEnvelope(f"e-{oid}", "OrderCreated", oid, "Order", 1, T0, "c", "c", data)


@settings(max_examples=300, deadline=None)
@given(items=st.lists(ITEMS | JSON_VALUES, max_size=3), paid=st.booleans())
def test_items_text_is_orjsons_on_both_fold_paths(items: list[Any], paid: bool) -> None:
    events = [created("o1", items)]
    if paid:
        events.append(EventEnvelope("e2", "OrderUpdated", "o1", "Order", 2, T0, "c", "c",
                                    {"status": "Paid"}))  # fmt: skip
    check_same(SPECS[ORDERS], SCHEMAS[ORDERS].empty_table(), events)


def test_domain_items_are_folded_vectorized_and_odd_ones_by_python() -> None:
    plain = [
        {"sku": 'é😀 "q" \\ / \t\n\u0000 [x]', "quantity": 2, "unitPrice": "1.25"},
        {"sku": "B", "quantity": 18446744073709551615, "unitPrice": "0.10", "extra": None},
    ]
    odd = [
        [{"sku": "A", "quantity": 1, "unitPrice": 1.25}],  # a float
        [{"sku": "a\u001fb", "quantity": 1, "unitPrice": "1"}],  # a letter escape
        [{"sku": "A", "quantity": 1}],  # no unitPrice
        [{"sku": {"id": "A"}, "quantity": 1, "unitPrice": "1"}],  # an object in a value
        [{"sku": "{", "quantity": 1, "unitPrice": "1"}],  # a '{' in a string (conservative)
    ]
    events = [created(f"o{i}", items) for i, items in enumerate([plain, *odd])]
    rows, applied, others = DuckDBEngine().fold(
        ORDERS, raw_table(events), SCHEMAS[ORDERS].empty_table()
    )
    assert rows["order_id"].to_pylist() == ["o0"] and applied == 1
    assert rows["items"].to_pylist() == [orjson.dumps(plain).decode()]
    assert sorted(others.to_pylist()) == [f"o{i}" for i in range(1, len(odd) + 1)]
    check_same(SPECS[ORDERS], SCHEMAS[ORDERS].empty_table(), events)


def test_a_repeated_key_in_raw_items_text_is_left_to_the_python_fold() -> None:
    """raw_events rows written before repeated keys were sent to the Python path may hold one in
    ``data``: DuckDB would write both back, orjson the last; the Python fold writes that row."""
    event = created("o1", [{"sku": "A", "quantity": 3, "unitPrice": "1.00"}])
    raw = raw_table([event])
    text = raw["data"][0].as_py().replace('"quantity":3', '"quantity":1,"quantity":3')
    raw = raw.set_column(raw.schema.get_field_index("data"), "data", pa.array([text]))
    rows, _, others = DuckDBEngine().fold(ORDERS, raw, SCHEMAS[ORDERS].empty_table())
    assert rows.num_rows == 0 and others.to_pylist() == ["o1"]
    _, result, _ = fold_batch(SPECS[ORDERS], DuckDBEngine(), raw, SCHEMAS[ORDERS].empty_table())
    assert result.rows["o1"]["items"] == '[{"sku":"A","quantity":3,"unitPrice":"1.00"}]'
