"""In-run raw_events checks read only what their run appended: the run's ingest_seq range comes
from the Delta commit info, a duplicate is still found against its event date, and rows outside
the scope are left to the whole-table audit."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import CommitProperties, Transaction, write_deltalake

from cqrs_dagster.projections import schemas
from cqrs_dagster.projections.context import StepContext
from cqrs_dagster.projections.pipeline import catch_up
from cqrs_dagster.projections.tables import PinnedTables, TableStore
from cqrs_dagster.quality import rules
from cqrs_dagster.quality.scope import RunScope, raw_scope_of_run
from cqrs_dagster.settings import Settings
from cqrs_dagster.wiring import make_event_bus, make_table_store
from cqrs_dagster_tests.defs.seed import run_commands, seed_commands


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[Settings, TableStore]:
    settings = Settings(env="local", data_dir=tmp_path / "data")
    seed_commands(settings, customers=2, orders_per_customer=2)  # 2 + 4 + 2 = 8 events
    tables = make_table_store(settings)
    bus = make_event_bus(settings)
    catch_up(StepContext(tables, "run-1"), bus, max_events=10_000)
    run_commands(settings, [{"type": "UpdateCustomer", "customerId": "cust-0", "name": "Z"}])
    catch_up(StepContext(tables, "run-2"), bus, max_events=10_000)
    bus.close()
    return settings, tables


def raw_rows(tables: TableStore) -> list[dict[str, object]]:
    table = tables.open(schemas.RAW_EVENTS)
    assert table is not None
    return sorted(table.to_pyarrow_table().to_pylist(), key=lambda r: int(str(r["ingest_seq"])))


def append_as_run(tables: TableStore, rows: list[dict[str, object]], run_id: str) -> None:
    """Append crafted rows the way a projection run commits (run id + checkpoint)."""
    last = max(int(str(r["ingest_seq"])) for r in rows)
    write_deltalake(
        tables.uri(schemas.RAW_EVENTS),
        pa.Table.from_pylist(rows, schema=schemas.RAW_EVENTS_SCHEMA),
        mode="append",
        partition_by=["event_date"],
        commit_properties=CommitProperties(
            custom_metadata={"cqrs.run_id": run_id},
            app_transactions=[Transaction("raw_events/ingest_seq", last)],
        ),
    )


def test_scope_is_the_ingest_seq_range_a_run_appended(
    two_runs: tuple[Settings, TableStore],
) -> None:
    _, tables = two_runs
    assert raw_scope_of_run(tables, "run-1") == RunScope(-1, 7)
    assert raw_scope_of_run(tables, "run-2") == RunScope(7, 8)
    assert raw_scope_of_run(tables, "never-ran") is None


def test_scoped_unique_ids_finds_a_duplicate_the_run_appended(
    two_runs: tuple[Settings, TableStore],
) -> None:
    _, tables = two_runs
    original = raw_rows(tables)[0]
    append_as_run(tables, [{**original, "ingest_seq": 9}], "run-3")
    scope = raw_scope_of_run(tables, "run-3")
    assert scope == RunScope(8, 9)
    outcome = rules.unique_event_ids(tables, scope)
    assert not outcome.passed and outcome.offending == [original["event_id"]]
    assert outcome.figures["events_checked"] == 1
    # run-2's own rows hold no duplicate: its scoped check passes.
    assert rules.unique_event_ids(tables, raw_scope_of_run(tables, "run-2")).passed


def test_scoped_unique_ids_reads_the_files_whose_id_range_overlaps_the_run(
    two_runs: tuple[Settings, TableStore],
) -> None:
    """A live run's ids are newer than the day's earlier files: those are not read, so the
    check's cost follows the run's batch, not the day's volume (time-ordered ids)."""
    _, tables = two_runs
    template = raw_rows(tables)[0]
    early = [
        {**template, "event_id": f"00000000-0000-7000-8000-{n:012d}", "ingest_seq": 9 + n}
        for n in range(5)
    ]
    append_as_run(tables, early, "run-early")
    late = {**template, "event_id": "ffffffff-0000-7000-8000-000000000000", "ingest_seq": 14}
    append_as_run(tables, [late], "run-late")
    outcome = rules.unique_event_ids(tables, raw_scope_of_run(tables, "run-late"))
    assert outcome.passed
    assert outcome.figures["same_day_rows_read"] == 1  # its own file only, of 6+ rows that day
    # A later run that republishes an early event still finds it in the early file.
    append_as_run(tables, [{**early[2], "ingest_seq": 15}], "run-again")
    again = rules.unique_event_ids(tables, raw_scope_of_run(tables, "run-again"))
    assert not again.passed and again.offending == [early[2]["event_id"]]


def test_scoped_envelope_check_reads_only_the_run_rows(
    two_runs: tuple[Settings, TableStore],
) -> None:
    _, tables = two_runs
    template = raw_rows(tables)[0]
    bad = {**template, "event_id": "bad-type", "event_type": "Exploded", "ingest_seq": 9}
    append_as_run(tables, [bad], "run-3")
    assert not rules.envelope_schema(tables, raw_scope_of_run(tables, "run-3")).passed
    # A run that appended only good rows passes; the whole-table audit still sees the bad one.
    assert rules.envelope_schema(tables, raw_scope_of_run(tables, "run-2")).passed
    whole = rules.envelope_schema(tables)
    assert not whole.passed and whole.offending == ["bad-type"]


def test_a_pass_checks_read_its_raw_rows_from_memory(tmp_path: Path) -> None:
    settings = Settings(env="local", data_dir=tmp_path / "data")
    seed_commands(settings, customers=2, orders_per_customer=2)
    tables = make_table_store(settings)
    bus = make_event_bus(settings)
    ctx = StepContext(tables, "run-1")
    catch_up(ctx, bus, max_events=10_000)
    bus.close()
    seq = raw_scope_of_run(tables, "run-1")
    assert seq is not None
    from_memory = RunScope(seq.after_seq, seq.upto_seq, recent=ctx.recent)
    hits = ctx.recent.hits
    held = rules.envelope_schema(PinnedTables.of(tables), from_memory)
    assert ctx.recent.hits == hits + 1  # the rows came from the pass's memory
    assert held == rules.envelope_schema(tables, seq)  # and give what Delta gives
    assert held.passed and rules.unique_event_ids(tables, from_memory).passed
    assert ctx.recent.hits == hits + 2


def test_pinned_tables_keep_the_snapshot_they_first_opened(
    two_runs: tuple[Settings, TableStore],
) -> None:
    _, tables = two_runs
    pinned = PinnedTables.of(tables)
    first = pinned.open(schemas.RAW_EVENTS)
    assert first is not None
    append_as_run(tables, [dict(raw_rows(tables)[0], ingest_seq=999)], "run-3")
    assert pinned.open(schemas.RAW_EVENTS) is first  # one log read per table, one snapshot
    latest = tables.open(schemas.RAW_EVENTS)
    assert latest is not None and latest.version() == first.version() + 1
    with pytest.raises(TypeError, match="read-only"):
        pinned.ensure(schemas.ORDERS)


def test_touched_rows_are_read_once_per_table_version(
    two_runs: tuple[Settings, TableStore],
) -> None:
    settings, tables = two_runs
    scope = raw_scope_of_run(tables, "run-1")
    assert scope is not None
    once = rules.touched_rows(tables, schemas.ORDERS, "order_id", scope)
    assert once.num_rows == 4
    assert rules.touched_rows(tables, schemas.ORDERS, "order_id", scope) is once
    # A new commit on orders is a new version: its rows are read again, never a stale answer.
    order = str(once["order_id"][0])
    run_commands(settings, [{"type": "CancelOrder", "orderId": order, "reason": "test"}])
    bus = make_event_bus(settings)
    catch_up(StepContext(tables, "run-3"), bus, max_events=10_000)
    bus.close()
    again = rules.touched_rows(tables, schemas.ORDERS, "order_id", scope)
    assert again is not once
    statuses = dict(zip(again["order_id"].to_pylist(), again["status"].to_pylist(), strict=True))
    assert statuses[order] == "Cancelled"
