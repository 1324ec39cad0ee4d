"""Where a Delta table's live data files are on this machine, for readers that take paths
(DuckDB's Parquet reader). No engine imports: the engines and ``delta_io`` both use it."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from deltalake import DeltaTable


def _local(uri: str) -> bool:
    return uri.startswith("file://") or "://" not in uri


def _local_path(uri: str) -> str:
    """A local file's path from the percent-encoded URI or path Delta lists it by."""
    return url2pathname(unquote(urlparse(uri).path)) if uri.startswith("file://") else unquote(uri)


def local_files(
    table: DeltaTable, prune: list[tuple[str, str, Any]] | None = None
) -> list[str] | None:
    """Paths of the live data files of a table on a local path (None elsewhere: az://,
    abfss://): what DuckDB's Parquet reader reads; with ``prune`` (a delta-rs file-pruning
    predicate, ``[("created_day", "=", "2026-12-06")]``) only the files it keeps."""
    if not _local(table.table_uri):
        return None
    uris = table.file_uris(file_pruning_predicate=prune or None)
    return [_local_path(uri) for uri in uris]  # percent-encoded: a space, a quote
