"""Process-tree helpers for the CLI: find descendants via /proc, stop groups TERM-then-KILL."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    return children


def descendants(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (not including it)."""
    tree = _children_map()
    found: set[int] = set()
    stack = [pid]
    while stack:
        for child in tree.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_process_tree(
    proc: subprocess.Popen[bytes], timeout: float = 15.0, extra_pids: Iterable[int] = ()
) -> bool:
    """SIGTERM the process group (and known descendants), wait, then SIGKILL what is left;
    whether anything had to be killed (it did not stop within ``timeout`` of SIGTERM)."""
    pids = {proc.pid, *descendants(proc.pid), *extra_pids}
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (proc.poll() is None or any(map(_alive, pids))):
        time.sleep(0.1)
    forced = proc.poll() is None or any(map(_alive, pids))
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)
    return forced


def stop_signals() -> Callable[[], bool]:
    """Handle SIGINT and SIGTERM by noting them (the caller stops at its next check); whether
    one came. Install it before starting children: exec resets a handled signal to its default
    in the child, where an ignored one would stay ignored."""
    came = threading.Event()

    def note(signum: int, _frame: object) -> None:
        came.set()

    signal.signal(signal.SIGTERM, note)
    signal.signal(signal.SIGINT, note)
    return came.is_set
