"""The maintain_read_models job (as the schedule runs it): contents and checkpoints unchanged,
files compacted, observations logged, also right after a rebuild swapped rows into a table."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

import cqrs_dagster
from cqrs_dagster.defs.resources import PlatformResource
from cqrs_dagster.projections import schemas
from cqrs_dagster.projections.context import StepContext
from cqrs_dagster.projections.pipeline import catch_up
from cqrs_dagster.projections.rebuild import rebuild
from cqrs_dagster.projections.status import read_checkpoints
from cqrs_dagster.settings import Settings
from cqrs_dagster.wiring import make_event_bus
from cqrs_dagster_tests.defs.seed import run_commands


def frames(platform: PlatformResource) -> dict[str, pd.DataFrame]:
    out = {}
    for name in schemas.READ_MODELS:
        table = platform.tables().open(name)
        assert table is not None
        frame = table.to_pandas()
        out[name] = frame.sort_values(list(frame.columns[:2])).reset_index(drop=True)
    return out


def test_maintenance_job_keeps_contents_after_a_rebuild(
    seeded: Settings, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform = PlatformResource(data_dir=str(seeded.data_dir), env="local")
    tables = platform.tables()
    bus = make_event_bus(seeded)
    catch_up(StepContext(tables, "seed"), bus, max_events=10_000)
    for i in range(3):  # more small commits to compact
        run_commands(seeded, [{"type": "UpdateCustomer", "customerId": "cust-1", "name": f"N{i}"}])
        catch_up(StepContext(tables, f"more-{i}"), bus, max_events=10_000)
    bus.close()
    assert rebuild(tables, schemas.ORDERS, run_id="rebuild").switched
    before, checkpoints = frames(platform), read_checkpoints(tables)
    raw_files = len(tables.open(schemas.RAW_EVENTS).file_uris())  # type: ignore[union-attr]

    defs = dg.load_from_defs_folder(path_within_project=Path(cqrs_dagster.__file__).parent)
    job = defs.resolve_job_def("maintain_read_models")
    monkeypatch.setenv("CQRS_VACUUM_RETENTION_HOURS", "0")  # read by Settings when the run starts
    result = job.execute_in_process(instance=instance, resources={"platform": platform})
    assert result.success

    after = frames(platform)
    for name in schemas.READ_MODELS:
        pd.testing.assert_frame_equal(before[name], after[name])
    assert read_checkpoints(tables) == checkpoints
    assert len(tables.open(schemas.RAW_EVENTS).file_uris()) < raw_files  # type: ignore[union-attr]
    observed = {
        e.asset_observation_data.asset_observation.asset_key.to_user_string()
        for e in result.all_events
        if e.event_type_value == "ASSET_OBSERVATION"
    }
    assert set(schemas.READ_MODELS) <= observed
    # The rebuilt table is the live one at its own path; no copy of it is left under the root.
    assert sorted(p.name for p in Path(tables.root).glob("orders*")) == [schemas.ORDERS]
