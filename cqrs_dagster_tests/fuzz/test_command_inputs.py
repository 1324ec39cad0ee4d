"""Hypothesis on the command endpoint through the real app (TestClient, real SQLite store):
random and mutated command bodies (wrong types, missing and unknown fields, bad money and emails,
arbitrary JSON, non-JSON bytes, deep nesting, NaN/Infinity literals, wrong content types), mostly
invalid. Never a 5xx; every rejected input leaves the write store (every table) and
its outbox logically identical (same dump); every accepted one adds exactly the events it reports."""

from __future__ import annotations

import hashlib
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cqrs_dagster.settings import Settings
from cqrs_dagster.web.app import build_app

URL = "/api/v1/commands"
ITEM = {"sku": "SKU-1", "quantity": 2, "unitPrice": "9.99"}
TEMPLATES: list[dict[str, Any]] = [
    {"type": "RegisterCustomer", "name": "Ann", "email": "ann@x.io"},
    {"type": "RegisterCustomer", "customerId": "c-seed", "name": "Dup", "email": "d@x.io"},
    {"type": "UpdateCustomer", "customerId": "c-seed", "name": "New name"},
    {"type": "CreateOrder", "customerId": "c-seed", "items": [ITEM]},
    {"type": "UpdateOrderStatus", "orderId": "o-seed", "status": "Shipped"},
    {"type": "CancelOrder", "orderId": "o-seed", "reason": "changed my mind"},
]
SEED_COMMANDS: list[dict[str, Any]] = [
    {"type": "RegisterCustomer", "customerId": "c-seed", "name": "Seed", "email": "s@x.io"},
    {"type": "CreateOrder", "orderId": "o-seed", "customerId": "c-seed", "items": [ITEM]},
]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from(["", "12.345", "-1", "1e3", "abc@", "a@b", "x" * 300, "0.00", "Paid"])
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=10,
)


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    """A template with one to three of its fields replaced, removed or added."""
    body = dict(draw(st.sampled_from(TEMPLATES)))
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["replace", "remove", "add", "item"]))
        key = draw(st.sampled_from(sorted(body)))
        if how == "replace":
            body[key] = draw(json_values)
        elif how == "remove":
            body.pop(key, None)
        elif how == "add":
            body[draw(st.text(min_size=1, max_size=12))] = draw(json_values)
        elif "items" in body:
            line = dict(ITEM)
            line[draw(st.sampled_from(sorted(ITEM)))] = draw(json_values)
            body["items"] = [line]
    return body


def encoded(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


FIXED_BODIES = [
    b"",
    b"{",
    b"[" * 5_000,
    b'{"type": "UpdateOrderStatus", "orderId": "o-seed", "status": "Paid", '
    b'"expectedVersion": 100000000000000000000000000000}',
    b'{"type": "RegisterCustomer", "name": "N", "email": "n@x.io", "x": NaN}',
    b'{"type": "CreateOrder", "customerId": "c-seed", "items": [{"sku": "s", '
    b'"quantity": Infinity, "unitPrice": "1.00"}]}',
    b'{"type": "RegisterCustomer", "name": "N", "email": "n@x.io\\n"}',
    b'{"type": "RegisterCustomer", "name": "N", "email": "\\ud800@x.io"}',
    b'{"type": "RegisterCustomer", "name": "\\udc00", "email": "n@x.io"}',
    b'{"type": "RegisterCustomer", "name": "N", "email": "n@x.io", "\\udc00": 1}',
    b'{"type": "\\ud800", "name": "N"}',
    b'{"type": "CreateOrder", "customerId": "c-seed", "items": [{"sku": "\\ud800", '
    b'"quantity": 1, "unitPrice": "1.00"}], "correlationId": "\\udfff"}',
    b'{"type": "CreateOrder", "customerId": "c-seed", "items": [{"sku": "s", '
    b'"quantity": 1, "unitPrice": 1e999999999}]}',
]
raw_bodies = st.one_of(
    mutated().map(encoded),
    json_values.map(encoded),
    st.binary(max_size=64),
    st.sampled_from(FIXED_BODIES),
)
content_types = st.sampled_from(
    ["application/json"] * 8 + ["text/plain", "application/problem+json", ""]
)


def files_digest(db: Path) -> str:
    """Digest of the store's whole logical content (every table, row and schema object).

    Not of the file bytes: a WAL checkpoint (the group-commit writer runs them itself) moves
    bytes between the WAL and the main file without changing any content.
    """
    digest = hashlib.sha256()
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        for statement in conn.iterdump():
            digest.update(statement.encode())
    finally:
        conn.close()
    return digest.hexdigest()


def outbox(db: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT * FROM outbox ORDER BY seq").fetchall()
    finally:
        conn.close()


def send(client: TestClient, db: Path, body: bytes, content_type: str) -> int:
    """POST one body; asserts no 5xx, and no change at all unless the command was applied."""
    before_files, before_outbox = files_digest(db), outbox(db)
    headers = {"content-type": content_type} if content_type else {}
    response = client.post(URL, content=body, headers=headers)
    assert response.status_code < 500, response.text
    if response.status_code == 201:
        new = [row[1] for row in outbox(db)[len(before_outbox) :]]
        assert new == response.json()["eventIds"]
        return response.status_code
    assert response.headers["content-type"].startswith(
        "application/problem+json" if response.status_code >= 400 else "application/json"
    )
    assert files_digest(db) == before_files, response.text
    assert outbox(db) == before_outbox
    return response.status_code


@pytest.mark.parametrize("body", FIXED_BODIES, ids=range(len(FIXED_BODIES)))
def test_known_bad_bodies_are_refused_with_no_change(tmp_path: Path, body: bytes) -> None:
    config = Settings(env="local", data_dir=tmp_path / "data", rate_limit_per_second=0)  # type: ignore[arg-type]
    with TestClient(build_app(config, run_relay=False)) as client:
        for command in SEED_COMMANDS:
            assert client.post(URL, json=command).status_code == 201
        assert 400 <= send(client, config.write_db_path, body, "application/json") < 500


def test_random_command_bodies_never_5xx_and_rejections_change_nothing(tmp_path: Path) -> None:
    config = Settings(env="local", data_dir=tmp_path / "data", rate_limit_per_second=0)  # type: ignore[arg-type]
    db = config.write_db_path
    statuses: Counter[int] = Counter()
    with TestClient(build_app(config, run_relay=False)) as client:
        for command in SEED_COMMANDS:
            assert client.post(URL, json=command).status_code == 201

        @given(body=raw_bodies, content_type=content_types)
        @settings(
            max_examples=400,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def post(body: bytes, content_type: str) -> None:
            statuses[send(client, db, body, content_type)] += 1

        post()
    rejected = sum(n for code, n in statuses.items() if code >= 400)
    server_errors = sum(n for code, n in statuses.items() if code >= 500)
    print(
        f"\nFUZZ-SUMMARY hypothesis-commands: inputs={sum(statuses.values())} "
        f"rejected={rejected} accepted={statuses[201]} 5xx={server_errors} statuses={dict(statuses)}"
    )
    assert server_errors == 0
    assert rejected > sum(statuses.values()) // 2  # mostly invalid input, as intended
