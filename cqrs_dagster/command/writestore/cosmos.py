"""The Azure WriteStore: Cosmos DB for NoSQL, one document per aggregate (state + outbox + commands).

Atomicity: why one document and not a transactional batch
---------------------------------------------------------
Each aggregate is ONE document in the ``customers`` or ``orders`` container (partition key
``/id`` = aggregate id). The document holds the aggregate's state and version, its pending
(unpublished) outbox events, and the ids and results of the commands processed on it. A command is
saved with ONE document write: ``create_item`` for version 1, ``replace_item`` with the read etag
and ``MatchConditions.IfNotModified`` afterwards. A single-document write is atomic and
isolated on every Cosmos DB account, so state, events and command result commit together or not
at all (invariant 1). A stale etag answers 412 and a create of an existing id 409; the store then
re-reads the document: :class:`DuplicateCommand` when the winner recorded our command id,
:class:`VersionConflict` when the version moved, and a new attempt when only the relay wrote in
between (marking events published changes the etag, not the version), so a command concurrent
with the relay is not refused.

A transactional batch (``execute_item_batch``) could write state, outbox rows and a command row as
separate documents, but only within ONE logical partition, so every row would have to share the
aggregate's partition key anyway (no gain over one document), it costs one extra round trip of
planning, and it caps at 100 operations / 2 MB like a document does. The local stand-in server
(npm ``@vercel/cosmosdb-server``) also implements batches only for create operations and NOT
atomically, so tests against it would not exercise the guarantee. One document is atomic on both.

Cost of the choice: a document is capped at 2 MB. Each processed command that carried a client
``commandId`` keeps its result (which includes the state) in the document, so an aggregate can
take a few thousand of those; commands whose id the server made record nothing (no client can
retry with it) and cost no cross-partition lookup. Published events are removed from the
document by :meth:`mark_published`.

Command ids (idempotency)
-------------------------
:meth:`command_result` is a cross-partition parameterized query over both containers,
``ARRAY_CONTAINS(c.commandIds, @id)`` (served by the default range index on real Cosmos DB, and
supported by the local server). The aggregate document is the only source of truth: no separate
command-lookup document is kept, because it would live in another partition and could not be
written atomically with the aggregate; it could only be a claim that goes stale on a crash and
would then block (or, if it expires, not protect) the retry. :meth:`save` checks the command id
globally before writing, and after a lost race (409/412) re-reads, so a retry that raced its
original is told ``DuplicateCommand`` (as the port requires). The residual gap, stated plainly:
two CONCURRENT first deliveries of one command id that target DIFFERENT aggregates (only possible
for a create command whose aggregate id the server generates) can both commit; clients that retry
creates should send the aggregate id (or the handler could derive it from the command id).
Consistency: the re-read after a lost race sees the winner at once under Strong or Bounded
staleness; under Session consistency another instance's client may briefly read a stale replica,
and the raced retry then gets one VersionConflict before its next retry replays.

Outbox order
------------
Every save stamps its new events with ``t``: microseconds since the epoch, made strictly
increasing within this process and never below the document's previous ``t``, so per aggregate
``(t, version)`` follows version order even across writers with skewed clocks. Documents with
pending events carry ``pendingSince`` (their smallest pending ``t``); :meth:`pending_events` reads
them with a cross-partition ``ORDER BY c.pendingSince`` per container, merges the two streams and
returns events by ``(t, version)``: exact commit order within one writer, clock order across
writers, and always version order per aggregate (invariant 2/3).

Gaps in the local server (``@vercel/cosmosdb-server`` 1.0.1) and how this module handles them
----------------------------------------------------------------------------------------------
- Reading a missing item answers HTTP 500 ("Cannot read properties of undefined (reading ...)")
  instead of 404: :meth:`load` never point-reads; it queries ``c.id = @id`` within the item's
  partition (portable, ~1 RU more than a point read on real Cosmos DB).
- ``execute_item_batch`` supports only creates and is not atomic: not used (see above).
- The change feed is a stub (continuation always 304, "Now" always empty): the outbox has two
  feeds (``outbox_feed``): ``"query"`` (cross-partition ``ORDER BY c.pendingSince``, tested here
  against the local server) and ``"change_feed"`` (``query_items_change_feed`` with a durable
  continuation, the Azure path; see :class:`ChangeFeedOutbox` for how it is tested).

Unavailability
--------------
Every port method turns the SDK's "not answering" errors (no connection, connection dropped,
timeouts, and the statuses 408, 410, 429 and 503 the SDK gave up retrying) into the port's
:class:`StoreUnavailable`, which hosts answer as 503 (retry later, same command id). The SDK
retries a refused connection for ~2 s first, so a command fails in ~2 s while Cosmos DB is down.
A save whose answer was lost may have committed: its retry with the same command id replays.

Provisioning
------------
The store never creates anything: :func:`provision` (``cqrs provision``) creates the database and
the containers with partition key ``/id`` and :data:`INDEXING_POLICY`, once per deployment. A
store on a missing database or container raises :class:`NotProvisioned` naming ``cqrs provision``.
Everything used here (create 409, replace with etag 412, parameterized and cross-partition
ORDER BY queries, ``ARRAY_CONTAINS``) behaves on the local server as on Cosmos DB.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ParamSpec, Protocol, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import ServiceRequestError, ServiceResponseError
from azure.cosmos import ContainerProxy, CosmosClient, DatabaseProxy, PartitionKey
from azure.cosmos.exceptions import (
    CosmosAccessConditionFailedError,
    CosmosClientTimeoutError,
    CosmosHttpResponseError,
    CosmosResourceExistsError,
    CosmosResourceNotFoundError,
)

from cqrs_dagster.domain.errors import DuplicateCommand, VersionConflict
from cqrs_dagster.domain.events import CUSTOMER, ORDER, EventEnvelope

from .port import Save, StoredAggregate, StoreUnavailable, WriteStore

CONTAINERS = {CUSTOMER: "customers", ORDER: "orders"}
MARK_RETRIES = 50
_PAGE = 100


class _Clock:
    """Microsecond stamps, strictly increasing within the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0

    def next(self, at_least: int) -> int:
        with self._lock:
            self._last = max(time.time_ns() // 1000, self._last + 1, at_least)
            return self._last


_CLOCK = _Clock()


#: Statuses of an account that is not serving right now (after the SDK's own retries): request
#: timeout, gone, throttled, service unavailable.
UNAVAILABLE_STATUSES = frozenset({408, 410, 429, 503})

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _unavailable_as_port_error(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Raise the SDK's "Cosmos DB is not answering" errors as :class:`StoreUnavailable`."""

    @functools.wraps(method)
    def translated(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(*args, **kwargs)
        except (ServiceRequestError, ServiceResponseError, CosmosClientTimeoutError) as exc:
            raise StoreUnavailable(f"Cosmos DB did not answer: {exc}") from exc
        except CosmosHttpResponseError as exc:
            if exc.status_code in UNAVAILABLE_STATUSES:
                raise StoreUnavailable(f"Cosmos DB answered {exc.status_code}: {exc}") from exc
            raise

    return translated


class NotProvisioned(RuntimeError):
    """The database or a container does not exist: run ``cqrs provision`` first."""


#: Every path is indexed except the growing, never-queried ones: the aggregate state, the
#: results of processed commands and the pending events' bodies. Queries use ``id``,
#: ``commandIds`` (ARRAY_CONTAINS), ``pendingCount`` and ``pendingSince`` (ORDER BY).
INDEXING_POLICY: dict[str, Any] = {
    "indexingMode": "consistent",
    "automatic": True,
    "includedPaths": [{"path": "/*"}],
    "excludedPaths": [
        {"path": "/state/*"},
        {"path": "/commandResults/*"},
        {"path": "/pending/*"},
        {"path": '/"_etag"/?'},
    ],
}
#: The container of the change-feed relay's continuation tokens (one document per container).
LEASES = "leases"


def provision(client: CosmosClient, database: str) -> list[str]:
    """Create the database and the containers (idempotent); the names of those created/checked.

    Containers: ``customers`` and ``orders`` (partition key ``/id``, :data:`INDEXING_POLICY`) and
    ``leases`` (partition key ``/id``) for the change-feed relay's continuation. On an existing
    container the indexing policy is replaced only if it differs (a re-index on Cosmos DB)."""
    db = client.create_database_if_not_exists(database)
    done = []
    for name in (*CONTAINERS.values(), LEASES):
        policy = None if name == LEASES else INDEXING_POLICY
        kwargs: dict[str, Any] = {"partition_key": PartitionKey(path="/id")}
        if policy is not None:
            kwargs["indexing_policy"] = policy
        container = db.create_container_if_not_exists(name, **kwargs)
        if policy is not None:
            current = container.read().get("indexingPolicy") or {}
            wanted = {p["path"] for p in policy["excludedPaths"]}
            have = {p.get("path") for p in current.get("excludedPaths", [])}
            if current and not wanted <= have:
                db.replace_container(container, partition_key=PartitionKey(path="/id"),
                                     indexing_policy=policy)  # fmt: skip
        done.append(name)
    return done


class CosmosWriteStore(WriteStore):
    """WriteStore on Cosmos DB for NoSQL; one atomic document write per command.

    ``outbox_feed``: ``"query"`` (default) or ``"change_feed"`` (see the module docstring)."""

    def __init__(
        self,
        client: CosmosClient,
        database: str | DatabaseProxy,
        *,
        owns_client: bool = True,
        outbox_feed: str = "query",
        change_feed: Callable[[ContainerProxy, str | None], ChangeFeed] | None = None,
    ) -> None:
        self._client = client
        self._owns_client = owns_client
        db = client.get_database_client(database) if isinstance(database, str) else database
        self._containers: dict[str, ContainerProxy] = {
            agg_type: db.get_container_client(name) for agg_type, name in CONTAINERS.items()
        }
        names = [*CONTAINERS.values(), *([LEASES] if outbox_feed == "change_feed" else [])]
        for name in names:
            try:
                db.get_container_client(name).read()
            except CosmosResourceNotFoundError:
                raise NotProvisioned(
                    f"Cosmos DB container {name!r} of database {db.id!r} does not exist: "
                    "run `cqrs provision` once for this deployment (docs/deploy-azure.md)"
                ) from None
        self._outbox: ChangeFeedOutbox | None = None
        if outbox_feed == "change_feed":
            leases = db.get_container_client(LEASES)
            self._outbox = ChangeFeedOutbox(self, leases, change_feed or SdkChangeFeed)
        elif outbox_feed != "query":
            raise ValueError(f"outbox_feed must be 'query' or 'change_feed', got {outbox_feed!r}")

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    # -- documents -----------------------------------------------------------------------------

    def _container(self, aggregate_type: str) -> ContainerProxy:
        try:
            return self._containers[aggregate_type]
        except KeyError:
            raise ValueError(f"unknown aggregate type {aggregate_type!r}") from None

    def _read(self, aggregate_type: str, aggregate_id: str) -> dict[str, Any] | None:
        """The aggregate's document (with ``_etag``), by a query within its partition."""
        docs = list(
            self._container(aggregate_type).query_items(
                "SELECT * FROM c WHERE c.id = @id",
                parameters=[{"name": "@id", "value": aggregate_id}],
                partition_key=aggregate_id,
            )
        )
        return docs[0] if docs else None

    def _write(self, aggregate_type: str, doc: dict[str, Any], etag: str | None) -> None:
        """Create (``etag`` None) or etag-guarded replace; raises the SDK's 409/412/404 errors."""
        container = self._container(aggregate_type)
        if etag is None:
            container.create_item(doc)
        else:
            container.replace_item(
                doc["id"], doc, etag=etag, match_condition=MatchConditions.IfNotModified
            )

    # -- the port ------------------------------------------------------------------------------

    @_unavailable_as_port_error
    def load(self, aggregate_type: str, aggregate_id: str) -> StoredAggregate | None:
        doc = self._read(aggregate_type, aggregate_id)
        if doc is None:
            return None
        return StoredAggregate(aggregate_type, aggregate_id, int(doc["version"]), doc["state"])

    @_unavailable_as_port_error
    def save(self, save: Save) -> None:
        agg_type, agg_id = save.key
        command_id, expected_version = save.command_id, save.expected_version
        # A server-made command id (None) is neither checked nor recorded: no cross-partition
        # query per command, and no id that nobody can retry with grows the document.
        if command_id is not None and self.command_result(command_id) is not None:
            raise DuplicateCommand(f"command {command_id} was already processed")
        for _ in range(MARK_RETRIES):
            doc = self._read(agg_type, agg_id)
            if doc is not None and command_id is not None and command_id in doc["commandIds"]:
                raise DuplicateCommand(f"command {command_id} was already processed")  # raced us
            current = 0 if doc is None else int(doc["version"])
            if current != expected_version:
                raise VersionConflict(
                    f"{agg_type} {agg_id} is at version {current}, expected {expected_version}"
                )
            try:
                self._write(agg_type, _saved(doc, save), None if doc is None else doc["_etag"])
                return
            except (
                CosmosResourceExistsError,
                CosmosAccessConditionFailedError,
                CosmosResourceNotFoundError,
            ) as exc:
                # Someone else wrote this aggregate first. If it was our own command (a raced
                # retry), say so, so the handler replays its result. If it was the relay
                # marking events published (same version, fewer pending events), write again
                # on the new etag; a new version is a conflict (found by the re-read).
                if command_id is not None and self.command_result(command_id) is not None:
                    raise DuplicateCommand(f"command {command_id} was already processed") from exc
        raise VersionConflict(
            f"{agg_type} {agg_id} kept changing (expected version {expected_version})"
        )

    @_unavailable_as_port_error
    def command_result(self, command_id: str) -> dict[str, Any] | None:
        for container in self._containers.values():
            for doc in container.query_items(
                "SELECT c.commandResults FROM c WHERE ARRAY_CONTAINS(c.commandIds, @id)",
                parameters=[{"name": "@id", "value": command_id}],
                enable_cross_partition_query=True,
            ):
                found: dict[str, Any] = doc["commandResults"][command_id]
                return found
        return None

    @_unavailable_as_port_error
    def pending_events(self, limit: int) -> list[EventEnvelope]:
        if limit <= 0:
            return []
        if self._outbox is not None:
            return self._outbox.pending_events(limit)
        streams = [_Peekable(self._pending_docs(c)) for c in self._containers.values()]
        collected: list[tuple[int, str, str, int, dict[str, Any]]] = []
        while True:
            heads = [s for s in streams if s.peek() is not None]
            if not heads:
                break
            nxt = min(heads, key=lambda s: int(s.peek_or_fail()["pendingSince"]))
            next_since = int(nxt.peek_or_fail()["pendingSince"])
            # Every event of a document not yet read has t >= next_since: once ``limit``
            # collected events come before it, the first ``limit`` events are known.
            if sum(1 for item in collected if item[0] < next_since) >= limit:
                break
            doc = nxt.pop()
            for p in doc["pending"]:
                ev = p["event"]
                collected.append((int(p["t"]), doc["aggregateType"], doc["id"], ev["version"], ev))
        collected.sort(key=lambda item: item[:4])
        return [EventEnvelope.from_dict(item[4]) for item in collected[:limit]]

    def _pending_docs(self, container: ContainerProxy) -> Iterator[dict[str, Any]]:
        yield from container.query_items(
            "SELECT c.id, c.aggregateType, c.pending, c.pendingSince FROM c"
            " WHERE c.pendingCount > 0 ORDER BY c.pendingSince",
            enable_cross_partition_query=True,
            max_item_count=_PAGE,
        )

    @_unavailable_as_port_error
    def mark_published(self, events: Sequence[EventEnvelope]) -> None:
        by_aggregate: dict[tuple[str, str], set[str]] = {}
        for e in events:
            by_aggregate.setdefault((e.aggregate_type, e.aggregate_id), set()).add(e.event_id)
        for (agg_type, agg_id), event_ids in by_aggregate.items():
            self._remove_pending(agg_type, agg_id, event_ids)
        if self._outbox is not None:
            self._outbox.published(by_aggregate)

    def _remove_pending(self, agg_type: str, agg_id: str, event_ids: set[str]) -> None:
        """Drop ``event_ids`` from the document's outbox; retries when a command wrote in between."""
        for _ in range(MARK_RETRIES):
            doc = self._read(agg_type, agg_id)
            if doc is None:
                return
            keep = [p for p in doc["pending"] if p["event"]["eventId"] not in event_ids]
            if len(keep) == len(doc["pending"]):
                return  # already marked: idempotent
            doc.update(pending=keep, **_pending_index(keep))
            try:
                self._write(agg_type, doc, doc["_etag"])
                return
            except CosmosAccessConditionFailedError:
                continue  # a new command changed the document: re-read and try again
        raise RuntimeError(f"could not mark events of {agg_type} {agg_id} published (contention)")


def _saved(doc: dict[str, Any] | None, save: Save) -> dict[str, Any]:
    """The aggregate's document after ``save``: new state, its events appended to the pending
    outbox (stamped with ``t``), a client's command id and result recorded."""
    agg_type, agg_id = save.key
    base: dict[str, Any] = doc or {
        "id": agg_id,
        "aggregateType": agg_type,
        "commandIds": [],
        "commandResults": {},
        "pending": [],
        "lastT": 0,
    }
    t = _CLOCK.next(int(base["lastT"]) + 1)
    pending = [*base["pending"], *({"t": t, "event": e.to_dict()} for e in save.events)]
    command_ids, results = base["commandIds"], base["commandResults"]
    if save.command_id is not None:
        command_ids = [*command_ids, save.command_id]
        results = {**results, save.command_id: dict(save.result)}
    return {
        "id": agg_id,
        "aggregateType": agg_type,
        "version": save.aggregate.version,
        "state": save.aggregate.state,
        "commandIds": command_ids,
        "commandResults": results,
        "pending": pending,
        "lastT": t,
        **_pending_index(pending),
    }


def _pending_index(pending: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The fields the outbox query filters and orders by."""
    return {
        "pendingCount": len(pending),
        "pendingSince": min((int(p["t"]) for p in pending), default=None),
    }


class _Peekable:
    """An iterator of documents with one-item lookahead."""

    def __init__(self, it: Iterator[dict[str, Any]]) -> None:
        self._it = it
        self._head: dict[str, Any] | None = None
        self._done = False

    def peek(self) -> dict[str, Any] | None:
        if self._head is None and not self._done:
            self._head = next(self._it, None)
            self._done = self._head is None
        return self._head

    def peek_or_fail(self) -> dict[str, Any]:
        head = self.peek()
        assert head is not None
        return head

    def pop(self) -> dict[str, Any]:
        head = self.peek_or_fail()
        self._head = None
        return head


# -- the change-feed outbox (the Azure relay path) --------------------------------------------------


class ChangeFeed(Protocol):
    """One container's change feed from a continuation (None: the beginning)."""

    def pages(self) -> Iterator[list[dict[str, Any]]]:
        """The pages of changed documents (latest version of each) available now."""

    @property
    def continuation(self) -> str | None:
        """The position after the last page read."""


class SdkChangeFeed:
    """``query_items_change_feed`` (latest-version mode) of one container via the SDK pager."""

    def __init__(self, container: ContainerProxy, continuation: str | None) -> None:
        self._container = container
        self._continuation = continuation

    def pages(self) -> Iterator[list[dict[str, Any]]]:
        kwargs: dict[str, Any] = (
            {"continuation": self._continuation}
            if self._continuation
            else {"start_time": "Beginning"}
        )
        feed: Any = self._container.query_items_change_feed(max_item_count=_PAGE, **kwargs)
        pager = feed.by_page()
        for page in pager:
            docs = list(page)
            token = pager.continuation_token
            if token:
                self._continuation = token
            if not docs:
                return
            yield docs

    @property
    def continuation(self) -> str | None:
        return self._continuation


class ChangeFeedOutbox:
    """The outbox read from the change feed instead of a cross-partition ORDER BY query.

    Each round reads the changes since the last continuation of both containers; a changed
    document with ``pendingCount > 0`` is remembered (its newest version replaces an older one),
    one with none is forgotten. :meth:`pending_events` returns the remembered events by
    ``(t, aggregate, version)``; :meth:`published` forgets what was marked. The continuation is
    saved (one upsert into ``leases``) only when nothing seen so far is still pending: every
    change before it is then published, so a restart from it loses nothing; a restart from an
    older one re-reads documents (their current pending list), which is at-least-once as before.
    """

    def __init__(
        self,
        store: CosmosWriteStore,
        leases: ContainerProxy,
        make_feed: Callable[[ContainerProxy, str | None], ChangeFeed],
    ) -> None:
        self._store = store
        self._leases = leases
        self._pending: dict[tuple[str, str], dict[str, Any]] = {}
        self._feeds: dict[str, ChangeFeed] = {}
        self._saved: dict[str, str | None] = {}
        for agg_type, container in store._containers.items():
            token = self._load(container.id)
            self._saved[agg_type] = token
            self._feeds[agg_type] = make_feed(container, token)

    def _lease_id(self, container_id: str) -> str:
        return f"outbox-relay-{container_id}"

    def _load(self, container_id: str) -> str | None:
        docs = list(
            self._leases.query_items(
                "SELECT * FROM c WHERE c.id = @id",
                parameters=[{"name": "@id", "value": self._lease_id(container_id)}],
                partition_key=self._lease_id(container_id),
            )
        )
        return docs[0].get("continuation") if docs else None

    def _catch_up(self) -> None:
        for feed in self._feeds.values():
            for page in feed.pages():
                for doc in page:
                    key = (doc["aggregateType"], doc["id"])
                    if int(doc.get("pendingCount") or 0) > 0:
                        self._pending[key] = doc
                    else:
                        self._pending.pop(key, None)

    def pending_events(self, limit: int) -> list[EventEnvelope]:
        self._catch_up()
        collected = sorted(
            (int(p["t"]), doc["aggregateType"], doc["id"], p["event"]["version"], p["event"])
            for doc in self._pending.values()
            for p in doc["pending"]
        )
        if not collected:
            self._save()
        return [EventEnvelope.from_dict(item[4]) for item in collected[:limit]]

    def published(self, by_aggregate: Mapping[tuple[str, str], set[str]]) -> None:
        for key, event_ids in by_aggregate.items():
            doc = self._pending.get(key)
            if doc is None:
                continue
            keep = [p for p in doc["pending"] if p["event"]["eventId"] not in event_ids]
            if keep:
                self._pending[key] = {**doc, "pending": keep}
            else:
                del self._pending[key]
        if not self._pending:
            self._save()

    def _save(self) -> None:
        """Persist each feed's continuation if it moved (nothing seen is pending now)."""
        for agg_type, feed in self._feeds.items():
            token = feed.continuation
            if token is None or token == self._saved.get(agg_type):
                continue
            container_id = self._store._containers[agg_type].id
            lease = self._lease_id(container_id)
            self._leases.upsert_item({"id": lease, "continuation": token})
            self._saved[agg_type] = token
