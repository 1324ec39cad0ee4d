"""The outbox relay in a child process (``cqrs relay``), supervised by the API process.

Why a process and not a thread: in the API process the relay's Python work (reading the outbox,
building the bus's rows, marking them published) competes for the GIL with the event loop and the
group-commit writer. Under ``wrk`` on a slow machine state the API process's three threads used
0.89 of the 2 cores (event loop 0.42, writer 0.27, relay 0.20) while the rest stood idle: the GIL,
not the CPUs, was the limit. With the relay in its own process the API served 4,467 against 3,675
commands/s (medians of 3 interleaved pairs, +22%; issue 14 (b), ``BENCHMARKS.md``).

Nothing about delivery changes: it is the same :class:`~cqrs_dagster.command.relay.OutboxRelay`
(at-least-once, in order per aggregate, marked only after the bus accepted), polling the same
store every ``relay_interval_seconds`` when idle. A relay killed at any point republishes what it
had not marked, with the same event ids.

Supervision: a child that fails (a non-zero exit, or killed by a signal) while the API runs is
started again (after 1 s, doubling to 30 s while it keeps failing at start), and logged; one
that was stopped (SIGTERM, exit 0) stays stopped and ``/api/v1/healthz`` answers 503. The child is told the API's pid and stops by
itself when the API is gone (a ``kill -9`` of the API leaves no orphan relay); a normal stop sends
it SIGTERM and waits for its round to finish.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

#: A child that lived this long before exiting was running fine: restart it after the base delay.
HEALTHY_AFTER_SECONDS = 10.0


class RelayProcess:
    """``cqrs relay --data-dir <data_dir> --parent-pid <this pid>``, kept running until :meth:`stop`."""

    def __init__(
        self,
        data_dir: Path,
        *,
        restart_delay: float = 1.0,
        max_restart_delay: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.data_dir = data_dir
        self.restart_delay = restart_delay
        self.max_restart_delay = max_restart_delay
        self.stop_timeout = stop_timeout
        self.restarts = 0  # children started again after one failed
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._supervise, name="relay-supervisor", daemon=True
        )

    @property
    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "cqrs_dagster.cli",
            "relay",
            "--data-dir",
            str(self.data_dir),
            "--parent-pid",
            str(os.getpid()),
        ]

    def alive(self) -> bool:
        proc = self._proc
        return proc is not None and proc.poll() is None

    def start(self) -> None:
        """Start the child (raises OSError if it cannot be spawned) and its supervisor."""
        self._spawn()
        self._thread.start()

    def _spawn(self) -> None:
        with self._lock:
            if self._stopping.is_set():
                return
            # Same process group as the API: whoever stops the API's group stops the relay too.
            self._proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL)
        log.info("outbox relay started in process %d", self._proc.pid)

    def _supervise(self) -> None:
        delay = self.restart_delay
        while not self._stopping.is_set():
            proc = self._proc
            if proc is None:
                return
            started = time.monotonic()
            code = proc.wait()
            if self._stopping.is_set():
                return
            lived = time.monotonic() - started
            if code == 0:  # it was told to stop (SIGTERM): respect that; healthz says "stopped"
                log.warning("outbox relay process %d stopped; it is not restarted", proc.pid)
                return
            if lived >= HEALTHY_AFTER_SECONDS:
                delay = self.restart_delay
            log.error(
                "outbox relay process %d exited with %s after %.1f s; restarting in %.1f s",
                proc.pid,
                code,
                lived,
                delay,
            )
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, self.max_restart_delay)
            try:
                self._spawn()
                self.restarts += 1
            except OSError:
                log.exception("outbox relay process could not be started; retrying")

    def stop(self) -> None:
        """SIGTERM the child, wait for its round to finish (``stop_timeout``), then kill it."""
        with self._lock:
            self._stopping.set()
            proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                log.error("outbox relay process %d did not stop; killing it", proc.pid)
                proc.kill()
                proc.wait()
        log.info("outbox relay process %d stopped (exit %s)", proc.pid, proc.returncode)
