"""Dead letters through Dagster: a poison event (an order's and a customer's update arriving before
the event that creates them) becomes a dead letter with its reason, the Dagster run id and its bus
position, without blocking the events behind it; ``dead_letter_events_unresolved`` fails (WARN)
with count, ids and reasons; redriving before the fix resolves nothing; once the missing events
arrive, ``redrive_dead_letters`` resolves them and rebuilds gold, the check passes, and every read
model equals a clean replay of the committed events."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import orjson
import pytest

from cqrs_dagster.defs.dead_letters import CHECK_NAME, dead_letter_events_unresolved
from cqrs_dagster.defs.dead_letters import redrive_dead_letters as redrive_job
from cqrs_dagster.defs.read_models import READ_MODEL_ASSETS
from cqrs_dagster.defs.resources import PlatformResource
from cqrs_dagster.domain.events import EventEnvelope
from cqrs_dagster.projections import schemas
from cqrs_dagster.projections.dead_letters import read_dead_letters
from cqrs_dagster.settings import Settings
from cqrs_dagster.wiring import make_event_bus, make_table_store, make_write_store
from cqrs_dagster_tests.faults.dagster_jobs import breakable_projection_job, run_config
from cqrs_dagster_tests.faults.harness import (
    clean_replay,
    committed_events,
    handle,
    local_settings,
    normalized,
)

CHECK_JOB = dg.define_asset_job(
    "check_dead_letters", selection=dg.AssetSelection.checks(dead_letter_events_unresolved)
)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


def publish(settings: Settings, events: list[EventEnvelope]) -> None:
    bus, store = make_event_bus(settings), make_write_store(settings)
    try:
        bus.publish(events)
        store.mark_published(events)
    finally:
        bus.close()
        store.close()


def project(instance: dg.DagsterInstance, platform: PlatformResource) -> str:
    config = run_config(Path(str(platform.data_dir)), Path("/nonexistent-marker"), "")
    result = breakable_projection_job().execute_in_process(instance=instance, run_config=config)
    assert result.success
    return result.run_id


def check(instance: dg.DagsterInstance, platform: PlatformResource) -> dg.AssetCheckEvaluation:
    defs = dg.Definitions(
        assets=READ_MODEL_ASSETS[:1],  # raw_events
        asset_checks=[dead_letter_events_unresolved],
        jobs=[CHECK_JOB],
        resources={"platform": platform},
    )
    result = defs.resolve_job_def("check_dead_letters").execute_in_process(instance=instance)
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.check_name == CHECK_NAME
    return evaluation


def meta(evaluation: dg.AssetCheckEvaluation) -> dict[str, Any]:
    return {k: v.value for k, v in evaluation.metadata.items()}


def bus_position(settings: Settings, event_id: str) -> tuple[int, int]:
    bus = make_event_bus(settings)
    try:
        for p in range(bus.partition_count):
            for m in bus.read(p, -1, 100_000):
                if orjson.loads(m.body).get("eventId") == event_id:
                    return p, m.sequence_number
    finally:
        bus.close()
    raise AssertionError(f"{event_id} is not on the bus")


def test_poison_dead_letter_check_and_redrive(tmp_path: Path, instance: dg.DagsterInstance) -> None:
    settings = local_settings(tmp_path / "data", partitions=4)
    platform = PlatformResource(data_dir=str(settings.data_dir), env="local")
    item = {"sku": "s", "quantity": 2, "unitPrice": "4.50"}
    handle(settings, [
        {"type": "RegisterCustomer", "customerId": "c1", "name": "Ann", "email": "a@x.io"},
        {"type": "CreateOrder", "orderId": "o1", "customerId": "c1", "items": [item]},
        {"type": "RegisterCustomer", "customerId": "late-c", "name": "Lee", "email": "l@x.io"},
        {"type": "UpdateCustomer", "customerId": "late-c", "name": "Lee Late"},
        {"type": "CreateOrder", "orderId": "late-o", "customerId": "late-c", "items": [item]},
        {"type": "UpdateOrderStatus", "orderId": "late-o", "status": "Paid"},
        {"type": "UpdateOrderStatus", "orderId": "o1", "status": "Paid"},
        {"type": "CreateOrder", "orderId": "o2", "customerId": "c1", "items": [item, item]},
    ])  # fmt: skip
    events = committed_events(settings)
    late = [e for e in events if e.aggregate_id in ("late-c", "late-o")]
    first_of_late = [e for e in late if e.version == 1]
    poison = [e for e in late if e.version == 2]  # updates whose creating event is missing
    publish(settings, [e for e in events if e not in first_of_late])

    run_id = project(instance, platform)
    tables = make_table_store(settings)
    letters = read_dead_letters(tables, unresolved_only=True).to_pylist()
    assert {d["event_id"] for d in letters} == {e.event_id for e in poison}
    for d in letters:
        assert d["run_id"] == run_id
        assert (d["partition"], d["sequence_number"]) == bus_position(settings, d["event_id"])
    reasons = {d["stage"]: d["reason"] for d in letters}
    assert reasons == {
        schemas.ORDERS: "ValueError: OrderUpdated for unknown order late-o",
        schemas.CUSTOMERS: "ValueError: CustomerUpdated for unknown customer late-c",
    }
    orders = {r["order_id"]: r for r in normalized(tables)[schemas.ORDERS]}
    assert set(orders) == {"o1", "o2"} and orders["o1"]["status"] == "Paid"  # not blocked

    failing = check(instance, platform)
    assert not failing.passed and failing.severity == dg.AssetCheckSeverity.WARN
    assert meta(failing)["unresolved_count"] == 2
    assert sorted(meta(failing)["first_ids"]) == sorted(d["dead_letter_id"] for d in letters)
    assert [r["reason"] for r in meta(failing)["first_reasons"]] == [d["reason"] for d in letters]

    assert redrive_job.execute_in_process(instance=instance, resources={"platform": platform})
    assert not check(instance, platform).passed  # the cause is not fixed: nothing resolved

    publish(settings, first_of_late)  # the missing events arrive
    project(instance, platform)
    assert meta(check(instance, platform))["unresolved_count"] == 2  # applying v1 fixes no v2
    result = redrive_job.execute_in_process(instance=instance, resources={"platform": platform})
    assert result.success
    passing = check(instance, platform)
    assert passing.passed and meta(passing)["unresolved_count"] == 0

    got, want = normalized(tables), clean_replay(events, tmp_path / "clean", partitions=4)
    for name in schemas.READ_MODELS:
        assert got[name] == want[name], name
    summary = {r["order_id"]: r for r in got[schemas.ORDER_SUMMARY]}
    assert (summary["late-o"]["status"], summary["late-o"]["customer_name"]) == ("Paid", "Lee Late")
