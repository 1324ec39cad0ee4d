"""The DuckDB projection engine (the default) held to the engine contract: the same tables as
the Python path for the same events (see ``cqrs_dagster_tests/contracts/engine_contract.py``)."""

from __future__ import annotations

import pytest

from cqrs_dagster.projections.engine import ProjectionEngine
from cqrs_dagster.projections.engines import DuckDBEngine
from cqrs_dagster_tests.contracts.engine_contract import EngineContract


class TestDuckDBEngine(EngineContract):
    def make_engine(self, request: pytest.FixtureRequest) -> ProjectionEngine:
        return DuckDBEngine()
