"""Every string position of every public body refuses every other JSON value (lists, objects, numbers,
booleans, null where the field is not optional) with a 400 naming the field — the parsing each route
runs, HTTP's (native, OpenAI, admin) and gRPC's (ParseDict for JSON-built messages, the wire check
for binary ones). The same through the real server: tests/e2e/test_hostile_bodies.py."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import given, settings
from hypothesis import strategies as st

from aligner.contract import AlignRequest
from aligner.errors import InvalidRequest
from proto.aligner.v1 import aligner_pb2 as pb
from serve.gateway.admin import CreateKey, PutSafetyConfig, PutTenantPolicy
from serve.ingress.grpc_convert import check_wire, from_plain
from serve.ingress.openai import to_align_request

MESSAGES = [{"role": "user", "content": "hi"}]
NATIVE = {
    "messages": MESSAGES,
    "preferences": "be brief",
    "combination": "linear",
    "search": {"strategy": "best_of_n", "n": 2},
    "preference_vector": {"relevance": 1.0},
    "stop": ["\n\n"],
}
OPENAI = {**NATIVE, "model": "m", "user": "u"}
SAFETY = {
    "config": {"text": "Be kind.", "action": "refuse", "refusal_message": "No.", "allowed": ["a"], "disallowed": ["b"]}
}
POLICY = {
    "policy": {
        "allowed_strategies": ["sample"],
        "allowed_objectives": ["relevance"],
        "defaults": {"search": {"strategy": "sample"}},
    }
}


def native(body: dict) -> object:
    return AlignRequest.parse(body)


def openai(body: dict) -> object:
    data, _ = to_align_request(body)
    return AlignRequest.parse(data)


# (route, its parsing, a valid body, [(a string position, whether null means "unset" there)]).
ROUTES = [
    (
        "POST /v1/generate",
        native,
        NATIVE,
        [("messages[0].role", False), ("messages[0].content", False), ("preferences", True), ("combination", False)]
        + [("search.strategy", False), ("stop[0]", False)],
    ),
    ("POST /v1/generate (prompt)", native, {"prompt": "hi"}, [("prompt", True)]),
    (
        "POST /v1/chat/completions",
        openai,
        OPENAI,
        [("model", False), ("messages[0].role", False), ("user", True), ("preferences", True)]
        + [("combination", True), ("search.strategy", False), ("stop[0]", False)],
    ),
    (
        "POST /v1/chat/completions (parts)",
        openai,
        {**OPENAI, "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]},
        [("messages[0].content[0].type", False), ("messages[0].content[0].text", False)],
    ),
    ("POST /v1/admin/keys", CreateKey.parse, {"tenant": "acme", "admin": False}, [("tenant", False)]),
    (
        "PUT /v1/admin/tenants/{tenant}/safety-config",
        PutSafetyConfig.parse,
        {**SAFETY, "expected_version": None},
        [(f"config.{name}", False) for name in ("text", "action", "refusal_message", "allowed[0]", "disallowed[0]")],
    ),
    (
        "PUT /v1/admin/tenants/{tenant}/policy",
        PutTenantPolicy.parse,
        {**POLICY, "expected_version": None},
        [("policy.allowed_strategies[0]", False), ("policy.allowed_objectives[0]", False)]
        + [("policy.defaults.search.strategy", False)],
    ),
]
POSITIONS = [(name, parse, body, path, nullable) for name, parse, body, paths in ROUTES for path, nullable in paths]

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    json_scalars | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
# Anything but a string at the top: a list or object may hold strings, it is still not one.
not_a_string = json_scalars | st.lists(json_values, max_size=3) | st.dictionaries(st.text(max_size=4), json_values)


def steps(path: str) -> list[str | int]:
    out: list[str | int] = []
    for part in path.replace("]", "").replace("[", ".").split("."):
        out.append(int(part) if part.isdigit() else part)
    return out


def put(body: dict, path: str, value: Any) -> dict:
    body = copy.deepcopy(body)
    *parents, last = steps(path)
    node: Any = body
    for step in parents:
        node = node[step]
    node[last] = value
    return body


def test_every_position_holds_a_string_in_its_valid_body():
    for name, parse, body, path, _ in POSITIONS:
        parse(body)  # the valid body parses: a refusal below is the value's, not the body's
        node: Any = body
        for step in steps(path):
            node = node[step]
        assert isinstance(node, str), (name, path)


@pytest.mark.parametrize(
    ("route", "parse", "body", "path", "nullable"), POSITIONS, ids=[f"{p[0]} {p[3]}" for p in POSITIONS]
)
@settings(max_examples=40, deadline=None)
@given(value=not_a_string)
def test_a_non_string_in_a_string_position_is_a_400_naming_the_field(route, parse, body, path, nullable, value):
    """Failed before the fix on the OpenAI route: `messages[i].role` as a list or an object raised
    TypeError (unhashable), a 500; and `"admin": "yes"` (CreateKey's bool) was read as true."""
    if value is None and nullable:  # null is "unset" there (OpenAI clients send it so): parsed, or refused
        try:  # for what is then missing (`prompt: null` alone: "give one of messages and prompt")
            parse(put(body, path, value))
        except InvalidRequest:
            pass
        return
    with pytest.raises(InvalidRequest) as err:
        parse(put(body, path, value))
    assert err.value.field == path or err.value.field.startswith(path + "["), (route, value, err.value.message)


# -- gRPC: messages built from JSON (the clients', ParseDict) and binary ones (the wire check) ----------

GRPC_BODIES = [
    (pb.GenerateRequest, NATIVE, ["messages[0].role", "messages[0].content", "preferences", "combination"]),
    (
        pb.GenerateRequest,
        {"prompt": "hi", "stop": ["x"], "search": {"strategy": "sample"}},
        ["prompt", "stop[0]", "search.strategy"],
    ),
    (pb.CreateKeyRequest, {"tenant": "acme"}, ["tenant"]),
    (pb.PutSafetyConfigRequest, {"tenant": "acme", **SAFETY}, [f"config.{n}" for n in ("text", "allowed[0]")]),
    (pb.PutTenantPolicyRequest, {"tenant": "acme", **POLICY}, ["policy.allowed_strategies[0]"]),
    (pb.ListAuditRequest, {"since": "2026-01-01"}, ["since", "tenant"]),
    (pb.UsageRequest, {"since": "2026-01-01", "until": "2026-01-02"}, ["since", "until"]),
]
GRPC_POSITIONS = [(t, body, path) for t, body, paths in GRPC_BODIES for path in paths]


@pytest.mark.parametrize(
    ("message_type", "body", "path"), GRPC_POSITIONS, ids=[f"{t.__name__} {p}" for t, _, p in GRPC_POSITIONS]
)
@settings(max_examples=30, deadline=None)
@given(value=not_a_string.filter(lambda v: v is not None))  # null: the field unset, as proto3 has it
def test_a_non_string_in_a_message_s_string_field_names_the_field(message_type, body, path, value):
    """Failed before the fix: nested fields were named by their last name alone (`strategy` for
    `search.strategy`, `messages` for `messages[0].role`)."""
    with pytest.raises(InvalidRequest) as err:
        from_plain(put(body, path, value), message_type())
    assert err.value.field == path or err.value.field.startswith(path + "["), (value, err.value.message)


def test_a_float_field_given_a_huge_integer_names_the_field():
    """Failed before the fix: ParseDict let OverflowError through."""
    with pytest.raises(InvalidRequest) as err:
        from_plain({"temperature": 10**400}, pb.GenerateRequest())
    assert err.value.field == "temperature"


def request_types() -> list[type]:
    services = pb.DESCRIPTOR.services_by_name.values()
    names = sorted({m.input_type.name for s in services for m in s.methods})
    return [getattr(pb, name) for name in names]


def string_paths(descriptor: Any, prefix: tuple = (), depth: int = 0) -> list[tuple[tuple, str]]:
    """Every string field reachable from a message: (field numbers from the root, the path as named)."""
    out = []
    for field in descriptor.fields:
        repeated = field.is_repeated
        name = f"{field.name}[0]" if repeated else field.name
        if field.type == FieldDescriptor.TYPE_STRING:
            out.append(((*prefix, (field.number, field.name)), field.name))
        elif field.message_type is not None and not field.message_type.GetOptions().map_entry and depth < 3:
            for numbers, path in string_paths(field.message_type, (*prefix, (field.number, name)), depth + 1):
                out.append((numbers, path))
    return out


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def encoded(numbers: tuple) -> bytes:
    """A message whose innermost field (a string) is sent as a varint, inside its parents."""
    *parents, (number, _) = numbers
    data = varint(number << 3) + varint(7)
    for parent_number, _ in reversed(parents):
        data = varint(parent_number << 3 | 2) + varint(len(data)) + data
    return data


WIRE_CASES = [
    (t, numbers, ".".join(name for _, name in numbers))
    for t in request_types()
    for numbers, _ in string_paths(t.DESCRIPTOR)
]


@pytest.mark.parametrize(
    ("message_type", "numbers", "path"), WIRE_CASES, ids=[f"{t.__name__}.{p}" for t, _, p in WIRE_CASES]
)
def test_a_number_sent_in_any_string_field_of_any_rpc_is_refused_naming_it(message_type, numbers, path):
    """Failed before the fix: protobuf kept the value aside as an unknown field and left the string unset
    (a `preferences` sent as a number was silently dropped)."""
    message = message_type.FromString(encoded(numbers))
    with pytest.raises(InvalidRequest) as err:
        check_wire(message)
    assert err.value.field == path and "string" in err.value.reason


def test_an_unknown_field_number_is_refused_and_a_valid_message_passes():
    with pytest.raises(InvalidRequest) as err:
        check_wire(pb.GenerateRequest.FromString(varint(999 << 3) + varint(1)))
    assert err.value.field == "#999"
    check_wire(from_plain({**NATIVE, "preference_vector": {"a": 1.0}}, pb.GenerateRequest()))


def test_the_wire_cases_cover_every_rpc_with_a_string_field():
    assert len(WIRE_CASES) > 20 and {t.__name__ for t, _, _ in WIRE_CASES} >= {"GenerateRequest", "CreateKeyRequest"}
