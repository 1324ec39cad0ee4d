"""The outbox relay: moves committed events from the write store's outbox onto the event bus.

Delivery is AT-LEAST-ONCE. Each round takes the oldest pending events, publishes them, and only
then marks them published. A crash (or an error) after publishing but before marking leaves them
pending, so the next round publishes them again with the SAME ``eventId``: consumers deduplicate
by ``eventId`` and guard by version. An event is never marked before the bus has accepted it, so
none is ever lost, and none is published for a write that did not commit (the outbox is written
in the command's own transaction).

Order: the store returns pending events in version order per aggregate and the bus keeps order
per partition key (the aggregate id), so the first delivery of each event follows version order.
A republished batch can repeat versions already delivered, never skip ahead of one missing.
"""

from __future__ import annotations

import logging
import threading

from cqrs_dagster.command.writestore.port import WriteStore
from cqrs_dagster.eventbus.port import EventBus

log = logging.getLogger(__name__)


class OutboxRelay:
    """Publishes pending outbox events to the bus, oldest first, ``batch_size`` at a time."""

    def __init__(
        self,
        store: WriteStore,
        bus: EventBus,
        batch_size: int = 500,
        *,
        max_backoff: float = 30.0,
        linger: float = 0.01,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.store = store
        self.bus = bus
        self.batch_size = batch_size
        self.max_backoff = max_backoff
        self.linger = linger
        self.published_total = 0

    def run_once(self) -> int:
        """Publish one batch of pending events, then mark it published; the number published."""
        events = self.store.pending_events(self.batch_size)
        if not events:
            return 0
        self.bus.publish(events)
        self.store.mark_published(events)
        self.published_total += len(events)
        return len(events)

    def drain(self, max_rounds: int | None = None) -> int:
        """Publish until nothing is pending (or ``max_rounds`` batches); the number published."""
        total = rounds = 0
        while (max_rounds is None or rounds < max_rounds) and (n := self.run_once()):
            total += n
            rounds += 1
        return total

    def run_forever(self, stop: threading.Event, interval: float) -> None:
        """Relay until ``stop`` is set: straight on while full batches remain, ``interval`` s
        when idle, and ``linger`` s (10 ms) after a partial batch.

        The linger lets a steady stream of commands accumulate into fewer, larger rounds: each
        round is one transaction on the bus and one ``mark_published`` transaction (an fsync
        holding the write store's lock, which the command path's group commits then wait for).
        Without it, under load the relay would chase the writer with a round every few events.

        An error (bus or store unavailable) is logged and retried after a backoff that doubles
        from ``interval`` up to ``max_backoff``; the loop never dies of it.
        """
        backoff = interval
        while not stop.is_set():
            try:
                published = self.run_once()
            except Exception:
                log.exception("outbox relay round failed; retrying in %.1f s", backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, max(self.max_backoff, interval))
                continue
            backoff = interval
            if published == 0:
                stop.wait(interval)
            elif published < self.batch_size:
                stop.wait(min(self.linger, interval))
