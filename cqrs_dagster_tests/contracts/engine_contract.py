"""ProjectionEngine port contract: same events in, identical tables out, whichever engine computes.

Covers, for one engine:

- **Pipeline** (real ``LocalEventBus`` on a SQLite file, real Delta tables, fixed clock): one
  seeded stream with registrations, renames, orders created / updated / cancelled, DUPLICATE
  deliveries, an OUT-OF-ORDER update (version 3 before version 2), UPCASTS (``schemaVersion``
  0), POISON (invalid JSON, a non-object, an unknown eventType, an invalid envelope, a schema
  version with no upcaster or newer than the reader, fold rejections) and bodies with a REPEATED
  JSON KEY (top level, in ``data``, in an item, in ``metadata``, spelled with an escape) where
  the last value wins. Every table (raw_events, orders, customers, order_summary,
  daily_order_metrics, dead_letter_events) must equal, row for row and column for column, what a
  pure-Python model of the pipeline gives (``parse_body`` + the raw row builder, the
  ``SilverSpec`` folds, gold in Decimal), and the explicit facts are asserted too. Batches of 1
  and 7 events give the same tables as one batch (raw_events' ``ingest_seq`` numbers the
  batches' reading order: checked to be gap-free and in bus order per partition).
- **Poison only a strict parser rejects** (NaN / Infinity / out-of-range numbers, impossible
  timestamps): dead-lettered like any other poison, never ingested, never blocking the bus.
- **Port**: ``decode`` keeps order and index, depends on each body alone, never raises, flags
  every non-canonical body (old schema versions, repeated keys, odd shapes, poison) as not fast,
  and a fast row equals ``parse_body``'s (the exact ``data`` / ``metadata`` text included);
  ``fold`` folds every clean key exactly like the Python fold and leaves every key with a
  duplicate, stale or rejected event to it (its dead letters and counts come from there), with
  ``created_day`` in UTC whatever the local time zone; ``order_summary`` / ``daily_metrics``
  give the expected rows (exact decimals, half-up average, null name of an unknown customer,
  sorted) in the schemas of :mod:`cqrs_dagster.projections.schemas`; ``order_summary_whole``
  streams, from Delta tables of several files, exactly what ``order_summary`` gives for them.

Not collected itself: an engine's test module subclasses :class:`EngineContract` and supplies
``make_engine``, called once per test class (its ``request`` is class-scoped: it may ask for
session fixtures such as a server); the engine is closed after the class.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import write_deltalake

from cqrs_dagster.domain.events import (
    CUSTOMER,
    CUSTOMER_REGISTERED,
    CUSTOMER_UPDATED,
    ORDER,
    ORDER_CREATED,
    ORDER_UPDATED,
    EnvelopeError,
    EventEnvelope,
    utc_iso,
)
from cqrs_dagster.eventbus.canonical import canonical_flags
from cqrs_dagster.eventbus.local import LocalEventBus
from cqrs_dagster.eventbus.port import EventBus, OutgoingEvent, ReceivedEvent
from cqrs_dagster.projections.context import StepContext
from cqrs_dagster.projections.dead_letters import DeadLetter
from cqrs_dagster.projections.engine import ProjectionEngine
from cqrs_dagster.projections.gold import ORDER_COLUMNS
from cqrs_dagster.projections.pipeline import catch_up
from cqrs_dagster.projections.raw_ingest import _dead_letter, _row, parse_body
from cqrs_dagster.projections.schemas import (
    CUSTOMERS,
    DAILY_ORDER_METRICS,
    DAILY_ORDER_METRICS_SCHEMA,
    DEAD_LETTER_EVENTS,
    ORDER_SUMMARY,
    ORDER_SUMMARY_SCHEMA,
    ORDERS,
    RAW_EVENTS,
    RAW_EVENTS_SCHEMA,
    SCHEMAS,
)
from cqrs_dagster.projections.silver import RAW_COLUMNS, SPECS, SilverSpec, fold_batch
from cqrs_dagster.projections.tables import PARTITION_BY, TableStore

T0 = datetime(2026, 11, 20, 23, 0, tzinfo=UTC)  # minute 60 of the stream is the next UTC day
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
RUN_ID = "engine-contract"
DAY1, DAY2 = date(2026, 11, 20), date(2026, 11, 21)

Rows = list[dict[str, Any]]
Tables = dict[str, Rows]

# Each table's rows are compared sorted by this key (unique in every table).
SORT_KEY = {
    RAW_EVENTS: "event_id",
    ORDERS: "order_id",
    CUSTOMERS: "customer_id",
    ORDER_SUMMARY: "order_id",
    DAILY_ORDER_METRICS: "order_date",
    DEAD_LETTER_EVENTS: "dead_letter_id",
}


def fixed_clock() -> datetime:
    return NOW


# --------------------------------------------------------------------------------------------
# JSON bodies, including what a dict cannot say: a repeated key


class Obj(list[tuple[str | bytes, Any]]):
    """A JSON object as ordered (key, value) pairs: a key may repeat. A ``bytes`` key is written
    verbatim between the quotes (``b"st\\u0061tus"`` spells ``status`` with an escape)."""


def render(value: Any) -> bytes:
    """Compact JSON of ``value``; :class:`Obj` keeps its pairs, repeats included."""
    if isinstance(value, Obj):
        pairs = [
            (b'"' + k + b'"' if isinstance(k, bytes) else orjson.dumps(k)) + b":" + render(v)
            for k, v in value
        ]
        return b"{" + b",".join(pairs) + b"}"
    if isinstance(value, dict):
        return render(Obj(value.items()))
    if isinstance(value, list | tuple):
        return b"[" + b",".join(render(v) for v in value) + b"]"
    return orjson.dumps(value)


def at(minute: int) -> datetime:
    """The stream's time ``minute`` (with microseconds, to check they survive)."""
    return T0 + timedelta(minutes=minute, microseconds=1001 * minute)


def envelope(
    event_id: str,
    event_type: str,
    aggregate_id: str,
    version: int,
    minute: int,
    data: Any,
    *,
    metadata: Any = None,
    schema_version: int = 1,
    before: Sequence[tuple[str | bytes, Any]] = (),
    after: Sequence[tuple[str | bytes, Any]] = (),
) -> Obj:
    """An envelope as a producer writes it; ``before`` / ``after`` add (repeated) top-level
    pairs ahead of / behind its own (the last occurrence of a key is its value)."""
    kind = CUSTOMER if event_type.startswith("Customer") else ORDER
    return Obj(
        [
            *before,
            ("eventId", event_id),
            ("eventType", event_type),
            ("aggregateId", aggregate_id),
            ("aggregateType", kind),
            ("version", version),
            ("timestamp", utc_iso(at(minute))),
            ("correlationId", f"corr-{aggregate_id}"),
            ("causationId", f"cmd-{event_id}"),
            ("data", data),
            ("metadata", {"source": "contract"} if metadata is None else metadata),
            ("schemaVersion", schema_version),
            *after,
        ]
    )


def line(sku: str, quantity: int, price: str) -> dict[str, Any]:
    return {"sku": sku, "quantity": quantity, "unitPrice": price}


def order_data(customer: str, total: str, items: Any, count: int) -> dict[str, Any]:
    return {
        "customerId": customer,
        "items": items,
        "totalAmount": total,
        "itemCount": count,
        "status": "Created",
    }


def person(name: str, email: str) -> dict[str, Any]:
    return {"name": name, "email": email}


def status(value: str) -> dict[str, Any]:
    return {"status": value}


# --------------------------------------------------------------------------------------------
# The seeded stream: what the bus receives, in three sends


def msg(
    event_id: str,
    event_type: str,
    aggregate_id: str,
    version: int,
    minute: int,
    data: Any,
    **options: Any,
) -> tuple[str, bytes]:
    """(partition key, body) of an :func:`envelope`, keyed by its aggregate."""
    body = envelope(event_id, event_type, aggregate_id, version, minute, data, **options)
    return aggregate_id, render(body)


# fmt: off
def stream() -> list[list[tuple[str, bytes]]]:
    """Three sends of (partition key, body). See the module docstring for what is in it; the
    expected tables are asserted in :class:`EngineContract`."""
    reg_c1 = msg("c1-1", CUSTOMER_REGISTERED, "c1", 1, 0, person("Ada", "ada@x.io"))
    create_o1 = msg("o1-1", ORDER_CREATED, "o1", 1, 5,
                    order_data("c1", "25.50", [line("A", 2, "10.25"), line("B", 1, "5.00")], 3))
    paid_o1 = msg("o1-2", ORDER_UPDATED, "o1", 2, 10, status("Paid"))
    first = [
        reg_c1,
        msg("c2-1", CUSTOMER_REGISTERED, "c2", 1, 1, person("Bob", "bob@x.io")),
        # repeated key in data: the last name wins
        msg("c3-1", CUSTOMER_REGISTERED, "c3", 1, 2,
            Obj([("name", "Wrong"), ("email", "cy@x.io"), ("name", "Cy")])),
        ("x", b"{not json"),
        create_o1,
        msg("o2-1", ORDER_CREATED, "o2", 1, 6, order_data("c2", "0.05", [], 0)),
        # a customer that never registers: a null name in order_summary
        msg("o3-1", ORDER_CREATED, "o3", 1, 7, order_data("c9", "10.00", [line("C", 1, "10.00")], 1)),
        # repeated key in an item: the last quantity wins
        msg("o5-1", ORDER_CREATED, "o5", 1, 8, order_data(
            "c3", "6.00", [Obj([("sku", "S"), ("quantity", 1), ("unitPrice", "2.00"), ("quantity", 3)])], 3)),
        paid_o1,
    ]
    second = [
        paid_o1,  # a duplicate delivery
        msg("o2-3", ORDER_UPDATED, "o2", 3, 25, status("Shipped")),  # version 3 before version 2
        ("y", b"[1, 2]"),
        msg("tele-1", "OrderTeleported", "o1", 3, 11, status("Paid")),
        msg("o1-3", ORDER_UPDATED, "o1", 3, 20, status("Shipped")),
        msg("o2-2", ORDER_UPDATED, "o2", 2, 15, status("Paid")),
        # repeated key in metadata
        msg("o3-2", ORDER_UPDATED, "o3", 2, 30, status("Cancelled"),
            metadata=Obj([("source", "a"), ("userId", "u1"), ("source", "b")])),
        msg("ghost-2", ORDER_UPDATED, "ghost", 2, 31, status("Paid")),  # unknown order
        msg("v0-1", ORDER_UPDATED, "o2", 0, 32, status("Paid")),  # invalid envelope
    ]
    legacy = {"customerId": "c1", "items": [{"sku": "OLD", "quantity": 2, "price": "1.25"}]}
    third = [
        msg("c1-2", CUSTOMER_UPDATED, "c1", 2, 40, {"name": "Ada Lovelace"}),
        # repeated eventId whose first value is c1's registration id: reading the first value
        # would drop this event as a duplicate
        msg("c2-2", CUSTOMER_UPDATED, "c2", 2, 41, {"email": "robert@x.io"},
            before=[("eventId", "c1-1")]),
        msg("c2-3", CUSTOMER_UPDATED, "c2", 3, 42, {"name": ""}),  # rejected by the fold
        msg("o4-1", ORDER_CREATED, "o4", 1, 55, legacy, schema_version=0),  # upcast
        # repeated key in data
        msg("o5-2", ORDER_UPDATED, "o5", 2, 58, Obj([("status", "Paid"), ("status", "Cancelled")])),
        msg("o6-1", ORDER_CREATED, "o6", 1, 61, order_data("c2", "0.01", [], 0)),
        # repeated version: the first value (9) would make version 3 below a stale event
        msg("o6-2", ORDER_UPDATED, "o6", 2, 62, status("Paid"), before=[("version", 9)]),
        # repeated key, the last one spelled with a JSON escape
        msg("o6-3", ORDER_UPDATED, "o6", 3, 63, Obj([("status", "Paid"), (b"st\\u0061tus", "Shipped")])),
        msg("o7-1", ORDER_CREATED, "o7", 1, 64, order_data("c1", "12.345", [], 0)),  # rejected
        msg("o8-1", ORDER_CREATED, "o8", 1, 65, order_data("c3", "0.04", [], 0)),
        msg("o1-9", ORDER_UPDATED, "o1", 4, 66, status("Lost")),  # rejected by the fold
        msg("c8-1", CUSTOMER_REGISTERED, "c8", 1, 67, person("Old", "o@x.io"), schema_version=0),
        msg("sv2-1", ORDER_UPDATED, "o9", 2, 68, status("Paid"), schema_version=2),
        # repeated eventType whose last value is unknown: poison
        msg("flip-1", ORDER_UPDATED, "o9", 2, 69, status("Paid"),
            after=[("eventType", "OrderTeleported")]),
        create_o1,  # late duplicate deliveries
        reg_c1,
    ]
    return [first, second, third]
# fmt: on


def seeded_bus(path: Path, partitions: int) -> LocalEventBus:
    bus = LocalEventBus(path, partition_count=partitions)
    for send in stream():
        bus.send([OutgoingEvent(key, body) for key, body in send])
    return bus


# --------------------------------------------------------------------------------------------
# Reading the tables, and the pure-Python model of the pipeline


def read_all(bus: EventBus) -> list[ReceivedEvent]:
    """Every message, partition by partition, in bus order."""
    out: list[ReceivedEvent] = []
    for partition in range(bus.partition_count):
        after = -1
        while page := bus.read(partition, after, 500):
            out.extend(page)
            after = page[-1].sequence_number
    return out


def sorted_rows(table: pa.Table, name: str) -> Rows:
    return sorted(table.to_pylist(), key=lambda r: r[SORT_KEY[name]])


def read_tables(tables: TableStore) -> Tables:
    """Every table's rows (all columns), sorted by its key; a table never created is empty."""
    out: Tables = {}
    for name in SORT_KEY:
        table = tables.open(name)
        out[name] = [] if table is None else sorted_rows(table.to_pyarrow_table(), name)
    return out


def letter_row(letter: DeadLetter) -> dict[str, Any]:
    return {
        "dead_letter_id": letter.dead_letter_id,
        "stage": letter.stage,
        "partition": letter.partition,
        "sequence_number": letter.sequence_number,
        "event_id": letter.event_id,
        "event_type": letter.event_type,
        "body": letter.body,
        "reason": letter.reason,
        "run_id": RUN_ID,
        "dead_lettered_at": NOW,
        "resolved": False,
        "resolved_at": None,
    }


def summary_reference(orders: Rows, customers: Rows) -> Rows:
    names = {c["customer_id"]: c["name"] for c in customers}
    return sorted(
        [
            {
                **{k: o[k] for k in ORDER_COLUMNS},
                "customer_name": names.get(o["customer_id"]),
            }
            for o in orders
        ],
        key=lambda r: r["order_id"],
    )


def daily_reference(orders: Rows) -> Rows:
    days: dict[date, list[dict[str, Any]]] = {}
    for o in orders:
        days.setdefault(o["created_day"], []).append(o)
    out = []
    for day in sorted(days):
        revenue = sum((o["total_amount"] for o in days[day]), Decimal("0.00"))
        count = len(days[day])
        out.append(
            {
                "order_date": day,
                "order_count": count,
                "total_revenue": revenue,
                "avg_order_value": (revenue / count).quantize(Decimal("0.01"), ROUND_HALF_UP),
                "unique_customers": len({o["customer_id"] for o in days[day]}),
            }
        )
    return out


def reference(bus: EventBus) -> Tables:
    """The tables the Python path alone makes of the whole bus in one pass: ``parse_body`` and
    the raw row builder, first delivery of each event id, the SilverSpec folds, gold in
    Decimal. raw_events' ``ingest_seq`` follows the read order (partition, sequence)."""
    raw: list[tuple[EventEnvelope, dict[str, Any]]] = []
    letters: list[DeadLetter] = []
    seen: set[str] = set()
    for msg in read_all(bus):
        try:
            event = parse_body(msg.body)
        except EnvelopeError as exc:
            letters.append(_dead_letter(msg, str(exc)))
            continue
        if event.event_id not in seen:
            seen.add(event.event_id)
            raw.append((event, _row(event, msg, NOW, len(raw))))
    out: Tables = {
        RAW_EVENTS: sorted(
            pa.Table.from_pylist([r for _, r in raw], schema=RAW_EVENTS_SCHEMA).to_pylist(),
            key=lambda r: r["event_id"],
        )
    }
    for spec in SPECS.values():
        mine = [(e, r) for e, r in raw if e.event_type in spec.event_types]
        result = spec.fold({}, [e for e, _ in mine])
        rows = pa.Table.from_pylist(list(result.rows.values()), schema=SCHEMAS[spec.table])
        out[spec.table] = sorted_rows(rows, spec.table)
        where = {e.event_id: r for e, r in mine}
        for err in result.errors:
            r = where[err.event.event_id]
            letters.append(
                DeadLetter(
                    spec.table,
                    r["partition"],
                    r["sequence_number"],
                    err.event.event_id,
                    err.event.event_type,
                    err.event.to_json().decode(),
                    err.reason,
                )
            )
    out[ORDER_SUMMARY] = summary_reference(out[ORDERS], out[CUSTOMERS])
    out[DAILY_ORDER_METRICS] = daily_reference(out[ORDERS])
    out[DEAD_LETTER_EVENTS] = sorted(
        (letter_row(d) for d in letters), key=lambda r: r["dead_letter_id"]
    )
    return out


def run_pipeline(
    engine: ProjectionEngine, bus: EventBus, root: Path, batch_size: int | None
) -> Tables:
    """One catch-up pass over the whole bus into fresh tables under ``root``."""
    ctx = StepContext(TableStore(str(root)), RUN_ID, engine=engine, clock=fixed_clock)
    result = catch_up(ctx, bus, max_events=10_000, batch_size=batch_size)
    assert result.events_read == len(read_all(bus))
    return read_tables(ctx.tables)


def by_key(rows: Rows, key: str) -> dict[Any, dict[str, Any]]:
    return {r[key]: r for r in rows}


def differences(got: dict[str, Any], want: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{column: (got, wanted)} of the columns that differ (the contract module is not
    assertion-rewritten, so failures say it themselves)."""
    return {k: (got.get(k), want.get(k)) for k in sorted(set(got) | set(want)) if got.get(k) != want.get(k)}  # fmt: skip


def assert_same_tables(got: Tables, expected: Tables, what: str) -> None:
    for name in SORT_KEY:
        keys = [r[SORT_KEY[name]] for r in got[name]]
        want = [r[SORT_KEY[name]] for r in expected[name]]
        assert keys == want, f"{what}: {name} keys {keys} != {want}"
        for g, x in zip(got[name], expected[name], strict=True):
            assert g == x, f"{what}: {name} row {x[SORT_KEY[name]]!r}: {differences(g, x)}"


# --------------------------------------------------------------------------------------------
# Port-level inputs

CANONICAL = envelope(
    "e-1",
    ORDER_CREATED,
    "o-1",
    1,
    59,
    order_data("c-1", "12.50", [line("A", 1, "12.50")], 1),
    metadata={"userId": "u1", "source": "api"},
)


def canonical(**changes: Any) -> Obj:
    """CANONICAL with some top-level values replaced (in place: no repeat)."""
    return Obj([(k, changes.get(k, v) if isinstance(k, str) else v) for k, v in CANONICAL])


def with_data(data: str) -> bytes:
    """CANONICAL with a raw ``data`` text (numbers and literals orjson would not write)."""
    return render(canonical(data=Obj([("status", "Paid")]))).replace(
        b'"data":{"status":"Paid"}', b'"data":' + data.encode()
    )


def with_timestamp(ts: str) -> bytes:
    return render(canonical(timestamp=ts))


# Bodies an engine may decode itself (and must then decode exactly as parse_body does) or leave
# to the Python path. Bodies parse_body rejects must never be fast.
DECODE_CASES: dict[str, bytes] = {
    "canonical": render(CANONICAL),
    "pretty printed": orjson.dumps(orjson.loads(render(CANONICAL)), option=orjson.OPT_INDENT_2),
    "escaped strings": render(canonical(eventId="e-\u00e9", data={"note": "Zo\u00eb \"q\" \\ / \t"}))
    .replace("é".encode(), b"\\u00e9"),
    "astral and raw unicode": render(canonical(data={"note": "\U0001f600 \u2028 \x7f"})),
    "control character": render(canonical(data={"note": "a\x1fb\x00"})),
    "empty data and metadata": render(canonical(data={}, metadata={})),
    "null and bool values": render(canonical(data={"a": None, "b": True, "c": [False]})),
    "decimal floats": with_data('{"a":2.5,"b":0.1,"c":1.0,"d":-0.0,"e":1e-7}'),
    "large float": with_data('{"a":1e16}'),
    "integer beyond 64 bits": with_data('{"a":123456789012345678901234}'),
    "NaN": with_data('{"a":NaN}'),
    "Infinity": with_data('{"a":Infinity}'),
    "-Infinity": with_data('{"a":-Infinity}'),
    "number overflowing a double": with_data('{"a":1e400}'),
    "timestamp Feb 30": with_timestamp("2026-02-30T10:00:00Z"),
    "timestamp month 13": with_timestamp("2026-13-01T10:00:00Z"),
    "timestamp hour 24": with_timestamp("2026-11-20T24:00:00Z"),
    "timestamp second 60": with_timestamp("2026-11-20T23:59:60Z"),
    "timestamp year 0": with_timestamp("0000-01-01T00:00:00Z"),
    "timestamp with offset": with_timestamp("2026-11-21T01:00:00+02:00"),
    "timestamp without zone": with_timestamp("2026-11-20T23:00:00"),
    "old schema version": render(
        canonical(
            schemaVersion=0,
            data={"customerId": "c-1", "items": [{"sku": "A", "quantity": 2, "price": "1.25"}]},
        )
    ),
    "newer schema version": render(canonical(schemaVersion=2)),
    "missing schemaVersion": render(Obj([p for p in CANONICAL if p[0] != "schemaVersion"])),
    "null metadata": render(canonical(metadata=None)),
    "nested object in data": render(canonical(data={"a": {"b": [1, {"c": 2}]}})),
    "repeated top-level key": render(Obj([("eventId", "first"), *CANONICAL])),
    "repeated key in data": render(canonical(data=Obj([("status", "A"), ("status", "B")]))),
    "repeated key in an item": render(
        canonical(data={"items": [Obj([("quantity", 1), ("quantity", 2)])]})
    ),
    "repeated key in metadata": render(canonical(metadata=Obj([("a", 1), ("a", 2)]))),
    "repeated key in a nested object": render(
        canonical(data={"a": [{"b": Obj([("c", 1), ("c", 2)])}]})
    ),
    "repeated key spelled with an escape": render(
        canonical(data=Obj([("status", "A"), (b"st\\u0061tus", "B")]))
    ),
    "key spelled with an escape": render(canonical(data=Obj([(b"st\\u0061tus", "B")]))),
    "unknown eventType": render(canonical(eventType="OrderTeleported")),
    "version 0": render(canonical(version=0)),
    "version as float": render(canonical(version=1.0)),
    "version as string": render(canonical(version="1")),
    "empty eventId": render(canonical(eventId="")),
    "not JSON": b"{not json",
    "truncated": render(CANONICAL)[:-3],
    "not UTF-8": b"\xff" + render(CANONICAL),
    "not an object": b"[1, 2]",
    "empty body": b"",
}  # fmt: skip

# Poison that only a strict parser rejects and that may take a whole batch down (an engine's cast
# failing on one row) or give a row Python cannot read back (year 0): held by
# test_decode_never_raises_on_a_batch_with_poison and their own cases, kept out of the batch
# tests that check something else (so one defect fails the tests about it, not every test).
UNSAFE_IN_A_BATCH = {
    "timestamp Feb 30",
    "timestamp month 13",
    "timestamp second 60",
    "timestamp year 0",
}

# Bodies that must NOT be fast: not a current-schema canonical envelope without repeated keys.
NOT_CANONICAL = [
    "old schema version",
    "newer schema version",
    "missing schemaVersion",
    "null metadata",
    "timestamp with offset",
    "timestamp without zone",
    "repeated top-level key",
    "repeated key in data",
    "repeated key in an item",
    "repeated key in metadata",
    "repeated key in a nested object",
    "repeated key spelled with an escape",
    "unknown eventType",
    "version 0",
    "version as float",
    "version as string",
    "empty eventId",
    "not JSON",
    "truncated",
    "not UTF-8",
    "not an object",
    "empty body",
]


# What gold's daily_order_metrics step reads of orders.
DAILY_COLUMNS = ["order_id", "customer_id", "total_amount", "created_day"]


def decode_rows(engine: ProjectionEngine, bodies: Sequence[bytes]) -> Rows:
    return engine.decode(list(bodies)).to_pylist()


def expected_decode(body: bytes) -> dict[str, Any] | None:
    """What parse_body and the raw row builder make of ``body`` (None: rejected)."""
    try:
        event = parse_body(body)
    except EnvelopeError:
        return None
    row = _row(event, ReceivedEvent(0, 0, "0", T0, None, body), T0, 0)
    return row


def raw_rows(events: Sequence[EventEnvelope]) -> pa.Table:
    """raw_events rows of ``events`` as a silver step reads them (RAW_COLUMNS, ingest order)."""
    rows = [
        _row(e, ReceivedEvent(0, i, str(i), e.timestamp, e.aggregate_id, b""), NOW, i)
        for i, e in enumerate(events)
    ]
    return pa.Table.from_pylist(rows, schema=RAW_EVENTS_SCHEMA).select(RAW_COLUMNS)


@dataclass
class Ev:
    """Builds envelopes for the fold tests."""

    n: int = 0

    def __call__(
        self, kind: str, key: str, version: int, data: dict[str, Any], when: datetime | None = None
    ) -> EventEnvelope:
        self.n += 1
        return EventEnvelope(
            event_id=f"ev-{self.n:03d}",
            event_type=kind,
            aggregate_id=key,
            aggregate_type=CUSTOMER if kind.startswith("Customer") else ORDER,
            version=version,
            timestamp=when or at(self.n),
            correlation_id="corr",
            causation_id=f"cmd-{self.n}",
            data=data,
        )


def fold_case(table: str) -> tuple[list[EventEnvelope], list[EventEnvelope], set[str]]:
    """(seed events of the current rows, the batch, the batch's clean keys) for ``table``."""
    ev = Ev()
    if table == ORDERS:
        o = order_data
        seed = [
            ev(ORDER_CREATED, "o-cur1", 1, o("c1", "1.00", [line("A", 1, "1.00")], 1)),
            ev(ORDER_CREATED, "o-cur2", 1, o("c1", "2.00", [], 0)),
            ev(ORDER_UPDATED, "o-cur2", 2, status("Paid")),
            ev(ORDER_CREATED, "o-cur3", 1, o("c2", "3.00", [], 0)),
        ]
        batch = [
            # clean: a new key, created then updated (out of order in the batch)
            ev(ORDER_UPDATED, "o-new1", 3, status("Shipped")),
            ev(ORDER_CREATED, "o-new1", 1, o("c1", "9999999999999.99", [line("Z", 3, "1.10")], 3)),
            ev(ORDER_UPDATED, "o-new1", 2, status("Paid")),
            # clean: created alone, just after midnight UTC
            ev(ORDER_CREATED, "o-new2", 1, o("c2", "0.10", [], 0), datetime(2026, 11, 21, tzinfo=UTC)),
            # clean: updates newer than the current row
            ev(ORDER_UPDATED, "o-cur1", 3, status("Shipped")),
            ev(ORDER_UPDATED, "o-cur1", 2, status("Paid")),
            # not clean: a stale (duplicate) version, then a newer one
            ev(ORDER_UPDATED, "o-cur2", 2, status("Paid")),
            ev(ORDER_UPDATED, "o-cur2", 3, status("Cancelled")),
            # not clean: two events with one version
            ev(ORDER_CREATED, "o-dup", 1, o("c1", "1.00", [], 0)),
            ev(ORDER_UPDATED, "o-dup", 2, status("Paid")),
            ev(ORDER_UPDATED, "o-dup", 2, status("Cancelled")),
            # not clean: rejected events
            ev(ORDER_UPDATED, "o-ghost", 2, status("Paid")),
            ev(ORDER_CREATED, "o-bad", 1, o("c1", "1.001", [], 0)),
            ev(ORDER_CREATED, "o-lost", 1, o("c1", "1.00", [], 0)),
            ev(ORDER_UPDATED, "o-lost", 2, status("Lost")),
            ev(ORDER_CREATED, "o-cur3", 2, o("c2", "3.00", [], 0)),
        ]  # fmt: skip
        return seed, batch, {"o-new1", "o-new2", "o-cur1"}
    seed = [
        ev(CUSTOMER_REGISTERED, "c-cur1", 1, person("Ann", "ann@x.io")),
        ev(CUSTOMER_REGISTERED, "c-cur2", 1, person("Ben", "ben@x.io")),
    ]
    batch = [
        ev(CUSTOMER_UPDATED, "c-new1", 2, {"name": "Cleo Q"}),
        ev(CUSTOMER_REGISTERED, "c-new1", 1, person("Cleo", "cleo@x.io")),
        ev(CUSTOMER_UPDATED, "c-cur1", 2, {"email": "ann@y.io"}),
        ev(CUSTOMER_UPDATED, "c-cur1", 3, {"name": "Ann B", "extra": [1]}),
        ev(CUSTOMER_UPDATED, "c-cur2", 1, {"name": "stale"}),
        ev(CUSTOMER_UPDATED, "c-cur2", 2, {"name": "Benjamin"}),
        ev(CUSTOMER_REGISTERED, "c-bad", 1, person("", "bad@x.io")),
        ev(CUSTOMER_UPDATED, "c-ghost", 2, {"name": "Nobody"}),
        ev(CUSTOMER_REGISTERED, "c-dup", 1, person("Dee", "dee@x.io")),
        ev(CUSTOMER_REGISTERED, "c-dup", 1, person("Dee", "dee@x.io")),
    ]
    return seed, batch, {"c-new1", "c-cur1"}


def current_rows(spec: SilverSpec, seed: Sequence[EventEnvelope]) -> pa.Table:
    rows = spec.fold({}, seed).rows
    return pa.Table.from_pylist(list(rows.values()), schema=SCHEMAS[spec.table])


def order_row(
    order_id: str, customer: str, total: str, day: date, status_: str = "Created"
) -> dict[str, Any]:
    created = datetime(day.year, day.month, day.day, 23, 59, 59, 999999, tzinfo=UTC)
    return {
        "order_id": order_id,
        "customer_id": customer,
        "status": status_,
        "total_amount": Decimal(total),
        "item_count": 1,
        "created_date": created,
        "updated_date": created + timedelta(hours=1),
        "created_day": day,
    }


class EngineContract:
    """Same events in, identical tables out. Subclasses supply :meth:`make_engine`."""

    partition_count = 2

    def make_engine(self, request: pytest.FixtureRequest) -> ProjectionEngine:
        """A ready engine (called once per test class)."""
        raise NotImplementedError

    @pytest.fixture(scope="class")
    def engine(self, request: pytest.FixtureRequest) -> Iterator[ProjectionEngine]:
        engine = self.make_engine(request)
        try:
            yield engine
        finally:
            engine.close()

    @pytest.fixture(scope="class")
    def bus(self, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEventBus]:
        bus = seeded_bus(tmp_path_factory.mktemp("bus") / "bus.sqlite", self.partition_count)
        try:
            yield bus
        finally:
            bus.close()

    @pytest.fixture(scope="class")
    def expected(self, bus: LocalEventBus) -> Tables:
        return reference(bus)

    @pytest.fixture(scope="class")
    def one_batch(
        self,
        engine: ProjectionEngine,
        bus: LocalEventBus,
        tmp_path_factory: pytest.TempPathFactory,
    ) -> Tables:
        return run_pipeline(engine, bus, tmp_path_factory.mktemp("one-batch"), None)

    # ---- the pipeline over the seeded stream ------------------------------------------------

    def test_stream_is_what_the_tests_expect(self, bus: LocalEventBus) -> None:
        """The seeded bus spreads the stream over every partition (so batching reorders it)."""
        messages = read_all(bus)
        assert len(messages) == 34
        assert {m.partition for m in messages} == set(range(self.partition_count))

    def test_tables_equal_the_python_reference(self, one_batch: Tables, expected: Tables) -> None:
        assert_same_tables(one_batch, expected, "one batch vs Python reference")

    def test_row_counts(self, one_batch: Tables) -> None:
        assert len(one_batch[RAW_EVENTS]) == 24  # 34 deliveries - 3 duplicates - 7 poison
        assert sorted(by_key(one_batch[ORDERS], "order_id")) == [
            "o1", "o2", "o3", "o4", "o5", "o6", "o8"
        ]  # fmt: skip
        assert sorted(by_key(one_batch[CUSTOMERS], "customer_id")) == ["c1", "c2", "c3"]
        assert len(one_batch[ORDER_SUMMARY]) == 7
        assert [r["order_date"] for r in one_batch[DAILY_ORDER_METRICS]] == [DAY1, DAY2]

    def test_duplicate_deliveries_are_ingested_once(self, one_batch: Tables) -> None:
        ids = Counter(r["event_id"] for r in one_batch[RAW_EVENTS])
        assert ids["o1-1"] == ids["o1-2"] == ids["c1-1"] == 1
        assert max(ids.values()) == 1
        o1 = by_key(one_batch[ORDERS], "order_id")["o1"]
        assert (o1["status"], o1["version"], o1["last_event_id"]) == ("Shipped", 3, "o1-3")

    def test_first_delivery_position_is_kept(self, one_batch: Tables, bus: LocalEventBus) -> None:
        positions: dict[bytes, list[tuple[int, int]]] = {}
        for m in read_all(bus):
            positions.setdefault(m.body, []).append((m.partition, m.sequence_number))
        raw = by_key(one_batch[RAW_EVENTS], "event_id")
        for event_id in ("o1-1", "o1-2", "c1-1"):
            row = raw[event_id]
            (body,) = [
                b for b, p in positions.items() if (row["partition"], row["sequence_number"]) in p
            ]
            assert len(positions[body]) == 2
            assert (row["partition"], row["sequence_number"]) == min(positions[body])

    def test_out_of_order_update_ends_at_the_highest_version(self, one_batch: Tables) -> None:
        o2 = by_key(one_batch[ORDERS], "order_id")["o2"]
        assert (o2["status"], o2["version"], o2["last_event_id"]) == ("Shipped", 3, "o2-3")
        assert o2["updated_date"] == at(25)
        assert o2["created_date"] == at(6)

    def test_old_schema_version_is_upcast(self, one_batch: Tables) -> None:
        raw = by_key(one_batch[RAW_EVENTS], "event_id")["o4-1"]
        assert raw["schema_version"] == 1
        assert orjson.loads(raw["data"]) == {
            "customerId": "c1",
            "items": [{"sku": "OLD", "quantity": 2, "unitPrice": "1.25"}],
            "totalAmount": "2.50",
            "itemCount": 2,
            "status": "Created",
        }
        o4 = by_key(one_batch[ORDERS], "order_id")["o4"]
        assert o4["total_amount"] == Decimal("2.50") and o4["item_count"] == 2
        assert o4["items"] == '[{"sku":"OLD","quantity":2,"unitPrice":"1.25"}]'
        assert o4["status"] == "Created"

    def test_repeated_keys_take_the_last_value(self, one_batch: Tables) -> None:
        raw = by_key(one_batch[RAW_EVENTS], "event_id")
        orders = by_key(one_batch[ORDERS], "order_id")
        customers = by_key(one_batch[CUSTOMERS], "customer_id")
        # in data
        assert raw["c3-1"]["data"] == '{"name":"Cy","email":"cy@x.io"}'
        assert customers["c3"]["name"] == "Cy"
        assert raw["o5-2"]["data"] == '{"status":"Cancelled"}'
        # in an item
        assert orders["o5"]["items"] == '[{"sku":"S","quantity":3,"unitPrice":"2.00"}]'
        assert (orders["o5"]["status"], orders["o5"]["version"]) == ("Cancelled", 2)
        # in metadata
        assert raw["o3-2"]["metadata"] == '{"source":"b","userId":"u1"}'
        # top-level eventId: the event is not taken for a duplicate of c1-1
        assert raw["c2-2"]["event_type"] == CUSTOMER_UPDATED
        assert raw["c1-1"]["event_type"] == CUSTOMER_REGISTERED
        c2 = customers["c2"]
        assert (c2["name"], c2["email"], c2["version"]) == ("Bob", "robert@x.io", 2)
        assert c2["last_event_id"] == "c2-2"
        # top-level version: v2, so v3 (whose status key is spelled with an escape) applies
        assert raw["o6-2"]["version"] == 2
        assert raw["o6-3"]["data"] == '{"status":"Shipped"}'
        o6 = orders["o6"]
        assert (o6["status"], o6["version"], o6["last_event_id"]) == ("Shipped", 3, "o6-3")
        # top-level eventType: the last value is unknown, so the body is poison
        assert "flip-1" not in raw

    def test_poison_is_dead_lettered_by_stage(self, one_batch: Tables) -> None:
        letters = one_batch[DEAD_LETTER_EVENTS]
        got = sorted((d["stage"], d["event_id"] or "", d["reason"]) for d in letters)
        stages = Counter(stage for stage, _, _ in got)
        assert stages == {RAW_EVENTS: 7, ORDERS: 3, CUSTOMERS: 1}
        reasons = {(stage, event_id): reason for stage, event_id, reason in got}
        expected = {
            (RAW_EVENTS, "tele-1"): "unknown eventType 'OrderTeleported'",
            (RAW_EVENTS, "flip-1"): "unknown eventType 'OrderTeleported'",
            (RAW_EVENTS, "v0-1"): "version must be an integer >= 1",
            (RAW_EVENTS, "c8-1"): "no upcaster for CustomerRegistered schemaVersion 0",
            (RAW_EVENTS, "sv2-1"): "schemaVersion 2 is newer than this reader",
            (ORDERS, "ghost-2"): "OrderUpdated for unknown order ghost",
            (ORDERS, "o7-1"): "does not fit decimal(18,2)",
            (ORDERS, "o1-9"): "unknown order status 'Lost'",
            (CUSTOMERS, "c2-3"): "name must be a non-empty string",
        }
        for key, fragment in expected.items():
            assert fragment in reasons[key], key
        anonymous = sorted(r for s, e, r in got if s == RAW_EVENTS and not e)
        assert len(anonymous) == 2
        assert anonymous[0].startswith("body is not JSON")
        assert anonymous[1] == "body is not a JSON object"
        for d in letters:
            assert (d["run_id"], d["dead_lettered_at"], d["resolved"]) == (RUN_ID, NOW, False)
        rejected = {"ghost-2", "o7-1", "c2-3", "tele-1", "flip-1", "v0-1", "c8-1", "sv2-1"}
        assert not rejected & {r["last_event_id"] for r in one_batch[ORDERS] + one_batch[CUSTOMERS]}

    def test_gold(self, one_batch: Tables) -> None:
        summary = by_key(one_batch[ORDER_SUMMARY], "order_id")
        assert {k: r["customer_name"] for k, r in summary.items()} == {
            "o1": "Ada Lovelace",
            "o2": "Bob",
            "o3": None,  # c9 never registered
            "o4": "Ada Lovelace",
            "o5": "Cy",
            "o6": "Bob",
            "o8": "Cy",
        }
        assert summary["o1"]["total_amount"] == Decimal("25.50")
        assert one_batch[DAILY_ORDER_METRICS] == [
            {
                "order_date": DAY1,
                "order_count": 5,
                "total_revenue": Decimal("44.05"),
                "avg_order_value": Decimal("8.81"),
                "unique_customers": 4,
            },
            {
                "order_date": DAY2,
                "order_count": 2,
                "total_revenue": Decimal("0.05"),
                "avg_order_value": Decimal("0.03"),  # 0.025 half-up
                "unique_customers": 2,
            },
        ]

    @pytest.mark.parametrize("batch_size", [1, 7])
    def test_batching_gives_identical_tables(
        self,
        engine: ProjectionEngine,
        bus: LocalEventBus,
        one_batch: Tables,
        tmp_path: Path,
        batch_size: int,
    ) -> None:
        got = run_pipeline(engine, bus, tmp_path / "delta", batch_size)
        # ingest_seq numbers raw rows in the order the batches read the partitions: gap-free,
        # and in bus order within each partition
        seqs = sorted(r["ingest_seq"] for r in got[RAW_EVENTS])
        assert seqs == list(range(len(got[RAW_EVENTS])))
        for p in range(self.partition_count):
            mine = sorted((r for r in got[RAW_EVENTS] if r["partition"] == p),
                          key=lambda r: r["sequence_number"])  # fmt: skip
            assert [r["ingest_seq"] for r in mine] == sorted(r["ingest_seq"] for r in mine)
        strip = {**got, RAW_EVENTS: [{**r, "ingest_seq": None} for r in got[RAW_EVENTS]]}
        want = {**one_batch, RAW_EVENTS: [{**r, "ingest_seq": None} for r in one_batch[RAW_EVENTS]]}
        assert_same_tables(strip, want, f"batches of {batch_size} vs one batch")

    def test_poison_only_a_strict_parser_rejects_is_dead_lettered(
        self, engine: ProjectionEngine, tmp_path: Path
    ) -> None:
        """Non-standard numbers and impossible timestamps are poison like any other (the
        Python path rejects them): dead-lettered, never ingested, and the events behind them
        still land."""
        bus = LocalEventBus(tmp_path / "bus.sqlite", partition_count=1)
        e = envelope
        created = order_data("c1", "1.00", [line("A", 1, "1.00")], 1)
        bodies = [
            render(e("ok-1", ORDER_CREATED, "o1", 1, 0, created)),
            with_data('{"status":"Paid","note":NaN}'),
            render(e("nan-items", ORDER_CREATED, "o2", 1, 1, created)).replace(
                b'"quantity":1', b'"quantity":1,"weight":Infinity'
            ),
            with_data('{"status":"Paid","big":1e400}'),
            with_timestamp("2026-02-30T10:00:00Z"),
            with_timestamp("2026-11-20T24:00:00Z"),
            render(e("ok-2", ORDER_UPDATED, "o1", 2, 2, status("Paid"))),
        ]
        try:
            bus.send([OutgoingEvent("k", b) for b in bodies])
            ctx = StepContext(TableStore(str(tmp_path / "delta")), RUN_ID, engine=engine,
                              clock=fixed_clock)  # fmt: skip
            catch_up(ctx, bus, max_events=100)
            got = read_tables(ctx.tables)
        finally:
            bus.close()
        assert [r["event_id"] for r in got[RAW_EVENTS]] == ["ok-1", "ok-2"]
        assert [(r["stage"], r["sequence_number"]) for r in got[DEAD_LETTER_EVENTS]] == [
            (RAW_EVENTS, i) for i in range(1, 6)
        ]
        o1 = by_key(got[ORDERS], "order_id")["o1"]
        assert (o1["status"], o1["version"]) == ("Paid", 2)

    # ---- decode ------------------------------------------------------------------------------

    def test_decode_keeps_order_and_index(self, engine: ProjectionEngine) -> None:
        names = list(DECODE_CASES)
        bodies = [DECODE_CASES[n] for n in names if n not in UNSAFE_IN_A_BATCH]
        rows = decode_rows(engine, bodies + bodies[::-1])
        assert [r["i"] for r in rows] == list(range(2 * len(bodies)))
        assert engine.decode([]).num_rows == 0

    def test_decode_depends_on_each_body_alone(self, engine: ProjectionEngine) -> None:
        names = [n for n in DECODE_CASES if n not in UNSAFE_IN_A_BATCH]
        together = decode_rows(engine, [DECODE_CASES[n] for n in names])
        for name, row in zip(names, together, strict=True):
            (alone,) = decode_rows(engine, [DECODE_CASES[name]])
            assert {**row, "i": 0} == alone, f"{name}: {differences({**row, 'i': 0}, alone)}"

    def test_decode_never_raises_on_a_batch_with_poison(self, engine: ProjectionEngine) -> None:
        """One bad body in a batch must not fail the batch: the bus would be blocked."""
        bodies = list(DECODE_CASES.values())
        decoded = engine.decode(bodies)
        assert decoded.column("i").to_pylist() == list(range(len(bodies)))

    def test_canonical_bodies_are_decoded_by_the_engine(self, engine: ProjectionEngine) -> None:
        fast = [r["fast"] for r in decode_rows(engine, [DECODE_CASES["canonical"]] * 3)]
        assert fast == [True, True, True]

    def test_non_canonical_bodies_are_left_to_the_python_path(
        self, engine: ProjectionEngine
    ) -> None:
        rows = decode_rows(engine, [DECODE_CASES[n] for n in NOT_CANONICAL])
        assert [n for n, r in zip(NOT_CANONICAL, rows, strict=True) if r["fast"]] == []

    def test_decode_takes_the_flags_the_bus_recorded(self, engine: ProjectionEngine) -> None:
        """Flags handed over (the local bus's, recorded on append) decide which bodies may be
        fast; the body's own flags give what the engine's own check gives."""
        names = [n for n in DECODE_CASES if n not in UNSAFE_IN_A_BATCH]
        bodies = [DECODE_CASES[n] for n in names]
        own = engine.decode(bodies, canonical_flags(bodies))
        assert own.equals(engine.decode(bodies))
        assert pc.any(own.column("fast")).as_py()
        refused = engine.decode(bodies, [False] * len(bodies))
        assert refused.column("i").to_pylist() == list(range(len(bodies)))
        assert not pc.any(refused.column("fast")).as_py()
        with pytest.raises(ValueError):
            engine.decode(bodies, [True])

    @pytest.mark.parametrize("name", list(DECODE_CASES))
    def test_a_fast_row_equals_parse_body(self, engine: ProjectionEngine, name: str) -> None:
        body = DECODE_CASES[name]
        decoded = engine.decode([body])
        assert decoded.column("i").to_pylist() == [0]
        fast = decoded.column("fast")[0].as_py()
        expected = expected_decode(body)
        if expected is None:
            assert not fast, "parse_body rejects this body: it must not be fast"
            return
        if not fast:
            return
        (row,) = decoded.to_pylist()
        got = {k: v for k, v in row.items() if k not in ("i", "fast")}
        want = {k: expected[k] for k in got}
        assert got == want, f"fast row != parse_body's: {differences(got, want)}"

    # ---- fold -------------------------------------------------------------------------------

    @pytest.mark.parametrize("table", [ORDERS, CUSTOMERS])
    def test_fold_equals_the_python_fold(self, engine: ProjectionEngine, table: str) -> None:
        spec = SPECS[table]
        seed, batch, clean = fold_case(table)
        current = current_rows(spec, seed)
        events = raw_rows(batch)
        out = engine.fold(table, events, current)
        assert out.rows.schema == SCHEMAS[table]
        folded = set(out.rows.column(spec.key).to_pylist())
        others = set(out.others.to_pylist())
        assert len(folded) == out.rows.num_rows
        assert not folded & others
        assert folded | others == {e.aggregate_id for e in batch}
        assert clean <= folded, "every clean key is folded by the engine"

        by_current = {r[spec.key]: r for r in current.to_pylist()}
        python = spec.fold(by_current, batch)
        troubled = {e.event.aggregate_id for e in python.errors}
        for key in folded:
            alone = spec.fold(by_current, [e for e in batch if e.aggregate_id == key])
            if alone.skipped:
                troubled.add(key)
        assert not troubled & folded, "keys with a rejected or skipped event go to the Python fold"
        for row in out.rows.to_pylist():
            want = python.rows[row[spec.key]]
            assert row == want, f"{row[spec.key]}: {differences(row, want)}"
        mine = [e for e in batch if e.aggregate_id in folded]
        assert out.applied == spec.fold(by_current, mine).applied

        _, merged, _ = fold_batch(spec, engine, events, current)
        fast = {r[spec.key]: r for r in out.rows.to_pylist()}
        assert {**fast, **merged.rows} == python.rows
        assert (merged.applied, merged.skipped) == (python.applied, python.skipped)
        assert sorted((e.event.event_id, e.reason) for e in merged.errors) == sorted(
            (e.event.event_id, e.reason) for e in python.errors
        )

    @pytest.mark.parametrize("table", [ORDERS, CUSTOMERS])
    def test_fold_of_nothing(self, engine: ProjectionEngine, table: str) -> None:
        out = engine.fold(table, raw_rows([]), SCHEMAS[table].empty_table())
        assert (out.rows.num_rows, out.applied, len(out.others)) == (0, 0, 0)

    def test_fold_days_are_utc_in_any_local_time_zone(
        self, engine: ProjectionEngine, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        ev = Ev()
        batch = [
            ev(ORDER_CREATED, "late", 1, order_data("c1", "1.00", [], 0),
               datetime(2026, 11, 20, 23, 59, 59, 999999, tzinfo=UTC)),
            ev(ORDER_CREATED, "early", 1, order_data("c1", "2.00", [], 0),
               datetime(2026, 11, 21, 0, 0, tzinfo=UTC)),
        ]  # fmt: skip
        monkeypatch.setenv("TZ", "Pacific/Kiritimati")  # UTC+14: another day for both
        time.tzset()
        try:
            out = engine.fold(ORDERS, raw_rows(batch), SCHEMAS[ORDERS].empty_table())
            days = {r["order_id"]: r["created_day"] for r in out.rows.to_pylist()}
            metrics = engine.daily_metrics(out.rows.select(DAILY_COLUMNS))
        finally:
            monkeypatch.undo()
            time.tzset()
        assert days == {"late": DAY1, "early": DAY2}
        assert [(r["order_date"], r["total_revenue"]) for r in metrics.to_pylist()] == [
            (DAY1, Decimal("1.00")),
            (DAY2, Decimal("2.00")),
        ]

    # ---- gold -------------------------------------------------------------------------------

    def test_order_summary(self, engine: ProjectionEngine) -> None:
        orders = [
            order_row("o-3", "c-unknown", "0.10", DAY1, "Paid"),
            order_row("o-1", "c-1", "12345678901234.57", DAY1),
            order_row("o-2", "c-2", "0.00", DAY2, "Cancelled"),
            order_row("o-4", "c-1", "1.05", DAY2),
        ]
        customers = [
            {"customer_id": "c-2", "name": "Bo \u00e9"},
            {"customer_id": "c-1", "name": "Ada"},
            {"customer_id": "c-9", "name": "Nobody's orders"},
        ]
        out = engine.order_summary(
            pa.Table.from_pylist(orders, schema=SCHEMAS[ORDERS]).select(ORDER_COLUMNS),
            pa.Table.from_pylist(customers, schema=SCHEMAS[CUSTOMERS]).select(
                ["customer_id", "name"]
            ),
        )
        assert out.schema == ORDER_SUMMARY_SCHEMA
        names = {"o-1": "Ada", "o-2": "Bo \u00e9", "o-3": None, "o-4": "Ada"}
        assert out.to_pylist() == [
            {**{k: o[k] for k in ORDER_COLUMNS}, "customer_name": names[o["order_id"]]}
            for o in sorted(orders, key=lambda o: o["order_id"])
        ]

    @pytest.mark.parametrize("named", [True, False], ids=["customers", "no-customer-yet"])
    def test_order_summary_whole_streams_what_order_summary_gives(
        self, engine: ProjectionEngine, tmp_path: Path, named: bool
    ) -> None:
        tables = TableStore(root=str(tmp_path))
        orders = [
            order_row(f"o-{i:03d}", f"c-{i % 7}", f"{i}.05", DAY1 if i % 2 else DAY2, "Paid")
            for i in range(300)
        ][::-1]  # written out of order: the stream sorts
        customers = [{"customer_id": f"c-{i}", "name": f"N\u00e9 {i}"} for i in range(5)]
        for name, rows in ((ORDERS, orders), (CUSTOMERS, customers if named else [])):
            table = tables.ensure(name)
            for part in (rows[:170], rows[170:]):  # several files
                if part:
                    write_deltalake(
                        table,
                        pa.Table.from_pylist(part, schema=SCHEMAS[name]),
                        mode="append",
                        partition_by=PARTITION_BY.get(name),
                    )
        order_table, customer_table = tables.open(ORDERS), tables.open(CUSTOMERS)
        assert order_table is not None and customer_table is not None
        stream = engine.order_summary_whole(order_table, customer_table)
        assert stream.schema == ORDER_SUMMARY_SCHEMA
        got = stream.read_all()
        expected = engine.order_summary(
            order_table.to_pyarrow_table(columns=ORDER_COLUMNS),
            customer_table.to_pyarrow_table(columns=["customer_id", "name"]),
        )
        assert got.to_pylist() == expected.to_pylist()
        assert got.column("order_id").to_pylist() == sorted(o["order_id"] for o in orders)
        unnamed = {r["customer_name"] for r in got.to_pylist() if r["customer_id"] in {"c-5"}}
        assert unnamed == {None}

    def test_order_summary_of_nothing(self, engine: ProjectionEngine) -> None:
        out = engine.order_summary(
            SCHEMAS[ORDERS].empty_table().select(ORDER_COLUMNS),
            SCHEMAS[CUSTOMERS].empty_table().select(["customer_id", "name"]),
        )
        assert out.schema == ORDER_SUMMARY_SCHEMA and out.num_rows == 0

    def test_daily_metrics(self, engine: ProjectionEngine) -> None:
        day3 = date(2026, 11, 22)
        orders = [
            order_row("a", "c1", "0.04", DAY2),
            order_row("b", "c1", "0.01", DAY2),  # 0.05 / 2 = 0.025 -> 0.03 (half-up)
            order_row("c", "c1", "9999999999999.99", DAY1),
            order_row("d", "c2", "0.01", DAY1),
            order_row("e", "c3", "0.01", DAY1),  # 10000000000000.01 / 3 -> 3333333333333.34
            order_row("f", "c2", "0.00", day3),
            order_row("g", "c2", "0.01", day3),
            order_row("h", "c3", "0.01", day3),
            order_row("i", "c3", "0.00", day3),  # 0.02 / 4 = 0.005 -> 0.01 (half-up)
        ]
        table = pa.Table.from_pylist(orders, schema=SCHEMAS[ORDERS]).select(DAILY_COLUMNS)
        out = engine.daily_metrics(table)
        assert out.schema == DAILY_ORDER_METRICS_SCHEMA
        assert out.to_pylist() == [
            {"order_date": DAY1, "order_count": 3, "total_revenue": Decimal("10000000000000.01"),
             "avg_order_value": Decimal("3333333333333.34"), "unique_customers": 3},
            {"order_date": DAY2, "order_count": 2, "total_revenue": Decimal("0.05"),
             "avg_order_value": Decimal("0.03"), "unique_customers": 1},
            {"order_date": day3, "order_count": 4, "total_revenue": Decimal("0.02"),
             "avg_order_value": Decimal("0.01"), "unique_customers": 2},
        ]  # fmt: skip
        assert out.to_pylist() == daily_reference(orders)

    def test_daily_metrics_of_nothing(self, engine: ProjectionEngine) -> None:
        out = engine.daily_metrics(SCHEMAS[ORDERS].empty_table().select(DAILY_COLUMNS))
        assert out.schema == DAILY_ORDER_METRICS_SCHEMA and out.num_rows == 0
