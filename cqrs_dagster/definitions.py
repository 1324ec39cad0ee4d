"""The one Definitions object: everything under ``cqrs_dagster/defs`` (assets, checks, sensors,
schedules, resources bound for the environment that ``CQRS_ENV`` selects), in a Dagster whose
steps sleep while they wait for a pool slot (:mod:`cqrs_dagster.defs.pool_claims`)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from cqrs_dagster.defs.pool_claims import sleep_between_pool_claims


@dg.definitions
def defs() -> dg.Definitions:
    sleep_between_pool_claims()
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
