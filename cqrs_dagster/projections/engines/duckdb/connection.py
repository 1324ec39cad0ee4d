"""This process's in-memory DuckDB databases: the engine's decode and folds run on cursors of
the first (:func:`duck`); a sort of a whole table runs on the second (:func:`bounded_duck`),
whose operators spill to a temporary folder past a memory bound."""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
import threading

import duckdb

_DB: dict[tuple[int, str], duckdb.DuckDBPyConnection] = {}
_OPENING = threading.Lock()


def bounded_memory() -> str:
    """The bounded database's ``memory_limit``: 256 MB, or 64 MB per DuckDB thread (one per
    core) on larger machines. A whole order_summary build at 5M orders peaked at ~1.4 GiB
    unbounded, ~0.8 GiB at 256 MB (+0.6 s on 2 cores; BENCHMARKS.md, "Customer renames")."""
    return f"{max(256, 64 * (os.cpu_count() or 1))}MB"


SPILL_PREFIX = "cqrs-duckdb-spill-"


def spill_directory() -> str:
    """Where the bounded database spills: DuckDB creates the folder on its first spill, deletes
    each file when the query is done with it and the folder when the database closes."""
    return os.path.join(tempfile.gettempdir(), f"{SPILL_PREFIX}{os.getpid()}")


def sweep_spills() -> list[str]:
    """Remove the spill folders of processes that are gone (a process killed mid-spill leaves
    its folder behind); the folders removed."""
    removed = []
    for folder in glob.glob(os.path.join(tempfile.gettempdir(), f"{SPILL_PREFIX}*")):
        pid = folder.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _cursor(kind: str) -> duckdb.DuckDBPyConnection:
    """A new cursor, in UTC, of this process's ``kind`` database, opened on first use: one of
    each kind per process id, never shared across a fork (opening ~20 ms, a cursor ~0.3 ms)."""
    key = (os.getpid(), kind)
    db = _DB.get(key)
    if db is None:
        with _OPENING:  # two threads' first cursors: one database
            db = _DB.get(key)
            if db is None:
                for stale in [k for k in _DB if k[0] != key[0]]:
                    del _DB[stale]  # a forked parent's
                # Hand freed memory back to the OS early (DuckDB keeps up to 128 MB by
                # default): the projection's peak RSS is bounded (issue 7 (f)).
                config: dict[str, str | bool | int | float | list[str]] = {
                    "allocator_flush_threshold": "16MB"
                }
                if kind == "bounded":
                    sweep_spills()
                    config["memory_limit"] = bounded_memory()
                    config["temp_directory"] = spill_directory()
                db = _DB[key] = duckdb.connect(config=config)
    con = db.cursor()
    con.execute("SET TimeZone = 'UTC'")
    return con


def duck() -> duckdb.DuckDBPyConnection:
    """A new connection (cursor) to this process's in-memory DuckDB, in UTC."""
    return _cursor("main")


def bounded_duck() -> duckdb.DuckDBPyConnection:
    """A new cursor, in UTC, of this process's second in-memory DuckDB, whose memory is bounded
    (:func:`bounded_memory`): a sort or join past the bound spills to :func:`spill_directory`.
    A query DuckDB cannot fit in the bound fails with ``duckdb.OutOfMemoryException`` (or, read
    through an Arrow stream, an ``OSError`` saying so): :func:`out_of_memory` tells."""
    return _cursor("bounded")


def out_of_memory(exc: BaseException) -> bool:
    """``exc`` is DuckDB running out of its memory bound, raised directly or through the Arrow
    C stream a batch reader reads (which carries DuckDB's message, not its type)."""
    if isinstance(exc, duckdb.OutOfMemoryException):
        return True
    return isinstance(exc, OSError) and "Out of Memory Error" in str(exc)
