"""Delta read models on Azure Blob storage, against Azurite, with ``delta_storage_options``.

Covers: the storage options the settings produce for every way to authenticate (and the clear
errors for none-local roots without an account, for several credentials at once, and for
unsupported schemes); and, on a real Azurite server, a Delta table at ``az://`` (and
``abfss://``) written, version-guarded MERGEd (``streamed_exec=False``), read back, and an
app-transaction checkpoint committed in the same commit as the rows and read back with
``DeltaTable.transaction_version``. The projections' own ``TableStore`` opens the table with the
same options.
"""

from __future__ import annotations

import pyarrow as pa
import pytest
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

from cqrs_dagster.settings import EMULATOR_KEY, Settings, SettingsError, delta_storage_options
from cqrs_dagster.wiring import make_table_store
from cqrs_dagster_tests.fixtures.azurite import AzuriteServer

# -- options (no server) -------------------------------------------------------------------------


def opts(**fields: object) -> dict[str, str] | None:
    """The authentication options alone (the query side's, without the retry configuration)."""
    return delta_storage_options(Settings(**fields), patient=False)  # type: ignore[arg-type]


def test_the_projection_side_retries_storage_through_an_outage() -> None:
    fields = {"env": "azure", "delta_root": "az://lake/delta", "storage_use_emulator": True}
    patient = delta_storage_options(Settings(**fields, storage_retry_seconds=90))  # type: ignore[arg-type]
    assert patient == {
        **(opts(**fields) or {}),
        "retry_timeout": "90000ms",
        "max_retries": "180",
        "backoff_config.init_backoff": "100ms",
        "backoff_config.max_backoff": "3s",
        "backoff_config.base": "2",
    }
    default = delta_storage_options(Settings(**fields))  # type: ignore[arg-type]
    assert default is not None and default["retry_timeout"] == "60000ms"


def test_local_roots_need_no_options(tmp_path: object) -> None:
    assert opts(env="local", data_dir=str(tmp_path)) is None
    assert opts(env="azure", delta_root="/srv/delta") is None
    assert opts(env="azure", delta_root="file:///srv/delta") is None


def test_account_key() -> None:
    assert opts(
        env="azure",
        delta_root="abfss://lake@acct.dfs.core.windows.net/delta",
        storage_account_name="acct",
        storage_account_key="k==",
    ) == {"account_name": "acct", "account_key": "k=="}


def test_sas_token_loses_its_leading_question_mark() -> None:
    assert opts(
        env="azure", delta_root="az://lake/delta", storage_account_name="acct",
        storage_sas_token="?sv=2024&sig=abc%3D",
    ) == {"account_name": "acct", "sas_token": "sv=2024&sig=abc%3D"}  # fmt: skip


def test_service_principal() -> None:
    assert opts(
        env="azure", delta_root="az://lake/delta", storage_account_name="acct",
        storage_client_id="cid", storage_client_secret="s", storage_tenant_id="tid",
    ) == {"account_name": "acct", "client_id": "cid", "client_secret": "s", "tenant_id": "tid"}  # fmt: skip


def test_service_principal_without_tenant_names_the_setting() -> None:
    with pytest.raises(SettingsError, match="CQRS_STORAGE_TENANT_ID"):
        opts(
            env="azure", delta_root="az://lake/d", storage_account_name="acct",
            storage_client_id="cid", storage_client_secret="s",
        )  # fmt: skip


def test_azure_cli_and_managed_identities() -> None:
    base = {"env": "azure", "delta_root": "az://lake/d", "storage_account_name": "acct"}
    assert opts(**base, storage_use_azure_cli=True) == {
        "account_name": "acct",
        "use_azure_cli": "true",
    }
    assert opts(**base, storage_client_id="mi") == {"account_name": "acct", "client_id": "mi"}
    assert opts(**base) == {"account_name": "acct"}  # system-assigned managed identity


def test_emulator_default_and_explicit_endpoint() -> None:
    assert opts(env="azure", delta_root="az://lake/d", storage_use_emulator=True) == {
        "use_emulator": "true",
        "allow_http": "true",
    }
    endpoint = "http://127.0.0.1:5555/devstoreaccount1"
    assert opts(
        env="azure", delta_root="az://lake/d", storage_use_emulator=True, storage_endpoint=endpoint
    ) == {
        "allow_http": "true",
        "azure_storage_endpoint": endpoint,
        "account_name": "devstoreaccount1",
        "account_key": EMULATOR_KEY,
    }


def test_several_credentials_at_once_are_refused() -> None:
    with pytest.raises(SettingsError, match=r"CQRS_STORAGE_ACCOUNT_KEY.*CQRS_STORAGE_SAS_TOKEN"):
        opts(
            env="azure", delta_root="az://lake/d", storage_account_name="acct",
            storage_account_key="k", storage_sas_token="sv=1",
        )  # fmt: skip


def test_remote_root_without_account_is_refused() -> None:
    with pytest.raises(SettingsError, match="CQRS_STORAGE_ACCOUNT_NAME"):
        opts(env="azure", delta_root="az://lake/d", storage_account_key="k")


def test_unsupported_scheme_is_refused() -> None:
    with pytest.raises(SettingsError, match="s3://bucket/d"):
        opts(env="azure", delta_root="s3://bucket/d")


# -- Delta tables in Azurite ---------------------------------------------------------------------

ROWS = pa.table(
    {
        "order_id": pa.array(["o1", "o2", "o3"]),
        "status": pa.array(["Created", "Created", "Paid"]),
        "version": pa.array([1, 1, 2], pa.int64()),
    }
)


def merge_guarded(table: DeltaTable, batch: pa.Table, app_id: str, checkpoint: int) -> None:
    """Version-guarded upsert with the consumer checkpoint in the same commit."""
    (
        table.merge(
            batch,
            predicate="t.order_id = s.order_id",
            source_alias="s",
            target_alias="t",
            streamed_exec=False,
            commit_properties=CommitProperties(
                app_transactions=[Transaction(app_id=app_id, version=checkpoint)]
            ),
        )
        .when_matched_update_all(predicate="s.version > t.version")
        .when_not_matched_insert_all()
        .execute()
    )


@pytest.mark.servers
@pytest.mark.parametrize("scheme", ["az", "abfss"])
def test_write_merge_read_and_checkpoint_on_azurite(
    azurite_server: AzuriteServer, scheme: str
) -> None:
    container = azurite_server.fresh_container()
    settings = azurite_server.settings(container, "delta")
    options = delta_storage_options(settings)
    assert options is not None
    uri = f"{scheme}://{container}/delta/orders"

    write_deltalake(
        uri,
        ROWS,
        mode="append",
        storage_options=options,
        commit_properties=CommitProperties(
            app_transactions=[Transaction(app_id="orders:p0", version=10)]
        ),
    )
    table = DeltaTable(uri, storage_options=options)
    assert table.version() == 0
    assert table.transaction_version("orders:p0") == 10

    update = pa.table(
        {
            "order_id": pa.array(["o1", "o3", "o4"]),
            "status": pa.array(["Paid", "Created", "Created"]),  # o3's v1 is older: ignored
            "version": pa.array([2, 1, 1], pa.int64()),
        }
    )
    merge_guarded(table, update, "orders:p0", 13)

    reread = DeltaTable(uri, storage_options=options)
    assert reread.version() == 1
    assert reread.transaction_version("orders:p0") == 13
    assert reread.transaction_version("never-seen") is None
    rows = sorted(reread.to_pyarrow_table().to_pylist(), key=lambda r: r["order_id"])
    assert rows == [
        {"order_id": "o1", "status": "Paid", "version": 2},
        {"order_id": "o2", "status": "Created", "version": 1},
        {"order_id": "o3", "status": "Paid", "version": 2},
        {"order_id": "o4", "status": "Created", "version": 1},
    ]
    # The files really are blobs in the container (not a local fallback).
    with azurite_server.blob_service() as service:
        names = [b.name for b in service.get_container_client(container).list_blobs()]
    assert "delta/orders/_delta_log/00000000000000000001.json" in names
    assert any(n.endswith(".parquet") for n in names)


@pytest.mark.servers
def test_table_store_from_settings_uses_the_azure_options(azurite_server: AzuriteServer) -> None:
    container = azurite_server.fresh_container()
    store = make_table_store(azurite_server.settings(container, "lake"))
    assert store.root == f"az://{container}/lake"
    assert store.storage_options == delta_storage_options(
        azurite_server.settings(container, "lake")
    )
    assert store.open("orders") is None
    write_deltalake(store.uri("orders"), ROWS, storage_options=store.storage_options)
    opened = store.open("orders")
    assert opened is not None and opened.to_pyarrow_table().num_rows == 3


@pytest.mark.servers
def test_shared_key_without_emulator_flag_works_too(azurite_server: AzuriteServer) -> None:
    """The production path (account name + key + endpoint) against the same server."""
    container = azurite_server.fresh_container()
    settings = Settings(
        env="azure",
        delta_root=f"az://{container}/d",
        storage_account_name=azurite_server.account_name,
        storage_account_key=azurite_server.account_key,  # type: ignore[arg-type]
        storage_endpoint=azurite_server.blob_endpoint,
    )
    options = delta_storage_options(settings)
    assert options is not None and "use_emulator" not in options
    write_deltalake(f"{settings.delta_root}/t", ROWS, storage_options=options)
    back = DeltaTable(f"{settings.delta_root}/t", storage_options=options).to_pyarrow_table()
    assert back.num_rows == 3
