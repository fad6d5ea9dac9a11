"""The one conversion between the gRPC messages (proto/aligner/v1) and the JSON contract.

Messages mirror the JSON contract name for name, so the conversion is generic: `to_plain` turns a
message into the dict the JSON contract would carry (fields with presence only when set, repeated
and map fields only when non-empty, every other scalar always; 64-bit integers stay integers),
and `from_plain` is protobuf's own `ParseDict`. The core's validation then runs on the dict, the
same as for HTTP, so both transports accept and refuse exactly the same requests. Before that,
`check_wire` refuses what a binary message held that no field read (a wrong wire type, an unknown
field number), as the JSON routes refuse a wrong type or an unknown field; `from_plain`'s errors name
the field by its path from the root.

Known difference: an empty list and an absent one are the same in proto3 (`candidates: []`, which
a refused request with `return_candidates` answers, comes back absent).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from google.protobuf import message_factory, unknown_fields
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
    """ParseDict, with its errors as InvalidRequest naming the field by its path from the message's root
    (`messages[1].role`, `search.strategy`, `preference_vector.a`), as the JSON route names it."""
    try:
        return ParseDict(data, message)
    except PARSE_ERRORS as exc:
        field = _bad_field(data, type(message), where) if isinstance(data, dict) else where.rstrip(".")
        raise InvalidRequest(field or "request", _reason(exc)) from None


# ParseDict raises ParseError, but lets a few Python errors through: an integer too large for a float
# field (OverflowError), a non-iterable where a list belongs (TypeError).
PARSE_ERRORS = (ParseError, OverflowError, TypeError, ValueError)


def _reason(exc: Exception) -> str:
    # ParseDict nests its messages ('Failed to parse messages field: Failed to parse role field: ...'): the
    # innermost says what is wrong; the field is named by the path.
    text = str(exc)
    while text.startswith("Failed to parse ") and " field: " in text:
        text = text.split(" field: ", 1)[1]
    return text.rstrip(".") if isinstance(exc, ParseError) else f"{type(exc).__name__}: {text}"


def _parses(data: dict[str, Any], message_type: type[Message]) -> bool:
    try:
        ParseDict(data, message_type())
    except PARSE_ERRORS:
        return False
    return True


def _bad_field(data: dict[str, Any], message_type: type[Message], where: str) -> str:
    """The path of the first field of `data` that does not parse into `message_type`, descending into
    messages, lists and maps (each tried alone, so the path names the innermost offender)."""
    fields = message_type.DESCRIPTOR.fields_by_name
    for name, value in data.items():
        field = fields.get(name) or next((f for f in fields.values() if f.json_name == name), None)
        if field is None or _parses({name: value}, message_type):
            if field is None:
                return f"{where}{name}"
            continue
        path = f"{where}{name}"
        sub = field.message_type
        if sub is not None and sub.GetOptions().map_entry:
            if isinstance(value, dict):
                bad = next((k for k, v in value.items() if not _parses({name: {k: v}}, message_type)), None)
                return path if bad is None else f"{path}.{bad}"
            return path
        if _is_repeated(field) and isinstance(value, list):
            for i, item in enumerate(value):
                if not _parses({name: [item]}, message_type):
                    if sub is not None and isinstance(item, dict):
                        return _bad_field(item, _message_class(sub), f"{path}[{i}].")
                    return f"{path}[{i}]"
            return path
        if sub is not None and isinstance(value, dict):
            return _bad_field(value, _message_class(sub), f"{path}.")
        return path
    return where.rstrip(".")


def _message_class(descriptor: Any) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)


def check_wire(message: Message, where: str = "") -> None:
    """Refuse what a binary message held that no field of it read: a field sent with the wrong wire type
    (a number where a string belongs, which protobuf keeps aside and leaves the field unset) or a field
    number this server does not know (the JSON routes refuse unknown fields alike). Recurses into set
    message fields."""
    fields = message.DESCRIPTOR.fields_by_number
    for unknown in unknown_fields.UnknownFieldSet(message):
        field = fields.get(unknown.field_number)
        if field is None:
            raise InvalidRequest(
                f"{where}#{unknown.field_number}",
                f"field number {unknown.field_number} is not a field of {message.DESCRIPTOR.full_name}",
            )
        raise InvalidRequest(
            f"{where}{field.name}",
            f"was sent as a {WIRE_TYPES.get(unknown.wire_type, unknown.wire_type)} value; it is a "
            f"{FIELD_TYPES.get(field.type, 'other')} field of {message.DESCRIPTOR.full_name}",
        )
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            if field.message_type.fields_by_name["value"].message_type is not None:
                for key, item in value.items():
                    check_wire(item, f"{where}{field.name}.{key}.")
        elif _is_repeated(field):
            for i, item in enumerate(value):
                check_wire(item, f"{where}{field.name}[{i}].")
        else:
            check_wire(value, f"{where}{field.name}.")


WIRE_TYPES = {0: "varint", 1: "64-bit", 2: "length-delimited", 3: "start-group", 4: "end-group", 5: "32-bit"}
FIELD_TYPES = {v: k.removeprefix("TYPE_").lower() for k, v in vars(FieldDescriptor).items() if k.startswith("TYPE_")}


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
