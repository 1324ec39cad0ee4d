"""EventBus port contract: the behaviour every bus adapter (local log, Event Hubs) must show.

Not collected itself: an adapter's test module subclasses :class:`EventBusContract` and supplies
``make_bus`` (a FRESH, EMPTY bus with ``partition_count`` partitions per call). Tests go only
through the port and keep their data small, so they also run against the Event Hubs adapter over
the local AMQP test server.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from cqrs_dagster.domain.events import EventEnvelope
from cqrs_dagster.eventbus.canonical import canonical
from cqrs_dagster.eventbus.port import (
    EventBus,
    OutgoingEvent,
    ReceivedColumns,
    ReceivedEvent,
    micros,
)


def read_all(bus: EventBus, partition: int, after: int = -1) -> list[ReceivedEvent]:
    """Every event of ``partition`` after ``after``, reading in pages."""
    out: list[ReceivedEvent] = []
    while True:
        page = bus.read(partition, after, 200)
        if not page:
            return out
        out.extend(page)
        after = page[-1].sequence_number


def read_everything(bus: EventBus) -> dict[int, list[ReceivedEvent]]:
    return {p: read_all(bus, p) for p in range(bus.partition_count)}


def msg(key: str, i: int) -> OutgoingEvent:
    return OutgoingEvent(partition_key=key, body=f"{key}#{i}".encode())


def where(bus: EventBus, key: str) -> int:
    """The one partition holding the events sent with ``key``."""
    found = [
        p
        for p, events in read_everything(bus).items()
        if any(e.body.startswith(f"{key}#".encode()) for e in events)
    ]
    assert len(found) == 1
    return found[0]


class EventBusContract:
    partition_count = 4

    def make_bus(self, request: pytest.FixtureRequest) -> EventBus:
        raise NotImplementedError

    @pytest.fixture
    def bus(self, request: pytest.FixtureRequest) -> Iterator[EventBus]:
        b = self.make_bus(request)
        try:
            yield b
        finally:
            b.close()

    def test_partition_count(self, bus: EventBus) -> None:
        assert bus.partition_count == self.partition_count

    def test_empty_bus_has_empty_partitions(self, bus: EventBus) -> None:
        infos = bus.partitions_info()
        assert [i.partition for i in infos] == list(range(self.partition_count))
        for info in infos:
            assert info.last_sequence_number == -1
            assert info.last_enqueued_time is None
            assert bus.read(info.partition, -1, 10) == []

    def test_same_key_lands_in_one_partition_in_order(self, bus: EventBus) -> None:
        bus.send([msg("order-1", i) for i in range(5)])
        bus.send([msg("order-1", i) for i in range(5, 8)])
        everything = read_everything(bus)
        holding = [p for p, events in everything.items() if events]
        assert len(holding) == 1
        events = everything[holding[0]]
        assert [e.body for e in events] == [f"order-1#{i}".encode() for i in range(8)]
        assert all(e.partition == holding[0] for e in events)
        assert all(e.partition_key == "order-1" for e in events)

    def test_keys_spread_over_partitions(self, bus: EventBus) -> None:
        bus.send([msg(f"agg-{k}", 0) for k in range(40)])
        used = [p for p, events in read_everything(bus).items() if events]
        assert len(used) >= 2
        total = sum(len(read_all(bus, p)) for p in used)
        assert total == 40

    def test_sequence_numbers_start_at_zero_without_gaps(self, bus: EventBus) -> None:
        for batch in range(3):
            bus.send([msg(f"k{k}", batch) for k in range(6)])
        for events in read_everything(bus).values():
            assert [e.sequence_number for e in events] == list(range(len(events)))

    def test_offsets_are_opaque_distinct_strings(self, bus: EventBus) -> None:
        # Offsets are opaque (strings on geo-replicated Event Hubs): carried, never ordered.
        bus.send([msg("same", i) for i in range(6)])
        (events,) = [e for e in read_everything(bus).values() if e]
        offsets = [e.offset for e in events]
        assert all(isinstance(o, str) and o for o in offsets)
        assert len(set(offsets)) == len(offsets)

    def test_read_after_sequence_number(self, bus: EventBus) -> None:
        bus.send([msg("k", i) for i in range(10)])
        p = where(bus, "k")
        after = bus.read(p, 3, 100)
        assert [e.sequence_number for e in after] == list(range(4, 10))
        assert after[0].body == b"k#4"
        assert bus.read(p, 9, 100) == []

    def test_max_count_bounds_a_read(self, bus: EventBus) -> None:
        bus.send([msg("k", i) for i in range(7)])
        p = where(bus, "k")
        first = bus.read(p, -1, 3)
        assert [e.body for e in first] == [b"k#0", b"k#1", b"k#2"]
        second = bus.read(p, first[-1].sequence_number, 3)
        assert [e.body for e in second] == [b"k#3", b"k#4", b"k#5"]
        assert len(bus.read(p, -1, 1)) == 1

    def test_partition_info_matches_last_event(self, bus: EventBus) -> None:
        bus.send([msg(f"k{k}", i) for i in range(3) for k in range(5)])
        for p, events in read_everything(bus).items():
            info = bus.partition_info(p)
            assert info.partition == p
            if events:
                assert info.last_sequence_number == events[-1].sequence_number
                assert info.last_enqueued_time == events[-1].enqueued_time
            else:
                assert info.last_sequence_number == -1
                assert info.last_enqueued_time is None

    def test_bodies_round_trip_byte_exact(self, bus: EventBus) -> None:
        bodies = [
            b"\x00\xff\xfe\x80 not utf-8 \xc3\x28",
            "héllo ✓ 中文".encode(),
            bytes(range(256)) * 4,
            b'{"a": 1}',
        ]
        bus.send([OutgoingEvent(partition_key="bin", body=b) for b in bodies])
        (events,) = [e for e in read_everything(bus).values() if e]
        assert [e.body for e in events] == bodies
        assert all(isinstance(e.body, bytes) for e in events)

    def test_batch_of_500_mixed_keys_keeps_per_key_order(self, bus: EventBus) -> None:
        keys = [f"agg-{k}" for k in range(23)]
        batch = [msg(keys[(i * 7) % len(keys)], i) for i in range(500)]
        bus.send(batch)
        seen: dict[str, list[int]] = defaultdict(list)
        partition_of: dict[str, set[int]] = defaultdict(set)
        for p, events in read_everything(bus).items():
            for e in events:
                key, i = e.body.decode().split("#")
                seen[key].append(int(i))
                partition_of[key].add(p)
        expected: dict[str, list[int]] = defaultdict(list)
        for m in batch:
            expected[m.partition_key].append(int(m.body.decode().split("#")[1]))
        assert seen == expected
        assert all(len(ps) == 1 for ps in partition_of.values())

    def test_enqueued_time_is_utc_and_non_decreasing(self, bus: EventBus) -> None:
        before = datetime.now(UTC) - timedelta(minutes=5)
        bus.send([msg("t", 0), msg("t", 1)])
        bus.send([msg("t", 2)])
        (events,) = [e for e in read_everything(bus).values() if e]
        times = [e.enqueued_time for e in events]
        for t in times:
            assert t.tzinfo is not None
            assert t.utcoffset() == timedelta(0)
            assert before <= t <= datetime.now(UTC) + timedelta(minutes=5)
        assert times == sorted(times)

    def test_read_columns_are_read_column_by_column(self, bus: EventBus) -> None:
        # The bulk read (raw ingest) sees exactly what read() sees: same events, same order,
        # same positions, bodies byte-exact (binary too), enqueued time in exact microseconds.
        bus.send([msg(f"k{k}", i) for i in range(4) for k in range(6)])
        bus.send([OutgoingEvent("bin", b"\x00\xff\xc3\x28"), msg("k0", 9)])
        for p, events in read_everything(bus).items():
            cols = bus.read_columns(p, -1, 1_000)
            assert cols.partition == p
            assert cols == ReceivedColumns.of(p, events)
            assert cols.sequence_numbers.to_pylist() == [e.sequence_number for e in events]
            assert cols.offsets.to_pylist() == [e.offset for e in events]
            assert cols.enqueued_us.to_pylist() == [micros(e.enqueued_time) for e in events]
            assert cols.bodies.to_pylist() == [e.body for e in events]
            assert cols.sequence_numbers.type == cols.enqueued_us.type == pa.int64()
            assert cols.offsets.type == pa.string() and cols.bodies.type == pa.binary()
            assert len(cols) == len(events)
            if events:
                assert cols.last_sequence_number == events[-1].sequence_number

    def test_read_columns_canonical_flags_if_given_are_the_bodies(self, bus: EventBus) -> None:
        # A bus may hand the readers each body's canonical flag (the local log records it on
        # append); where it does, it is the body's own, whatever the bus stored it from.
        bodies = [b'{"a":1}', b'{"a": 1}', b'{"a":1,"a":2}', b'{"a":"\\u001f"}', b"\xff", b"[]"]
        bus.send([OutgoingEvent("k", b) for b in bodies])
        (p,) = [p for p, events in read_everything(bus).items() if events]
        cols = bus.read_columns(p, -1, 100)
        assert cols.bodies.to_pylist() == bodies
        if cols.canonical is not None:
            assert cols.canonical.to_pylist() == [True, False, False, False, False, True]
            assert cols.canonical.to_pylist() == [canonical(b) for b in bodies]

    def test_read_columns_after_and_bounded(self, bus: EventBus) -> None:
        bus.send([msg("k", i) for i in range(7)])
        p = where(bus, "k")
        first = bus.read_columns(p, -1, 3)
        assert first.bodies.to_pylist() == [b"k#0", b"k#1", b"k#2"]
        second = bus.read_columns(p, first.last_sequence_number, 3)
        assert second.sequence_numbers.to_pylist() == [3, 4, 5]
        assert bus.read_columns(p, 5, 100).bodies.to_pylist() == [b"k#6"]
        assert len(bus.read_columns(p, 6, 100)) == 0
        assert len(bus.read_columns(p, -1, 0)) == 0
        empty = next(q for q in range(bus.partition_count) if q != p)
        nothing = bus.read_columns(empty, -1, 10)
        assert len(nothing) == 0 and nothing.bodies.type == pa.binary()
        with pytest.raises(IndexError, match="no events"):
            nothing.last_sequence_number  # noqa: B018 - the property raises

    def test_publish_keys_domain_events_by_aggregate_id(self, bus: EventBus) -> None:
        envelopes = [
            EventEnvelope(
                event_id=f"e{v}",
                event_type="OrderUpdated",
                aggregate_id="ord-9",
                aggregate_type="Order",
                version=v,
                timestamp=datetime(2026, 1, 1, tzinfo=UTC),
                correlation_id="c",
                causation_id="c",
                data={"status": "Paid", "n": v},
            )
            for v in (1, 2, 3)
        ]
        bus.publish(envelopes)
        (events,) = [e for e in read_everything(bus).values() if e]
        assert [EventEnvelope.from_json(e.body) for e in events] == envelopes
        assert all(e.partition_key == "ord-9" for e in events)
