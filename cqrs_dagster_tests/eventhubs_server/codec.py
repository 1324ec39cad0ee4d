"""AMQP 1.0 encoding for the test server, on the SDK's own codec (``azure.eventhub._pyamqp``).

The SDK's encoder writes EVERY field of a performative (None as null), which is exactly what the
SDK's decoder needs: it reads performative fields by position. Messages received from producers
are kept as their encoded bytes; only the message-annotations section is rewritten on the way in,
so bodies, properties and application properties reach consumers byte for byte.
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

from azure.eventhub._pyamqp._decode import (  # type: ignore[attr-defined]
    _DECODE_BY_CONSTRUCTOR,
    decode_frame,
    decode_payload,
)
from azure.eventhub._pyamqp._encode import encode_frame, encode_payload, encode_value
from azure.eventhub._pyamqp.message import Message, Properties
from azure.eventhub._pyamqp.types import AMQPTypes

__all__ = [
    "BATCH_FORMAT",
    "annotations_section",
    "decode_frame",
    "decode_payload",
    "deliverable",
    "frame_bytes",
    "management_value",
    "response_message",
    "split_sections",
]

BATCH_FORMAT = 0x80013700
AMQP_FRAME = b"\x00"
SASL_FRAME = b"\x01"
_ANNOTATIONS = 0x72
_HEAD_SECTIONS = (0x70, 0x71)  # header, delivery annotations: they precede message annotations


def frame_bytes(channel: int, performative: NamedTuple, frame_type: bytes = AMQP_FRAME) -> bytes:
    header, body = encode_frame(performative, frame_type)
    return header + struct.pack(">H", channel) + (body or b"")


def split_sections(message: bytes) -> list[tuple[int, bytes, Any]]:
    """The top-level sections of an encoded message: (descriptor, raw bytes, decoded value)."""
    view = memoryview(message)
    sections: list[tuple[int, bytes, Any]] = []
    position = 0
    while position < len(view):
        rest = view[position:]
        if rest[0] != 0x00 or rest[1] != 0x53:
            raise ValueError("message section is not a small-ulong described type")
        descriptor = rest[2]
        remaining, value = _DECODE_BY_CONSTRUCTOR[rest[3]](rest[4:])
        size = len(rest) - len(remaining)
        sections.append((descriptor, bytes(rest[:size]), value))
        position += size
    return sections


def annotations_section(annotations: dict[bytes, Any]) -> bytes:
    out = bytearray()
    pairs = [({"TYPE": AMQPTypes.symbol, "VALUE": k}, v) for k, v in annotations.items()]
    encode_value(
        out,
        {
            "TYPE": AMQPTypes.described,
            "VALUE": (
                {"TYPE": AMQPTypes.ulong, "VALUE": _ANNOTATIONS},
                {"TYPE": AMQPTypes.map, "VALUE": pairs},
            ),
        },
    )
    return bytes(out)


def deliverable(
    sections: list[tuple[int, bytes, Any]],
    *,
    sequence_number: int,
    offset: int,
    enqueued_ms: int,
    partition_key: bytes | None,
) -> bytes:
    """The message as a receiver gets it: the sender's sections plus the x-opt-* annotations."""
    annotations: dict[bytes, Any] = {}
    for descriptor, _, value in sections:
        if descriptor == _ANNOTATIONS and value:
            annotations.update(
                {
                    k: v
                    for k, v in value.items()
                    if isinstance(k, bytes) and not k.startswith(b"x-opt-")
                }
            )
    annotations[b"x-opt-sequence-number"] = {"TYPE": AMQPTypes.long, "VALUE": sequence_number}
    annotations[b"x-opt-offset"] = {"TYPE": AMQPTypes.string, "VALUE": str(offset)}
    annotations[b"x-opt-enqueued-time"] = {"TYPE": AMQPTypes.timestamp, "VALUE": enqueued_ms}
    if partition_key is not None:
        annotations[b"x-opt-partition-key"] = {"TYPE": AMQPTypes.string, "VALUE": partition_key}
    head = b"".join(raw for d, raw, _ in sections if d in _HEAD_SECTIONS)
    tail = b"".join(raw for d, raw, _ in sections if d not in _HEAD_SECTIONS and d != _ANNOTATIONS)
    return head + annotations_section(annotations) + tail


def response_message(
    correlation_id: Any, status_code: int, description: str, value: Any = None
) -> bytes:
    """A management/CBS response: correlation id, status code and description, optional value."""
    message = Message(
        properties=Properties(correlation_id=correlation_id),
        application_properties={
            "status-code": {"TYPE": AMQPTypes.int, "VALUE": status_code},
            "status-description": description,
        },
        value=value,
    )
    return bytes(encode_payload(bytearray(), message))


def management_value(properties: dict[str, Any]) -> dict[str, Any]:
    """A management READ response body (a map) with the AMQP types Event Hubs uses."""
    out: dict[str, Any] = {}
    for key, value in properties.items():
        if isinstance(value, list):
            out[key] = {
                "TYPE": AMQPTypes.array,
                "VALUE": [{"TYPE": AMQPTypes.string, "VALUE": v} for v in value],
            }
        elif key.endswith(("_time_utc", "created_at")):
            out[key] = {"TYPE": AMQPTypes.timestamp, "VALUE": value}
        elif isinstance(value, int) and not isinstance(value, bool):
            out[key] = {"TYPE": AMQPTypes.long, "VALUE": value}
        else:
            out[key] = value
    return out
