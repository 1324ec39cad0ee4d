"""The recent-raw cache: the steps after an ingest take the rows it just committed from memory,
and get exactly what a Delta read of the same range gives (columns, types, order); a range it
does not hold whole is read from Delta."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from cqrs_dagster.eventbus.port import OutgoingEvent
from cqrs_dagster.projections.context import StepContext
from cqrs_dagster.projections.delta_io import read_raw_range
from cqrs_dagster.projections.pipeline import catch_up
from cqrs_dagster.projections.recent_raw import RecentRaw
from cqrs_dagster.projections.schemas import RAW_EVENTS, RAW_EVENTS_SCHEMA

from .scenario import build, fixed_clock, new_bus, new_tables, poison_messages, snapshot


def _rows(n: int, first: int) -> pa.Table:
    table = pa.Table.from_pylist([], schema=RAW_EVENTS_SCHEMA)
    columns = {f.name: pa.nulls(n, f.type) for f in RAW_EVENTS_SCHEMA}
    columns["ingest_seq"] = pa.array(range(first, first + n), pa.int64())
    return pa.table(columns, schema=table.schema)


def test_holds_contiguous_commits_and_answers_only_whole_ranges() -> None:
    recent = RecentRaw(limit=10)
    schema = RAW_EVENTS_SCHEMA
    recent.add("u", schema, -1, _rows(4, 0))  # seqs 0..3
    recent.add("u", schema, 3, _rows(4, 4))  # seqs 4..7
    got = recent.get("u", 1, 6, ["data"])
    assert got is not None
    assert got.column_names == ["data", "ingest_seq"]
    assert got["ingest_seq"].to_pylist() == [2, 3, 4, 5, 6]
    assert recent.get("u", -1, 8, None) is None  # beyond what was committed here
    assert recent.get("other", 1, 6, None) is None  # another table
    recent.add("u", schema, 7, _rows(4, 8))  # 12 rows > limit 10: the oldest commit goes
    assert recent.get("u", -1, 3, None) is None
    assert recent.get("u", 3, 11, None) is not None
    recent.add("u", schema, 20, _rows(2, 21))  # not contiguous: starts over
    assert recent.get("u", 3, 11, None) is None
    assert recent.get("u", 20, 22, None) is not None


def test_a_table_of_another_schema_is_never_served_from_memory() -> None:
    recent = RecentRaw()
    old = RAW_EVENTS_SCHEMA.set(
        RAW_EVENTS_SCHEMA.get_field_index("offset"), pa.field("offset", pa.int64())
    )
    recent.add("u", old, -1, _rows(3, 0))
    assert recent.get("u", -1, 2, None) is None


def test_cached_ranges_equal_delta_reads_and_catch_up_tables_are_unchanged(
    tmp_path: Path,
) -> None:
    sc = build(seed=11, customers=5, orders=30)
    messages = list(sc.events) + sc.events[:7]  # with redeliveries
    outs = {}
    for name, limit in (("cached", 100_000), ("delta", 0)):
        bus, tables = new_bus(tmp_path / f"{name}.sqlite"), new_tables(tmp_path / name)
        bus.publish(messages)
        bus.send([OutgoingEvent(key, body) for key, body in poison_messages(sc)])
        ctx = StepContext(tables, "run", clock=fixed_clock, recent=RecentRaw(limit=limit))
        catch_up(ctx, bus, max_events=10_000, batch_size=40, raw_batch_size=15)
        outs[name] = snapshot(tables)
        raw = tables.open(RAW_EVENTS)
        assert raw is not None
        if limit:
            assert ctx.recent.hits > 0  # silver and gold took rows from memory
            last = ctx.recent.get(raw.table_uri, -1, 10**9, None)
            assert last is None  # not the whole table: only the newest commits
            held = ctx.recent._after, ctx.recent._upto
            for columns in (None, ["event_type", "aggregate_id", "data"]):
                memory = ctx.recent.get(raw.table_uri, held[0], held[1], columns)
                disk = read_raw_range(raw, held[0], held[1], columns)
                assert memory is not None
                assert memory.schema == disk.schema
                assert memory.equals(disk)
        else:
            assert ctx.recent.hits == 0
    assert outs["cached"] == outs["delta"]
