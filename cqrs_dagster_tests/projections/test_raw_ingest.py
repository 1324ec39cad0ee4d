"""raw_events ingest on real Delta tables and the real LocalEventBus: dedup within a batch and
against the table across runs, bounded batches, checkpoints read back, every poison kind dead
lettered (idempotently) without blocking the events behind it, legacy events upcast."""

from __future__ import annotations

from pathlib import Path

import orjson
import pyarrow.compute as pc
import pytest

from cqrs_dagster.eventbus.local import LocalEventBus
from cqrs_dagster.eventbus.port import EventBus, OutgoingEvent, ReceivedColumns
from cqrs_dagster.projections import engine as engine_module
from cqrs_dagster.projections.context import StepContext
from cqrs_dagster.projections.dead_letters import read_dead_letters
from cqrs_dagster.projections.raw_ingest import ingest_raw_events
from cqrs_dagster.projections.schemas import RAW_EVENTS
from cqrs_dagster.projections.status import read_checkpoints

from .scenario import build, fixed_clock, new_bus, new_tables, poison_messages


def test_dedup_within_batch_and_across_runs(tmp_path: Path) -> None:
    sc = build(seed=1, customers=3, orders=8)
    bus, tables = new_bus(tmp_path / "bus.sqlite"), new_tables(tmp_path / "delta")
    bus.publish(sc.events[:10] + sc.events[:10])  # duplicated inside one batch
    first = ingest_raw_events(StepContext(tables, "r1", clock=fixed_clock), bus, max_events=1000)
    assert (first.events_read, first.events_applied, first.duplicates_skipped) == (20, 10, 10)
    bus.publish(sc.events)  # republish everything: only the new tail lands
    second = ingest_raw_events(StepContext(tables, "r2", clock=fixed_clock), bus, max_events=1000)
    assert second.events_applied == len(sc.events) - 10
    assert second.duplicates_skipped == 10
    raw = tables.open(RAW_EVENTS)
    assert raw is not None
    data = raw.to_pyarrow_table()
    assert sorted(data["event_id"].to_pylist()) == sorted(e.event_id for e in sc.events)
    assert sorted(data["ingest_seq"].to_pylist()) == list(range(len(sc.events)))  # gap-free
    assert second.row_count == len(sc.events)


def test_bounded_batches_and_checkpoints_read_back(tmp_path: Path) -> None:
    sc = build(seed=2, customers=3, orders=10)
    bus, tables = new_bus(tmp_path / "bus.sqlite"), new_tables(tmp_path / "delta")
    bus.publish(sc.events)
    seen = 0
    while True:
        step = ingest_raw_events(StepContext(tables, "r", clock=fixed_clock), bus, max_events=7)
        assert step.events_read <= 7
        if step.events_read == 0:
            break
        seen += step.events_read
    assert seen == len(sc.events)
    points = read_checkpoints(tables)["raw_events"]
    heads = {f"raw_events/p{h.partition}": h.last_sequence_number for h in bus.partitions_info()}
    assert {k: v for k, v in points.items() if k.startswith("raw_events/p")} == heads
    assert points["raw_events/ingest_seq"] == len(sc.events) - 1


def test_poison_is_dead_lettered_and_never_blocks(tmp_path: Path) -> None:
    sc = build(seed=4, customers=2, orders=3)
    bus, tables = new_bus(tmp_path / "bus.sqlite", partitions=1), new_tables(tmp_path / "delta")
    poison = poison_messages(sc)
    bus.send([OutgoingEvent(k, b) for k, b in poison[:4]])  # the raw-stage poison kinds
    bus.publish(sc.events)
    step = ingest_raw_events(StepContext(tables, "r", clock=fixed_clock), bus, max_events=1000)
    assert step.dead_lettered == 4 and step.events_applied == len(sc.events)
    letters = read_dead_letters(tables, stage="raw_events").to_pylist()
    assert [d["dead_letter_id"] for d in letters] == [f"raw_events:0:{i}" for i in range(4)]
    reasons = [d["reason"] for d in letters]
    assert "not JSON" in reasons[0] and "unknown eventType" in reasons[2]
    assert "version" in reasons[3] and letters[2]["event_id"] == "unknown-type"
    assert read_checkpoints(tables)["raw_events"]["raw_events/p0"] == len(sc.events) + 3
    # writing the same dead letters again (a re-run after a crash) adds nothing
    from cqrs_dagster.projections.dead_letters import DeadLetter, write_dead_letters

    again = [DeadLetter("raw_events", 0, 0, None, None, "x", "again")]
    assert write_dead_letters(tables, again, run_id="r2") == 0


def test_legacy_schema_version_is_upcast(tmp_path: Path) -> None:
    sc = build(seed=5, customers=1, orders=1)
    bus, tables = new_bus(tmp_path / "bus.sqlite"), new_tables(tmp_path / "delta")
    key, body = poison_messages(sc)[-1]
    bus.send([OutgoingEvent(key, body)])
    step = ingest_raw_events(StepContext(tables, "r", clock=fixed_clock), bus, max_events=10)
    assert step.events_applied == 1 and step.dead_lettered == 0
    raw = tables.open(RAW_EVENTS)
    assert raw is not None
    row = raw.to_pyarrow_table().filter(pc.field("event_id") == "legacy-1").to_pylist()[0]
    data = orjson.loads(row["data"])
    assert row["schema_version"] == 1
    assert data["items"] == [{"sku": "old", "quantity": 2, "unitPrice": "1.25"}]
    assert (data["totalAmount"], data["itemCount"]) == ("2.50", 2)


def test_a_context_reuses_its_raw_table_and_still_sees_other_writers(tmp_path: Path) -> None:
    """The bronze step keeps its raw_events table between commits (brought up to date, not
    opened again), so a commit by another context in between is seen: nothing is read twice,
    nothing skipped, ingest_seq stays gap-free."""
    sc = build(seed=5, customers=3, orders=12)
    bus, tables = new_bus(tmp_path / "bus.sqlite"), new_tables(tmp_path / "delta")
    bus.publish(sc.events)
    mine, other = (StepContext(tables, r, clock=fixed_clock) for r in ("mine", "other"))
    first = ingest_raw_events(mine, bus, max_events=9)
    held = mine.bronze[tables.uri(RAW_EVENTS)]
    between = ingest_raw_events(other, bus, max_events=9)
    again = ingest_raw_events(mine, bus, max_events=9)
    assert mine.bronze[tables.uri(RAW_EVENTS)] is held  # the same object, not reopened
    assert again.delta_version == between.delta_version + 1 == first.delta_version + 2
    assert again.checkpoint["raw_events/ingest_seq"] == 26
    while ingest_raw_events(mine, bus, max_events=9).events_read:
        pass
    raw = tables.open(RAW_EVENTS)
    assert raw is not None
    data = raw.to_pyarrow_table()
    assert sorted(data["event_id"].to_pylist()) == sorted(e.event_id for e in sc.events)
    assert sorted(data["ingest_seq"].to_pylist()) == list(range(len(sc.events)))


class _FlaglessBus(LocalEventBus):
    """The local log read through the port's default ``read_columns`` (as Event Hubs reads):
    no canonical flags, so the engine checks every body itself."""

    def read_columns(
        self, partition: int, after_sequence_number: int, max_count: int
    ) -> ReceivedColumns:
        return EventBus.read_columns(self, partition, after_sequence_number, max_count)


def test_the_local_bus_flags_spare_the_check_and_give_the_same_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ingest over the local bus uses the canonical flags it recorded on append (no body is
    round-tripped through orjson again), and gives the rows, dead letters and upcasts a reader
    that checks every body gives: the flags change the cost, never a row."""
    sc = build(seed=6, customers=3, orders=6)
    odd = [
        # whitespace, a repeated key (the last value wins), a hex-letter escape: canonical no more
        (sc.events[0].aggregate_id, sc.events[0].to_json().replace(b'","', b'", "', 1)),
        (sc.events[1].aggregate_id, sc.events[1].to_json()[:-1] + b',"eventId":"dup-last"}'),
        (sc.events[2].aggregate_id, sc.events[2].to_json().replace(b'"cmd', b'"\\u001fcmd', 1)),
    ]
    messages = [OutgoingEvent(k, b) for k, b in poison_messages(sc) + odd]
    results = {}
    for name, bus_type in (("flags", LocalEventBus), ("checked", _FlaglessBus)):
        bus = bus_type(tmp_path / f"{name}.sqlite", partition_count=2)
        bus.send(messages)
        bus.publish(sc.events)
        tables = new_tables(tmp_path / name)
        with monkeypatch.context() as patched:
            if name == "flags":  # the decoder must not check a body the bus flagged
                patched.setattr(engine_module, "canonical_flags", _no_check)
            step = ingest_raw_events(
                StepContext(tables, "r", clock=fixed_clock), bus, max_events=999
            )
        bus.close()
        raw = tables.open(RAW_EVENTS)
        assert raw is not None
        rows = raw.to_pyarrow_table().drop_columns(["enqueued_time"]).sort_by("event_id")
        letters = read_dead_letters(tables, stage="raw_events").sort_by("dead_letter_id")
        results[name] = (step.events_applied, step.dead_lettered, rows, letters["reason"])
    assert results["flags"][0] == results["checked"][0] > len(sc.events)
    assert results["flags"][1] == results["checked"][1] > 0
    assert results["flags"][2].equals(results["checked"][2])
    assert results["flags"][3].equals(results["checked"][3])
    ids = results["flags"][2]["event_id"].to_pylist()
    assert "dup-last" in ids and "legacy-1" in ids


def _no_check(bodies: object) -> list[bool]:
    raise AssertionError("the decoder re-checked bodies the bus had flagged")
