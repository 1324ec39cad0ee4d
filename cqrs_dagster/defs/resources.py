"""The platform resource: gives assets, checks and sensors the adapters of the chosen environment.

The adapters are built by :mod:`cqrs_dagster.wiring`, as in every other host.

Configuration is read by :mod:`cqrs_dagster.settings` (``CQRS_*`` variables) when a run or a tick
starts, never at import time; ``data_dir`` and ``env`` may be overridden here (tests do).
Secrets (Cosmos key, Event Hubs connection string, storage key) stay in the environment and are
read by Settings at launch, so a missing one fails the run with a message naming it.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
from pydantic import PrivateAttr

from cqrs_dagster.eventbus.port import EventBus
from cqrs_dagster.projections.tables import TableStore
from cqrs_dagster.settings import Settings, load_settings
from cqrs_dagster.wiring import make_event_bus, make_table_store


class PlatformResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Settings, the event bus and the Delta read store for the configured environment."""

    data_dir: str | None = None
    env: str | None = None
    delta_root: str | None = None

    _shared_bus: EventBus | None = PrivateAttr(default=None)
    _in_execution: bool = PrivateAttr(default=False)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # Within a run or a tick, one bus connection serves every asset and check (an Event Hubs
        # connection costs seconds); it is closed when the run or tick ends.
        self._in_execution = True

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._shared_bus is not None:
            self._shared_bus.close()
            self._shared_bus = None
        self._in_execution = False

    def settings(self) -> Settings:
        return load_settings(data_dir=self.data_dir, env=self.env, delta_root=self.delta_root)

    def tables(self) -> TableStore:
        return make_table_store(self.settings())

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
