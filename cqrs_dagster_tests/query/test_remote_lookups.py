"""Key lookups on remote Delta tables (Azurite, ``az://``) read only the files whose log min/max
admit the key (copied locally once by :class:`cqrs_dagster.query.remote.FileMirror`) and answer
exactly what the same lookup on a local copy of the same commits answers.

Covers: every key of orders (partitioned by created_day, with a MERGE's string_view files),
customers and order_summary written in several key-range files; each lookup copies only the
files whose logged range holds the key, each at most once; a key no file admits (or "") copies
nothing and answers no rows of the same schema; the mirror's bound evicts the least recently used
copies and fetches an evicted file again when a lookup needs it; folders left by processes that
no longer run are removed by the next mirror.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable, write_deltalake

from cqrs_dagster.projections.tables import PARTITION_BY, TableStore
from cqrs_dagster.query.remote import PREFIX, FileMirror, remove_orphans
from cqrs_dagster.query.views import ReadModels
from cqrs_dagster.wiring import make_read_models, make_table_store
from cqrs_dagster_tests.fixtures.azurite import AzuriteServer
from cqrs_dagster_tests.query.conftest import Platform

KEYS = {"orders": "order_id", "customers": "customer_id", "order_summary": "order_id"}
PARTS = 4  # files per table (key ranges), more for orders (one per created_day too)


def _write_in_key_ranges(table: pa.Table, key: str, uri: str, options: dict[str, str] | None,
                         partition_by: list[str] | None) -> None:  # fmt: skip
    ordered = table.sort_by(key)
    bounds = [n * ordered.num_rows // PARTS for n in range(PARTS + 1)]
    for start, end in itertools.pairwise(bounds):
        write_deltalake(
            uri,
            ordered.slice(start, end - start),
            mode="append",
            partition_by=partition_by,
            storage_options=options,
        )


def _merge_status(table: DeltaTable, order_id: str) -> None:
    (
        table.merge(
            pa.table({"order_id": [order_id], "status": ["Delivered"]}),
            "t.order_id = s.order_id",
            source_alias="s",
            target_alias="t",
        )
        .when_matched_update({"status": "s.status"})
        .execute()
    )


def _admitting(table: DeltaTable, key: str, value: str) -> set[str]:
    """The files whose logged min/max of ``key`` hold ``value`` (stats here are untruncated)."""
    actions = pa.table(table.get_add_actions(flatten=True))
    return {
        path
        for path, low, high in zip(
            actions.column("path").to_pylist(),
            actions.column(f"min.{key}").to_pylist(),
            actions.column(f"max.{key}").to_pylist(),
            strict=True,
        )
        if low <= value <= high
    }


def _sorted(table: pa.Table, key: str) -> list[dict[str, object]]:
    return sorted(table.to_pylist(), key=lambda row: str(row[key]))


@pytest.mark.servers
def test_remote_lookups_read_only_the_pruned_files(
    azurite_server: AzuriteServer, seeded: Platform, tmp_path: Path
) -> None:
    settings = azurite_server.settings(azurite_server.fresh_container())
    remote = make_table_store(settings)
    local = TableStore(str(tmp_path / "delta"))
    for name, key in KEYS.items():
        source = seeded.tables.open(name)
        assert source is not None
        rows = source.to_pyarrow_table()
        for store in (local, remote):
            _write_in_key_ranges(
                rows, key, store.uri(name), store.storage_options, PARTITION_BY.get(name)
            )
    merged = "o037"  # the same MERGE on both: its rewritten file stores strings as Utf8View
    for store in (local, remote):
        orders = store.open("orders")
        assert orders is not None
        _merge_status(orders, merged)

    with make_read_models(settings) as models, ReadModels(local) as reference:
        fetched = models.mirror.fetched
        for name, key in KEYS.items():
            table = remote.open(name)
            assert table is not None
            assert len(table.file_uris()) >= PARTS
            keys = sorted(set(pc.unique(table.to_pyarrow_table(columns=[key])[key]).to_pylist()))
            assert len(keys) > 5
            for value in keys:
                before = len(fetched)
                got = models.rows_where(name, key, value)
                want = reference.rows_where(name, key, value)
                assert got.schema == want.schema, (name, value)
                assert _sorted(got, key) == _sorted(want, key), (name, value)
                assert got.num_rows >= 1
                new = {path for uri, path in fetched[before:]}
                admitting = _admitting(table, key, value)
                assert new <= admitting, (name, value, new, admitting)
                already = {path for uri, path in fetched[:before] if uri == table.table_uri}
                assert admitting <= already | new  # every file that may hold it, copied once
                assert len(admitting) < len(table.file_uris())  # pruned: not every file
            for missing in ("absent", "", "zzz"):
                before = len(fetched)
                got = models.rows_where(name, key, missing)
                want = reference.rows_where(name, key, missing)
                assert got.num_rows == 0 and got.schema == want.schema
                assert fetched[before:] == []  # no file admits it: nothing copied or read
        # each file copied at most once, and only those of the tables looked up
        assert len(fetched) == len(set(fetched))
        copied_tables = {uri.rstrip("/").rsplit("/", 1)[-1] for uri, _ in fetched}
        assert copied_tables == set(KEYS)
        row = models.rows_where("orders", "order_id", merged).to_pylist()
        assert [r["status"] for r in row] == ["Delivered"]
        # The views themselves still read the remote tables through the pyarrow path.
        assert not models.reads_parquet("orders")


def test_the_mirror_evicts_least_recently_used_copies(tmp_path: Path) -> None:
    uri = str(tmp_path / "t")
    for ids in (["a1", "a2"], ["b1", "b2"], ["c1", "c2"]):
        write_deltalake(uri, pa.table({"id": ids, "v": ["x" * 1000, "y"]}), mode="append")
    actions = pa.table(DeltaTable(uri).get_add_actions(flatten=True)).sort_by("min.id")
    paths, sizes = actions.column("path").to_pylist(), actions.column("size_bytes").to_pylist()
    files = list(zip(paths, sizes, strict=True))
    assert len(files) == 3
    mirror = FileMirror(capacity_bytes=files[0][1] + files[1][1])
    try:
        folder = Path(mirror.folder(uri))
        mirror.ensure(uri, None, [files[0]])
        mirror.ensure(uri, None, [files[1]])
        mirror.ensure(uri, None, [files[0]])  # already there: not copied again, now most recent
        assert mirror.fetched == [(uri, files[0][0]), (uri, files[1][0])]
        assert (folder / files[0][0]).read_bytes() == (Path(uri) / files[0][0]).read_bytes()
        mirror.ensure(uri, None, [files[2]])  # over the bound: the least recent (1) goes
        assert not (folder / files[1][0]).exists()
        assert (folder / files[0][0]).exists() and (folder / files[2][0]).exists()
        mirror.ensure(uri, None, [files[1]])  # needed again: copied again
        assert mirror.fetched[-1] == (uri, files[1][0])
        assert (folder / files[1][0]).read_bytes() == (Path(uri) / files[1][0]).read_bytes()
    finally:
        mirror.close()
    assert not folder.exists()


def test_folders_of_processes_no_longer_running_are_removed(tmp_path: Path) -> None:
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    orphan = tmp_path / f"{PREFIX}{ended.pid}-abc"
    live = tmp_path / f"{PREFIX}{os.getpid()}-def"
    other = tmp_path / "unrelated"
    for folder in (orphan, live, other):
        (folder / "sub").mkdir(parents=True)
    assert remove_orphans(tmp_path) == [orphan]
    assert not orphan.exists() and live.exists() and other.exists()
    mirror = FileMirror()
    try:
        assert Path(mirror.folder("az://c/t")).parent.name.startswith(f"{PREFIX}{os.getpid()}-")
    finally:
        mirror.close()
