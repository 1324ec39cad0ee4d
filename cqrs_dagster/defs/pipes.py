"""The read models as ONE multi-asset computed by an external process through Dagster Pipes.

:func:`pipes_read_models` builds a multi-asset with the read models' keys (the same keys, deps
and descriptions as the in-process assets of :mod:`.read_models`, from the same pipeline
description): its run launches ``python -m cqrs_dagster.pipes`` (:mod:`cqrs_dagster.pipes`),
which runs the pipeline's ``catch_up`` and reports one materialization per read model, with the
engine in its metadata. It is an ALTERNATIVE to the in-process assets, not an addition (the keys
are the same), so it is built by a function and never loaded with the defs folder: a code
location that runs the projection elsewhere (Databricks, see ``docs/databricks.md``) puts it in
its Definitions in place of the read-model assets.

Locally (and in the tests) the launcher is ``dg.PipesSubprocessClient`` under the resource key
``pipes_subprocess_client``; on Databricks the same entry point is launched by
``PipesDatabricksClient`` / ``PipesDatabricksServerlessClient`` (``docs/databricks.md``).
"""

import sys
from collections.abc import Iterator, Sequence
from typing import Any

import dagster as dg

from cqrs_dagster.projections.pipeline import STAGES

from .names import DELTA_WRITER_POOL, GROUP

PIPES_COMMAND = (sys.executable, "-m", "cqrs_dagster.pipes")


def read_model_specs() -> list[dg.AssetSpec]:
    return [
        dg.AssetSpec(
            stage.table,
            deps=list(stage.deps),
            description=stage.description,
            group_name=GROUP,
            kinds={"delta", "python"},
        )
        for stage in STAGES
    ]


def pipes_read_models(
    command: Sequence[str] = PIPES_COMMAND, name: str = "pipes_read_models"
) -> dg.AssetsDefinition:
    """The read models as one multi-asset run by ``command`` under ``PipesSubprocessClient``."""

    @dg.multi_asset(specs=read_model_specs(), name=name, pool=DELTA_WRITER_POOL)
    def _read_models(
        context: dg.AssetExecutionContext, pipes_subprocess_client: dg.PipesSubprocessClient
    ) -> Iterator[dg.MaterializeResult[Any] | dg.AssetCheckResult]:
        invocation = pipes_subprocess_client.run(command=list(command), context=context)
        yield from invocation.get_results()

    return _read_models
