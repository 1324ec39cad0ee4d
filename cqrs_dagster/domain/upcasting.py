"""Upcasters: old event shapes -> the current shape, applied to the decoded JSON when reading.

An upcaster is registered for ``(eventType, schemaVersion)`` and returns the envelope one schema
version newer; :func:`upcast` chains them until the envelope is current. Pure, no I/O.

Real example: ``OrderCreated`` schemaVersion 0 (the pre-release producer) carried each line's
price under ``price`` (a decimal string) and no totals; version 1 names it ``unitPrice`` and adds
``totalAmount`` and ``itemCount``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .events import CURRENT_SCHEMA_VERSION, ORDER_CREATED, EnvelopeError
from .money import money_str, to_money

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def upcaster(event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register ``fn`` as the step from ``from_version`` to ``from_version + 1``."""

    def register(fn: Upcaster) -> Upcaster:
        UPCASTERS[(event_type, from_version)] = fn
        return fn

    return register


@upcaster(ORDER_CREATED, 0)
def _order_created_v0(raw: dict[str, Any]) -> dict[str, Any]:
    data = dict(raw["data"])
    items = []
    for item in data.get("items", []):
        line = {k: v for k, v in dict(item).items() if k != "price"}
        if "unitPrice" not in line:
            line["unitPrice"] = money_str(to_money(item["price"]))
        items.append(line)
    data["items"] = items
    if "totalAmount" not in data:
        total = sum((to_money(i["unitPrice"]) * int(i["quantity"]) for i in items), to_money(0))
        data["totalAmount"] = money_str(total)
    data.setdefault("itemCount", sum(int(i["quantity"]) for i in items))
    data.setdefault("status", "Created")
    return {**raw, "data": data, "schemaVersion": 1}


def upcast(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The envelope in the current schema version (unchanged when already current).

    Raises :class:`EnvelopeError` for a version with no path to the current one.
    """
    current = dict(raw)
    version = current.get("schemaVersion", CURRENT_SCHEMA_VERSION)
    if not isinstance(version, int) or isinstance(version, bool):
        raise EnvelopeError(f"schemaVersion must be an integer, got {version!r}")
    if version > CURRENT_SCHEMA_VERSION:
        raise EnvelopeError(
            f"schemaVersion {version} is newer than this reader ({CURRENT_SCHEMA_VERSION})"
        )
    event_type = str(current.get("eventType"))
    while version < CURRENT_SCHEMA_VERSION:
        step = UPCASTERS.get((event_type, version))
        if step is None:
            raise EnvelopeError(f"no upcaster for {event_type} schemaVersion {version}")
        if not isinstance(current.get("data"), Mapping):
            raise EnvelopeError("data must be an object")
        try:
            current = step(current)
        except (KeyError, TypeError, ValueError) as exc:
            raise EnvelopeError(
                f"cannot upcast {event_type} schemaVersion {version}: {exc!r}"
            ) from exc
        version = int(current["schemaVersion"])
    return current
