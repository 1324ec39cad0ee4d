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


@pytest.mark.parametrize(
    ("pool_env", "expected"), [(None, "jemalloc"), ("mimalloc", "mimalloc"), ("system", "system")]
)
def test_a_projection_process_allocates_arrow_memory_with_jemalloc(
    pool_env: str | None, expected: str
) -> None:
    """The composition root sets the pool when it builds the engine (peak RSS with threads,
    issue 14 (f)); ARROW_DEFAULT_MEMORY_POOL still wins. In a child: the pool is per process."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    if pool_env is not None:
        env["ARROW_DEFAULT_MEMORY_POOL"] = pool_env
    code = (
        "import pyarrow as pa\n"
        "from cqrs_dagster.settings import load_settings\n"
        "from cqrs_dagster.wiring import make_engine\n"
        "before = pa.default_memory_pool().backend_name\n"
        "make_engine(load_settings(projection_engine='duckdb')).close()\n"
        "print(before, pa.default_memory_pool().backend_name)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[1] == expected
    if pool_env is None:
        assert out[0] == "mimalloc"  # pyarrow's own default here: the call changed it
