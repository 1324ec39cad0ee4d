"""The local SQLite event bus: the EventBus contract, plus durability across reopen, the fixed
partition count, a stable key hash across processes, thread safety and two processes appending
to one log at once without losing or reordering anything."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from collections import defaultdict
from contextlib import closing
from pathlib import Path

import adbc_driver_sqlite.dbapi as adbc_sqlite
import pytest

from cqrs_dagster.eventbus import local
from cqrs_dagster.eventbus.canonical import RULE
from cqrs_dagster.eventbus.local import LocalEventBus, PartitionCountMismatch, partition_for_key
from cqrs_dagster.eventbus.port import EventBus, OutgoingEvent
from cqrs_dagster_tests.contracts.eventbus_contract import EventBusContract, read_everything
from cqrs_dagster_tests.fixtures.procs import ROOT, stop_group, wait_until


class TestLocalEventBus(EventBusContract):
    def make_bus(self, request: pytest.FixtureRequest) -> EventBus:
        tmp: Path = request.getfixturevalue("tmp_path")
        return LocalEventBus(tmp / "bus.sqlite", partition_count=self.partition_count)


def _per_key(bus: EventBus) -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(list)
    for events in read_everything(bus).values():
        assert [e.sequence_number for e in events] == list(range(len(events)))
        for e in events:
            key, i = e.body.decode().split("#")
            out[key].append(int(i))
    return out


def test_log_is_durable_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "bus.sqlite"
    bus = LocalEventBus(path, partition_count=3)
    bus.send([OutgoingEvent(f"k{i % 5}", f"k{i % 5}#{i}".encode()) for i in range(20)])
    before = read_everything(bus)
    bus.close()

    reopened = LocalEventBus(path, partition_count=3)
    try:
        assert read_everything(reopened) == before
        p = reopened.partition_for("k1")
        head = reopened.partition_info(p).last_sequence_number
        reopened.send([OutgoingEvent("k1", b"k1#99")])
        (new,) = reopened.read(p, head, 10)
        assert new.sequence_number == head + 1
        assert int(new.offset) == int(before[p][-1].offset) + len(before[p][-1].body)
    finally:
        reopened.close()


def test_opening_with_another_partition_count_fails_clearly(tmp_path: Path) -> None:
    path = tmp_path / "bus.sqlite"
    LocalEventBus(path, partition_count=4).close()
    with pytest.raises(PartitionCountMismatch, match=r"has 4 partitions, but 8 were requested"):
        LocalEventBus(path, partition_count=8)
    LocalEventBus(path, partition_count=4).close()  # the log is untouched


def test_unknown_partition_is_an_error(tmp_path: Path) -> None:
    bus = LocalEventBus(tmp_path / "bus.sqlite", partition_count=2)
    try:
        with pytest.raises(ValueError, match="partition 2 does not exist"):
            bus.read(2, -1, 10)
        with pytest.raises(ValueError, match="partition -1 does not exist"):
            bus.partition_info(-1)
    finally:
        bus.close()


def test_key_hash_is_stable_across_processes() -> None:
    keys = [f"order-{i}" for i in range(50)]
    here = [partition_for_key(k, 7) for k in keys]
    code = (
        "from cqrs_dagster.eventbus.local import partition_for_key as f;"
        f"print([f(k, 7) for k in {keys!r}])"
    )
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
            env={"PYTHONHASHSEED": seed},
            timeout=60,
        )
        assert out.stdout.strip() == str(here)
    assert len(set(here)) > 1


def test_threads_sharing_one_instance_lose_nothing(tmp_path: Path) -> None:
    bus = LocalEventBus(tmp_path / "bus.sqlite", partition_count=4)
    try:

        def append(worker: int) -> None:
            for i in range(25):
                bus.send(
                    [
                        OutgoingEvent(f"w{worker}-{j}", f"w{worker}-{j}#{i}".encode())
                        for j in range(2)
                    ]
                )
                bus.partitions_info()

        threads = [threading.Thread(target=append, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        per_key = _per_key(bus)
        assert per_key == {f"w{w}-{j}": list(range(25)) for w in range(4) for j in range(2)}
    finally:
        bus.close()


_APPENDER = """
import sys, time
from pathlib import Path
from cqrs_dagster.eventbus.local import LocalEventBus
from cqrs_dagster.eventbus.port import OutgoingEvent

path, name = Path(sys.argv[1]), sys.argv[2]
bus = LocalEventBus(path, partition_count=4)
(path.parent / f"ready-{name}").touch()
while not (path.parent / "go").exists():  # start together, so the appends interleave
    time.sleep(0.005)
for i in range(200):
    bus.send([OutgoingEvent(f"{name}-{k}", f"{name}-{k}#{i}".encode()) for k in range(5)])
bus.close()
"""


def test_two_processes_appending_at_once_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "bus.sqlite"
    LocalEventBus(path, partition_count=4).close()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _APPENDER, str(path), name],
            cwd=ROOT,
            start_new_session=True,
            stderr=subprocess.PIPE,
        )
        for name in ("api", "relay")
    ]
    try:
        assert wait_until(
            lambda: all((tmp_path / f"ready-{n}").exists() for n in ("api", "relay")), 60
        )
        (tmp_path / "go").touch()
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err.decode()
    finally:
        for proc in procs:
            stop_group(proc)
    bus = LocalEventBus(path, partition_count=4)
    try:
        per_key = _per_key(bus)  # also asserts gap-free sequence numbers per partition
        assert per_key == {
            f"{name}-{k}": list(range(200)) for name in ("api", "relay") for k in range(5)
        }
    finally:
        bus.close()


_OLD_SCHEMA = """
CREATE TABLE bus_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE bus_partitions (partition INTEGER PRIMARY KEY, last_sequence_number INTEGER NOT NULL,
    next_offset INTEGER NOT NULL, last_enqueued_us INTEGER);
CREATE TABLE bus_events (partition INTEGER NOT NULL, sequence_number INTEGER NOT NULL,
    byte_offset INTEGER NOT NULL, enqueued_us INTEGER NOT NULL, partition_key TEXT,
    body BLOB NOT NULL, PRIMARY KEY (partition, sequence_number)) WITHOUT ROWID;
INSERT INTO bus_meta VALUES ('partition_count', '1');
INSERT INTO bus_partitions VALUES (0, 1, 17, 5);
INSERT INTO bus_events VALUES (0, 0, 0, 5, 'k', X'7b2261223a317d');
INSERT INTO bus_events VALUES (0, 1, 7, 5, 'k', X'7b2261223a20317d');
"""  # two events appended by a version without the flag: {"a":1} and {"a": 1}


def _stored_flags(path: Path) -> list[int | None]:
    """The flags as stored, read through the bus's own SQLite library (ADBC's): a second
    library must not open the file while a bus has it open (see the module docstring)."""
    with adbc_sqlite.connect(str(path)) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT canonical FROM bus_events ORDER BY sequence_number")
        return [row[0] for row in cursor.fetchall()]


def test_append_records_each_bodys_canonical_flag(tmp_path: Path) -> None:
    """The flag is computed by the bus from the bytes it stores, once, on append: readers get
    it with the columns instead of round-tripping each body through orjson again."""
    path = tmp_path / "bus.sqlite"
    bus = LocalEventBus(path, partition_count=1)
    try:
        bodies = [b'{"a":1}', b'{"a" :1}', b'{"a":1,"a":1}', b"not json", b'{"b":[1,2.5]}']
        bus.send([OutgoingEvent("k", b) for b in bodies])
        assert _stored_flags(path) == [1, 0, 0, 0, 1]
        flags = bus.read_columns(0, -1, 10).canonical
        assert flags is not None and flags.to_pylist() == [True, False, False, False, True]
    finally:
        bus.close()


@pytest.mark.parametrize("batch_rows", [1, 65_536])
def test_a_log_from_before_the_flag_gets_the_column_and_checks_old_rows_on_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch_rows: int
) -> None:
    # batch_rows 1: every row its own Arrow batch (the driver types a column from its first
    # batch: the old rows' NULL flags must not make the column untyped for the later ones)
    monkeypatch.setattr(local, "_READ_BATCH_ROWS", batch_rows)
    path = tmp_path / "bus.sqlite"
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript(_OLD_SCHEMA)
    bus = LocalEventBus(path, partition_count=1)
    try:
        assert _stored_flags(path) == [None, None]  # not known: never guessed
        bus.send([OutgoingEvent("k", b'{"a":2}')])
        assert _stored_flags(path) == [None, None, 1]
        cols = bus.read_columns(0, -1, 10)
        assert cols.bodies.to_pylist() == [b'{"a":1}', b'{"a": 1}', b'{"a":2}']
        assert cols.canonical is not None
        assert cols.canonical.to_pylist() == [True, False, True]
        assert cols.offsets.to_pylist() == ["0", "7", "17"]
        assert cols.sequence_numbers.to_pylist() == [0, 1, 2]
        later = bus.read_columns(0, 0, 10).canonical
        assert later is not None and later.to_pylist() == [False, True]
    finally:
        bus.close()
    with closing(sqlite3.connect(path)) as conn:
        (rule,) = conn.execute("SELECT value FROM bus_meta WHERE key = 'canonical_rule'").fetchone()
    assert rule == RULE


def test_flags_stored_under_another_rule_are_cleared_on_open(tmp_path: Path) -> None:
    path = tmp_path / "bus.sqlite"
    bus = LocalEventBus(path, partition_count=1)
    bus.send([OutgoingEvent("k", b) for b in (b'{"a":1}', b'{"a": 1}')])
    bus.close()
    with closing(sqlite3.connect(path)) as conn:  # as an older rule had it: both canonical
        conn.execute("UPDATE bus_meta SET value = 'an-older-rule' WHERE key = 'canonical_rule'")
        conn.execute("UPDATE bus_events SET canonical = 1")
        conn.commit()
    bus = LocalEventBus(path, partition_count=1)
    try:
        assert _stored_flags(path) == [None, None]
        flags = bus.read_columns(0, -1, 10).canonical
        assert flags is not None and flags.to_pylist() == [True, False]
    finally:
        bus.close()
