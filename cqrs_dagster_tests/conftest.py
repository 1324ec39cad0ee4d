"""Shared fixtures. Server fixtures (Azurite, cosmosdb-server, Event Hubs test server) start their
server on a free 127.0.0.1 port once per session and stop it (process group) at the end."""

pytest_plugins = [
    "cqrs_dagster_tests.fixtures.local",
    "cqrs_dagster_tests.fixtures.api",
    "cqrs_dagster_tests.fixtures.azurite",
    "cqrs_dagster_tests.fixtures.cosmos",
    "cqrs_dagster_tests.fixtures.eventhubs",
    "cqrs_dagster_tests.fixtures.platform",
    "cqrs_dagster_tests.fixtures.sail",
]
