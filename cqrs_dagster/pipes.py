"""Dagster Pipes entry point: the read-model projection as an external process.

``python -m cqrs_dagster.pipes`` (console script ``cqrs-pipes``) runs the pipeline's
:func:`~cqrs_dagster.projections.pipeline.catch_up` once (bronze and silver in batches of
``CQRS_PROJECTION_BATCH_SIZE`` up to a run's worth of events, then gold), exactly as a Dagster
run of the read-model assets does, and reports one materialization per read model to the
Dagster run that launched it, with the engine that computed it in the metadata. Rows and
checkpoints commit through the same shared committer, so exactly-once holds whoever launches it.

Configuration is the platform's (``CQRS_*``, read by :mod:`cqrs_dagster.settings`): the launcher
sets the environment (``PipesSubprocessClient(env=...)`` locally; the task's environment on
Databricks). With ``CQRS_PROJECTION_ENGINE=spark`` the engine uses the process's active Spark
session when there is one (a Databricks job's cluster), else a Spark Connect session to
``CQRS_SPARK_REMOTE`` (Sail locally, Databricks Connect or a Spark Connect server).

Transport (``--transport``): ``env`` (the default: Pipes' own bootstrap through environment
variables, as ``PipesSubprocessClient`` does), ``dbfs`` (``PipesDatabricksClient`` on classic
clusters) or ``volumes`` (``PipesDatabricksServerlessClient``: Unity Catalog volumes, the
bootstrap in the task's command-line arguments). Only ``env`` is tested here.

This module imports ``dagster_pipes`` (the dependency-free Pipes protocol) and never
``dagster``: the external process needs neither the Dagster framework nor a Dagster instance
(see the ``pipes-without-dagster`` import contract in ``pyproject.toml``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

from cqrs_dagster.projections.engine import ProjectionEngine
from cqrs_dagster.projections.pipeline import MAX_EVENTS_PER_RUN, STAGES, PassResult
from cqrs_dagster.projections.report import StepReport
from cqrs_dagster.settings import Settings, load_settings
from cqrs_dagster.wiring import make_engine, make_event_bus, make_table_store

TRANSPORTS = ("env", "dbfs", "volumes")


def engine_for(settings: Settings) -> ProjectionEngine:
    """The engine of ``CQRS_PROJECTION_ENGINE``; Spark over the process's active session if
    there is one (a Databricks job), else over a Connect session to ``CQRS_SPARK_REMOTE``."""
    if settings.projection_engine == "spark":
        from cqrs_dagster.projections.engines.spark import SparkEngine, active_session

        session = active_session()
        if session is not None:  # not ours to stop; CQRS_SPARK_REMOTE does not name it
            return SparkEngine(session)
    return make_engine(settings)


def materialization_metadata(engine: str, reports: Sequence[StepReport]) -> dict[str, Any]:
    """What one read model's materialization records (the in-process assets' numbers)."""
    last = reports[-1]
    meta: dict[str, Any] = {
        "engine": {"raw_value": engine, "type": "text"},
        "events_read": sum(r.events_read for r in reports),
        "events_applied": sum(r.events_applied for r in reports),
        "duplicates_skipped": sum(r.duplicates_skipped for r in reports),
        "dead_lettered": sum(r.dead_lettered for r in reports),
        "rows_written": sum(r.rows_written for r in reports),
        "batches": len(reports),
        "row_count": last.row_count,
        "checkpoint": {"raw_value": dict(last.checkpoint), "type": "json"},
    }
    if last.delta_version is not None:
        meta["delta_version"] = last.delta_version
    return meta


def project(settings: Settings, run_id: str) -> tuple[str, PassResult]:
    """One catch-up pass of every read model; the engine's name and what the pass did."""
    from cqrs_dagster.projections.context import StepContext
    from cqrs_dagster.projections.pipeline import catch_up

    engine = engine_for(settings)
    bus = make_event_bus(settings)
    try:
        result = catch_up(
            StepContext(make_table_store(settings), run_id, engine=engine),
            bus,
            max_events=MAX_EVENTS_PER_RUN,
            batch_size=settings.projection_batch_size,
        )
    finally:
        bus.close()
        engine.close()
    return engine.name, result


def _open(transport: str) -> Any:
    import dagster_pipes as pipes

    if transport == "dbfs":
        return pipes.open_dagster_pipes(
            context_loader=pipes.PipesDbfsContextLoader(),
            message_writer=pipes.PipesDbfsMessageWriter(),
        )
    if transport == "volumes":
        return pipes.open_dagster_pipes(
            context_loader=pipes.PipesUnityCatalogVolumesContextLoader(),
            message_writer=pipes.PipesUnityCatalogVolumesMessageWriter(),
            params_loader=pipes.PipesCliArgsParamsLoader(),  # type: ignore[no-untyped-call]
        )
    return pipes.open_dagster_pipes()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cqrs-pipes", description="The read-model projection as a Dagster Pipes process."
    )
    parser.add_argument("--transport", choices=TRANSPORTS, default="env")
    args, _ = parser.parse_known_args(argv)  # the volumes bootstrap adds its own arguments
    with ExitStack() as stack:
        context = stack.enter_context(_open(args.transport))
        settings = load_settings()
        engine, result = project(settings, context.run_id)
        context.log.info(f"{result.events_read} bus events read with the {engine} engine")
        wanted = set(context.asset_keys) if context.is_asset_step else None
        for stage in STAGES:
            reports = result.written.get(stage.table)
            if not reports or (wanted is not None and stage.table not in wanted):
                continue
            context.report_asset_materialization(
                asset_key=stage.table, metadata=materialization_metadata(engine, reports)
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
