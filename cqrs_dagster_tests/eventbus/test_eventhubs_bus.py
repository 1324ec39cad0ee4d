"""The Event Hubs bus adapter (azure-eventhub SDK, unmodified) over the local AMQP test server.

Runs the EventBus contract on a fresh hub per test, plus: building the Entra ID path without
network, the missing-setting message, splitting a group larger than one batch, and events that
outlive the clients which sent them.
"""

from __future__ import annotations

import pytest
from azure.identity import DefaultAzureCredential

from cqrs_dagster.eventbus.eventhubs import EventHubsBus
from cqrs_dagster.eventbus.port import EventBus, OutgoingEvent
from cqrs_dagster.settings import Settings, SettingsError
from cqrs_dagster.wiring import make_eventhubs_bus
from cqrs_dagster_tests.contracts.eventbus_contract import EventBusContract, read_all, where
from cqrs_dagster_tests.fixtures.eventhubs import EventHubsServer


def _bus(server: EventHubsServer, hub: str) -> EventHubsBus:
    return EventHubsBus(connection_string=server.connection_string, eventhub_name=hub)


@pytest.mark.servers
class TestEventHubsBus(EventBusContract):
    partition_count = 4

    def make_bus(self, request: pytest.FixtureRequest) -> EventBus:
        server: EventHubsServer = request.getfixturevalue("eventhubs_server")
        return _bus(server, server.new_hub_name())


def test_entra_id_settings_build_a_bus_without_network() -> None:
    settings = Settings(
        env="azure", eventhub_namespace="cqrs-ns.servicebus.windows.net", eventhub_name="orders"
    )
    bus = make_eventhubs_bus(settings)
    try:
        assert isinstance(bus._credential, DefaultAzureCredential)
        assert bus.fully_qualified_namespace == "cqrs-ns.servicebus.windows.net"
        assert (bus.eventhub_name, bus.consumer_group) == ("orders", "$Default")
    finally:
        bus.close()


def test_missing_connection_setting_is_named() -> None:
    with pytest.raises(SettingsError, match="CQRS_EVENTHUB_CONNECTION_STRING"):
        make_eventhubs_bus(Settings(env="azure"))


def test_constructor_needs_exactly_one_way_to_connect() -> None:
    with pytest.raises(ValueError, match="either"):
        EventHubsBus(eventhub_name="h")
    with pytest.raises(ValueError, match="credential"):
        EventHubsBus(eventhub_name="h", fully_qualified_namespace="ns.servicebus.windows.net")


@pytest.mark.servers
def test_connection_string_settings_reach_the_server(eventhubs_server: EventHubsServer) -> None:
    hub = eventhubs_server.new_hub_name()
    settings = Settings(
        env="azure",
        eventhub_connection_string=eventhubs_server.connection_string,
        eventhub_name=hub,
    )
    bus = make_eventhubs_bus(settings)
    try:
        assert bus.partition_count == eventhubs_server.partition_count
        bus.send([OutgoingEvent("a", b"x")])
        assert sum(i.last_sequence_number + 1 for i in bus.partitions_info()) == 1
    finally:
        bus.close()


@pytest.mark.servers
def test_group_larger_than_one_batch_is_split_in_order(eventhubs_server: EventHubsServer) -> None:
    # 2,500 events of 1 KiB with one key: ~2.5 MB, more than the 1 MB an Event Hubs message
    # (and the server) accepts, so it only arrives if the adapter splits it.
    bus = _bus(eventhubs_server, eventhubs_server.new_hub_name())
    try:
        bodies = [f"big#{i:06d}".encode() + b"." * 1014 for i in range(2_500)]
        bus.send([OutgoingEvent("big", b) for b in bodies])
        (p,) = [i.partition for i in bus.partitions_info() if i.last_sequence_number >= 0]
        events = bus.read(p, -1, 5_000)
        assert [e.body for e in events] == bodies
        assert [e.sequence_number for e in events] == list(range(2_500))
    finally:
        bus.close()


@pytest.mark.servers
def test_event_too_large_for_any_batch_is_refused(eventhubs_server: EventHubsServer) -> None:
    bus = _bus(eventhubs_server, eventhubs_server.new_hub_name())
    try:
        with pytest.raises(ValueError, match="does not fit"):
            bus.send([OutgoingEvent("huge", b"x" * (2 * 1024 * 1024))])
    finally:
        bus.close()


@pytest.mark.servers
def test_events_survive_client_reconnect(eventhubs_server: EventHubsServer) -> None:
    hub = eventhubs_server.new_hub_name()
    first = _bus(eventhubs_server, hub)
    first.send([OutgoingEvent("agg", f"agg#{i}".encode()) for i in range(3)])
    first.close()

    second = _bus(eventhubs_server, hub)
    try:
        p = where(second, "agg")
        second.send([OutgoingEvent("agg", f"agg#{i}".encode()) for i in range(3, 5)])
        events = read_all(second, p)
        assert [e.body for e in events] == [f"agg#{i}".encode() for i in range(5)]
        assert [e.sequence_number for e in events] == list(range(5))
        assert second.partition_info(p).last_sequence_number == 4
    finally:
        second.close()


@pytest.mark.servers
def test_read_of_a_partition_out_of_range_is_refused(eventhubs_server: EventHubsServer) -> None:
    bus = _bus(eventhubs_server, eventhubs_server.new_hub_name())
    try:
        with pytest.raises(ValueError, match="out of range"):
            bus.read(bus.partition_count, -1, 10)
    finally:
        bus.close()
