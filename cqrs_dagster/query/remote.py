"""Local copies of a remote Delta table's data files, fetched when a key lookup needs them.

DuckDB's azure extension is not available offline, so DuckDB cannot read ``az://`` / ``abfss://``
files itself, and a pyarrow dataset scan decodes every row of every file (a lookup by id in 1M
orders on Azurite: about a second per lookup). A key lookup instead picks the files whose min/max
in the Delta log admit the key (:meth:`.parquet.ParquetSource.indexes_with`), and
:class:`FileMirror` copies those files whole into a local folder under their logged relative
paths, once: Delta data files are never modified in place (a new version writes new files), so
a copy stays exact for as long as any snapshot lists the file. DuckDB's own Parquet reader then
reads the copies exactly as it reads a local table (row-group pruning, late materialization).

The folder is bounded (:data:`CAPACITY_BYTES`, least recently used files go first, never one the
current lookup needs) and removed by :meth:`FileMirror.close` or at interpreter exit. A process
killed outright (or by a re-raised SIGTERM, as uvicorn ends) leaves its folder behind; folders are
named after their process id, and a new mirror removes those of processes no longer running. A
file larger than the bound is still fetched (the lookup needs it) and evicted by the next fetch.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from deltalake.fs import DeltaStorageHandler

CAPACITY_BYTES = 2 * 2**30  # the copies kept on local disk
CHUNK_BYTES = 8 * 2**20  # one ranged GET per chunk while copying a file
PREFIX = "cqrs-delta-files-"  # + "<pid>-<random>" in the temp folder


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def remove_orphans(parent: Path) -> list[Path]:
    """Remove the mirror folders in ``parent`` whose process no longer runs; returns them."""
    removed = []
    for folder in parent.glob(PREFIX + "*"):
        pid = folder.name[len(PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


class FileMirror:
    """A bounded local folder of copies of remote Delta data files; thread-safe.

    :attr:`fetched` lists every copy made, as ``(table URI, relative path)``, in order (what
    tests and benchmarks read to see which files a lookup opened).
    """

    def __init__(self, capacity_bytes: int = CAPACITY_BYTES) -> None:
        self.capacity_bytes = capacity_bytes
        self._root: Path | None = None  # made on first use (most read models are local)
        self._remove: weakref.finalize[..., FileMirror] | None = None
        self._lock = threading.RLock()
        self._kept: OrderedDict[Path, int] = OrderedDict()  # copy -> size, least recent first
        self._handlers: dict[tuple[str, tuple[tuple[str, str], ...]], DeltaStorageHandler] = {}
        self.fetched: list[tuple[str, str]] = []

    def folder(self, table_uri: str) -> str:
        """The local folder holding the copies of the table at ``table_uri``."""
        digest = hashlib.sha256(table_uri.encode()).hexdigest()[:20]
        with self._lock:
            if self._root is None:
                remove_orphans(Path(tempfile.gettempdir()))
                self._root = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
                # The query API never closes its ReadModels: the copies go at exit too.
                self._remove = weakref.finalize(self, shutil.rmtree, str(self._root), True)
            return str(self._root / digest)

    def ensure(
        self,
        table_uri: str,
        storage_options: dict[str, str] | None,
        files: Sequence[tuple[str, int]],
    ) -> None:
        """Make sure ``files`` (relative path, size in bytes) of the table are copied locally."""
        with self._lock:
            folder = Path(self.folder(table_uri))
            wanted = [folder / path for path, _ in files]
            for (path, size), local in zip(files, wanted, strict=True):
                if local in self._kept:
                    self._kept.move_to_end(local)
                    continue
                self._copy(table_uri, storage_options, path, size, local)
                self._kept[local] = size
                self.fetched.append((table_uri, path))
            self._evict(set(wanted))

    def _copy(
        self,
        table_uri: str,
        storage_options: dict[str, str] | None,
        path: str,
        size: int,
        local: Path,
    ) -> None:
        key = (table_uri, tuple(sorted((storage_options or {}).items())))
        handler = self._handlers.get(key)
        if handler is None:
            handler = DeltaStorageHandler(table_uri, storage_options)
            self._handlers[key] = handler
        local.parent.mkdir(parents=True, exist_ok=True)
        partial = local.with_name(local.name + ".part")
        source = handler.open_input_file(path)
        try:
            with partial.open("wb") as out:
                for offset in range(0, size, CHUNK_BYTES):
                    out.write(source.read_at(min(CHUNK_BYTES, size - offset), offset))
        finally:
            source.close()
        os.replace(partial, local)

    def _evict(self, keep: set[Path]) -> None:
        total = sum(self._kept.values())
        for local in list(self._kept):
            if total <= self.capacity_bytes:
                break
            if local in keep:
                continue
            total -= self._kept.pop(local)
            local.unlink(missing_ok=True)

    def close(self) -> None:
        """Delete every copy."""
        with self._lock:
            self._kept.clear()
            if self._remove is not None:
                self._remove()
