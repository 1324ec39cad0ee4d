"""Money as exact decimals: never through binary floating point."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

CENT = Decimal("0.01")


def to_money(value: object) -> Decimal:
    """Parse a decimal amount from a Decimal, int or decimal string (floats are refused)."""
    if isinstance(value, bool | float):
        raise ValueError("money must be a decimal string or an exact JSON number, not a float")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int | str):
        try:
            result = Decimal(str(value).strip())
        except InvalidOperation as exc:
            raise ValueError(f"not a decimal number: {value!r}") from exc
    else:
        raise ValueError(f"not a decimal number: {value!r}")
    if not result.is_finite():
        raise ValueError("money must be finite")
    return result


def money_str(value: Decimal) -> str:
    """Render an amount with exactly two decimal places, e.g. ``'12.50'``."""
    return str(value.quantize(CENT))
