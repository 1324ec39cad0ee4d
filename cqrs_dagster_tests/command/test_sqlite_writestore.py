"""SQLite WriteStore: the WriteStore contract, plus what only the SQLite file shows: durability
across reopening, WAL + synchronous settings, rollback of a failing transaction, thread use, and
two concurrent writers (threads and processes) racing on one aggregate version."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import replace
from decimal import Decimal
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Literal

import pytest

from cqrs_dagster.command.writestore.port import Save, StoredAggregate, WriteStore
from cqrs_dagster.command.writestore.sqlite import SqliteWriteStore
from cqrs_dagster.domain.errors import VersionConflict
from cqrs_dagster.domain.events import ORDER
from cqrs_dagster_tests.contracts.writestore_contract import (
    WriteStoreContract,
    commit,
    make_event,
)


class TestSqliteWriteStore(WriteStoreContract):
    def make_store(self, request: pytest.FixtureRequest) -> WriteStore:
        tmp_path: Path = request.getfixturevalue("tmp_path")
        return SqliteWriteStore(tmp_path / "w.sqlite")


def _event_ids(store: WriteStore) -> list[str]:
    return [e.event_id for e in store.pending_events(10_000)]


def test_data_survives_reopening_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "w.sqlite"
    store = SqliteWriteStore(path)
    events = commit(store, "o1", 0, n_events=2, command_id="c1")
    store.mark_published(events[:1])
    store.close()

    reopened = SqliteWriteStore(path)
    try:
        stored = reopened.load(ORDER, "o1")
        assert stored is not None and stored.version == 2
        assert reopened.command_result("c1") == {"aggregateId": "o1", "version": 2}
        assert reopened.pending_events(10) == [events[1]]
    finally:
        reopened.close()


@pytest.mark.parametrize(("mode", "code"), [("FULL", 2), ("NORMAL", 1)])
def test_file_is_wal_and_every_thread_connection_has_the_synchronous_mode(
    tmp_path: Path, mode: Literal["FULL", "NORMAL"], code: int
) -> None:
    store = SqliteWriteStore(tmp_path / "w.sqlite", synchronous=mode)
    try:
        conn = store._conn()
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == code
        with ThreadPoolExecutor(1) as pool:
            other = pool.submit(lambda: store._conn().execute("PRAGMA synchronous").fetchone()[0])
            assert other.result() == code
    finally:
        store.close()
    with closing(sqlite3.connect(tmp_path / "w.sqlite")) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_default_is_synchronous_full(tmp_path: Path) -> None:
    store = SqliteWriteStore(tmp_path / "w.sqlite")
    try:
        assert store._conn().execute("PRAGMA synchronous").fetchone()[0] == 2
    finally:
        store.close()


def test_failure_after_the_first_writes_rolls_the_whole_save_back(tmp_path: Path) -> None:
    """The state upsert and command row are already written when the outbox insert fails on a
    reused eventId: the transaction must leave no trace of any of them."""
    store = SqliteWriteStore(tmp_path / "w.sqlite")
    try:
        (first,) = commit(store, "o1", 0)
        reused = replace(make_event("o1", 2), event_id=first.event_id)
        with pytest.raises(sqlite3.IntegrityError):
            store.save(
                Save(
                    aggregate=StoredAggregate(ORDER, "o1", 3, {"broken": True}),
                    expected_version=1,
                    events=(make_event("o1", 2), reused),
                    command_id="c-broken",
                    result={},
                )
            )
        stored = store.load(ORDER, "o1")
        assert stored is not None and stored.version == 1 and "broken" not in stored.state
        assert store.command_result("c-broken") is None
        assert store.pending_events(10) == [first]
        commit(store, "o1", 1, command_id="c-next")  # the store is still usable
        assert [e.version for e in store.pending_events(10)] == [1, 2]
    finally:
        store.close()


def test_value_that_is_not_json_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    store = SqliteWriteStore(tmp_path / "w.sqlite")
    try:
        with pytest.raises(TypeError):
            store.save(
                Save(
                    aggregate=StoredAggregate(ORDER, "o1", 1, {"total": Decimal("1.10")}),
                    expected_version=0,
                    events=(make_event("o1", 1),),
                    command_id="c1",
                    result={},
                )
            )
        assert store.load(ORDER, "o1") is None
        assert store.command_result("c1") is None
        assert store.pending_events(10) == []
    finally:
        store.close()


def test_closed_store_refuses_further_use(tmp_path: Path) -> None:
    store = SqliteWriteStore(tmp_path / "w.sqlite")
    store.close()
    with pytest.raises(RuntimeError, match="closed"):
        store.load(ORDER, "o1")


def test_many_threads_write_distinct_aggregates_without_loss(tmp_path: Path) -> None:
    store = SqliteWriteStore(tmp_path / "w.sqlite", synchronous="NORMAL")
    try:

        def work(worker: int) -> None:
            for n in range(3):
                commit(store, f"w{worker}", n)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(work, range(16)))
        events = store.pending_events(1000)
        assert len(events) == 48
        for worker in range(16):
            assert [e.version for e in events if e.aggregate_id == f"w{worker}"] == [1, 2, 3]
            stored = store.load(ORDER, f"w{worker}")
            assert stored is not None and stored.version == 3
    finally:
        store.close()


def _race_round(store: WriteStore, name: str, expected: int, barrier: threading.Barrier) -> str:
    """Wait for the other writer, then try to append version ``expected + 1``."""
    event = make_event("contested", expected + 1, writer=name)
    barrier.wait(timeout=30)
    try:
        store.save(
            Save(
                aggregate=StoredAggregate(ORDER, "contested", expected + 1, {"writer": name}),
                expected_version=expected,
                events=(event,),
                command_id=f"{name}-{expected}",
                result={"writer": name},
            )
        )
    except VersionConflict:
        return "conflict"
    return "ok"


ROUNDS = 15


def _assert_one_winner_per_round(store: WriteStore, outcomes: dict[str, list[str]]) -> None:
    for r in range(ROUNDS):
        assert sorted(outcomes[w][r] for w in outcomes) == ["conflict", "ok"], f"round {r}"
    events = store.pending_events(1000)
    assert [e.version for e in events] == list(range(1, ROUNDS + 2))
    stored = store.load(ORDER, "contested")
    assert stored is not None and stored.version == ROUNDS + 1
    for r, event in enumerate(events[1:], start=1):
        winner = event.data["writer"]
        assert outcomes[winner][r - 1] == "ok"
        assert store.command_result(f"{winner}-{r}") == {"writer": winner}


def test_two_threads_racing_on_one_version_exactly_one_wins(tmp_path: Path) -> None:
    store = SqliteWriteStore(tmp_path / "w.sqlite")
    try:
        commit(store, "contested", 0)
        barrier = threading.Barrier(2)

        def writer(name: str) -> list[str]:
            return [_race_round(store, name, r, barrier) for r in range(1, ROUNDS + 1)]

        with ThreadPoolExecutor(2) as pool:
            a, b = pool.submit(writer, "a"), pool.submit(writer, "b")
            outcomes = {"a": a.result(timeout=60), "b": b.result(timeout=60)}
        _assert_one_winner_per_round(store, outcomes)
    finally:
        store.close()


def _process_writer(
    path: str, name: str, barrier: threading.Barrier, out: Queue[tuple[str, list[str]]]
) -> None:
    store = SqliteWriteStore(Path(path))
    try:
        out.put((name, [_race_round(store, name, r, barrier) for r in range(1, ROUNDS + 1)]))
    finally:
        store.close()


def test_two_processes_racing_on_one_version_exactly_one_wins(tmp_path: Path) -> None:
    path = tmp_path / "w.sqlite"
    store = SqliteWriteStore(path)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    results: Queue[tuple[str, list[str]]] = ctx.Queue()
    procs = [
        ctx.Process(target=_process_writer, args=(str(path), name, barrier, results))
        for name in ("a", "b")
    ]
    try:
        commit(store, "contested", 0)
        for p in procs:
            p.start()
        outcomes = dict(results.get(timeout=120) for _ in procs)
        for p in procs:
            p.join(timeout=30)
            assert p.exitcode == 0
        _assert_one_winner_per_round(store, outcomes)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join(timeout=10)
        store.close()


def test_in_process_writers_queue_on_the_writer_lock(tmp_path: Path) -> None:
    """A batch and the relay's mark_published from another thread never fail on SQLITE_BUSY."""
    store = SqliteWriteStore(tmp_path / "w.sqlite")
    events = commit(store, "a", 0)
    errors: list[BaseException] = []

    def relay() -> None:
        try:
            for _ in range(50):
                store.mark_published(events)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=relay)
    thread.start()
    for n in range(50):
        with store.batch() as batch:
            batch.save(
                Save(
                    aggregate=StoredAggregate(ORDER, f"b{n}", 1, {}),
                    expected_version=0,
                    events=(make_event(f"b{n}", 1),),
                    command_id=f"k{n}",
                    result={},
                )
            )
    thread.join()
    assert errors == []
    assert len(store.pending_events(100)) == 50
    store.close()


def test_a_forked_child_does_not_inherit_a_held_writer_lock(tmp_path: Path) -> None:
    store = SqliteWriteStore(tmp_path / "w.sqlite")
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store._writer_lock():
            held.set()
            release.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(30)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            commit(store, "child", 0)
        finally:
            os._exit(0)
    deadline = time.monotonic() + 30
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if done[0] == 0:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    release.set()
    thread.join()
    assert done[0] == pid, "the child deadlocked on the parent's held writer lock"
    assert store.load(ORDER, "child") is not None
    store.close()
