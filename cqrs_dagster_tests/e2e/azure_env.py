"""Helpers for the Azure end-to-end tests: CQRS_* environment for the three local stand-in servers,
an Event Hubs test server with 2 partitions per hub (each SDK call costs ~0.4-0.9 s, so fewer
partitions keep the tests short), and the HTTP app served by uvicorn in a thread."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI

from cqrs_dagster.command.writestore.cosmos import provision
from cqrs_dagster.settings import Settings, load_settings
from cqrs_dagster_tests.fixtures.azurite import AzuriteServer
from cqrs_dagster_tests.fixtures.cosmos import CosmosServer
from cqrs_dagster_tests.fixtures.eventhubs import EventHubsServer, running_eventhubs_server
from cqrs_dagster_tests.fixtures.procs import (
    free_port,
    wait_until,
)

E2E_PARTITIONS = 2


@pytest.fixture(scope="session")
def eventhubs_2p(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EventHubsServer]:
    """The Event Hubs test server, every hub with 2 partitions (the session one has 4)."""
    with running_eventhubs_server(
        tmp_path_factory.mktemp("eventhubs-2p"), E2E_PARTITIONS
    ) as server:
        yield server


def azure_variables(
    data_dir: Path, cosmos: CosmosServer, eventhubs: EventHubsServer, azurite: AzuriteServer
) -> dict[str, str]:
    """CQRS_* for a fresh Cosmos database (provisioned, as `cqrs provision` does), a fresh hub
    and a fresh Blob container."""
    database = cosmos.fresh_database_name()
    client = cosmos.client()
    try:
        provision(client, database)
    finally:
        client.close()
    return {
        "CQRS_ENV": "azure",
        "CQRS_DATA_DIR": str(data_dir),
        "CQRS_COSMOS_ENDPOINT": cosmos.endpoint,
        "CQRS_COSMOS_KEY": cosmos.key,
        "CQRS_COSMOS_DATABASE": database,
        "CQRS_EVENTHUB_CONNECTION_STRING": eventhubs.connection_string,
        "CQRS_EVENTHUB_NAME": eventhubs.new_hub_name(),
        "CQRS_DELTA_ROOT": f"az://{azurite.fresh_container()}/delta",
        "CQRS_STORAGE_USE_EMULATOR": "true",
        "CQRS_STORAGE_ENDPOINT": azurite.blob_endpoint,
        "CQRS_API_KEYS": "",
        "CQRS_RELAY_INTERVAL_SECONDS": "0.05",
    }


def without_cqrs_variables(**extra: str) -> dict[str, str]:
    """This process's environment minus every CQRS_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CQRS_")}
    return {**env, **extra}


@pytest.fixture
def azure_settings(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cosmos_server: CosmosServer,
    eventhubs_2p: EventHubsServer,
    azurite_server: AzuriteServer,
) -> Settings:
    """CQRS_ENV=azure in this process's environment (as a deployment sets it), and its Settings.

    The Dagster resource reads its settings from the environment at run time, like in production.
    """
    for name in os.environ:
        if name.startswith("CQRS_"):
            monkeypatch.delenv(name)
    variables = azure_variables(tmp_path / "data", cosmos_server, eventhubs_2p, azurite_server)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return load_settings()


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` (lifespan included: the relay thread) on a free port; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        if not wait_until(lambda: server.started or not thread.is_alive(), 60):
            raise TimeoutError("uvicorn did not start in 60 s")
        if not server.started:
            raise RuntimeError("uvicorn exited during start-up (see the log)")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(60)
