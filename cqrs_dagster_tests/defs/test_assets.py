"""Materializing the read-model assets with dg.materialize over a seeded bus: tables, metadata,
checks, and that a second materialization changes nothing."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import dagster as dg
import pandas as pd
from deltalake import DeltaTable

import cqrs_dagster
from cqrs_dagster.defs.resources import PlatformResource
from cqrs_dagster.projections import schemas
from cqrs_dagster.settings import Settings


def all_defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(cqrs_dagster.__file__).parent)


def materialize(instance: dg.DagsterInstance, platform: PlatformResource) -> dg.ExecuteInJobResult:
    defs = all_defs()
    job = defs.resolve_job_def("project_read_models")
    return job.execute_in_process(instance=instance, resources={"platform": platform})


def table(platform: PlatformResource, name: str) -> pd.DataFrame:
    uri = platform.tables().uri(name)
    return DeltaTable(uri).to_pandas()


def materialization_meta(result: dg.ExecuteInJobResult, asset: str) -> dict[str, object]:
    events = result.asset_materializations_for_node(asset)
    assert events, f"{asset} was not materialized"
    return {k: v.value for k, v in events[-1].metadata.items()}


def test_projection_job_builds_every_read_model(
    seeded: Settings, instance: dg.DagsterInstance, platform: PlatformResource
) -> None:
    result = materialize(instance, platform)
    assert result.success
    orders = table(platform, schemas.ORDERS)
    customers = table(platform, schemas.CUSTOMERS)
    summary = table(platform, schemas.ORDER_SUMMARY)
    daily = table(platform, schemas.DAILY_ORDER_METRICS)
    assert len(customers) == 3 and customers["customer_id"].is_unique
    assert len(orders) == 6 and orders["order_id"].is_unique
    assert sorted(orders["status"]) == ["Created"] * 3 + ["Paid"] * 3
    assert set(summary["customer_name"]) == {"Customer 0", "Customer 1", "Customer 2"}
    # Orders have quantities 1 and 2 at 10.25 for each of 3 customers: 3 * (10.25 + 20.50).
    assert int(daily["order_count"].sum()) == 6
    assert sum(daily["total_revenue"], Decimal(0)) == Decimal("92.25")

    raw_meta = materialization_meta(result, "raw_events")
    assert raw_meta["events_applied"] == 3 + 6 + 3
    assert raw_meta["lag_seconds"] == 0.0
    assert raw_meta["events_behind"] == 0
    assert isinstance(raw_meta["delta_version"], int)
    checks = result.get_asset_check_evaluations()
    assert {c.check_name for c in checks} >= {
        "raw_events_unique_event_ids",
        "raw_events_envelope_schema",
        "orders_unique_keys",
        "orders_amounts",
    }
    assert all(c.passed for c in checks)
    unique = next(c for c in checks if c.check_name == "raw_events_unique_event_ids")
    assert unique.metadata["scope"].value == "this run's rows"
    assert unique.metadata["events_checked"].value == 3 + 6 + 3


def test_second_materialization_is_a_no_op(
    seeded: Settings, instance: dg.DagsterInstance, platform: PlatformResource
) -> None:
    assert materialize(instance, platform).success
    before = {m: table(platform, m) for m in schemas.READ_MODELS}
    again = materialize(instance, platform)
    assert again.success
    assert materialization_meta(again, "raw_events")["events_applied"] == 0
    for name, frame in before.items():
        after = table(platform, name)
        key = frame.columns[0]
        pd.testing.assert_frame_equal(
            frame.sort_values(key).reset_index(drop=True),
            after.sort_values(key).reset_index(drop=True),
            check_like=True,
        )
