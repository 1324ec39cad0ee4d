"""Shared machinery of the Azure fault tests: the three local servers, durable and restartable,
commands acknowledged on Cosmos DB, and the end-state check after recovery.

The servers (:class:`AzureStack`) are the project's local stand-ins started so that a kill keeps
what they acknowledged, as the Azure services do (Azurite on disk with every write saved before
its answer, cosmosdb-server with a write journal, the Event Hubs test server with an event
journal): each test SIGKILLs one by its process group and starts it again on the same port.

:func:`verify_acknowledged` is the end-state check: every event of every acknowledged command is
on the hub and in ``raw_events`` exactly once, nothing else is, every aggregate's read-model row
is at its last acknowledged version, and every table equals (harness.verify_tables) a clean
replay of the committed events into a fresh local data dir.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cqrs_dagster.command.handler import CommandHandler
from cqrs_dagster.command.writestore.cosmos import provision
from cqrs_dagster.domain.commands import parse_command
from cqrs_dagster.domain.events import CUSTOMER, EventEnvelope
from cqrs_dagster.projections.schemas import CUSTOMERS, DEAD_LETTER_EVENTS, ORDERS, RAW_EVENTS
from cqrs_dagster.settings import Settings
from cqrs_dagster.wiring import make_eventhubs_bus, make_table_store, make_write_store
from cqrs_dagster_tests.fixtures.azurite import AzuriteServer, durable_azurite
from cqrs_dagster_tests.fixtures.cosmos import CosmosServer, durable_cosmos
from cqrs_dagster_tests.fixtures.eventhubs import EventHubsServer, durable_eventhubs
from cqrs_dagster_tests.fixtures.procs import RestartableServer

from .harness import CommandModel, Verdict, table_rows, verify_tables

PARTITIONS = 2  # every SDK call costs ~0.5 s per partition: few partitions keep the tests short
# The clean replay runs on the local bus, whose partition hash is not Event Hubs' own.
ALSO_IGNORED = {RAW_EVENTS: {"partition"}, DEAD_LETTER_EVENTS: {"partition"}}


@dataclass
class AzureStack:
    """The three local servers, each restartable on its port with its state kept."""

    cosmos: CosmosServer
    cosmos_process: RestartableServer
    eventhubs: EventHubsServer
    eventhubs_process: RestartableServer
    azurite: AzuriteServer
    azurite_process: RestartableServer

    @property
    def azurite_died_marker(self) -> Path:
        """Written by Azurite when its fault hook killed it (see :func:`running_azure_stack`)."""
        assert self.azurite_process.env is not None
        return Path(self.azurite_process.env["DURABLE_AZURITE_DIE_MARKER"])

    @property
    def cosmos_died_marker(self) -> Path:
        """Written by the Cosmos server when its fault hook killed it."""
        assert self.cosmos_process.env is not None
        return Path(self.cosmos_process.env["DURABLE_COSMOS_DIE_MARKER"])

    def settings(self, data_dir: Path, container: str | None = None, **overrides: Any) -> Settings:
        """CQRS_ENV=azure settings on a fresh Cosmos database (provisioned), hub and container
        (``container``: created with this name)."""
        if container is None:
            container = self.azurite.fresh_container()
        else:
            with self.azurite.blob_service() as service:
                service.create_container(container)
        database = self.cosmos.fresh_database_name()
        client = self.cosmos.client()
        try:
            provision(client, database)
        finally:
            client.close()
        fields: dict[str, Any] = {
            "env": "azure",
            "data_dir": data_dir,
            "cosmos_endpoint": self.cosmos.endpoint,
            "cosmos_key": self.cosmos.key,
            "cosmos_database": database,
            "eventhub_connection_string": self.eventhubs.connection_string,
            "eventhub_name": self.eventhubs.new_hub_name(),
            "delta_root": f"az://{container}/delta",
            "storage_use_emulator": True,
            "storage_endpoint": self.azurite.blob_endpoint,
            "relay_interval_seconds": 0.05,
            **overrides,
        }
        return Settings(**fields)


#: Containers whose name starts so are where Azurite dies right after storing the first data
#: commit file of ``customers`` (once per stack: see durable_azurite.js).
DIE_AFTER_COMMIT_PREFIX = "diesaftercommit"
#: The command id whose document write the Cosmos DB server stores and then dies before
#: answering (once per stack: see durable_cosmosdb_server.js).
COSMOS_DIES_AFTER_STORING = "cosmos-dies-after-storing-this-command"


@contextmanager
def running_azure_stack(workdir: Path) -> Iterator[AzureStack]:
    """Start the three durable servers on free 127.0.0.1 ports; stop every process at the end."""
    cosmos, cosmos_process = durable_cosmos(workdir / "cosmos")
    eventhubs, eventhubs_process = durable_eventhubs(workdir / "eventhubs", PARTITIONS)
    azurite, azurite_process = durable_azurite(workdir / "azurite")
    cosmos_process.env = {
        "DURABLE_COSMOS_DIE_AFTER_WRITE": f'"{COSMOS_DIES_AFTER_STORING}"',
        "DURABLE_COSMOS_DIE_MARKER": str(workdir / "cosmos-died"),
    }
    azurite_process.env = {
        "DURABLE_AZURITE_DIE_AFTER_PUT": (
            rf"^{DIE_AFTER_COMMIT_PREFIX}[0-9a-f]*/delta/customers/_delta_log/0+1\.json$"
        ),
        "DURABLE_AZURITE_DIE_MARKER": str(workdir / "azurite-died"),
    }
    with ExitStack() as stack:
        for process in (cosmos_process, eventhubs_process, azurite_process):
            stack.enter_context(process)
        yield AzureStack(
            cosmos, cosmos_process, eventhubs, eventhubs_process, azurite, azurite_process
        )


# -- the write side ------------------------------------------------------------------------------


@dataclass
class Acknowledged:
    """The answers of acknowledged commands (201 bodies, or 200 replays of them)."""

    bodies: list[dict[str, Any]] = field(default_factory=list)

    def add(self, body: dict[str, Any]) -> None:
        self.bodies.append(body)

    @property
    def event_ids(self) -> set[str]:
        return {e for body in self.bodies for e in body["eventIds"]}

    def versions(self) -> dict[tuple[str, str], int]:
        """The last acknowledged version of each aggregate."""
        out: dict[tuple[str, str], int] = {}
        for body in self.bodies:
            key = (body["aggregateType"], body["aggregateId"])
            out[key] = max(out.get(key, 0), int(body["version"]))
        return out


def commands(seed: int, count: int, prefix: str) -> list[dict[str, Any]]:
    """``count`` valid commands in order, each with its own commandId (retries replay them)."""
    return CommandModel(random.Random(seed), prefix=prefix).batch(count)


def handle_on_cosmos(
    settings: Settings, batch: Sequence[dict[str, Any]], acked: Acknowledged
) -> None:
    """Apply commands through the handler on Cosmos DB, recording each acknowledgement."""
    store = make_write_store(settings)
    try:
        handler = CommandHandler(store)
        for raw in batch:
            acked.add(handler.handle(parse_command(raw)).body)
    finally:
        store.close()


# -- the end state -------------------------------------------------------------------------------


def hub_events(settings: Settings) -> tuple[list[EventEnvelope], int]:
    """The hub's events, first copy of each eventId (per-aggregate order kept: one aggregate is
    in one partition), and how many copies beyond the first it holds (redeliveries)."""
    bus = make_eventhubs_bus(settings)
    try:
        messages = [m for p in range(bus.partition_count) for m in bus.read(p, -1, 100_000)]
    finally:
        bus.close()
    first: dict[str, EventEnvelope] = {}
    for message in messages:
        envelope = EventEnvelope.from_json(message.body)
        first.setdefault(envelope.event_id, envelope)
    return list(first.values()), len(messages) - len(first)


@dataclass(frozen=True)
class AzureVerdict:
    verdict: Verdict
    acknowledged_events: int
    unpublished: int  # acknowledged events not on the hub
    never_acknowledged: int  # events on the hub of no acknowledged command
    redeliveries: int  # copies on the hub beyond the first
    stale_rows: tuple[str, ...]  # aggregates whose row is not at the last acknowledged version

    def assert_ok(self) -> None:
        assert self.acknowledged_events > 0
        assert self.unpublished == 0, self
        assert self.never_acknowledged == 0, self
        assert self.stale_rows == (), self
        self.verdict.assert_ok()


def verify_acknowledged(settings: Settings, acked: Acknowledged, scratch: Path) -> AzureVerdict:
    """Check the read models on Azure storage against the acknowledged commands (see above)."""
    committed, redeliveries = hub_events(settings)
    on_hub = {e.event_id for e in committed}
    wanted = acked.event_ids
    tables = make_table_store(settings)
    rows = {
        (CUSTOMER, r["customer_id"]): int(r["version"]) for r in table_rows(tables, CUSTOMERS)
    } | {("Order", r["order_id"]): int(r["version"]) for r in table_rows(tables, ORDERS)}
    stale = tuple(
        f"{kind} {key}: row {rows.get((kind, key))}, acknowledged {version}"
        for (kind, key), version in sorted(acked.versions().items())
        if rows.get((kind, key)) != version
    )
    verdict = verify_tables(tables, committed, scratch, PARTITIONS, ALSO_IGNORED)
    return AzureVerdict(
        verdict=verdict,
        acknowledged_events=len(wanted),
        unpublished=len(wanted - on_hub),
        never_acknowledged=len(on_hub - wanted),
        redeliveries=redeliveries,
        stale_rows=stale,
    )
