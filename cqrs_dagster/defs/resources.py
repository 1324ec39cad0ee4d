"""The platform resource: gives assets, checks and sensors the adapters of the chosen environment.

The adapters are built by :mod:`cqrs_dagster.wiring`, as in every other host.

Configuration is read by :mod:`cqrs_dagster.settings` (``CQRS_*`` variables) when a run or a tick
starts, never at import time; ``data_dir`` and ``env`` may be overridden here (tests do).
Secrets (Cosmos key, Event Hubs connection string, storage key) stay in the environment and are
read by Settings at launch, so a missing one fails the run with a message naming it.
"""

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from cqrs_dagster.eventbus.port import EventBus
from cqrs_dagster.projections.engine import ProjectionEngine
from cqrs_dagster.projections.tables import TableStore
from cqrs_dagster.settings import Settings, load_settings
from cqrs_dagster.wiring import make_engine, make_event_bus, make_table_store


class PlatformResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Settings, the event bus and the Delta read store for the configured environment."""

    data_dir: str | None = None
    env: str | None = None
    delta_root: str | None = None

    _shared_bus: EventBus | None = PrivateAttr(default=None)
    _in_execution: bool = PrivateAttr(default=False)
    _spark: Any = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # Within a run or a tick, one bus connection serves every asset and check (an Event Hubs
        # connection costs seconds); it is closed when the run or tick ends.
        self._in_execution = True

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._shared_bus is not None:
            self._shared_bus.close()
            self._shared_bus = None
        if self._spark is not None:  # dagster-pyspark never stops its session: stop it here
            with contextlib.suppress(Exception):
                self._spark.spark_session.stop()
            self._spark = None
        self._in_execution = False

    def settings(self) -> Settings:
        return load_settings(data_dir=self.data_dir, env=self.env, delta_root=self.delta_root)

    def tables(self) -> TableStore:
        return make_table_store(self.settings())

    def engine(self) -> ProjectionEngine:
        """The projection engine of ``CQRS_PROJECTION_ENGINE``. Spark: the session is
        dagster-pyspark's ``LazyPySparkResource`` with ``spark.remote`` = ``CQRS_SPARK_REMOTE``
        (one per run or tick, stopped when it ends); a server that does not answer fails the run
        with ``EngineUnavailable`` naming the server and the setting."""
        settings = self.settings()
        if settings.projection_engine != "spark":
            return make_engine(settings)
        from cqrs_dagster.projections.engines.spark import probe, unavailable

        try:
            probe(settings.spark_remote)
        except OSError as exc:
            raise unavailable(settings.spark_remote, exc) from exc
        if self._spark is None:
            from dagster_pyspark import LazyPySparkResource

            self._spark = LazyPySparkResource(
                spark_config={
                    "spark.remote": settings.spark_remote,
                    "spark.sql.session.timeZone": "UTC",
                }
            )
        session = self._spark.spark_session
        if not self._in_execution:  # outside a run nothing would stop it: the engine owns it
            self._spark, owned = None, True
        else:
            owned = False
        from cqrs_dagster.projections.engines.spark import SparkEngine

        return SparkEngine(session, settings.spark_remote, owned=owned)

    @contextmanager
    def bus(self) -> Iterator[EventBus]:
        """The event bus: shared for the whole run or tick, or opened and closed around a call."""
        if self._in_execution:
            if self._shared_bus is None:
                self._shared_bus = make_event_bus(self.settings())
            yield self._shared_bus
            return
        bus = make_event_bus(self.settings())
        try:
            yield bus
        finally:
            bus.close()


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"platform": PlatformResource()})
