"""The relay child's supervisor (:class:`RelayProcess`), on stand-in children that exit as told.

Covers: a child that fails (non-zero exit) is started again, with the delay; one that exits 0
(it was told to stop) is left stopped; :meth:`stop` ends a running child with SIGTERM and
starts no other. ``cqrs api``'s real relay child is covered in ``test_api_process.py``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from cqrs_dagster.command.relay_process import RelayProcess
from cqrs_dagster_tests.fixtures.procs import wait_until


class StandIn(RelayProcess):
    """A child running ``code`` instead of ``cqrs relay``."""

    def __init__(self, code: str, tmp_path: Path) -> None:
        super().__init__(tmp_path, restart_delay=0.05, max_restart_delay=0.2, stop_timeout=5)
        self.code = code

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-c", self.code]


def test_a_failing_child_is_started_again(tmp_path: Path) -> None:
    relay = StandIn("import sys; sys.exit(3)", tmp_path)
    relay.start()
    try:
        assert wait_until(lambda: relay.restarts >= 2, timeout=30)
    finally:
        relay.stop()
    restarts = relay.restarts
    time.sleep(0.5)
    assert relay.restarts == restarts  # none after stop()


def test_a_child_that_exits_0_is_left_stopped(tmp_path: Path) -> None:
    relay = StandIn("pass", tmp_path)
    relay.start()
    try:
        assert wait_until(lambda: not relay.alive(), timeout=30)
        time.sleep(0.5)  # ten restart delays
        assert relay.restarts == 0 and not relay.alive()
    finally:
        relay.stop()


def test_stop_ends_a_running_child_with_sigterm(tmp_path: Path) -> None:
    # SIGTERM's default action, set first: a test worker that ran Dagster in-process ignores
    # SIGTERM (Dagster maps it to SIGINT's disposition), and an ignored signal is inherited.
    ready = tmp_path / "ready"
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_DFL); "
        f"open({str(ready)!r}, 'w').close(); time.sleep(60)"
    )
    relay = StandIn(code, tmp_path)
    relay.start()
    assert wait_until(ready.exists, timeout=30) and relay.alive()
    started = time.monotonic()
    relay.stop()
    assert not relay.alive() and time.monotonic() - started < 5  # SIGTERM, not the kill
    assert relay._proc is not None and relay._proc.returncode == -15
    assert relay.restarts == 0
