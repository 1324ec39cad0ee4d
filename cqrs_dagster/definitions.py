"""The one Definitions object: everything under ``cqrs_dagster/defs`` (assets, checks, sensors,
schedules, resources bound for the environment that ``CQRS_ENV`` selects)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
