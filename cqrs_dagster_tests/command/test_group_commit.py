"""Group commit over a real SqliteWriteStore file (FULL): CommandHandler.handle_batch + GroupCommitter.

Covers: commands of one batch see each other's writes (register -> create -> pay in one commit);
a failing command between good ones gets its own error and writes nothing while the others
commit; a version conflict inside one batch; two commands with one commandId in one batch (the
second replays the first's result, one write); a stored commandId replays; many threads and many
asyncio tasks at once lose nothing and duplicate nothing; an exception in the writer's batch
releases EVERY waiter with an error, writes nothing, and the writer keeps serving; close() fails
queued and later commands with CommitterClosed.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from cqrs_dagster.command.group_commit import CommitterClosed, GroupCommitter
from cqrs_dagster.command.handler import CommandHandler, CommandResult
from cqrs_dagster.command.writestore.port import WriteBatch
from cqrs_dagster.command.writestore.sqlite import SqliteWriteStore
from cqrs_dagster.domain.commands import Command, parse_command
from cqrs_dagster.domain.errors import AggregateNotFound, DomainError, VersionConflict
from cqrs_dagster.domain.events import CUSTOMER, ORDER


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteWriteStore]:
    s = SqliteWriteStore(tmp_path / "write.sqlite")
    yield s
    s.close()


def cmd(**raw: Any) -> Command:
    return parse_command(raw)


def register(cid: str, **extra: Any) -> Command:
    return cmd(
        **{"type": "RegisterCustomer", "customerId": cid, "name": "Ada", "email": "a@b.co", **extra}
    )


def create(oid: str, cid: str, **extra: Any) -> Command:
    items = [{"sku": "tea", "quantity": 2, "unitPrice": "4.50"}]
    return cmd(type="CreateOrder", orderId=oid, customerId=cid, items=items, **extra)


def pay(oid: str, **extra: Any) -> Command:
    return cmd(type="UpdateOrderStatus", orderId=oid, status="Paid", **extra)


def counts(store: SqliteWriteStore) -> tuple[int, int, int]:
    conn = store._conn()
    return tuple(  # type: ignore[return-value]
        conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
        for t in ("aggregates", "outbox", "commands")
    )


def batch(handler: CommandHandler, *commands: Command) -> list[CommandResult | DomainError]:
    return handler.handle_batch([(c, "alice") for c in commands])


def test_one_batch_sees_its_own_writes(store: SqliteWriteStore) -> None:
    out = batch(CommandHandler(store), register("c1"), create("o1", "c1"), pay("o1"))
    assert all(isinstance(o, CommandResult) for o in out)
    stored = store.load(ORDER, "o1")
    assert stored is not None and stored.version == 2 and stored.state["status"] == "Paid"
    assert [(e.aggregate_id, e.version) for e in store.pending_events(10)] == [
        ("c1", 1),
        ("o1", 1),
        ("o1", 2),
    ]


def test_a_failing_command_between_good_ones_writes_nothing(store: SqliteWriteStore) -> None:
    out = batch(
        CommandHandler(store), register("c1"), create("o1", "nobody"), register("c2"), pay("o9")
    )
    assert isinstance(out[0], CommandResult) and isinstance(out[2], CommandResult)
    assert isinstance(out[1], AggregateNotFound) and isinstance(out[3], AggregateNotFound)
    assert store.load(ORDER, "o1") is None
    assert store.load(CUSTOMER, "c2") is not None
    assert counts(store) == (2, 2, 0)  # no client commandId: none recorded


def test_version_conflict_inside_one_batch(store: SqliteWriteStore) -> None:
    handler = CommandHandler(store)
    batch(handler, register("c1"), create("o1", "c1"))
    out = batch(
        handler,
        pay("o1", expectedVersion=1, commandId="p1"),
        cmd(type="CancelOrder", orderId="o1", expectedVersion=1, commandId="x1"),
    )
    assert isinstance(out[0], CommandResult) and out[0].body["version"] == 2
    assert isinstance(out[1], VersionConflict)
    assert store.command_result("x1") is None
    stored = store.load(ORDER, "o1")
    assert stored is not None and stored.state["status"] == "Paid"


def test_one_command_id_twice_in_one_batch_writes_once(store: SqliteWriteStore) -> None:
    handler = CommandHandler(store)
    first, second = batch(handler, register("c1", commandId="k1"), register("c1", commandId="k1"))
    assert isinstance(first, CommandResult) and not first.replayed
    assert isinstance(second, CommandResult) and second.replayed
    assert second.body == first.body
    assert counts(store) == (1, 1, 1)
    # A stored command id replays from a later batch too.
    (again,) = batch(handler, register("c1", commandId="k1", name="Other"))
    assert isinstance(again, CommandResult) and again.replayed and again.body == first.body


def test_many_threads_through_the_committer_lose_nothing(store: SqliteWriteStore) -> None:
    committer = GroupCommitter(CommandHandler(store))
    errors: list[BaseException] = []

    def client(n: int) -> None:
        try:
            for i in range(20):
                committer.handle(register(f"t{n}-c{i}"))
                committer.handle(create(f"t{n}-o{i}", f"t{n}-c{i}"))
                committer.handle(pay(f"t{n}-o{i}", commandId=f"t{n}-p{i}"))
                replay = committer.handle(pay(f"t{n}-o{i}", commandId=f"t{n}-p{i}"))
                assert replay.replayed
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    committer.close()
    assert errors == []
    assert counts(store) == (16 * 40, 16 * 60, 16 * 20)  # the pays' client ids
    assert committer.commands == 16 * 80


def test_concurrent_updates_of_one_aggregate_serialize(store: SqliteWriteStore) -> None:
    """Without expectedVersion, concurrent commands on one order never 409 each other."""
    committer = GroupCommitter(CommandHandler(store))
    committer.handle(register("c1"))
    committer.handle(create("o1", "c1"))
    futures = [
        committer.submit(cmd(type="UpdateOrderStatus", orderId="o1", status=s))
        for s in ("Paid", "Shipped", "Delivered")
    ]
    versions = [f.result().body["version"] for f in futures]
    committer.close()
    assert versions == [2, 3, 4]


def test_asyncio_tasks_are_acknowledged_after_their_commit(store: SqliteWriteStore) -> None:
    committer = GroupCommitter(CommandHandler(store))

    async def main() -> list[CommandResult]:
        async def one(i: int) -> CommandResult:
            await committer.execute(register(f"a{i}"))
            # Acknowledged means committed: another connection sees it now.
            assert SqliteWriteStore(store.path).load(CUSTOMER, f"a{i}") is not None
            return await committer.execute(create(f"o{i}", f"a{i}"))

        return await asyncio.gather(*(one(i) for i in range(64)))

    results = asyncio.run(main())
    committer.close()
    assert sorted(r.body["aggregateId"] for r in results) == sorted(f"o{i}" for i in range(64))
    with pytest.raises(AggregateNotFound):
        GroupCommitter(CommandHandler(store)).handle(create("o-x", "nobody"))


class FailingStore(SqliteWriteStore):
    """Fails the next ``fail`` batches after every command of the batch has been decided."""

    fail = 0

    @contextmanager
    def batch(self) -> Iterator[WriteBatch]:
        with super().batch() as b:
            yield b
            if self.fail:
                self.fail -= 1
                raise OSError("disk full")


def test_a_failing_batch_releases_every_waiter_and_writes_nothing(tmp_path: Path) -> None:
    store = FailingStore(tmp_path / "write.sqlite")
    handler = CommandHandler(store)
    gate = threading.Event()
    original = handler.handle_batch

    def gated(commands: Any) -> list[CommandResult | DomainError]:
        gate.wait(10)  # let every submission queue up, so they share one batch
        return original(commands)

    handler.handle_batch = gated  # type: ignore[method-assign]
    committer = GroupCommitter(handler)
    store.fail = 1_000
    futures = [committer.submit(register(f"c{i}")) for i in range(10)]
    gate.set()
    for future in futures:
        with pytest.raises(OSError, match="disk full"):
            future.result(timeout=30)
    assert counts(store) == (0, 0, 0)
    assert committer.batches < 10  # the gate made waiters share a failing batch
    # The writer survived: the next command commits.
    store.fail = 0
    assert committer.handle(register("after")).body["version"] == 1
    committer.close()
    store.close()


def test_close_fails_later_commands(store: SqliteWriteStore) -> None:
    committer = GroupCommitter(CommandHandler(store))
    committer.handle(register("c1"))
    committer.close()
    assert not committer.alive
    with pytest.raises(CommitterClosed):
        committer.submit(register("c2"))
    assert store.load(CUSTOMER, "c2") is None


def test_max_batch_must_be_positive(store: SqliteWriteStore) -> None:
    with pytest.raises(ValueError):
        GroupCommitter(CommandHandler(store), max_batch=0)


def test_a_large_batch_keeps_save_order(store: SqliteWriteStore) -> None:
    """270 saves in one batch (orders created, then paid): outbox in save order."""
    commands = []
    for i in range(90):  # 270 saves, each order created then paid in the same batch
        commands += [register(f"c{i}"), create(f"o{i}", f"c{i}"), pay(f"o{i}")]
    out = batch(CommandHandler(store), *commands)
    assert all(isinstance(o, CommandResult) for o in out)
    assert counts(store) == (180, 270, 0)
    order = [(e.aggregate_id, e.version) for e in store.pending_events(1000)]
    expected = []
    for i in range(90):
        expected += [(f"c{i}", 1), (f"o{i}", 1), (f"o{i}", 2)]
    assert order == expected
    paid = store.load(ORDER, "o89")
    assert paid is not None and paid.version == 2 and paid.state["status"] == "Paid"


def test_the_batch_writer_checkpoints_at_its_own_threshold(store: SqliteWriteStore) -> None:
    from cqrs_dagster.command.writestore.sqlite import BATCH_CHECKPOINT_PAGES

    batch(CommandHandler(store), register("c1"))
    conn = store._conn()  # this thread ran the batch
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == BATCH_CHECKPOINT_PAGES
