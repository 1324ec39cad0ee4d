"""The one place configuration is read.

Every field mirrors an environment variable ``CQRS_<FIELD>`` (e.g. ``CQRS_ENV``, ``CQRS_DATA_DIR``).
Nothing reads the environment at import time: call :func:`load_settings`.

This module imports nothing of the package (an import contract checks it): what interprets the
settings so that :meth:`Settings.validate_for_env` can check them at start-up lives here too,
like the read store's storage options (:func:`delta_storage_options`). The adapters are built from
the settings in :mod:`cqrs_dagster.wiring`.

deltalake storage options for the read-model root (:func:`delta_storage_options`): None for a
local folder, Azure keys otherwise. The keys are object_store's Azure configuration keys, which
deltalake passes through unchanged (``account_name``, ``account_key``, ``sas_token``,
``client_id``, ``client_secret``, ``tenant_id``, ``use_azure_cli``, ``use_emulator``,
``azure_storage_endpoint``, ``allow_http``). Exactly one way to authenticate is chosen, so a
leftover secret never silently wins over the intended one:

==========================  ==========================================================
Settings (``CQRS_STORAGE_``)  Authentication
==========================  ==========================================================
``USE_EMULATOR=true``         Azurite's well-known ``devstoreaccount1`` key at object_store's
                              default 127.0.0.1:10000; with ``ENDPOINT``
                              (``http://127.0.0.1:PORT/devstoreaccount1``: the account path is
                              required) on any port, as account + key + ``allow_http``
``ACCOUNT_KEY``               shared key
``SAS_TOKEN``                 shared access signature (percent-encoded, no leading ``?``)
``CLIENT_ID`` + ``CLIENT_SECRET`` + ``TENANT_ID``   Entra ID service principal
``USE_AZURE_CLI=true``        Entra ID via the ``az login`` session (developer machines)
``CLIENT_ID`` alone           Entra ID, user-assigned managed identity
nothing                       Entra ID, system-assigned managed identity (IMDS), the
                              object_store default
==========================  ==========================================================

Entra ID identities need the "Storage Blob Data Contributor" role on the account or container.

Retries: object_store retries a failed storage request (connection refused or reset, timeouts,
5xx, throttling) 10 times within ~3 s by default, so a storage outage of a few seconds failed a
projection's Delta commit. The projection side's options retry for ``CQRS_STORAGE_RETRY_SECONDS``
(60 s; backoff from 100 ms up to 3 s between attempts), so a commit rides over a short outage.
The query side (``patient=False``) keeps object_store's short default: an API request answers an
error in seconds instead of hanging.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

AZURE_SCHEMES = ("az", "abfs", "abfss", "adl", "azure")
EMULATOR_ACCOUNT = "devstoreaccount1"
# Azurite's documented, public development key (not a secret).
EMULATOR_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


class SettingsError(RuntimeError):
    """A setting that the chosen environment needs is missing or invalid."""


class Settings(BaseSettings):
    """All configuration; ``CQRS_ENV=local|azure`` selects the adapters."""

    model_config = SettingsConfigDict(env_prefix="CQRS_", extra="ignore", frozen=True)

    env: Literal["local", "azure"] = "local"
    data_dir: Path = Path(".cqrs")

    # Write store (embedded default: SQLite in WAL mode).
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"

    # Event bus (embedded default: a partitioned SQLite log).
    bus_partitions: int = Field(default=4, ge=1, le=1024)

    # Outbox relay.
    relay_interval_seconds: float = Field(default=0.2, gt=0)
    relay_batch_size: int = Field(default=500, ge=1)
    # After a partial batch the relay waits this long before its next round (Kafka's linger.ms):
    # a steady stream accumulates into fewer, larger rounds (each a bus transaction and a
    # mark-published commit). Capped by relay_interval_seconds.
    relay_linger_seconds: float = Field(default=0.01, ge=0)

    # Read side.
    projection_batch_size: int = Field(default=50_000, ge=1)
    # What computes the projection steps (decode, silver folds, gold): "duckdb" (in process) or
    # "spark" (Spark SQL over Spark Connect at spark_remote: Sail locally, Databricks in
    # production). Either way delta-rs commits the rows with the checkpoint in one commit.
    projection_engine: Literal["duckdb", "spark"] = "duckdb"
    spark_remote: str = "sc://127.0.0.1:50051"
    sensor_interval_seconds: int = Field(default=5, ge=1)
    # With no new events, the sensor still starts a (no-op) projection run this often, so the
    # read models' FreshnessPolicy (warn 60 min, fail 120 min) flags a pipeline that cannot run.
    freshness_heartbeat_minutes: int = Field(default=30, ge=0)
    # Follow mode (the default): the sensor starts ``follow_read_models``, one run that keeps
    # applying new events pass after pass for at most this many seconds, and stops earlier once
    # nothing new arrived for ``projection_follow_idle_seconds``; the sensor starts the next one
    # when events arrive. 0: one ``project_read_models`` asset run per batch instead (the sensor
    # tick and a run launch on every batch: seconds more latency).
    projection_follow_seconds: float = Field(default=600.0, ge=0)
    projection_follow_idle_seconds: float = Field(default=10.0, gt=0)
    # A pass starts at most this often (0: back to back): fewer, larger passes leave CPU to the
    # API on a small machine, since a pass costs much more than the events it applies (2 cores,
    # 200 commands/s offered: back to back 106/s achieved, p95 4.9 s; 3 s: 176/s, p95 3.9 s).
    projection_follow_min_pass_seconds: float = Field(default=3.0, ge=0)
    # `cqrs up` starts `dagster dev` (webserver, daemon, code servers and the projection runs,
    # which inherit it) this much nicer than the API: when both want a core, the request a user
    # waits for goes first and the batch work takes the rest (2 cores, 200 commands/s: plain
    # lookup p99 52 -> 26 ms; accepted -> visible unchanged). 0: the same priority.
    dagster_nice: int = Field(default=10, ge=0, le=19)
    # A key lookup without ``consistent_with`` (GET /orders/{id}, /customers/{id}) may answer from
    # the API's loaded snapshot of its table when that snapshot was the newest commit at most this
    # long ago, and the table is then refreshed in the background (bounded staleness: the answer
    # holds every commit made this long before the request). 0: every such lookup whose table has
    # a newer commit refreshes it first, in a thread. Read-your-writes is ``consistent_with``'s.
    query_max_staleness_ms: int = Field(default=250, ge=0, le=60_000)
    lag_warn_seconds: float = Field(default=30.0, gt=0)
    lag_error_seconds: float = Field(default=60.0, gt=0)
    delta_root: str | None = None  # default: <data_dir>/delta; abfss://... or az://... on Azure
    vacuum_retention_hours: int = Field(default=168, ge=0)

    # Azure: Cosmos DB write store.
    cosmos_endpoint: str | None = None
    cosmos_key: SecretStr | None = None  # unset: Entra ID (DefaultAzureCredential)
    cosmos_database: str = "cqrs"
    # How the relay finds pending outbox events: "query" (cross-partition ORDER BY, works on the
    # local stand-in) or "change_feed" (query_items_change_feed + durable continuation; Azure).
    cosmos_outbox_feed: Literal["query", "change_feed"] = "query"

    # Azure: Event Hubs bus.
    eventhub_connection_string: SecretStr | None = None
    eventhub_namespace: str | None = (
        None  # fully qualified; Entra ID auth when no connection string
    )
    eventhub_name: str = "cqrs-events"
    eventhub_consumer_group: str = "$Default"

    # Azure: Delta on Blob / ADLS Gen2 (deltalake storage options).
    storage_account_name: str | None = None
    storage_account_key: SecretStr | None = None
    storage_sas_token: SecretStr | None = None
    storage_use_emulator: bool = False
    storage_endpoint: str | None = None
    # Entra ID for storage: a service principal (all three), a user-assigned managed identity
    # (client id alone), the Azure CLI login, or (none of them) the system-assigned identity.
    storage_client_id: str | None = None
    storage_client_secret: SecretStr | None = None
    storage_tenant_id: str | None = None
    storage_use_azure_cli: bool = False
    # How long a projection's storage request is retried through an outage (object_store).
    storage_retry_seconds: float = Field(default=60.0, gt=0)

    # Security.
    api_keys: SecretStr | None = None  # "key1:writer,key2:reader"
    rate_limit_per_second: float = Field(default=200.0, ge=0)  # per API key; 0 disables
    rate_limit_burst: int = Field(default=400, ge=1)

    # Alerts.
    alert_sink: Literal["log", "webhook", "teams", "slack"] = "log"
    alert_webhook_url: SecretStr | None = None
    alert_slack_token: SecretStr | None = None
    alert_slack_channel: str | None = None
    alert_slack_base_url: str | None = None  # default: Slack's own API (https://slack.com/api/)
    alert_retry_attempts: int = Field(default=3, ge=1)
    alert_retry_backoff_seconds: float = Field(default=0.5, ge=0)

    @property
    def write_db_path(self) -> Path:
        return self.data_dir / "write.sqlite"

    @property
    def bus_db_path(self) -> Path:
        return self.data_dir / "bus.sqlite"

    @property
    def delta_root_uri(self) -> str:
        return self.delta_root or str((self.data_dir / "delta").resolve())

    @property
    def alert_log_path(self) -> Path:
        return self.data_dir / "alerts.jsonl"

    def require(self, *names: str) -> None:
        """Fail with a message naming every missing setting among ``names``."""
        missing = [f"CQRS_{n.upper()}" for n in names if getattr(self, n) in (None, "")]
        if missing:
            raise SettingsError(
                f"CQRS_ENV={self.env} needs these settings, which are not set: {', '.join(missing)}"
            )

    def validate_for_env(self, *, read_store: bool = True) -> None:
        """Fail at start-up, naming EVERY missing setting at once, when the environment needs
        settings that are not set. ``azure``: the Cosmos DB endpoint (no key: Entra ID), an Event
        Hubs connection string or namespace, and (``read_store``: processes that read or write the
        read models) an explicit Delta root whose storage settings are complete. ``local`` needs nothing."""
        if self.env != "azure":
            return
        missing = [f"CQRS_{n.upper()}" for n in ("cosmos_endpoint",) if _unset(self, n)]
        if _unset(self, "eventhub_connection_string") and _unset(self, "eventhub_namespace"):
            missing.append("CQRS_EVENTHUB_CONNECTION_STRING (or CQRS_EVENTHUB_NAMESPACE)")
        if read_store and _unset(self, "delta_root"):
            missing.append("CQRS_DELTA_ROOT")
        if missing:
            raise SettingsError(
                f"CQRS_ENV=azure needs these settings, which are not set: {', '.join(missing)}"
            )
        if read_store:  # the storage options are complete and unambiguous (raises SettingsError)
            delta_storage_options(self)


def _unset(settings: Settings, name: str) -> bool:
    value = getattr(settings, name)
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return value is None or str(value).strip() == ""


def is_local_root(root: str) -> bool:
    """True for a folder on this machine (a plain path or ``file://``)."""
    return "://" not in root or root.startswith("file://")


def delta_storage_options(settings: Settings, *, patient: bool = True) -> dict[str, str] | None:
    """Storage options for ``settings.delta_root_uri``; None when the root is a local folder.

    ``patient``: retry through an outage for ``CQRS_STORAGE_RETRY_SECONDS`` (the projection
    side) instead of object_store's ~3 s (the query side). Raises SettingsError when they are
    incomplete or ambiguous (see the module docstring).
    """
    root = settings.delta_root_uri
    if is_local_root(root):
        return None
    scheme = urlsplit(root).scheme.lower()
    if scheme not in AZURE_SCHEMES:
        raise SettingsError(
            f"CQRS_DELTA_ROOT={root!r}: only local folders and Azure storage "
            f"({', '.join(s + '://' for s in AZURE_SCHEMES)}) are supported"
        )
    options: dict[str, str] = {}
    if settings.storage_account_name:
        options["account_name"] = settings.storage_account_name
    if settings.storage_endpoint:
        options["azure_storage_endpoint"] = settings.storage_endpoint
        if settings.storage_endpoint.lower().startswith("http://"):
            options["allow_http"] = "true"
    options.update(_credential(settings))
    if (
        not settings.storage_use_emulator
        and "account_name" not in options
        and not (_account_in_url(root))
    ):
        raise SettingsError(
            f"CQRS_DELTA_ROOT={root!r} names no storage account: set CQRS_STORAGE_ACCOUNT_NAME "
            "or use abfss://<container>@<account>.dfs.core.windows.net/<path>"
        )
    if patient:
        options.update(retry_options(settings.storage_retry_seconds))
    return options


def retry_options(seconds: float) -> dict[str, str]:
    """object_store's retry configuration: keep retrying a request for ``seconds``, backing off
    (decorrelated jitter) from 100 ms to at most 3 s between attempts."""
    return {
        "retry_timeout": f"{round(seconds * 1000)}ms",
        "max_retries": str(max(10, round(seconds * 2))),
        "backoff_config.init_backoff": "100ms",
        "backoff_config.max_backoff": "3s",
        "backoff_config.base": "2",
    }


def _credential(settings: Settings) -> dict[str, str]:
    """The one authentication method the settings ask for (see the module docstring)."""
    chosen: list[tuple[str, dict[str, str]]] = []
    if settings.storage_use_emulator:
        # object_store's use_emulator pins 127.0.0.1:10000 and ignores azure_storage_endpoint,
        # so an emulator on another port is addressed as a plain account + key + http endpoint.
        emulator = {"use_emulator": "true", "allow_http": "true"}
        if settings.storage_endpoint:
            emulator = {
                "account_name": settings.storage_account_name or EMULATOR_ACCOUNT,
                "account_key": _secret(settings.storage_account_key) or EMULATOR_KEY,
                "allow_http": "true",
            }
        chosen.append(("CQRS_STORAGE_USE_EMULATOR", emulator))
    elif settings.storage_account_key is not None:
        chosen.append(
            ("CQRS_STORAGE_ACCOUNT_KEY", {"account_key": _secret(settings.storage_account_key)})
        )
    if settings.storage_sas_token is not None:
        sas = _secret(settings.storage_sas_token).lstrip("?")
        chosen.append(("CQRS_STORAGE_SAS_TOKEN", {"sas_token": sas}))
    if settings.storage_client_secret is not None:
        settings.require("storage_client_id", "storage_tenant_id")
        assert settings.storage_client_id is not None and settings.storage_tenant_id is not None
        principal = {
            "client_id": settings.storage_client_id,
            "client_secret": _secret(settings.storage_client_secret),
            "tenant_id": settings.storage_tenant_id,
        }
        chosen.append(("CQRS_STORAGE_CLIENT_SECRET", principal))
    if settings.storage_use_azure_cli:
        chosen.append(("CQRS_STORAGE_USE_AZURE_CLI", {"use_azure_cli": "true"}))
    if len(chosen) > 1:
        raise SettingsError(
            "choose one way to authenticate to storage, not several: "
            + ", ".join(name for name, _ in chosen)
        )
    if chosen:
        return chosen[0][1]
    if settings.storage_client_id:  # user-assigned managed identity
        return {"client_id": settings.storage_client_id}
    return {}  # system-assigned managed identity (object_store's default)


def _secret(value: object) -> str:
    get = getattr(value, "get_secret_value", None)
    return "" if get is None else str(get())


def _account_in_url(root: str) -> bool:
    """``abfss://container@account.dfs.core.windows.net/...`` carries the account itself."""
    netloc = urlsplit(root).netloc
    return "@" in netloc or netloc.endswith((".windows.net", ".microsoft.com"))


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment (``CQRS_*``), with explicit overrides on top."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**clean)
