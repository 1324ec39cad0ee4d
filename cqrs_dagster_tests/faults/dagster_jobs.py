"""A reconstructable copy of the projection job whose platform resource can break one read
model's step: while the marker file ``block_marker`` exists, ``block_table`` resolves to a path
under a regular FILE, so that step's Delta write fails for real (no patching): the run fails
mid-way, the steps before it have committed, the ones after it are skipped."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from cqrs_dagster.defs.names import PROJECTION_JOB
from cqrs_dagster.defs.read_models import READ_MODEL_ASSETS
from cqrs_dagster.defs.resources import PlatformResource
from cqrs_dagster.projections.tables import TableStore


class BreakablePlatform(PlatformResource):
    """The platform resource plus a test-only fault: one table unwritable while a marker exists."""

    block_marker: str = ""
    block_table: str = ""

    def tables(self) -> TableStore:
        store = super().tables()
        marker = Path(self.block_marker)
        if self.block_marker and marker.exists():
            return store.with_overrides({self.block_table: str(marker / self.block_table)})
        return store


def breakable_projection_job() -> dg.JobDefinition:
    """The projection job's assets and executor (without checks that other modules define)."""
    job = dg.define_asset_job(
        PROJECTION_JOB,
        selection=dg.AssetSelection.assets(*READ_MODEL_ASSETS),
        executor_def=dg.in_process_executor,
    )
    defs = dg.Definitions(
        assets=READ_MODEL_ASSETS,
        jobs=[job],
        resources={"platform": BreakablePlatform.configure_at_launch()},
    )
    return defs.resolve_job_def(PROJECTION_JOB)


def run_config(data_dir: Path, marker: Path, table: str) -> dict[str, object]:
    config = {"data_dir": str(data_dir), "env": "local", "block_marker": str(marker),
              "block_table": table}  # fmt: skip
    return {"resources": {"platform": {"config": config}}}
