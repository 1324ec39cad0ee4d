"""deltalake storage options for the read-model root: None for a local folder, Azure keys otherwise.

The keys are object_store's Azure configuration keys, which deltalake passes through unchanged
(``account_name``, ``account_key``, ``sas_token``, ``client_id``, ``client_secret``,
``tenant_id``, ``use_azure_cli``, ``use_emulator``, ``azure_storage_endpoint``, ``allow_http``).
Exactly one way to authenticate is chosen, so a leftover secret never silently wins over the
intended one:

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
"""

from __future__ import annotations

from urllib.parse import urlsplit

from cqrs_dagster.settings import Settings, SettingsError

AZURE_SCHEMES = ("az", "abfs", "abfss", "adl", "azure")
EMULATOR_ACCOUNT = "devstoreaccount1"
# Azurite's documented, public development key (not a secret).
EMULATOR_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def is_local_root(root: str) -> bool:
    """True for a folder on this machine (a plain path or ``file://``)."""
    return "://" not in root or root.startswith("file://")


def delta_storage_options(settings: Settings) -> dict[str, str] | None:
    """Storage options for ``settings.delta_root_uri``; None when the root is a local folder."""
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
    return options


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
