"""A projection run applies at most MAX_EVENTS_PER_RUN events per read model (its blocking checks
read what it appended: a bounded run keeps its peak memory bounded); the next runs go on from the
committed checkpoints until every read model has caught up."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from deltalake import DeltaTable

import cqrs_dagster
from cqrs_dagster.defs.resources import PlatformResource
from cqrs_dagster.projections import pipeline, schemas

from .scenario import build, new_bus


def test_a_run_is_capped_and_the_next_runs_catch_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sc = build(seed=5, customers=3, orders=6)
    bus = new_bus(tmp_path / "bus.sqlite", partitions=4)
    bus.publish(sc.events)
    bus.close()
    monkeypatch.setenv("CQRS_PROJECTION_BATCH_SIZE", "4")
    monkeypatch.setattr(pipeline, "MAX_EVENTS_PER_RUN", 8)
    assert pipeline.max_batches(4) == 2
    defs = dg.load_from_defs_folder(path_within_project=Path(cqrs_dagster.__file__).parent)
    job = defs.resolve_job_def("project_read_models")
    platform = PlatformResource(data_dir=str(tmp_path), env="local")
    raw_uri = platform.tables().uri(schemas.RAW_EVENTS)
    runs = 0
    with dg.instance_for_test() as instance:
        while True:
            assert job.execute_in_process(instance=instance, resources={"platform": platform})
            runs += 1
            rows = DeltaTable(raw_uri).to_pyarrow_table().num_rows
            assert rows <= 8 * runs  # two batches of four per run
            if rows == len(sc.events):
                break
            assert runs < 20
    orders = DeltaTable(platform.tables().uri(schemas.ORDERS)).to_pyarrow_table()
    assert sorted(orders["order_id"].to_pylist()) == sorted(sc.orders)
    assert runs == -(-len(sc.events) // 8)
