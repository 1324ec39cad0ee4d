"""Child processes that the fault tests SIGKILL: each one kills ITSELF (``os.kill(getpid(),
SIGKILL)``) at a chosen point, so the kill lands exactly where the test wants it.

Run as ``python -m cqrs_dagster_tests.faults.children <mode> <data_dir> <partitions> <json>``:

- ``commands``: handle the commands of ``args["commands"]``; die right after the
  ``args["kill_after"]``-th write-store commit (before any relay ran).
- ``relay``: drain the outbox with ``args["batch"]``; die after the ``kill_at``-th bus send
  (``mode="after-publish"``: published, not marked) or after the ``kill_at``-th single event
  (``mode="between-events"``: the relay sends one event at a time).
- ``project``: ``catch_up`` with a fault hook that dies at the ``nth`` hit of ``point``.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from cqrs_dagster.command.handler import CommandHandler
from cqrs_dagster.command.relay import OutboxRelay
from cqrs_dagster.command.writestore.port import Save
from cqrs_dagster.command.writestore.sqlite import SqliteWriteStore
from cqrs_dagster.domain.commands import parse_command
from cqrs_dagster.domain.errors import DomainError
from cqrs_dagster.eventbus.port import EventBus, OutgoingEvent, PartitionInfo, ReceivedEvent
from cqrs_dagster.projections.context import StepContext
from cqrs_dagster.projections.pipeline import catch_up
from cqrs_dagster.settings import Settings
from cqrs_dagster.wiring import make_engine, make_event_bus, make_table_store

EXIT_NOT_KILLED = 3  # the child reached its end without its kill point


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class KillAfterCommitStore(SqliteWriteStore):
    """Dies right after its ``kill_after``-th committed save: committed, never published."""

    def __init__(self, path: Path, kill_after: int) -> None:
        super().__init__(path)
        self.kill_after = kill_after
        self.saves = 0

    def save(self, save: Save) -> None:
        super().save(save)
        self.saves += 1
        if self.saves == self.kill_after:
            die()


class KillingBus(EventBus):
    """A real bus that kills its process after a chosen send (see the module docstring)."""

    def __init__(self, inner: EventBus, mode: str, kill_at: int) -> None:
        self.inner, self.mode, self.kill_at = inner, mode, kill_at
        self.sends = self.events_sent = 0

    @property
    def partition_count(self) -> int:
        return self.inner.partition_count

    def send(self, events: Sequence[OutgoingEvent]) -> None:
        if self.mode == "after-publish":
            self.inner.send(events)
            self.sends += 1
            if self.sends == self.kill_at:
                die()
            return
        for event in events:
            self.inner.send([event])
            self.events_sent += 1
            if self.events_sent == self.kill_at:
                die()

    def read(
        self, partition: int, after_sequence_number: int, max_count: int
    ) -> list[ReceivedEvent]:
        return self.inner.read(partition, after_sequence_number, max_count)

    def partition_info(self, partition: int) -> PartitionInfo:
        return self.inner.partition_info(partition)


def handle_all(handler: CommandHandler, commands: Sequence[Mapping[str, Any]]) -> int:
    """Handle commands, ignoring domain rejections; returns how many were accepted."""
    accepted = 0
    for raw in commands:
        try:
            handler.handle(parse_command(dict(raw)))
            accepted += 1
        except DomainError:
            pass
    return accepted


def main(argv: list[str]) -> int:
    mode, data_dir, partitions, raw_args = argv
    settings = Settings(env="local", data_dir=Path(data_dir), bus_partitions=int(partitions))
    args: dict[str, Any] = orjson.loads(raw_args)
    if mode == "commands":
        store = KillAfterCommitStore(settings.write_db_path, int(args["kill_after"]))
        handle_all(CommandHandler(store), args["commands"])
    elif mode == "relay":
        bus = KillingBus(make_event_bus(settings), args["mode"], int(args["kill_at"]))
        store = SqliteWriteStore(settings.write_db_path)
        OutboxRelay(store, bus, batch_size=int(args["batch"])).drain()
    elif mode == "project":
        point, nth, hits = str(args["point"]), int(args["nth"]), [0]

        def fault(at: str) -> None:
            if at == point:
                hits[0] += 1
                if hits[0] == nth:
                    die()

        bus = make_event_bus(settings)
        catch_up(
            StepContext(
                make_table_store(settings),
                str(args.get("run_id", "killed-run")),
                fault=fault,
                engine=make_engine(settings),  # CQRS_PROJECTION_ENGINE: duckdb or spark
            ),
            bus,
            max_events=100_000,
            batch_size=int(args.get("batch", 100_000)),
        )
    else:
        raise SystemExit(f"unknown mode {mode}")
    return EXIT_NOT_KILLED


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
