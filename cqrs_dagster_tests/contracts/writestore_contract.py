"""WriteStore port contract: what every write-store adapter (SQLite, Cosmos DB) must do.

Covers, only through the port: atomic save (state, outbox events and command result visible
together), optimistic concurrency (VersionConflict writes nothing, expected version 0 means "must
not exist"), duplicate command ids (DuplicateCommand writes nothing, and wins over a version
conflict so a raced retry replays; a save without a client command id records none), outbox order (commit order, so version order per aggregate,
across many aggregates and pages), idempotent mark_published, exact JSON round-trips of state,
results (decimals as strings) and event envelopes, and missing lookups returning None.

Not collected itself: an adapter's test module subclasses it and supplies ``make_store``, which
must return a fresh, empty, isolated store per call.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cqrs_dagster.command.writestore.port import Save, StoredAggregate, WriteStore
from cqrs_dagster.domain.errors import DuplicateCommand, VersionConflict
from cqrs_dagster.domain.events import CUSTOMER, ORDER, ORDER_CREATED, ORDER_UPDATED, EventEnvelope

T0 = datetime(2026, 11, 26, 9, 30, 15, 123456, tzinfo=UTC)


def make_event(
    aggregate_id: str, version: int, aggregate_type: str = ORDER, **data: Any
) -> EventEnvelope:
    """A valid envelope for ``aggregate_id`` at ``version`` with a fresh eventId."""
    return EventEnvelope(
        event_id=str(uuid.uuid4()),
        event_type=ORDER_CREATED if version == 1 else ORDER_UPDATED,
        aggregate_id=aggregate_id,
        aggregate_type=aggregate_type,
        version=version,
        timestamp=T0 + timedelta(seconds=version),
        correlation_id=f"corr-{aggregate_id}",
        causation_id=f"cmd-{aggregate_id}-{version}",
        data={"orderId": aggregate_id, "status": f"s{version}", **data},
        metadata={"userId": "u1", "source": "contract"},
    )


def commit(
    store: WriteStore,
    aggregate_id: str,
    from_version: int,
    n_events: int = 1,
    aggregate_type: str = ORDER,
    command_id: str | None = None,
) -> tuple[EventEnvelope, ...]:
    """Save ``n_events`` events on top of ``from_version``; returns the events saved."""
    events = tuple(
        make_event(aggregate_id, from_version + i + 1, aggregate_type) for i in range(n_events)
    )
    version = from_version + n_events
    store.save(
        Save(
            aggregate=StoredAggregate(
                aggregate_type, aggregate_id, version, {"id": aggregate_id, "v": version}
            ),
            expected_version=from_version,
            events=events,
            command_id=command_id or f"cmd-{aggregate_type}-{aggregate_id}-{version}",
            result={"aggregateId": aggregate_id, "version": version},
        )
    )
    return events


def drain(store: WriteStore, page: int = 1000) -> list[EventEnvelope]:
    """Every pending event, reading pages of ``page`` and marking each page published."""
    out: list[EventEnvelope] = []
    for _ in range(10_000):
        batch = store.pending_events(page)
        if not batch:
            return out
        out.extend(batch)
        store.mark_published(batch)
    raise AssertionError("pending_events never ran dry: mark_published did not take effect")


class WriteStoreContract:
    """Behaviour every WriteStore adapter must show. Subclasses supply ``make_store``."""

    def make_store(self, request: pytest.FixtureRequest) -> WriteStore:
        raise NotImplementedError

    @pytest.fixture
    def store(self, request: pytest.FixtureRequest) -> Iterator[WriteStore]:
        s = self.make_store(request)
        yield s
        s.close()

    # -- lookups --------------------------------------------------------------------------------

    def test_load_of_missing_aggregate_is_none(self, store: WriteStore) -> None:
        assert store.load(ORDER, "nope") is None

    def test_command_result_of_unknown_command_is_none(self, store: WriteStore) -> None:
        assert store.command_result("never-sent") is None

    def test_fresh_store_has_no_pending_events(self, store: WriteStore) -> None:
        assert store.pending_events(10) == []

    # -- atomic save ----------------------------------------------------------------------------

    def test_save_makes_state_events_and_result_visible_together(self, store: WriteStore) -> None:
        events = (make_event("o1", 1), make_event("o1", 2))
        state = {"orderId": "o1", "status": "s2", "version": 2}
        result = {"aggregateId": "o1", "version": 2, "eventIds": [e.event_id for e in events]}
        store.save(Save(StoredAggregate(ORDER, "o1", 2, state), 0, events, "c1", result))

        assert store.load(ORDER, "o1") == StoredAggregate(ORDER, "o1", 2, state)
        assert store.command_result("c1") == result
        assert store.pending_events(10) == list(events)

    def test_a_save_without_a_client_command_id_records_no_result(self, store: WriteStore) -> None:
        """``command_id=None`` (the server made the id): state and events are saved, nothing is
        recorded or checked for the command, alone or in a batch, and the version check holds."""
        first = make_event("o1", 1)
        store.save(Save(StoredAggregate(ORDER, "o1", 1, {"v": 1}), 0, (first,), None, {"n": 1}))
        second = make_event("o1", 2)
        with store.batch() as batch:
            batch.save(Save(StoredAggregate(ORDER, "o1", 2, {"v": 2}), 1, (second,), None, {}))
            with pytest.raises(VersionConflict):  # no command id: the version still decides
                batch.save(
                    Save(StoredAggregate(ORDER, "o1", 2, {}), 1, (make_event("o1", 2),), None, {})
                )
            batch.save(Save(StoredAggregate(CUSTOMER, "c1", 1, {}), 0, (), "k-1", {"n": 3}))
        stored = store.load(ORDER, "o1")
        assert stored is not None and stored.version == 2 and stored.state == {"v": 2}
        assert store.pending_events(10) == [first, second]
        assert store.command_result(first.causation_id) is None
        assert store.command_result("None") is None
        assert store.command_result("k-1") == {"n": 3}

    def test_next_save_builds_on_the_stored_version(self, store: WriteStore) -> None:
        commit(store, "o1", 0)
        commit(store, "o1", 1, n_events=2)
        stored = store.load(ORDER, "o1")
        assert stored is not None
        assert stored.version == 3
        assert stored.state == {"id": "o1", "v": 3}
        assert [e.version for e in store.pending_events(10)] == [1, 2, 3]

    def test_aggregate_types_are_separate_namespaces(self, store: WriteStore) -> None:
        commit(store, "same-id", 0, aggregate_type=ORDER)
        commit(store, "same-id", 0, aggregate_type=CUSTOMER)
        order, customer = store.load(ORDER, "same-id"), store.load(CUSTOMER, "same-id")
        assert order is not None and order.aggregate_type == ORDER and order.version == 1
        assert customer is not None and customer.aggregate_type == CUSTOMER
        assert customer.version == 1

    # -- optimistic concurrency -----------------------------------------------------------------

    def test_stale_expected_version_conflicts_and_writes_nothing(self, store: WriteStore) -> None:
        first = commit(store, "o1", 0)
        commit(store, "o1", 1)
        before = store.load(ORDER, "o1")
        stale = make_event("o1", 2)
        with pytest.raises(VersionConflict):
            store.save(
                Save(
                    aggregate=StoredAggregate(ORDER, "o1", 2, {"stale": True}),
                    expected_version=1,
                    events=(stale,),
                    command_id="c-stale",
                    result={"x": 1},
                )
            )
        assert store.load(ORDER, "o1") == before
        assert store.command_result("c-stale") is None
        pending = store.pending_events(10)
        assert stale.event_id not in {e.event_id for e in pending}
        assert [e.version for e in pending] == [1, 2]
        assert pending[0] == first[0]

    def test_expected_version_zero_on_existing_aggregate_conflicts(self, store: WriteStore) -> None:
        commit(store, "o1", 0)
        before = store.load(ORDER, "o1")
        with pytest.raises(VersionConflict):
            commit(store, "o1", 0, command_id="c-again")
        assert store.load(ORDER, "o1") == before
        assert store.command_result("c-again") is None
        assert len(store.pending_events(10)) == 1

    def test_expected_version_above_zero_on_missing_aggregate_conflicts(
        self, store: WriteStore
    ) -> None:
        with pytest.raises(VersionConflict):
            commit(store, "ghost", 3, command_id="c-ghost")
        assert store.load(ORDER, "ghost") is None
        assert store.command_result("c-ghost") is None
        assert store.pending_events(10) == []

    # -- idempotent commands --------------------------------------------------------------------

    def test_duplicate_command_id_raises_and_writes_nothing(self, store: WriteStore) -> None:
        commit(store, "o1", 0, command_id="c1")
        with pytest.raises(DuplicateCommand):
            commit(store, "o2", 0, command_id="c1")
        assert store.load(ORDER, "o2") is None
        assert store.command_result("c1") == {"aggregateId": "o1", "version": 1}
        assert [e.aggregate_id for e in store.pending_events(10)] == ["o1"]

    def test_duplicate_command_wins_over_version_conflict(self, store: WriteStore) -> None:
        """A retry that raced its original (same id, same stale version) must be told it is a
        duplicate, so the handler replays the recorded result instead of answering 409."""
        commit(store, "o1", 0, command_id="c1")
        with pytest.raises(DuplicateCommand):
            commit(store, "o1", 0, command_id="c1")
        assert len(store.pending_events(10)) == 1

    def test_command_result_round_trips_with_decimals_as_strings(self, store: WriteStore) -> None:
        result = {
            "aggregateId": "o1",
            "version": 1,
            "state": {
                "totalAmount": "1234567890.10",
                "items": [{"sku": "A", "quantity": 3, "unitPrice": "0.10"}],
            },
            "eventIds": ["e1"],
            "consistencyToken": "Order:o1:1",
        }
        store.save(
            Save(
                aggregate=StoredAggregate(ORDER, "o1", 1, {"v": 1}),
                expected_version=0,
                events=(make_event("o1", 1),),
                command_id="c1",
                result=result,
            )
        )
        back = store.command_result("c1")
        assert back == result
        assert back is not None
        assert back["state"]["totalAmount"] == "1234567890.10"
        assert back["state"]["items"][0]["unitPrice"] == "0.10"

    # -- JSON fidelity --------------------------------------------------------------------------

    def test_state_json_round_trips_exactly(self, store: WriteStore) -> None:
        state: dict[str, Any] = {
            "name": 'Zoë "Q" O\'Brien — 東京 🚀',
            "email": "zoe@example.com",
            "amount": "0.30",
            "count": 9_007_199_254_740_991,  # 2**53 - 1: the largest int every JSON store keeps
            "negative": -42,
            "ratio": 0.1,
            "flag": True,
            "off": False,
            "nothing": None,
            "empty": {},
            "list": [],
            "nested": {"a": [1, "2", {"b": None}], "c": {"d": ["x", 1.5e-7]}},
            "version": 1,
        }
        store.save(Save(StoredAggregate(CUSTOMER, "c1", 1, state), 0, (), "cmd", {}))
        stored = store.load(CUSTOMER, "c1")
        assert stored is not None
        assert stored.state == state
        assert type(stored.state["count"]) is int and type(stored.state["ratio"]) is float

    def test_pending_events_round_trip_the_envelope(self, store: WriteStore) -> None:
        event = make_event("o1", 1, items=[{"sku": "A", "unitPrice": "9.99"}], note="ü")
        store.save(Save(StoredAggregate(ORDER, "o1", 1, {}), 0, (event,), "c1", {}))
        (back,) = store.pending_events(1)
        assert back == event
        assert back.to_dict() == event.to_dict()

    # -- outbox ---------------------------------------------------------------------------------

    def test_pending_events_follow_commit_order_across_many_aggregates(
        self, store: WriteStore
    ) -> None:
        rng = random.Random(7)
        ids = [f"agg-{i:02d}" for i in range(12)]
        versions = dict.fromkeys(ids, 0)
        committed: list[EventEnvelope] = []
        for _ in range(48):
            agg = rng.choice(ids)
            n = rng.choice((1, 1, 2))
            committed.extend(commit(store, agg, versions[agg], n_events=n))
            versions[agg] += n

        seen = drain(store, page=7)

        assert [e.event_id for e in seen] == [e.event_id for e in committed]
        for agg in ids:
            own = [e.version for e in seen if e.aggregate_id == agg]
            assert own == list(range(1, versions[agg] + 1))

    def test_pending_events_respects_limit(self, store: WriteStore) -> None:
        events = commit(store, "o1", 0, n_events=5)
        assert store.pending_events(2) == list(events[:2])
        assert len(store.pending_events(100)) == 5

    def test_mark_published_removes_events_from_pending(self, store: WriteStore) -> None:
        a = commit(store, "a", 0, n_events=2)
        b = commit(store, "b", 0)
        store.mark_published([a[0], b[0]])
        assert store.pending_events(10) == [a[1]]

    def test_mark_published_is_idempotent(self, store: WriteStore) -> None:
        a = commit(store, "a", 0, n_events=2)
        store.mark_published([a[0]])
        store.mark_published([a[0]])
        store.mark_published([a[0], a[1]])
        store.mark_published([])
        assert store.pending_events(10) == []
        later = commit(store, "a", 2)
        assert store.pending_events(10) == list(later)

    # -- group commit (WriteStore.batch) --------------------------------------------------------

    def test_batch_saves_are_durable_after_the_block_and_keep_commit_order(
        self, store: WriteStore
    ) -> None:
        a1, a2, b1 = make_event("a", 1), make_event("a", 2), make_event("b", 1)
        with store.batch() as batch:
            batch.prefetch([(ORDER, "a"), (ORDER, "b")], ["k1"])
            assert batch.load(ORDER, "a") is None
            batch.save(Save(StoredAggregate(ORDER, "a", 1, {"v": 1}), 0, (a1,), "k1", {"n": 1}))
            batch.save(Save(StoredAggregate(ORDER, "b", 1, {"v": 1}), 0, (b1,), "k2", {"n": 2}))
            # Later commands of the batch see its earlier saves.
            seen = batch.load(ORDER, "a")
            assert seen is not None and seen.version == 1 and seen.state == {"v": 1}
            assert batch.command_result("k1") == {"n": 1}
            batch.save(Save(StoredAggregate(ORDER, "a", 2, {"v": 2}), 1, (a2,), "k3", {"n": 3}))
        stored = store.load(ORDER, "a")
        assert stored is not None and stored.version == 2 and stored.state == {"v": 2}
        assert store.command_result("k3") == {"n": 3}
        assert store.pending_events(10) == [a1, b1, a2]

    def test_batch_failing_save_writes_nothing_and_the_others_commit(
        self, store: WriteStore
    ) -> None:
        commit(store, "x", 0)
        good1, good2 = make_event("g1", 1), make_event("g2", 1)
        with store.batch() as batch:
            batch.save(Save(StoredAggregate(ORDER, "g1", 1, {}), 0, (good1,), "k-g1", {"ok": 1}))
            with pytest.raises(VersionConflict):  # x is at version 1
                batch.save(
                    Save(StoredAggregate(ORDER, "x", 1, {}), 0, (make_event("x", 1),), "k-x", {})
                )
            with pytest.raises(DuplicateCommand):  # k-g1 was saved earlier in this batch
                batch.save(
                    Save(StoredAggregate(ORDER, "g3", 1, {}), 0, (make_event("g3", 1),), "k-g1", {})
                )
            batch.save(Save(StoredAggregate(ORDER, "g2", 1, {}), 0, (good2,), "k-g2", {"ok": 2}))
        assert store.command_result("k-x") is None and store.load(ORDER, "g3") is None
        assert store.command_result("k-g1") == {"ok": 1}
        stored = store.load(ORDER, "x")
        assert stored is not None and stored.version == 1
        assert [e.aggregate_id for e in store.pending_events(10)] == ["x", "g1", "g2"]

    def test_batch_duplicate_of_a_stored_command_id_wins_over_a_version_conflict(
        self, store: WriteStore
    ) -> None:
        commit(store, "x", 0, command_id="k-stored")
        with store.batch() as batch, pytest.raises(DuplicateCommand):
            batch.save(
                Save(StoredAggregate(ORDER, "x", 1, {}), 0, (make_event("x", 1),), "k-stored", {})
            )
        assert len(store.pending_events(10)) == 1
