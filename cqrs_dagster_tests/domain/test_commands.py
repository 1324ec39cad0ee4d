"""Command validation at the boundary (pydantic models in cqrs_dagster.domain.commands).

Covers, with hypothesis where the rule is a range: unitPrice exact to two decimals (more refused,
trailing zeros fine, floats/NaN/negatives/too large refused), name 1-200 chars, email shape and
length, sku 1-64, quantity 1..10000 as a strict int, 1..100 order lines, id pattern, strict
expectedVersion, UpdateCustomer needing a change, unknown fields and command types refused.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from cqrs_dagster.domain.commands import (
    CancelOrder,
    CreateOrder,
    OrderItem,
    RegisterCustomer,
    UpdateCustomer,
    UpdateOrderStatus,
    parse_command,
)

ITEM = {"sku": "SKU-1", "quantity": 1, "unitPrice": "1.00"}


def create_order(**overrides: Any) -> dict[str, Any]:
    return {"type": "CreateOrder", "customerId": "c1", "items": [ITEM], **overrides}


def item(**overrides: Any) -> dict[str, Any]:
    return {**ITEM, **overrides}


def accepted(raw: dict[str, Any]) -> bool:
    try:
        parse_command(raw)
    except ValidationError:
        return False
    return True


# -- money ----------------------------------------------------------------------------------------


@settings(deadline=None)
@given(cents=st.integers(0, 10**14 - 1), trailing_zeros=st.integers(0, 3))
def test_unit_price_with_at_most_two_decimals_is_kept_exactly(
    cents: int, trailing_zeros: int
) -> None:
    text = f"{cents // 100}.{cents % 100:02d}" + "0" * trailing_zeros
    parsed = OrderItem.model_validate(item(unitPrice=text))
    assert parsed.unitPrice == Decimal(cents) / 100
    assert isinstance(parsed.unitPrice, Decimal)


@settings(deadline=None)
@given(units=st.integers(0, 10**6), extra=st.integers(1, 10**6), places=st.integers(3, 12))
def test_unit_price_with_more_than_two_decimals_is_refused(
    units: int, extra: int, places: int
) -> None:
    # ``extra`` is non-zero in its last place, so the value really has ``places`` decimals.
    frac = f"{extra % 10**places:0{places}d}"
    frac = frac[:-1] + str(int(frac[-1]) or 1)
    with pytest.raises(ValidationError, match="more than 2 decimal places"):
        OrderItem.model_validate(item(unitPrice=f"{units}.{frac}"))


@settings(deadline=None)
@given(value=st.floats(allow_nan=True, allow_infinity=True))
def test_float_unit_price_is_always_refused(value: float) -> None:
    with pytest.raises(ValidationError, match="float"):
        OrderItem.model_validate(item(unitPrice=value))


@pytest.mark.parametrize(
    "price", ["-0.01", "-5", "NaN", "Infinity", "-Infinity", "abc", "", "1e12", "1000000000000.00"]
)
def test_unit_price_that_is_negative_not_finite_not_a_number_or_too_large_is_refused(
    price: str,
) -> None:
    assert not accepted(create_order(items=[item(unitPrice=price)]))


@pytest.mark.parametrize("price", [5, "5", " 7.5 ", "0", "999999999999.99", "1E+2"])
def test_unit_price_as_int_or_decimal_string_is_accepted(price: object) -> None:
    assert accepted(create_order(items=[item(unitPrice=price)]))


@pytest.mark.parametrize("price", ["-0", "-0.00", "-0.0"])
def test_negative_zero_unit_price_becomes_plain_zero(price: str) -> None:
    parsed = OrderItem.model_validate(item(unitPrice=price))
    assert parsed.unitPrice == 0 and not parsed.unitPrice.is_signed()


def test_unit_price_true_is_not_taken_as_one() -> None:
    assert not accepted(create_order(items=[item(unitPrice=True)]))


# -- lengths and ranges ---------------------------------------------------------------------------


@settings(deadline=None)
@given(n=st.integers(0, 260), ch=st.sampled_from(["a", "é", "東", "🚀"]))
def test_customer_name_is_1_to_200_characters(n: int, ch: str) -> None:
    raw = {"type": "RegisterCustomer", "name": ch * n, "email": "a@b.co"}
    assert accepted(raw) == (1 <= n <= 200)


@settings(deadline=None)
@given(n=st.integers(0, 100))
def test_sku_is_1_to_64_characters(n: int) -> None:
    assert accepted(create_order(items=[item(sku="s" * n)])) == (1 <= n <= 64)


@settings(deadline=None)
@given(q=st.integers(-(10**6), 10**6))
def test_quantity_is_1_to_10000(q: int) -> None:
    assert accepted(create_order(items=[item(quantity=q)])) == (1 <= q <= 10_000)


@pytest.mark.parametrize("q", ["5", 5.5, True, None, float("nan"), float("inf")])
def test_quantity_must_be_a_real_integer(q: object) -> None:
    assert not accepted(create_order(items=[item(quantity=q)]))


@pytest.mark.parametrize("q", [5.0, Decimal("5.0"), Decimal("5E0")])
def test_a_whole_number_spelled_as_a_float_is_an_integer(q: object) -> None:
    # JSON Schema's "integer" (what the OpenAPI document says) counts 5.0 as an integer.
    assert accepted(create_order(items=[item(quantity=q)]))


@settings(deadline=None, max_examples=30)
@given(n=st.integers(0, 110))
def test_an_order_has_1_to_100_lines(n: int) -> None:
    lines = [item(sku=f"S{i}") for i in range(n)]
    assert accepted(create_order(items=lines)) == (1 <= n <= 100)


# -- email ----------------------------------------------------------------------------------------

LOCAL = st.text("abcxyz0189._+-", min_size=1, max_size=40)
LABEL = st.text("abcdxyz019-", min_size=1, max_size=20)


@settings(deadline=None)
@given(local=LOCAL, host=LABEL, tld=LABEL)
def test_well_formed_email_is_accepted(local: str, host: str, tld: str) -> None:
    assert accepted({"type": "RegisterCustomer", "name": "n", "email": f"{local}@{host}.{tld}"})


@pytest.mark.parametrize(
    "email",
    [
        "",
        "plain",
        "no-at.example.com",
        "a@b",
        "a@@b.co",
        "a b@c.co",
        "a@b c.co",
        "@b.co",
        "a@.",
        "a@b.co\n",
        "x" * 250 + "@b.co",
    ],
)
def test_malformed_or_too_long_email_is_refused(email: str) -> None:
    assert not accepted({"type": "RegisterCustomer", "name": "n", "email": email})
    assert not accepted({"type": "UpdateCustomer", "customerId": "c1", "email": email})


def test_email_of_254_characters_is_accepted() -> None:
    email = "x" * 248 + "@b.com"
    assert len(email) == 254
    assert accepted({"type": "RegisterCustomer", "name": "n", "email": email})


# -- shapes ---------------------------------------------------------------------------------------


def test_each_command_type_parses_to_its_model() -> None:
    assert isinstance(
        parse_command({"type": "RegisterCustomer", "name": "N", "email": "n@x.io"}),
        RegisterCustomer,
    )
    assert isinstance(
        parse_command({"type": "UpdateCustomer", "customerId": "c1", "name": "M"}), UpdateCustomer
    )
    assert isinstance(parse_command(create_order()), CreateOrder)
    assert isinstance(
        parse_command({"type": "UpdateOrderStatus", "orderId": "o1", "status": "Paid"}),
        UpdateOrderStatus,
    )
    assert isinstance(parse_command({"type": "CancelOrder", "orderId": "o1"}), CancelOrder)


def test_update_customer_needs_something_to_change() -> None:
    with pytest.raises(ValidationError, match="at least one of name, email"):
        parse_command({"type": "UpdateCustomer", "customerId": "c1"})


@pytest.mark.parametrize(
    "raw",
    [
        {"type": "DeleteEverything"},
        {"name": "no type", "email": "a@b.co"},
        create_order(extra="field"),
        create_order(items=[{**ITEM, "discount": "1.00"}]),
        {"type": "UpdateOrderStatus", "orderId": "o1", "status": "Lost"},
        {"type": "CancelOrder", "orderId": "o1", "reason": "r" * 501},
        create_order(expectedVersion=-1),
        create_order(expectedVersion="1"),
        create_order(expectedVersion=1.5),  # 1.0 is an integer (JSON Schema): accepted
        create_order(customerId="has space"),
        create_order(customerId=""),
        create_order(orderId="x" * 129),
        create_order(commandId="bad/slash"),
    ],
)
def test_malformed_commands_are_refused(raw: dict[str, Any]) -> None:
    assert not accepted(raw)


@settings(deadline=None)
@given(ident=st.text("AZaz09._:-", min_size=1, max_size=128))
def test_ids_from_the_allowed_alphabet_are_accepted(ident: str) -> None:
    assert accepted(create_order(orderId=ident, customerId=ident, commandId=ident))
