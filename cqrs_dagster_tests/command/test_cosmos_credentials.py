"""Which credential the Cosmos DB client gets from Settings (no network): the key when
CQRS_COSMOS_KEY is set, else Entra ID (one DefaultAzureCredential per process); one client per
endpoint for the process."""

from __future__ import annotations

import pytest
from azure.identity import DefaultAzureCredential

from cqrs_dagster import wiring
from cqrs_dagster.settings import Settings, SettingsError

ENDPOINT = "https://acct.documents.azure.com:443/"


def test_key_when_set() -> None:
    settings = Settings(env="azure", cosmos_endpoint=ENDPOINT, cosmos_key="a2V5")  # type: ignore[arg-type]
    assert wiring.cosmos_credential(settings) == "a2V5"


@pytest.mark.parametrize("key", [None, "", "  "])
def test_entra_id_without_a_key(key: str | None) -> None:
    settings = Settings(env="azure", cosmos_endpoint=ENDPOINT, cosmos_key=key)  # type: ignore[arg-type]
    credential = wiring.cosmos_credential(settings)
    assert isinstance(credential, DefaultAzureCredential)
    assert wiring.cosmos_credential(settings) is credential  # cached for the process
    assert wiring.azure_credential() is credential  # the one Event Hubs uses too


def test_validate_for_env_does_not_need_a_cosmos_key() -> None:
    Settings(
        env="azure", cosmos_endpoint=ENDPOINT, eventhub_namespace="ns.servicebus.windows.net"
    ).validate_for_env(read_store=False)
    with pytest.raises(SettingsError, match="CQRS_COSMOS_ENDPOINT"):
        Settings(env="azure", eventhub_namespace="ns").validate_for_env(read_store=False)


class FakeCosmosClient:
    """Records its arguments (a real client with a token credential connects at once)."""

    def __init__(self, url: str, credential: object, **options: object) -> None:
        self.url, self.credential, self.options = url, credential, options


def test_one_client_per_endpoint_and_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    import azure.cosmos

    monkeypatch.setattr(azure.cosmos, "CosmosClient", FakeCosmosClient)
    monkeypatch.setattr(wiring, "_COSMOS_CLIENTS", {})
    endpoint = "https://other.documents.azure.com:443/"
    entra = Settings(env="azure", cosmos_endpoint=endpoint)
    keyed = Settings(env="azure", cosmos_endpoint=endpoint, cosmos_key="a2V5")  # type: ignore[arg-type]
    a = wiring.cosmos_client(entra)
    assert isinstance(a, FakeCosmosClient)
    assert isinstance(a.credential, DefaultAzureCredential)
    assert a.options == {"enable_endpoint_discovery": False}
    assert wiring.cosmos_client(entra) is a
    b = wiring.cosmos_client(keyed)
    assert b is not a and b.credential == "a2V5"  # type: ignore[attr-defined]
    assert wiring.cosmos_client(keyed) is b


def test_event_hubs_bus_is_shared_for_the_process() -> None:
    settings = Settings(env="azure", eventhub_namespace="ns.servicebus.windows.net")
    a, b = wiring.make_event_bus(settings), wiring.make_event_bus(settings)
    assert isinstance(a, wiring._SharedBus) and a.inner is b.inner  # type: ignore[attr-defined]
    a.close()  # a no-op: the next caller still gets the same open bus
    assert wiring.make_event_bus(settings).inner is a.inner  # type: ignore[attr-defined]
