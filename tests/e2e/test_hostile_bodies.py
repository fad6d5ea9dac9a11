"""Bad input through the real app, HTTP and gRPC: every body that is not what a route reads is a 4xx (or
INVALID_ARGUMENT) naming `body`, `Content-Type` or the field — never a 500, never silently accepted.

The parsing itself is tested value by value in tests/unit/serve/ingress/test_string_positions.py; here each
string position of every route gets one value of each JSON kind, over the wire, through the proxies."""

from __future__ import annotations

import json

import grpc
import pytest

from proto.aligner.v1 import aligner_pb2 as pb
from proto.aligner.v1 import aligner_pb2_grpc
from tests.e2e.grpc_calls import failure, grpc_metadata
from tests.unit.serve.ingress.test_string_positions import ROUTES, put, varint

NOT_STRINGS = [None, True, 7, 2.5, [], ["x"], {}, {"a": "x"}]


def url_of(route: str) -> tuple[str, str]:
    method, path = route.split()[:2]
    return method, path.replace("{tenant}", "hostile")


def field_of(route: str, response) -> str | None:
    error = response.json()["error"]
    return error["param"] if "completions" in route else error["field"]


def test_a_non_string_in_any_string_position_of_any_route_is_a_4xx_naming_it(server):
    """Failed before the fix: `messages[0].role` as a list or an object on the OpenAI route was a 500."""
    wrong = []
    _, tenant_key = server.store.create_key("stringent")  # a tenant of its own: no other test's quotas or policy
    with server.client(timeout=60) as client:
        for route, _, body, paths in ROUTES:
            method, path = url_of(route)
            key = server.admin_key if "/admin/" in path else tenant_key
            for position, nullable in paths:
                for value in NOT_STRINGS:
                    if value is None and nullable:
                        continue
                    response = client.request(
                        method, path, json=put(body, position, value), headers=server.headers(key)
                    )
                    ok = 400 <= response.status_code < 500 and (
                        field_of(route, response) == position or field_of(route, response).startswith(position + "[")
                    )
                    if not ok:
                        wrong.append((route, position, value, response.status_code, response.text[:200]))
        assert client.get("/healthz").status_code == 200
    assert not wrong, wrong


@pytest.mark.parametrize("route", ["/v1/generate", "/v1/chat/completions", "/v1/admin/keys"])
@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b'{"max_tokens": 1' + b"0" * 5000 + b"}", "5001 digits"),  # failed before the fix: a 500 and a traceback
        (b'{"temperature": 1e999}', "finite"),  # failed before the fix: read as inf
        (b'{"temperature": -1E400}', "finite"),
    ],
)
def test_numbers_python_cannot_hold_are_a_400_naming_the_body(server, route, raw, says):
    key = server.admin_key if "admin" in route else server.key
    with server.client(timeout=60) as client:
        response = client.post(route, content=raw, headers={**server.headers(key), "content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert field_of(route, response) == "body" and says in response.text and "0" * 100 not in response.text


@pytest.mark.parametrize("route", ["/v1/generate", "/v1/chat/completions", "/v1/admin/keys"])
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"])
def test_a_non_json_content_type_is_a_415_naming_the_allowed_type(server, route, content_type):
    """Failed before the fix: the documented 415 never happened (the body was read as JSON whatever its type)."""
    key = server.admin_key if "admin" in route else server.key
    with server.client(timeout=60) as client:
        response = client.post(
            route, content=b'{"tenant": "hostile"}', headers={**server.headers(key), "content-type": content_type}
        )
        assert response.status_code == 415, response.text
        assert response.json()["error"]["code"] == "unsupported_media_type"
        assert field_of(route, response) == "Content-Type" and "application/json" in response.text
        assert client.get(
            "/v1/admin/keys", params={"tenant": "hostile"}, headers=server.headers(server.admin_key)
        ).json() == {"keys": []}


def test_a_body_without_a_content_type_is_read_as_json(server):
    with server.client(timeout=60) as client:
        response = client.post(
            "/v1/admin/keys", content=json.dumps({"tenant": "untyped"}), headers=server.headers(server.admin_key)
        )
    assert "content-type" not in response.request.headers
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    ("method", "path", "body", "params", "field"),
    [
        # Failed before the fix: created an admin key.
        ("POST", "/v1/admin/keys", {"tenant": "hostile", "admin": "yes"}, None, "admin"),
        # Failed before the fix: read as version 1.
        (
            "PUT",
            "/v1/admin/tenants/hostile/safety-config",
            {"config": {"text": "Be kind."}, "expected_version": True},
            None,
            "expected_version",
        ),
        (
            "POST",
            "/v1/admin/tenants/hostile/safety-config/activate",
            {"version": 2**70, "expected_version": None},
            None,
            "version",
        ),
        (
            "POST",
            "/v1/admin/tenants/hostile/policy/activate",
            {"version": 1, "expected_version": 2**31},
            None,
            "expected_version",
        ),
        (
            "PUT",
            "/v1/admin/tenants/hostile/policy",
            {"policy": {}, "expected_version": None, "admin": True},
            None,
            "admin",
        ),
        # Failed before the fix: 2**70 reached the store, a 500 on SQLite.
        ("DELETE", "/v1/admin/tenants/hostile/safety-config", None, {"expected_version": 2**70}, "expected_version"),
        ("DELETE", "/v1/admin/tenants/hostile/safety-config", None, {"expected_version": 0}, "expected_version"),
        # Failed before the fix: OverflowError converting to UTC, a 500.
        ("GET", "/v1/admin/audit", None, {"since": "0001-01-01T00:00:00+01:00"}, "since"),
        ("GET", "/v1/admin/audit", None, {"since": "2026-02-30"}, "since"),
        ("GET", "/v1/admin/usage", None, {"since": "0001-01-01T00:00:00+01:00"}, "since"),
        ("GET", "/v1/admin/usage", None, {"until": "9999-12-31T23:59:59-01:00"}, "until"),
    ],
)
def test_admin_requests_are_strict_and_bounded_like_the_columns(server, method, path, body, params, field):
    with server.client(timeout=60) as client:
        response = client.request(method, path, json=body, params=params, headers=server.headers(server.admin_key))
        assert response.status_code == 400, response.text
        assert response.json()["error"]["field"] == field
        keys = client.get("/v1/admin/keys", params={"tenant": "hostile"}, headers=server.headers(server.admin_key))
        assert keys.json() == {"keys": []}


@pytest.mark.parametrize("expected_version", ["abc", "2", None])
def test_an_admin_delete_checks_the_key_before_its_query(server, expected_version):
    """Failed before the fix: a tenant's key with `expected_version=abc` got a 400 naming the parameter, so
    HTTP read an admin route's input for a caller gRPC refuses first (403)."""
    params = {} if expected_version is None else {"expected_version": expected_version}
    with server.client(timeout=60) as client:
        for headers, status in ((server.headers(server.other_key), 403), ({}, 401)):
            response = client.delete("/v1/admin/tenants/hostile/safety-config", params=params, headers=headers)
            assert response.status_code == status, response.text
        if expected_version != "2":  # and with the admin key, the query's error names it
            admin = client.delete(
                "/v1/admin/tenants/hostile/safety-config", params=params, headers=server.headers(server.admin_key)
            )
            assert admin.status_code == 400 and admin.json()["error"]["field"] == "expected_version", admin.text
        # Found by review: an invalid tenant beside a bad query named the query on HTTP, the tenant on gRPC.
        both_bad = client.delete(
            "/v1/admin/tenants/Bad%20Tenant/safety-config", params=params, headers=server.headers(server.admin_key)
        )
        assert both_bad.status_code == 400 and both_bad.json()["error"]["field"] == "tenant", both_bad.text


# -- gRPC: binary messages with a number where a string belongs ------------------------------------------


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.config['grpc_port']}") as channel:
        yield channel


def raw_call(channel, method: str, data: bytes, metadata) -> grpc.RpcError:
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as err:
        call(data, metadata=metadata, timeout=60)
    return err.value


def string_as_number(number: int) -> bytes:
    return varint(number << 3) + varint(5)


def length_delimited(number: int, data: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(data)) + data


@pytest.mark.parametrize(
    ("method", "data", "field", "admin"),
    [
        # Failed before the fix: `preferences` sent as a number was dropped, the request served without it.
        ("/aligner.v1.Aligner/Generate", length_delimited(2, b"hi") + string_as_number(3), "preferences", False),
        ("/aligner.v1.Aligner/Generate", length_delimited(1, string_as_number(1)), "messages[0].role", False),
        ("/aligner.v1.Aligner/Generate", length_delimited(2, b"hi") + varint(999 << 3) + varint(1), "#999", False),
        ("/aligner.v1.Admin/CreateKey", string_as_number(1), "tenant", True),
        (
            "/aligner.v1.Admin/PutSafetyConfig",
            length_delimited(1, b"hostile") + length_delimited(2, string_as_number(1)),
            "config.text",
            True,
        ),
        ("/aligner.v1.Admin/ListAudit", string_as_number(2), "since", True),
    ],
)
def test_a_number_in_a_string_field_over_grpc_is_invalid_argument_naming_it(
    server, channel, method, data, field, admin
):
    metadata = grpc_metadata(server, server.admin_key if admin else None)
    error = failure(raw_call(channel, method, data, metadata))
    assert error["status"] == "INVALID_ARGUMENT" and error["field"] == field, error


@pytest.mark.parametrize(
    ("rpc", "message", "field"),
    [
        ("ListAudit", pb.ListAuditRequest(since="0001-01-01T00:00:00+01:00"), "since"),  # failed before: INTERNAL
        ("GetUsage", pb.UsageRequest(until="9999-12-31T23:59:59-01:00"), "until"),
        ("DeleteSafetyConfig", pb.DeleteSafetyConfigRequest(tenant="hostile", expected_version=0), "expected_version"),
        ("ActivateSafetyConfig", pb.ActivateSafetyConfigRequest(tenant="hostile", version=-1), "version"),
    ],
)
def test_admin_rpcs_refuse_values_beyond_the_columns_and_the_calendar(server, channel, rpc, message, field):
    stub = aligner_pb2_grpc.AdminStub(channel)
    with pytest.raises(grpc.RpcError) as err:
        getattr(stub, rpc)(message, metadata=grpc_metadata(server, server.admin_key), timeout=60)
    error = failure(err.value)
    assert error["status"] == "INVALID_ARGUMENT" and error["field"] == field, error
