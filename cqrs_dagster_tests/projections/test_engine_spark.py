"""The Spark projection engine held to the engine contract on a real Sail server (Spark Connect):
the same tables as the Python path and the DuckDB engine for the same events (see
``cqrs_dagster_tests/contracts/engine_contract.py``)."""

from __future__ import annotations

import pytest

from cqrs_dagster.projections.engine import EngineUnavailable, ProjectionEngine
from cqrs_dagster.projections.engines.spark import SparkEngine, connect
from cqrs_dagster_tests.contracts.engine_contract import EngineContract
from cqrs_dagster_tests.fixtures.procs import free_port


class TestSparkEngine(EngineContract):
    def make_engine(self, request: pytest.FixtureRequest) -> ProjectionEngine:
        server = request.getfixturevalue("sail_server")
        return SparkEngine(request.getfixturevalue("spark_session"), server.remote)


def test_a_server_that_is_down_names_the_server_and_the_setting() -> None:
    remote = f"sc://127.0.0.1:{free_port()}"
    with pytest.raises(EngineUnavailable) as raised:
        connect(remote)
    message = str(raised.value)
    assert remote in message and "CQRS_SPARK_REMOTE" in message
