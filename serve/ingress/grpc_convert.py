"""The one conversion between the gRPC messages (proto/aligner/v1) and the JSON contract.

Messages mirror the JSON contract name for name, so the conversion is generic: `to_plain` turns a
message into the dict the JSON contract would carry (fields with presence only when set, repeated
and map fields only when non-empty, every other scalar always; 64-bit integers stay integers),
and `from_plain` is protobuf's own `ParseDict`. The core's validation then runs on the dict, the
same as for HTTP, so both transports accept and refuse exactly the same requests.

Known difference: an empty list and an absent one are the same in proto3 (`candidates: []`, which
a refused request with `return_candidates` answers, comes back absent).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.json_format import ParseDict, ParseError
from google.protobuf.message import Message

from aligner.contract import AlignResponse
from aligner.errors import InvalidRequest
from aligner.events import Chunk, Delta, Done
from proto.aligner.v1 import aligner_pb2 as pb
from serve.gateway.messages import ObjectiveInfo

# Collections the JSON contract always carries, even empty (elsewhere empty means absent).
ALWAYS_PRESENT = {
    ("Usage", "stage_seconds"),
    ("SafetyConfig", "thresholds"),
    ("SafetyConfig", "allowed"),
    ("SafetyConfig", "disallowed"),
}


def to_plain(message: Message) -> dict[str, Any]:
    """The message as the JSON contract's dict (see the module docstring)."""
    out: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            if value or (message.DESCRIPTOR.name, field.name) in ALWAYS_PRESENT:
                item = field.message_type.fields_by_name["value"]
                out[field.name] = {k: _plain_value(item, v) for k, v in value.items()}
        elif _is_repeated(field):
            if value or (message.DESCRIPTOR.name, field.name) in ALWAYS_PRESENT:
                out[field.name] = [_plain_value(field, v) for v in value]
        elif field.has_presence:
            if message.HasField(field.name):
                out[field.name] = _plain_value(field, value)
        else:
            out[field.name] = _plain_value(field, value)
    return out


def _is_repeated(field: FieldDescriptor) -> bool:
    repeated = getattr(field, "is_repeated", None)  # protobuf >= 5.28
    return repeated if repeated is not None else field.label == FieldDescriptor.LABEL_REPEATED


def _plain_value(field: FieldDescriptor, value: Any) -> Any:
    return to_plain(value) if field.message_type is not None else value


def from_plain(data: dict[str, Any], message: Message, *, where: str = "") -> Message:
    """ParseDict, with its errors as InvalidRequest naming the field (as the JSON route names it)."""
    try:
        return ParseDict(data, message)
    except ParseError as exc:
        raise InvalidRequest(_field_of(str(exc), where), str(exc)) from None


def _field_of(message: str, where: str) -> str:
    # ParseDict says e.g. 'Failed to parse max_tokens field: ...' or 'Message type "..." has no field named "x"'.
    for marker in ("Failed to parse ", 'no field named "'):
        if marker in message:
            name = message.split(marker, 1)[1].split(" ", 1)[0].split('"', 1)[0]
            return f"{where}{name}" if name else where.rstrip(".") or "request"
    return where.rstrip(".") or "request"


# -- generation ---------------------------------------------------------------------------------


def generate_request(message: pb.GenerateRequest, *, streaming: bool) -> dict[str, Any]:
    """The AlignRequest data of a GenerateRequest; `stream`, when set, must match the RPC."""
    data = to_plain(message)
    if "stream" in data and data["stream"] != streaming:
        rpc = "GenerateStream" if data["stream"] else "Generate"
        raise InvalidRequest("stream", f"is {str(data['stream']).lower()}; call {rpc} for that (or leave it unset)")
    data["stream"] = streaming
    return data


def align_response(response: AlignResponse) -> pb.AlignResponse:
    return from_plain(response.model_dump(exclude_none=True), pb.AlignResponse())


def generate_event(event: Delta | Chunk | Done) -> pb.GenerateEvent:
    """A stream event as a GenerateEvent (the same fields as its SSE event)."""
    return from_plain(event.to_dict(), pb.GenerateEvent())


def objectives(items: list[ObjectiveInfo]) -> pb.ListObjectivesResponse:
    plain = [{k: v for k, v in asdict(o).items() if v is not None} for o in items]
    return from_plain({"objectives": plain}, pb.ListObjectivesResponse())
