"""The local SQL views (DuckDB) over the Delta read models.

Covers: each view returns exactly its Delta table's rows and columns (tables built by the real
pipeline); views exist (empty, right columns) before their tables do; a commit made after the
connection was opened is seen by the next query; sql/local is the packaged SQL; the read-only
gate accepts SELECT / WITH and refuses every other statement kind, multiple statements and
unparsable SQL; file access from a SELECT is blocked and the configuration cannot be unlocked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from cqrs_dagster.projections.schemas import READ_MODELS, SCHEMAS
from cqrs_dagster.projections.tables import PARTITION_BY
from cqrs_dagster.query.parquet import parquet_select
from cqrs_dagster.query.views import (
    NotReadOnly,
    QueryError,
    ReadModels,
    check_read_only,
    view_body,
    view_sql,
)
from cqrs_dagster_tests.query.conftest import Platform

REPO = Path(__file__).resolve().parents[2]
SORT_KEYS = {
    "raw_events": "ingest_seq",
    "orders": "order_id",
    "customers": "customer_id",
    "order_summary": "order_id",
    "daily_order_metrics": "order_date",
}


def _sorted(table: pa.Table, key: str) -> list[dict[str, object]]:
    return table.sort_by(key).to_pylist()


@pytest.mark.parametrize("name", READ_MODELS)
def test_view_equals_its_delta_table(seeded: Platform, name: str) -> None:
    delta = seeded.tables.open(name)
    assert delta is not None
    expected = delta.to_pyarrow_table()
    assert expected.num_rows > 0
    with ReadModels(seeded.tables) as models:
        got = models.query(f"SELECT * FROM {name}")
    assert got.column_names == SCHEMAS[name].names
    assert _sorted(got, SORT_KEYS[name]) == _sorted(
        expected.select(SCHEMAS[name].names), SORT_KEYS[name]
    )


def test_views_exist_empty_before_tables(platform: Platform) -> None:
    with ReadModels(platform.tables) as models:
        for name in READ_MODELS:
            got = models.query(f"SELECT * FROM {name}")
            assert got.num_rows == 0
            assert got.column_names == SCHEMAS[name].names


def test_tables_created_empty_read_empty(platform: Platform) -> None:
    """A table that exists with no data files yet (the pyarrow path reads it)."""
    for name in READ_MODELS:
        platform.tables.ensure(name)
    with ReadModels(platform.tables) as models:
        for name in READ_MODELS:
            got = models.execute(f"SELECT * FROM {name}")
            assert got.num_rows == 0
            assert got.column_names == SCHEMAS[name].names
            assert not models.reads_parquet(name)


def test_new_commits_are_seen_by_the_next_query(platform: Platform) -> None:
    with ReadModels(platform.tables) as models:
        assert models.query("SELECT count(*) AS n FROM customers").to_pylist() == [{"n": 0}]
        platform.send(
            {"type": "RegisterCustomer", "customerId": "k1", "name": "Kay", "email": "k@x.io"}
        )
        platform.project()
        assert models.query("SELECT name FROM customers").to_pylist() == [{"name": "Kay"}]
        platform.send({"type": "UpdateCustomer", "customerId": "k1", "name": "Kay Two"})
        platform.project()
        rows = models.query("SELECT name, version FROM customers").to_pylist()
        assert rows == [{"name": "Kay Two", "version": 2}]


@pytest.mark.parametrize("name", READ_MODELS)
def test_sql_local_is_the_packaged_sql(name: str) -> None:
    assert (REPO / "sql" / "local" / f"{name}.sql").read_text() == view_sql(name)
    assert f"CREATE OR REPLACE VIEW {name} AS" in view_sql(name)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1",
        "select * from orders where status = 'Paid'",
        "WITH t AS (SELECT * FROM orders) SELECT count(*) FROM t",
        "  SELECT 1;  ",
        "FROM order_summary",
    ],
)
def test_read_only_gate_accepts_queries(sql: str) -> None:
    assert check_read_only(sql) == sql


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("INSERT INTO orders SELECT * FROM orders", "INSERT"),
        ("UPDATE orders SET status = 'x'", "UPDATE"),
        ("DELETE FROM orders", "DELETE"),
        ("COPY orders TO '/tmp/x.csv'", "COPY"),
        ("ATTACH '/tmp/x.db' AS x", "ATTACH"),
        ("DETACH x", "DETACH"),
        ("INSTALL httpfs", "LOAD"),
        ("LOAD httpfs", "LOAD"),
        ("PRAGMA version", "PRAGMA"),
        ("SET enable_external_access = true", "SET"),
        ("RESET lock_configuration", "SET"),
        ("CREATE TABLE t AS SELECT 1", "CREATE"),
        ("DROP VIEW orders", "DROP"),
        ("CALL pragma_version()", "CALL"),
        ("EXPORT DATABASE '/tmp/x'", "EXPORT"),
        ("EXPLAIN SELECT 1", "EXPLAIN"),
    ],
)
def test_read_only_gate_refuses_other_statements(sql: str, kind: str) -> None:
    with pytest.raises(NotReadOnly, match=f"only SELECT queries are allowed.*not {kind}"):
        check_read_only(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1; SELECT 2",
        "SELECT 1; DROP VIEW orders",
        "SELECT * FROM orders; COPY orders TO 'x.csv'",
    ],
)
def test_read_only_gate_refuses_multiple_statements(sql: str) -> None:
    with pytest.raises(NotReadOnly, match="only one SELECT statement is allowed"):
        check_read_only(sql)


def test_unparsable_sql_is_a_query_error() -> None:
    with pytest.raises(QueryError, match="does not parse"):
        check_read_only("SELEC * FROM")


def test_selects_cannot_reach_files_or_unlock(seeded: Platform, tmp_path: Path) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    before = seeded.tables.open("orders")
    assert before is not None
    with ReadModels(seeded.tables) as models:
        for sql in (
            f"SELECT * FROM read_csv('{secret}')",
            f"SELECT * FROM '{secret}'",
            f"SELECT * FROM read_parquet('{seeded.tables.uri('orders')}/**/*.parquet')",
        ):
            with pytest.raises(QueryError, match="disabled by configuration"):
                models.query(sql)
        with pytest.raises(NotReadOnly):
            models.query("SET enable_external_access = true")
        assert models.query("SELECT count(*) AS n FROM orders").to_pylist() == [{"n": 60}]
    after = seeded.tables.open("orders")
    assert after is not None and after.version() == before.version()


def test_string_predicates_over_merged_files(seeded: Platform) -> None:
    """MERGE-written files store Utf8View strings: filtering on them must still work."""
    orders = seeded.tables.open("orders")
    assert orders is not None
    rows = orders.to_pyarrow_table().to_pylist()
    paid = sorted(r["order_id"] for r in rows if r["status"] == "Paid" and r["customer_id"] == "c1")
    assert paid
    with ReadModels(seeded.tables) as models:
        got = models.query(
            "SELECT order_id FROM orders WHERE status = 'Paid' AND customer_id = 'c1' "
            "ORDER BY order_id"
        )
    assert got.column("order_id").to_pylist() == paid


def test_open_views_follow_a_rebuild(platform: Platform) -> None:
    """A long-lived ReadModels (the query API's) reads the rows a rebuild swapped in."""
    from deltalake import DeltaTable

    from cqrs_dagster.projections.rebuild import rebuild

    for n in range(3):
        platform.send(
            {"type": "RegisterCustomer", "customerId": f"k{n}", "name": f"K{n}", "email": "k@x.io"}
        )
    platform.project()
    with ReadModels(platform.tables) as models:
        assert models.query("SELECT count(*) AS n FROM customers").to_pylist() == [{"n": 3}]
        # Corrupt the live table (one customer lost), then rebuild it from raw_events with force.
        DeltaTable(platform.tables.uri("customers")).delete("customer_id = 'k1'")
        assert models.query("SELECT count(*) AS n FROM customers").to_pylist() == [{"n": 2}]
        assert rebuild(platform.tables, "customers", run_id="swap", force=True).switched
        rows = models.query("SELECT customer_id FROM customers ORDER BY 1").to_pylist()
        assert rows == [{"customer_id": "k0"}, {"customer_id": "k1"}, {"customer_id": "k2"}]


@pytest.mark.parametrize("name", READ_MODELS)
def test_package_sql_reads_what_the_view_reads(seeded: Platform, name: str) -> None:
    """execute() (the API's own SQL) reads local tables with DuckDB's Parquet reader over the
    snapshot's files (partition values from the folders): same rows and column types as the
    caller's view."""
    with ReadModels(seeded.tables) as models:
        caller = models.query(f"SELECT * FROM {name}")
        own = models.execute(f"SELECT * FROM {name}")
        assert models.reads_parquet(name)
    assert own.schema == caller.schema
    assert _sorted(own, SORT_KEYS[name]) == _sorted(caller, SORT_KEYS[name])


def test_parquet_path_reads_new_commits_and_switches(platform: Platform) -> None:
    """The Parquet path follows MERGEs (new files replace old ones) and a blue/green switch."""
    from deltalake import DeltaTable

    from cqrs_dagster.projections.rebuild import rebuild

    def names(models: ReadModels) -> list[tuple[str, str]]:
        models.refresh(["customers"])
        rows = models.execute("SELECT customer_id, name FROM customers ORDER BY 1").to_pylist()
        return [(r["customer_id"], r["name"]) for r in rows]

    for n in range(3):
        platform.send(
            {"type": "RegisterCustomer", "customerId": f"k{n}", "name": f"K{n}", "email": "k@x.io"}
        )
    platform.project()
    with ReadModels(platform.tables) as models:
        assert models.reads_parquet("customers")
        assert names(models) == [("k0", "K0"), ("k1", "K1"), ("k2", "K2")]
        platform.send({"type": "UpdateCustomer", "customerId": "k1", "name": "K1 renamed"})
        platform.project()
        assert names(models) == [("k0", "K0"), ("k1", "K1 renamed"), ("k2", "K2")]
        DeltaTable(platform.tables.uri("customers")).delete("customer_id = 'k2'")
        assert names(models) == [("k0", "K0"), ("k1", "K1 renamed")]
        rebuild(platform.tables, "customers", run_id="switch", force=True)
        assert names(models) == [("k0", "K0"), ("k1", "K1 renamed"), ("k2", "K2")]
        assert models.reads_parquet("customers")


def test_parquet_path_quotes_file_paths(tmp_path: Path) -> None:
    """A data folder with quotes in its name still reads (paths are SQL literals in the view)."""
    from cqrs_dagster.settings import Settings

    p = Platform(Settings(env="local", data_dir=tmp_path / 'it\'s "data"'))
    try:
        p.send({"type": "RegisterCustomer", "customerId": "q1", "name": "Q", "email": "q@x.io"})
        p.project()
        with ReadModels(p.tables) as models:
            assert models.reads_parquet("customers")
            got = models.execute("SELECT customer_id FROM customers WHERE customer_id = ?", ["q1"])
        assert got.to_pylist() == [{"customer_id": "q1"}]
    finally:
        p.close()


def test_tables_the_parquet_path_cannot_read_exactly_fall_back(
    seeded: Platform, tmp_path: Path
) -> None:
    """No Parquet SELECT for newer reader protocols, string or null partition values; the
    date-partitioned tables read the partition column from their folders."""
    from deltalake import DeltaTable, write_deltalake

    orders = seeded.tables.open("orders")
    assert orders is not None and PARTITION_BY["orders"] == ["created_day"]
    select = parquet_select(orders)
    assert select is not None and "hive_types = {'created_day': DATE}" in select

    class NewerProtocol(DeltaTable):
        def protocol(self) -> Any:
            from deltalake.table import ProtocolVersions

            return ProtocolVersions(3, 7, ["deletionVectors"], ["deletionVectors"])

    assert parquet_select(NewerProtocol(seeded.tables.uri("order_summary"))) is None

    by_text = str(tmp_path / "by_text")
    write_deltalake(by_text, pa.table({"k": ["a", "b"], "v": [1, 2]}), partition_by=["k"])
    assert parquet_select(DeltaTable(by_text)) is None
    with_null = str(tmp_path / "with_null")
    data = pa.table({"k": pa.array([1, None], pa.int64()), "v": [1, 2]})
    write_deltalake(with_null, data, partition_by=["k"])
    assert parquet_select(DeltaTable(with_null)) is None
    by_int = str(tmp_path / "by_int")
    write_deltalake(
        by_int, pa.table({"k": pa.array([1, 2], pa.int64()), "v": [3, 4]}), partition_by=["k"]
    )
    select = parquet_select(DeltaTable(by_int))
    assert select is not None
    import duckdb

    got = duckdb.connect().sql(f"SELECT k, v FROM ({select}) ORDER BY k").fetchall()
    assert got == [(1, 3), (2, 4)]


@pytest.mark.parametrize("name", READ_MODELS)
def test_view_body_reads_its_table_once(name: str) -> None:
    """rows_where inlines the view over a file subset by replacing this one reference."""
    body = view_body(name)
    assert body.startswith("SELECT") and body.count(f"_delta_{name}") == 1


KEYS = {
    "raw_events": "aggregate_id",
    "orders": "order_id",
    "customers": "customer_id",
    "order_summary": "order_id",
}


@pytest.mark.parametrize("name", sorted(KEYS))
def test_rows_where_equals_the_view(seeded: Platform, name: str) -> None:
    """Lookups on pruned files answer what the view answers, for every key and a missing one."""
    key = KEYS[name]
    with ReadModels(seeded.tables) as models:
        keys = sorted(set(models.query(f"SELECT {key} FROM {name}").column(key).to_pylist()))
        assert len(keys) > 5
        for value in [*keys, "absent", ""]:
            got = models.rows_where(name, key, value)
            want = models.query(
                f"SELECT * FROM {name} WHERE {key} = '{value}'"  # test values: no quotes
            )
            assert got.schema == want.schema
            assert _sorted(got, SORT_KEYS[name]) == _sorted(want, SORT_KEYS[name]), value
        with pytest.raises(KeyError):
            models.rows_where(name, "no_such_column", "x")


def test_lookups_read_only_the_files_whose_stats_admit_the_key(tmp_path: Path) -> None:
    from deltalake import DeltaTable, write_deltalake

    from cqrs_dagster.query.parquet import ParquetSource, parquet_source

    uri = str(tmp_path / "t")
    for ids in (["a1", "a2"], ["b1", "b2"], ["c1", "c2"]):
        write_deltalake(uri, pa.table({"id": ids, "v": [1, 2]}), mode="append")
    source = parquet_source(DeltaTable(uri))
    assert source is not None and len(source.files) == 3
    assert [Path(f).name for f in source.files_with("id", "b2")] == [
        Path(f).name for f in source.files if f in source.files_with("id", "b1")
    ]
    assert len(source.files_with("id", "b2")) == 1
    assert source.files_with("id", "zz") == [] and source.files_with("id", "0") == []
    assert source.files_with("v", "anything") == list(source.files)  # no string stats: all
    # A truncated max ("ab" for values up to "abzz") still admits every value it may hide.
    truncated = ParquetSource("*", "", ("f",), {"id": (["aa"], ["ab"])})
    assert truncated.files_with("id", "abzz") == ["f"]
    assert truncated.files_with("id", "ac") == []


def test_the_locked_connection_loads_a_new_snapshot_only_for_caller_sql(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API's refreshes skip the pyarrow dataset (costly at 365 partitions) that only caller
    SQL reads; the next caller query still sees the newest commit."""
    from cqrs_dagster.query import views

    built: list[str] = []
    real = views._dataset

    def counting(table: Any) -> Any:
        built.append(table.table_uri)
        return real(table)

    platform.send({"type": "RegisterCustomer", "customerId": "k0", "name": "K0", "email": "k@x.io"})
    items = [{"sku": "tea", "quantity": 1, "unitPrice": "2.50"}]
    platform.send({"type": "CreateOrder", "orderId": "o1", "customerId": "k0", "items": items})
    platform.project()  # every table has files: all are read by the Parquet path
    monkeypatch.setattr(views, "_dataset", counting)
    with ReadModels(platform.tables) as models:
        built.clear()
        platform.send(
            {"type": "RegisterCustomer", "customerId": "k1", "name": "K1", "email": "k@x.io"}
        )
        platform.project()
        models.refresh()
        assert models.rows_where("customers", "customer_id", "k1").num_rows == 1
        assert built == []
        rows = models.query("SELECT customer_id FROM customers ORDER BY 1").to_pylist()
        assert rows == [{"customer_id": "k0"}, {"customer_id": "k1"}]
        assert built  # the locked connection caught up for the caller's SQL


def test_a_long_query_does_not_hold_up_a_key_lookup(seeded: Platform) -> None:
    """Queries over Parquet views run on cursors of their own, outside the models' lock: a key
    lookup answers while another thread's query (a watcher's batched lookup) still runs."""
    import threading
    import time

    with ReadModels(seeded.tables) as models:
        order = str(models.query("SELECT order_id FROM order_summary LIMIT 1")[0][0])
        slow = "SELECT sum(hash(i) % 7) AS s FROM range(400000000) t(i), (SELECT 1 FROM order_summary LIMIT 1)"
        done: dict[str, float] = {}

        def long_query() -> None:
            models.execute(slow)
            done["long"] = time.monotonic()

        thread = threading.Thread(target=long_query)
        thread.start()
        time.sleep(0.2)  # the long query is running
        started = time.monotonic()
        found = models.rows_where("order_summary", "order_id", order)
        done["lookup"] = time.monotonic()
        thread.join(120)
        assert found.num_rows == 1
        assert "long" in done and done["lookup"] < done["long"]
        assert done["lookup"] - started < (done["long"] - started) / 2
