"""``cqrs up --engine spark`` starts a local Sail server with the platform (here the API only:
``--no-dagster``) and stops it on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cqrs_dagster_tests.fixtures.procs import free_port, stop_group, wait_for_port, wait_until
from cqrs_dagster_tests.fixtures.sail import sail_binary


def listening(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), 0.5):
            return True
    except OSError:
        return False


pytestmark = pytest.mark.e2e


def test_up_with_the_spark_engine_starts_and_stops_a_sail_server(tmp_path: Path) -> None:
    binary = sail_binary()
    if binary is None:
        pytest.fail("no Sail server: `make sail-install`")
    spark_port, api_port = free_port(), free_port()
    env = {
        **os.environ,
        "CQRS_SPARK_REMOTE": f"sc://127.0.0.1:{spark_port}",
        "CQRS_SAIL_BIN": binary,
    }
    cmd = [sys.executable, "-m", "cqrs_dagster.cli", "up", "--no-dagster", "--engine", "spark",
           "--data-dir", str(tmp_path / "data"), "--api-port", str(api_port)]  # fmt: skip
    proc = subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        wait_for_port(spark_port, timeout=60)
        wait_for_port(api_port, timeout=60)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        assert f"sc://127.0.0.1:{spark_port} (Sail)" in out.decode()
        assert wait_until(lambda: not listening(spark_port), 10), "Sail still running"
    finally:
        if proc.poll() is None:
            stop_group(proc)
