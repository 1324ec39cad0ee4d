"""Key lookups remembered across snapshots, and plain lookups answered without a refresh, never stale.

Real pipeline (commands -> SQLite -> local bus -> Delta) and real ``ReadModels``:

- a lookup at a new snapshot whose read set (the files whose Delta stats admit the key) did not
  change takes the remembered rows without a query; when the key's row changes, its file is
  replaced, the read set changes and the lookup queries again. Every lookup equals a direct
  query of the table, through a sequence of commits;
- ``peek_latest`` answers only while the read models' snapshot is the table's newest commit
  (staleness bound 0), or was seen to be within the bound, and says which;
- over HTTP with ``CQRS_QUERY_MAX_STALENESS_MS=0``, a plain ``GET /orders/{id}`` after a
  projection commit answers the new row at once (the default bound: test_bounded_staleness.py).
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from cqrs_dagster.projections.schemas import ORDER_SUMMARY
from cqrs_dagster.query.rows import json_rows
from cqrs_dagster.query.snapshot_rows import SnapshotRows
from cqrs_dagster.query.views import ReadModels
from cqrs_dagster.settings import Settings
from cqrs_dagster_tests.query.conftest import Platform, Server

STATUSES = ("Paid", "Shipped", "Delivered")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """No staleness allowed: these tests assert that the very next lookup sees each commit."""
    return Settings(env="local", data_dir=tmp_path / "data", query_max_staleness_ms=0)


def _order(platform: Platform, oid: str, customer: str = "c1") -> None:
    items = [{"sku": "tea", "quantity": 2, "unitPrice": "1.50"}]
    platform.send({"type": "CreateOrder", "orderId": oid, "customerId": customer, "items": items})


def _direct(models: ReadModels, oid: str) -> list[dict[str, object]]:
    return json_rows(models.rows_where(ORDER_SUMMARY, "order_id", oid))


def _customer(platform: Platform) -> None:
    platform.send(
        {"type": "RegisterCustomer", "customerId": "c1", "name": "Ada", "email": "a@x.io"}
    )


def test_rows_are_carried_to_snapshots_that_did_not_touch_them_and_never_stale(
    platform: Platform,
) -> None:
    _customer(platform)
    ids = [f"o{n:02d}" for n in range(6)]
    for oid in ids[:3]:
        _order(platform, oid)
    platform.project()
    models = ReadModels(platform.tables)
    rows = SnapshotRows()
    try:
        for oid in ids[:3]:
            assert rows.lookup(models, ORDER_SUMMARY, "order_id", oid, refresh=True)
        assert rows.misses == 3
        versions = [models.refresh([ORDER_SUMMARY])[ORDER_SUMMARY]]
        # Each step commits to order_summary: new orders, or a status change of one order.
        steps: list[tuple[str, str | None]] = [
            (ids[3], None),
            (ids[0], "Paid"),
            (ids[4], None),
            (ids[0], "Shipped"),
            (ids[5], None),
            (ids[2], "Paid"),
        ]
        for oid, status in steps:
            if status is None:
                _order(platform, oid)
            else:
                platform.send({"type": "UpdateOrderStatus", "orderId": oid, "status": status})
            platform.project()
            for known in ids:
                got = rows.lookup(models, ORDER_SUMMARY, "order_id", known, refresh=True)
                assert list(got) == _direct(models, known), (oid, status, known)
            versions.append(models.refresh([ORDER_SUMMARY])[ORDER_SUMMARY])
            if status is not None:
                found = rows.lookup(models, ORDER_SUMMARY, "order_id", oid, refresh=False)
                assert found[0]["status"] == status
        assert versions == sorted(set(versions)), "every step committed to order_summary"
        # Most lookups after a commit took the rows they already had: untouched orders' files
        # were not replaced. Changed orders (and new ones) were queried.
        assert rows.carried >= 10, (rows.carried, rows.misses)
        assert rows.misses >= 3 + 3 + 3, (rows.carried, rows.misses)
    finally:
        models.close()


def test_peek_latest_answers_only_on_the_newest_commit(platform: Platform) -> None:
    _customer(platform)
    _order(platform, "o1")
    _order(platform, "o2")
    platform.project()
    models = ReadModels(platform.tables)
    rows = SnapshotRows()
    try:
        assert rows.peek_latest(models, ORDER_SUMMARY, "order_id", "o1") is None  # not read yet
        first = rows.lookup(models, ORDER_SUMMARY, "order_id", "o1", refresh=True)
        assert rows.peek_latest(models, ORDER_SUMMARY, "order_id", "o1") == (first, False)
        # A commit the read models have not loaded: no answer from memory, even an unchanged one.
        _order(platform, "o3")
        platform.project()
        assert rows.peek_latest(models, ORDER_SUMMARY, "order_id", "o1") is None
        models.refresh([ORDER_SUMMARY])
        # o1's files are unchanged by o3's commit: carried to the new snapshot, no query.
        misses = rows.misses
        assert rows.peek_latest(models, ORDER_SUMMARY, "order_id", "o1") == (first, False)
        assert rows.misses == misses and rows.carried == 1
        # o1 changes: the stale rows are not served after the refresh either.
        platform.send({"type": "UpdateOrderStatus", "orderId": "o1", "status": "Paid"})
        platform.project()
        assert rows.peek_latest(models, ORDER_SUMMARY, "order_id", "o1") is None
        models.refresh([ORDER_SUMMARY])
        assert rows.peek_latest(models, ORDER_SUMMARY, "order_id", "o1") is None
        paid = rows.lookup(models, ORDER_SUMMARY, "order_id", "o1", refresh=True)
        assert paid[0]["status"] == "Paid"
        assert rows.peek_latest(models, ORDER_SUMMARY, "order_id", "o1") == (paid, False)
        assert rows.behind == 0
    finally:
        models.close()


def test_a_snapshot_seen_newest_within_the_bound_answers_and_says_it_is_behind(
    platform: Platform,
) -> None:
    _customer(platform)
    _order(platform, "o1")
    platform.project()
    models = ReadModels(platform.tables)
    rows = SnapshotRows()
    try:
        first = rows.lookup(models, ORDER_SUMMARY, "order_id", "o1", refresh=True)
        seen = models.newest_within(ORDER_SUMMARY, 0.0)
        assert seen is not None and seen[1] is False  # the newest commit: not behind
        before = seen[0].snapshot
        platform.send({"type": "UpdateOrderStatus", "orderId": "o1", "status": "Paid"})
        platform.project()
        # A newer commit exists. Within a bound the snapshot was seen newest in, the old rows are
        # answered, marked behind; with no bound (or once the bound has passed), nothing is.
        assert models.newest_within(ORDER_SUMMARY, 0.0) is None
        behind = models.newest_within(ORDER_SUMMARY, 60.0)
        assert behind is not None and behind == (seen[0], True)
        assert rows.peek_latest(models, ORDER_SUMMARY, "order_id", "o1", 60.0) == (first, True)
        assert rows.behind == 1
        time.sleep(0.3)
        assert models.newest_within(ORDER_SUMMARY, 0.2) is None
        assert rows.peek_latest(models, ORDER_SUMMARY, "order_id", "o1", 0.2) is None
        # The refresh loads the commit and counts as seen newest: the old rows are gone.
        models.refresh([ORDER_SUMMARY])
        fresh = models.newest_within(ORDER_SUMMARY, 0.0)
        assert fresh is not None and fresh[1] is False
        assert fresh[0].snapshot[1] == before[1] + 1
        assert rows.peek_latest(models, ORDER_SUMMARY, "order_id", "o1", 60.0) is None
    finally:
        models.close()


def test_plain_lookups_answer_from_memory_and_see_each_new_commit(
    platform: Platform, server: Server
) -> None:
    _customer(platform)
    _order(platform, "o1")
    platform.project()
    api_rows: SnapshotRows = server.app.state.query_api.rows
    with httpx.Client(base_url=server.url, timeout=10) as http:
        first = http.get("/api/v1/orders/o1")
        assert first.status_code == 200 and first.json()["status"] == "Created"
        hits = api_rows.hits
        again = [http.get("/api/v1/orders/o1") for _ in range(5)]
        assert all(r.json() == first.json() for r in again)
        assert api_rows.hits >= hits + 5, "answered from memory"
        for status in STATUSES:
            platform.send({"type": "UpdateOrderStatus", "orderId": "o1", "status": status})
            platform.project()
            # No refresh by the API in between: the very next lookup sees the commit.
            now = http.get("/api/v1/orders/o1")
            assert now.status_code == 200 and now.json()["status"] == status
        missing = http.get("/api/v1/orders/nope")
        assert missing.status_code == 404
        assert http.get("/api/v1/orders/nope").status_code == 404
        _order(platform, "nope")
        platform.project()
        assert http.get("/api/v1/orders/nope").status_code == 200
