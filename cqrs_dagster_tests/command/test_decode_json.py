"""decode_json: orjson first, yet exactly the ``json`` module's answer (numbers as Decimal / int)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cqrs_dagster.web.execution import decode_json
from cqrs_dagster.web.problems import ProblemError

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.decimals(allow_nan=False, allow_infinity=False, places=3)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)


def reference(body: bytes) -> Any:
    return json.loads(body, parse_float=Decimal, parse_int=int)


@given(JSON_VALUES)
def test_same_answer_as_json_with_decimals(value: Any) -> None:
    body = json.dumps(value, default=lambda d: float(d)).encode()
    assert decode_json(body) == reference(body)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"unitPrice": 12.10}', {"unitPrice": Decimal("12.10")}),
        (b"[1e2, 3]", [Decimal("1E+2"), 3]),
        (b"123456789012345678901234567890", 123456789012345678901234567890),
        (b'{"a": 1, "a": 2}', {"a": 2}),
        ('\ufeff{"a": 1}'.encode(), {"a": 1}),  # json accepts a UTF-8 BOM in bytes
        (b'{"a": "\\ud800"}', {"a": "\ud800"}),  # refused later by validation (422)
    ],
)
def test_bodies_orjson_would_decode_differently(body: bytes, expected: Any) -> None:
    result = decode_json(body)
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize("body", [b"NaN", b"[1, Infinity]", b"{", b"[" * 5000 + b"]" * 5000])
def test_malformed_bodies_are_400(body: bytes) -> None:
    with pytest.raises(ProblemError) as raised:
        decode_json(body)
    assert raised.value.status == 400
