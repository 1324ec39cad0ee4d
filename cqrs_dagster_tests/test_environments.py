"""Switching environments: ``Settings.validate_for_env`` and the start-up check of the CLIs.

Covers: local needs no setting; azure names every missing setting in one message (Cosmos DB,
Event Hubs connection string or namespace, Delta root), the relay does not need the Delta root,
an incomplete storage configuration is caught up front; ``cqrs up --env azure``, ``cqrs api`` and
``cqrs relay`` with CQRS_ENV=azure and nothing else exit 2 at start-up with a one-line message
naming the missing settings, no traceback, and nothing started or created; docs/environments.md
lists every setting.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cqrs_dagster.settings import Settings, SettingsError
from cqrs_dagster_tests.e2e.azure_env import without_cqrs_variables
from cqrs_dagster_tests.fixtures.procs import ROOT

AZURE_FULL = {
    "env": "azure",
    "cosmos_endpoint": "https://acct.documents.azure.com:443/",
    "cosmos_key": "a2V5",
    "eventhub_connection_string": "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=k;"
    "SharedAccessKey=s",
    "delta_root": "abfss://lake@acct.dfs.core.windows.net/delta",
}
ALL_MISSING = (
    "CQRS_COSMOS_ENDPOINT",  # no CQRS_COSMOS_KEY: without one, Entra ID
    "CQRS_EVENTHUB_CONNECTION_STRING (or CQRS_EVENTHUB_NAMESPACE)",
    "CQRS_DELTA_ROOT",
)


def test_local_needs_no_setting() -> None:
    Settings(env="local").validate_for_env()  # raises on failure


def test_complete_azure_settings_pass() -> None:
    settings = Settings(**AZURE_FULL)  # type: ignore[arg-type]
    settings.validate_for_env()
    namespace = {**AZURE_FULL, "eventhub_connection_string": None,
                 "eventhub_namespace": "ns.servicebus.windows.net"}  # fmt: skip
    Settings(**namespace).validate_for_env()  # type: ignore[arg-type]


def test_azure_names_every_missing_setting_at_once() -> None:
    with pytest.raises(SettingsError) as info:
        Settings(env="azure").validate_for_env()
    assert str(info.value) == (
        "CQRS_ENV=azure needs these settings, which are not set: " + ", ".join(ALL_MISSING)
    )


def test_an_empty_secret_counts_as_missing() -> None:
    with pytest.raises(SettingsError, match=r"not set: CQRS_COSMOS_ENDPOINT$"):
        Settings(**{**AZURE_FULL, "cosmos_endpoint": " "}).validate_for_env()  # type: ignore[arg-type]
    # An empty Cosmos key is no key: Entra ID (cqrs_dagster.wiring.cosmos_credential).
    Settings(**{**AZURE_FULL, "cosmos_key": " "}).validate_for_env()  # type: ignore[arg-type]


def test_the_relay_does_not_need_the_delta_root() -> None:
    settings = Settings(**{**AZURE_FULL, "delta_root": None})  # type: ignore[arg-type]
    settings.validate_for_env(read_store=False)
    with pytest.raises(SettingsError, match=r"not set: CQRS_DELTA_ROOT$"):
        settings.validate_for_env()


def test_incomplete_storage_settings_fail_up_front() -> None:
    settings = Settings(**{**AZURE_FULL, "delta_root": "az://lake/delta"})  # type: ignore[arg-type]
    with pytest.raises(SettingsError, match="CQRS_STORAGE_ACCOUNT_NAME"):
        settings.validate_for_env()


@pytest.mark.parametrize(
    ("args", "missing"),
    [
        (["up", "--env", "azure", "--no-dagster"], ALL_MISSING),
        (["api"], ALL_MISSING),
        (["relay"], ALL_MISSING[:2]),
    ],
    ids=["up", "api", "relay"],
)
def test_cli_with_only_cqrs_env_azure_fails_at_start_up(
    tmp_path: Path, args: list[str], missing: tuple[str, ...]
) -> None:
    data = tmp_path / "data"
    env = without_cqrs_variables(CQRS_ENV="azure", CQRS_DATA_DIR=str(data))
    done = subprocess.run(
        [sys.executable, "-m", "cqrs_dagster.cli", *args],
        capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    command = args[0]
    assert done.stderr.splitlines() == [
        f"cqrs {command}: CQRS_ENV=azure needs these settings, which are not set: "
        + ", ".join(missing)
    ]
    assert done.stdout == ""
    assert not data.exists()  # nothing was started or created


def test_the_environments_doc_lists_every_setting() -> None:
    doc = (ROOT / "docs" / "environments.md").read_text()
    rows = {
        line.split("|")[1].strip(" `") for line in doc.splitlines() if line.startswith("| `CQRS_")
    }
    assert rows == {f"CQRS_{name.upper()}" for name in Settings.model_fields}
