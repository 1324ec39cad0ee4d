"""Read-your-writes: wait until the read models include the writes that consistency tokens name.

A command answers with ``consistencyToken = "<AggregateType>:<aggregateId>:<version>"``. The read
models *include* a token when, in one snapshot of the tables:

1. the aggregate's silver table (``orders`` for Order, ``customers`` for Customer) holds the
   aggregate at ``version`` or newer, and
2. every gold table built from that silver table (Order: ``order_summary`` and
   ``daily_order_metrics``; Customer: ``order_summary``, which carries the customer's name) has a
   checkpoint (``<gold>/ingest_seq``: the last raw_events position it covers) at or past the
   raw_events position (``ingest_seq``) of the token's own event (the aggregate at ``version``).

The full statement is in docs/read-your-writes.md.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow.compute as pc

from cqrs_dagster.domain.events import CUSTOMER, ORDER
from cqrs_dagster.projections.delta_io import seq_app_id, txn
from cqrs_dagster.projections.schemas import (
    CUSTOMERS,
    DAILY_ORDER_METRICS,
    ORDER_SUMMARY,
    ORDERS,
    RAW_EVENTS,
)

from .views import ReadModels

MAX_TOKENS = 100
MAX_WAIT_MS = 30_000
FIRST_POLL_SECONDS = 0.02
MAX_POLL_SECONDS = 0.25


@dataclass(frozen=True)
class Dependents:
    """Where an aggregate type's writes land: its silver table (and key) and the gold tables."""

    silver: str
    key: str
    gold: tuple[str, ...]


DEPENDENTS: dict[str, Dependents] = {
    ORDER: Dependents(ORDERS, "order_id", (ORDER_SUMMARY, DAILY_ORDER_METRICS)),
    CUSTOMER: Dependents(CUSTOMERS, "customer_id", (ORDER_SUMMARY,)),
}


# One token, as the OpenAPI document states it (the same in ECMA-262 and Python regexes): a known
# aggregate type, an aggregate id (which may hold ':'), a version 1 <= v < 10**18.
VERSION_PATTERN = r"0*[1-9][0-9]{0,17}"
# The aggregate id is the command API's id (1-128 of A-Z a-z 0-9 . _ : -).
TOKEN_PATTERN = f"(?:{'|'.join(sorted(DEPENDENTS))}):[A-Za-z0-9._:-]{{1,128}}:{VERSION_PATTERN}"
# The whole parameter, kept well inside a server's request-line limit once percent-encoded.
TOKENS_MAX_LENGTH = 2_000
TOKENS_PATTERN = f"^{TOKEN_PATTERN}(?:,{TOKEN_PATTERN}){{0,{MAX_TOKENS - 1}}}$"
_VERSION_RE = re.compile(VERSION_PATTERN)
_TOKEN_RE = re.compile(TOKEN_PATTERN)


class TokenError(ValueError):
    """A consistency token that is not ``<Order|Customer>:<aggregateId>:<version>``."""


@dataclass(frozen=True)
class Token:
    aggregate_type: str
    aggregate_id: str
    version: int

    def __str__(self) -> str:
        return f"{self.aggregate_type}:{self.aggregate_id}:{self.version}"


def parse_tokens(raw: str) -> list[Token]:
    """``"Order:abc:2,Customer:c1:1"`` -> tokens. Raises TokenError naming the bad entry."""
    entries = [e.strip() for e in raw.split(",")]
    if len(entries) > MAX_TOKENS:
        raise TokenError(f"at most {MAX_TOKENS} tokens are allowed, got {len(entries)}")
    tokens: list[Token] = []
    for n, entry in enumerate(entries, start=1):
        kind, sep1, rest = entry.partition(":")
        aggregate_id, sep2, version = rest.rpartition(":")
        if not (sep1 and sep2 and aggregate_id):
            raise TokenError(
                f"token {n} is not in the form <AggregateType>:<aggregateId>:<version>"
            )
        if kind not in DEPENDENTS:
            known = " or ".join(sorted(DEPENDENTS))
            raise TokenError(f"token {n} has unknown aggregate type; use {known}")
        if not _VERSION_RE.fullmatch(version):
            raise TokenError(f"token {n} has an invalid version; use a whole number >= 1")
        if not _TOKEN_RE.fullmatch(entry):
            raise TokenError(f"token {n} has an invalid aggregate id (1-128 of A-Za-z0-9._:-)")
        tokens.append(Token(kind, aggregate_id, int(version)))
    return tokens


@dataclass(frozen=True)
class TokenState:
    """How far the read models are for one token, as of one snapshot."""

    token: Token
    silver_version: int | None  # the aggregate's version in its silver table (None: absent)
    event_ingest_seq: int | None  # raw_events position of the token's event (None: not known)
    gold_checkpoints: dict[str, int]  # gold table -> last raw_events position it covers

    @property
    def satisfied(self) -> bool:
        if self.silver_version is None or self.silver_version < self.token.version:
            return False
        if self.event_ingest_seq is None:
            return False
        return all(cp >= self.event_ingest_seq for cp in self.gold_checkpoints.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "token": str(self.token),
            "satisfied": self.satisfied,
            "silver_table": DEPENDENTS[self.token.aggregate_type].silver,
            "silver_version": self.silver_version,
            "event_ingest_seq": self.event_ingest_seq,
            "gold_checkpoints": dict(self.gold_checkpoints),
        }


def tables_for(tokens: Sequence[Token]) -> list[str]:
    """Every table the check reads for these tokens."""
    names = {RAW_EVENTS}
    for token in tokens:
        dep = DEPENDENTS[token.aggregate_type]
        names.add(dep.silver)
        names.update(dep.gold)
    return sorted(names)


def check(models: ReadModels, tokens: Sequence[Token], *, refresh: bool = True) -> list[TokenState]:
    """Each token's state on the newest snapshot (refreshing the tables it needs first)."""
    if refresh:
        models.refresh(tables_for(tokens))
    states: list[TokenState] = []
    for token in tokens:
        dep = DEPENDENTS[token.aggregate_type]
        silver = models.rows_where(dep.silver, dep.key, token.aggregate_id)
        found = pc.max(silver.column("version")).as_py() if silver.num_rows else None
        seq: int | None = None
        if found is not None and found >= token.version:
            events = models.rows_where(RAW_EVENTS, "aggregate_id", token.aggregate_id)
            mine = events.filter(
                (pc.field("aggregate_type") == token.aggregate_type)
                & (pc.field("version") == token.version)
            )
            seq = pc.min(mine.column("ingest_seq")).as_py() if mine.num_rows else None
        gold = {name: txn(models.table(name), seq_app_id(name)) for name in dep.gold}
        states.append(TokenState(token, found, seq, gold))
    return states


def wait_for(
    models: ReadModels,
    tokens: Sequence[Token],
    wait_ms: int,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> list[TokenState]:
    """Poll (20 ms, doubling to 250 ms) until every token is satisfied or ``wait_ms`` has passed.

    Returns the last states: all satisfied, or the state at the deadline.
    """
    deadline = clock() + min(max(wait_ms, 0), MAX_WAIT_MS) / 1000
    pause = FIRST_POLL_SECONDS
    while True:
        states = check(models, tokens)
        remaining = deadline - clock()
        if all(s.satisfied for s in states) or remaining <= 0:
            return states
        sleep(min(pause, remaining))
        pause = min(pause * 2, MAX_POLL_SECONDS)
