"""Build a Dagster instance from deploy/dagster.yaml, with ``sslmode=disable`` and the compute-log
manager swapped for the local one (dagster-azure's AzureBlobComputeLogManager builds https://<account>.blob.<suffix> URLs
and cannot target Azurite)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cqrs_dagster_tests.fixtures.procs import ROOT

PRODUCTION_YAML = ROOT / "deploy" / "dagster.yaml"


def production_config() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(PRODUCTION_YAML.read_text())
    return config


def write_test_home(home: Path) -> Path:
    """$DAGSTER_HOME holding the production file, compute logs in ``home/logs``."""
    config = production_config()
    config["compute_logs"] = {
        "module": "dagster.core.storage.local_compute_log_manager",
        "class": "LocalComputeLogManager",
        "config": {"base_dir": str(home / "logs")},
    }
    # The test server has no TLS certificate.
    config["storage"]["postgres"]["postgres_db"]["params"] = {"sslmode": "disable"}
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return home
