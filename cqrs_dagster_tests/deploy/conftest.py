"""Fixture: a real PostgreSQL server (Debian's ``postgresql``), once per module, on 127.0.0.1.

``initdb`` into a tmp dir and ``pg_ctl start`` on a free port; stopped (``pg_ctl stop -m fast``)
at the end. PostgreSQL refuses to run as root: as root the commands run as the ``postgres`` user
(``runuser``). ``make postgres-install`` installs the package when it is missing.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cqrs_dagster_tests.fixtures.procs import free_port, wait_for_port


@dataclass(frozen=True)
class PostgresServer:
    port: int
    user: str = "postgres"
    db: str = "postgres"

    def env(self) -> dict[str, str]:
        """The DAGSTER_PG_* variables deploy/dagster.yaml reads."""
        return {
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_DB": self.db,
            "DAGSTER_PG_USER": self.user,
            "DAGSTER_PG_PASSWORD": "unused-trust-auth",
        }


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if found is None:
        pytest.fail(f"PostgreSQL's {name} is missing: run `make postgres-install`")
    return found


def _as_pg_user(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.getuid() == 0 else args


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[PostgresServer]:
    base = Path(tempfile.mkdtemp(prefix="cqrs-pg-"))
    data = base / "data"
    log = base / "server.log"
    if os.getuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    subprocess.run(
        _as_pg_user([_pg_bin("initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"]),
        check=True,
        capture_output=True,
    )
    port = free_port()
    opts = f"-h 127.0.0.1 -p {port} -k {base} -c fsync=off -c full_page_writes=off"
    subprocess.run(
        _as_pg_user(
            [_pg_bin("pg_ctl"), "-D", str(data), "-l", str(log), "-o", opts, "-w", "start"]
        ),
        check=True,
        capture_output=True,
    )
    try:
        wait_for_port(port, timeout=30)
        yield PostgresServer(port=port)
    finally:
        subprocess.run(
            _as_pg_user([_pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
            check=False,
            capture_output=True,
        )
        shutil.rmtree(base, ignore_errors=True)
