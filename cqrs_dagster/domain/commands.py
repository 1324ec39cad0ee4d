"""Commands: imperative, validated at the boundary (pydantic), one JSON object each with a ``type``."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from .money import CENT, to_money

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# The schema's email pattern: EMAIL_RE's, minus the control characters that Python's ``\s``
# counts as space and ECMA-262's does not, so both regex dialects accept only what EMAIL_RE does.
_EMAIL_CHAR = r"[^@\s\x00-\x1f\x7f-\x9f]"
EMAIL_PATTERN = f"^{_EMAIL_CHAR}+@{_EMAIL_CHAR}+\\.{_EMAIL_CHAR}+$"
OrderStatus = Literal["Created", "Paid", "Shipped", "Delivered", "Cancelled"]


def _utf8(value: str) -> str:
    """JSON may spell an unpaired UTF-16 surrogate ("\\ud800"), which no UTF-8 store can hold."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("contains an unpaired UTF-16 surrogate (\\ud800-\\udfff)") from None
    return value


Utf8 = AfterValidator(_utf8)


def _whole_number(value: Any) -> Any:
    """JSON Schema's integer: a number with no fractional part, however spelled (``5``, ``5.0``,
    ``5e0``). A whole float or Decimal becomes an int; strings, booleans and fractions stay
    as they are, for the strict int check to refuse."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        return int(value)
    return value


WholeNumber = BeforeValidator(_whole_number)
Id = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:\-]+$")]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200), Utf8]
Sku = Annotated[str, StringConstraints(min_length=1, max_length=64), Utf8]
# The OpenAPI schema states what the validators below enforce, so schema-valid means accepted.
Email = Annotated[
    str, Utf8, WithJsonSchema({"type": "string", "maxLength": 254, "pattern": EMAIL_PATTERN})
]
MoneyAmount = Annotated[
    Decimal,
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^[0-9]{1,12}(\.[0-9]{1,2})?$"},
                {"type": "integer", "minimum": 0, "maximum": 999_999_999_999},
            ],
            "description": "An exact decimal >= 0 below 10^12 with at most 2 places, as a "
            'string ("12.50") or a whole JSON number (JSON numbers with up to 2 places are '
            "accepted too).",
        }
    ),
]


def _check_email(value: str) -> str:
    if len(value) > 254 or not EMAIL_RE.fullmatch(value):  # match() lets "$" pass a final "\n"
        raise ValueError("not a valid email address")
    return value


class _Command(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    commandId: Id | None = None
    correlationId: Annotated[str, StringConstraints(max_length=128), Utf8] | None = None
    expectedVersion: Annotated[int, Field(ge=0, strict=True), WholeNumber] | None = None


class RegisterCustomer(_Command):
    """Register a new customer -> CustomerRegistered."""

    type: Literal["RegisterCustomer"]
    customerId: Id | None = None
    name: Name
    email: Email

    _email = field_validator("email")(_check_email)


class UpdateCustomer(_Command):
    """Change a customer's name and/or email -> CustomerUpdated."""

    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": ["name"], "properties": {"name": {"type": "string"}}},
                {"required": ["email"], "properties": {"email": {"type": "string"}}},
            ]
        }
    )

    type: Literal["UpdateCustomer"]
    customerId: Id
    name: Name | None = None
    email: Email | None = None

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        return None if value is None else _check_email(value)

    @model_validator(mode="after")
    def _something_to_change(self) -> UpdateCustomer:
        if self.name is None and self.email is None:
            raise ValueError("UpdateCustomer needs at least one of name, email")
        return self


class OrderItem(BaseModel):
    """One order line; ``unitPrice`` is an exact decimal with at most two decimal places."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sku: Sku
    quantity: Annotated[int, Field(ge=1, le=10_000, strict=True), WholeNumber]
    unitPrice: MoneyAmount

    @field_validator("unitPrice", mode="before")
    @classmethod
    def _price(cls, value: Any) -> Decimal:
        price = to_money(value)
        if price < 0:
            raise ValueError("unitPrice must be >= 0")
        exponent = price.as_tuple().exponent
        if isinstance(exponent, int) and exponent < -2 and price != price.quantize(CENT):
            raise ValueError("unitPrice has more than 2 decimal places")
        if price >= Decimal("1e12"):
            raise ValueError("unitPrice is too large")
        return price.copy_abs()  # "-0" is zero: never render a money string as "-0.00"


class CreateOrder(_Command):
    """Place an order for an existing customer -> OrderCreated."""

    type: Literal["CreateOrder"]
    orderId: Id | None = None
    customerId: Id
    items: Annotated[list[OrderItem], Field(min_length=1, max_length=100)]


class UpdateOrderStatus(_Command):
    """Move an order along its lifecycle -> OrderUpdated."""

    type: Literal["UpdateOrderStatus"]
    orderId: Id
    status: OrderStatus


class CancelOrder(_Command):
    """Cancel a Created or Paid order -> OrderUpdated (status Cancelled)."""

    type: Literal["CancelOrder"]
    orderId: Id
    reason: Annotated[str, StringConstraints(max_length=500), Utf8] | None = None


Command = Annotated[
    RegisterCustomer | UpdateCustomer | CreateOrder | UpdateOrderStatus | CancelOrder,
    Field(discriminator="type"),
]
COMMAND_ADAPTER: TypeAdapter[Command] = TypeAdapter(Command)
COMMAND_TYPES = (
    "RegisterCustomer",
    "UpdateCustomer",
    "CreateOrder",
    "UpdateOrderStatus",
    "CancelOrder",
)


def parse_command(raw: Any) -> Command:
    """Validate a decoded JSON object into a command (raises pydantic.ValidationError)."""
    return COMMAND_ADAPTER.validate_python(raw)
