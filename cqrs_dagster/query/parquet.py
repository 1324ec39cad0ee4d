"""A Delta snapshot as a DuckDB ``read_parquet`` over exactly its data files.

DuckDB's own Parquet reader prunes files and row groups on their statistics and decodes the other
columns only for the rows a filter keeps: a lookup by id in 5M rows reads one row group's id
column (milliseconds), where a pyarrow dataset scan decodes every row (about a second). For a
lookup by key the files are first pruned on the Delta log's min/max statistics, so DuckDB opens
one file instead of hundreds (orders: one per created_day).

Exact only where the files alone are the snapshot: reader protocol 1 (no deletion vectors, no
column mapping), files under the table root, and partition values (kept in the log, not in the
files) that DuckDB reads back exactly from ``col=value`` folders: dates and integers, never null,
and every file's folders equal to its logged values. Anything else gets None, and callers use the
pyarrow dataset.

A remote table (``az://``, ``abfss://``: DuckDB's azure extension is not available offline) gets
a source only when asked with ``root``, a local folder where its files are (or will be) copied
under their logged relative paths: :class:`.remote.FileMirror` fetches the ones a lookup needs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

import pyarrow as pa
from deltalake import DeltaTable

# Arrow type -> DuckDB type the columns are cast to (the types the pyarrow path gives).
_DUCK_TYPES: dict[pa.DataType, str] = {
    pa.string(): "VARCHAR",
    pa.large_string(): "VARCHAR",
    pa.string_view(): "VARCHAR",
    pa.int64(): "BIGINT",
    pa.int32(): "INTEGER",
    pa.bool_(): "BOOLEAN",
    pa.date32(): "DATE",
    pa.timestamp("us", tz="UTC"): "TIMESTAMPTZ",
    pa.float64(): "DOUBLE",
}
# Partition column types whose value DuckDB reads back exactly from a ``col=value`` folder.
_HIVE_TYPES = {pa.date32(): "DATE", pa.int32(): "INTEGER", pa.int64(): "BIGINT"}


def quoted(text: str, quote: str = "'") -> str:
    """``text`` as a SQL string literal (or, with ``quote='"'``, an identifier)."""
    return quote + text.replace(quote, quote * 2) + quote


def _duck_type(type_: pa.DataType) -> str | None:
    if pa.types.is_decimal(type_):
        return f"DECIMAL({type_.precision}, {type_.scale})"
    return _DUCK_TYPES.get(type_)


def _local_root(table: DeltaTable) -> str | None:
    uri = table.table_uri
    if uri.startswith("file://"):
        return url2pathname(unquote(urlparse(uri).path))
    return None if "://" in uri else uri


def local_log(table: DeltaTable) -> str | None:
    """The table's ``_delta_log`` folder when the table is a folder on this machine, else None."""
    root = _local_root(table)
    return None if root is None else os.path.join(root, "_delta_log")


def _partition_text(value: Any) -> str:
    return value.isoformat() if isinstance(value, date) else str(value)


@dataclass(frozen=True)
class ParquetSource:
    """One snapshot's files and how DuckDB reads them; ``bounds`` are the log's string stats."""

    columns: str  # the SELECT list: every column cast to its pyarrow-path type
    options: str  # read_parquet options
    files: tuple[str, ...]
    bounds: dict[str, tuple[list[str | None], list[str | None]]]  # column -> (mins, maxs)
    paths: tuple[str, ...] = ()  # each file's path relative to the table root (as logged, decoded)
    sizes: tuple[int, ...] = ()  # each file's size in bytes (from the log)

    def select(self, files: Sequence[str] | None = None) -> str:
        """The SELECT over ``files`` (default: every file of the snapshot)."""
        listed = ", ".join(quoted(f) for f in (self.files if files is None else files))
        return f"SELECT {self.columns} FROM read_parquet([{listed}], {self.options})"

    def indexes_with(self, column: str, value: str) -> list[int]:
        """The positions in :attr:`files` of :meth:`files_with`'s files."""
        if column not in self.bounds:
            return list(range(len(self.files)))
        mins, maxs = self.bounds[column]
        return [
            n
            for n, (low, high) in enumerate(zip(mins, maxs, strict=True))
            if (low is None or low <= value) and (high is None or value[: len(high)] <= high)
        ]

    def read_indexes(self, column: str, value: str) -> list[int]:
        """The positions of the files a key lookup of ``value`` reads: :meth:`indexes_with`'s,
        or the first file when none admits it (the lookup's SQL needs one to know the columns)."""
        return self.indexes_with(column, value) or [0]

    def read_set(self, column: str, value: str) -> tuple[str, ...]:
        """The files a key lookup of ``value`` reads. Delta data files are never rewritten in
        place, so two snapshots with the same read set answer the lookup with the same rows."""
        return tuple(self.files[n] for n in self.read_indexes(column, value))

    def files_with(self, column: str, value: str) -> list[str]:
        """The files whose logged min/max of ``column`` admit ``value`` (all without stats).

        Delta may truncate string stats to a prefix: a truncated min still bounds from below,
        and a truncated max ``m`` bounds every value whose first ``len(m)`` characters are at
        most ``m``, so that is the test (for an untruncated max it only keeps more).
        """
        return [self.files[n] for n in self.indexes_with(column, value)]


def _relative_files(actions: pa.Table, partition_columns: Sequence[str]) -> list[str] | None:
    """The snapshot's data files relative to the table root; None for a file outside it, or a
    partitioned file whose ``col=value`` folders are not exactly its partition values in the log.

    The log's paths are percent-encoded and relative to the table root (``file_uris()`` leaves
    them encoded, which a folder named ``it's data`` shows).
    """
    paths = [unquote(p) for p in actions.column("path").to_pylist()]
    if any("://" in p for p in paths):
        return None
    values = [actions.column(f"partition.{c}").to_pylist() for c in partition_columns]
    for n, path in enumerate(paths):
        expected = []
        for column, column_values in zip(partition_columns, values, strict=True):
            if column_values[n] is None:
                return None  # a null partition value has no exact folder form
            expected.append(f"{column}={_partition_text(column_values[n])}")
        if path.split("/")[:-1] != expected:
            return None
    return paths


def is_remote(table: DeltaTable) -> bool:
    """Whether the table lives in object storage (not a folder on this machine)."""
    return _local_root(table) is None


def parquet_source(table: DeltaTable, root: str | None = None) -> ParquetSource | None:
    """The snapshot as a :class:`ParquetSource`, or None where the files alone are not exactly it
    (or it has no files, or a column type the cast list does not know, or it is remote and no
    ``root`` is given).

    ``root``: the local folder the files are read from under their relative paths (default: the
    table's own folder, for a local table).
    """
    if table.protocol().min_reader_version != 1:
        return None
    schema = pa.schema(table.schema().to_arrow())
    partition_columns = list(table.metadata().partition_columns)
    hive = []
    for column in partition_columns:
        hive_type = _HIVE_TYPES.get(schema.field(column).type)
        if hive_type is None:
            return None
        hive.append(f"{quoted(column)}: {hive_type}")
    actions = pa.table(table.get_add_actions(flatten=True))
    if actions.num_rows == 0:
        return None
    folder = _local_root(table) if root is None else root
    paths = _relative_files(actions, partition_columns)
    if folder is None or not paths:
        return None
    files = [os.path.join(folder, p) for p in paths]
    columns = []
    bounds: dict[str, tuple[list[str | None], list[str | None]]] = {}
    for f in schema:
        duck = _duck_type(f.type)
        if duck is None:
            return None
        ident = quoted(f.name, '"')
        columns.append(f"CAST({ident} AS {duck}) AS {ident}")
        low, high = f"min.{f.name}", f"max.{f.name}"
        if duck == "VARCHAR" and low in actions.column_names and high in actions.column_names:
            bounds[f.name] = (actions.column(low).to_pylist(), actions.column(high).to_pylist())
    options = "union_by_name = true, hive_partitioning = " + (
        f"true, hive_types = {{{', '.join(hive)}}}" if hive else "false"
    )
    sizes = tuple(int(n) for n in actions.column("size_bytes").to_pylist())
    return ParquetSource(", ".join(columns), options, tuple(files), bounds, tuple(paths), sizes)


def parquet_select(table: DeltaTable) -> str | None:
    """The SELECT reading the whole snapshot (None where :func:`parquet_source` is None)."""
    source = parquet_source(table)
    return None if source is None else source.select()
