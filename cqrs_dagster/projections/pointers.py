"""The table pointer document: which physical Delta table each logical read model is right now.

``<root>/_cqrs_tables.json``::

    {"format": 1,
     "tables": {"orders": "orders__r20261127T120000a1b2"},
     "retired": [{"table": "orders", "physical": "orders", "retired_at": "...", "by": "run"}]}

A logical name absent from ``tables`` (or no document at all) is its own physical name, so a
store that never rebuilt anything has no document and keeps its plain ``<root>/<name>`` layout.

Writes are atomic: a local root writes a temporary file and ``os.replace``s it over the
document (readers see the old or the new document, never a torn one); a remote root (az://,
abfss://, ...) writes it with ONE object PUT through deltalake's own object store
(``DeltaFileSystemHandler``: the document is far below the multipart threshold, so
the object store's buffered writer issues a single PUT, which Azure Blob Storage applies
atomically). Local read-modify-write cycles are serialized with ``flock`` on a side lock file;
remote ones rely on there being one rebuild per table at a time (the Dagster job runs in the
Delta writer pool of size 1).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from deltalake._internal import DeltaFileSystemHandler

from cqrs_dagster.settings import is_local_root

DOCUMENT = "_cqrs_tables.json"
FORMAT = 1


def local_path(root: str) -> Path:
    return Path(root.removeprefix("file://"))


def _remote(root: str, storage_options: dict[str, str] | None) -> DeltaFileSystemHandler:
    """deltalake's own object store for ``root`` (paths relative to it). The raw handler, not
    ``deltalake.fs.DeltaStorageHandler`` wrapped in pyarrow: pyarrow 26 hands its writes a
    Buffer where the handler wants bytes."""
    return DeltaFileSystemHandler(root.rstrip("/"), storage_options)


def empty() -> dict[str, Any]:
    return {"format": FORMAT, "tables": {}, "retired": []}


def _parse(raw: bytes) -> dict[str, Any]:
    doc = orjson.loads(raw)
    if not isinstance(doc, dict) or not isinstance(doc.get("tables"), dict):
        raise ValueError(f"{DOCUMENT} is not a table pointer document")
    doc.setdefault("retired", [])
    return doc


def read(root: str, storage_options: dict[str, str] | None) -> dict[str, Any]:
    """The current document (an empty one when it was never written)."""
    if is_local_root(root):
        try:
            return _parse((local_path(root) / DOCUMENT).read_bytes())
        except FileNotFoundError:
            return empty()
    try:
        f = _remote(root, storage_options).open_input_file(DOCUMENT)
        try:
            return _parse(f.read(f.size()))
        finally:
            f.close()  # type: ignore[attr-defined]  # the stub omits close()
    except FileNotFoundError:
        return empty()


def write(root: str, storage_options: dict[str, str] | None, doc: dict[str, Any]) -> None:
    """Replace the document atomically (see the module docstring)."""
    body = orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    if is_local_root(root):
        folder = local_path(root)
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{DOCUMENT}.", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, folder / DOCUMENT)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return
    out = _remote(root, storage_options).open_output_stream(DOCUMENT)
    out.write(body)
    out.close()  # type: ignore[attr-defined]  # the single PUT (the stub omits close())


@contextlib.contextmanager
def locked(root: str) -> Iterator[None]:
    """Serialize read-modify-write cycles of a local document (no-op for remote roots)."""
    if not is_local_root(root):
        yield
        return
    folder = local_path(root)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f".{DOCUMENT}.lock", "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def physical(doc: dict[str, Any], name: str) -> str:
    value = doc["tables"].get(name, name)
    return str(value)


def switched(doc: dict[str, Any], name: str, new: str, by: str) -> dict[str, Any]:
    """The document with ``name`` pointing at ``new`` and its previous table listed as retired."""
    old = physical(doc, name)
    tables = {**doc["tables"], name: new}
    if new == name:
        del tables[name]
    retired = [r for r in doc["retired"] if r.get("physical") != new]
    if old != new:
        retired.append(
            {
                "table": name,
                "physical": old,
                "retired_at": datetime.now(UTC).isoformat(),
                "by": by,
            }
        )
    return {"format": FORMAT, "tables": tables, "retired": retired}


def dropped(doc: dict[str, Any], physical_names: set[str]) -> dict[str, Any]:
    retired = [r for r in doc["retired"] if r.get("physical") not in physical_names]
    return {**doc, "retired": retired}


def delete_folder(root: str, storage_options: dict[str, str] | None, relative: str) -> None:
    """Delete ``<root>/<relative>`` and everything under it (missing: nothing to do)."""
    if is_local_root(root):
        import shutil

        shutil.rmtree(local_path(root) / relative, ignore_errors=True)
        return
    with contextlib.suppress(FileNotFoundError):
        _remote(root, storage_options).delete_dir(relative)
