"""The gRPC service aligner.v1.Admin on the real app: every RPC, and the same answers and errors as
the HTTP admin routes, step by step through a tenant's keys and safety-config history."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.json_format import ParseDict

from proto.aligner.v1 import aligner_pb2 as pb
from proto.aligner.v1 import aligner_pb2_grpc
from serve.errors import ERROR_TABLE
from serve.ingress.grpc_convert import to_plain
from tests.e2e.grpc_calls import failure, grpc_metadata

KIDS = {
    "text": "Users are children. Never discuss violence.",
    "thresholds": {"harmlessness": 0.3},
    "disallowed": ["violence"],
}
TEENS = {"text": "Users are teenagers.", "action": "resample", "max_resamples": 1}

REQUEST_TYPES = {
    "CreateKey": pb.CreateKeyRequest,
    "ListKeys": pb.ListKeysRequest,
    "RevokeKey": pb.RevokeKeyRequest,
    "PutSafetyConfig": pb.PutSafetyConfigRequest,
    "GetSafetyConfig": pb.TenantRequest,
    "ListSafetyConfigVersions": pb.TenantRequest,
    "ActivateSafetyConfig": pb.ActivateSafetyConfigRequest,
    "DeleteSafetyConfig": pb.DeleteSafetyConfigRequest,
    "ListAudit": pb.ListAuditRequest,
}


def http_call(client, server, key, rpc, f):
    """The HTTP route of an Admin RPC, with the RPC's fields placed where the route takes them."""
    config_route = f"/v1/admin/tenants/{f.get('tenant')}/safety-config"
    method, path, options = {
        "CreateKey": ("POST", "/v1/admin/keys", {"json": f}),
        "ListKeys": ("GET", "/v1/admin/keys", {"params": f}),
        "RevokeKey": ("DELETE", f"/v1/admin/keys/{f.get('id')}", {}),
        "PutSafetyConfig": (
            "PUT",
            config_route,
            {"json": {"config": f.get("config"), "expected_version": f.get("expected_version")}},
        ),
        "GetSafetyConfig": ("GET", config_route, {}),
        "ListSafetyConfigVersions": ("GET", f"{config_route}/versions", {}),
        "ActivateSafetyConfig": (
            "POST",
            f"{config_route}/activate",
            {"json": {"version": f.get("version"), "expected_version": f.get("expected_version")}},
        ),
        "DeleteSafetyConfig": ("DELETE", config_route, {"params": {"expected_version": f.get("expected_version")}}),
        "ListAudit": ("GET", "/v1/admin/audit", {"params": f}),
    }[rpc]
    reply = client.request(method, path, headers=server.headers(key), **options)
    if reply.status_code >= 400:
        error = reply.json()["error"]
        return {"error": {"status": reply.status_code, "code": error["code"], "field": error["field"]}}
    return reply.json()


def grpc_call(stub, server, key, rpc, f):
    try:
        answer = getattr(stub, rpc)(ParseDict(f, REQUEST_TYPES[rpc]()), metadata=grpc_metadata(server, key), timeout=60)
    except grpc.RpcError as exc:
        failed = failure(exc)
        return {"error": {"status": failed["status"], "code": failed["code"], "field": failed["field"]}}
    return to_plain(answer)


VOLATILE = {"id", "created_at", "at", "key", "revoked_at"}


def comparable(answer, tenant):
    """The answer with the tenant's name generic, times and ids by presence, null and [] absent."""
    if isinstance(answer, dict):
        return {
            k: ("<set>" if k in VOLATILE else comparable(v, tenant))
            for k, v in answer.items()
            if v is not None and v != []
        }
    if isinstance(answer, list):
        return [comparable(v, tenant) for v in answer]
    return "<tenant>" if answer == tenant else answer


def history(call, tenant):
    """One tenant's keys and safety-config history through one transport, every step's answer."""
    steps = []
    step = lambda rpc, **f: steps.append((rpc, call(rpc, f))) or steps[-1][1]  # noqa: E731
    created = step("CreateKey", tenant=tenant)
    step("CreateKey", tenant=tenant, admin=True)
    step("ListKeys", tenant=tenant)
    step("GetSafetyConfig", tenant=tenant)  # none yet: not found
    step("PutSafetyConfig", tenant=tenant, config=KIDS)
    step("PutSafetyConfig", tenant=tenant, config=TEENS)  # expected none, but version 1 is active: conflict
    step("PutSafetyConfig", tenant=tenant, config=TEENS, expected_version=1)
    step("PutSafetyConfig", tenant=tenant, config={"text": "x", "thresholds": {"wit": 0.5}}, expected_version=2)
    step("PutSafetyConfig", tenant=tenant, config={"text": "x", "action": "shrug"}, expected_version=2)
    step("PutSafetyConfig", tenant="Not A Tenant!", config=KIDS)
    step("GetSafetyConfig", tenant=tenant)
    step("ListSafetyConfigVersions", tenant=tenant)
    step("ActivateSafetyConfig", tenant=tenant, version=1, expected_version=1)  # stale: conflict
    step("ActivateSafetyConfig", tenant=tenant, version=0, expected_version=2)  # no such version
    step("ActivateSafetyConfig", tenant=tenant, version=9, expected_version=2)
    step("ActivateSafetyConfig", tenant=tenant, version=1, expected_version=2)  # a rollback
    step("DeleteSafetyConfig", tenant=tenant, expected_version=2)  # stale: conflict
    step("DeleteSafetyConfig", tenant=tenant, expected_version=1)
    step("GetSafetyConfig", tenant=tenant)
    step("ListAudit", tenant=tenant)
    step("ListAudit", tenant=tenant, since="yesterday")
    step("RevokeKey", id=created["id"])
    step("RevokeKey", id="key_does_not_exist")
    step("ListKeys", tenant=tenant)
    return [(rpc, comparable(answer, tenant)) for rpc, answer in steps]


@pytest.fixture(scope="module")
def admin_stub(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.config['grpc_port']}") as channel:
        yield aligner_pb2_grpc.AdminStub(channel)


def test_every_admin_rpc_answers_as_its_http_route(server, admin_stub):
    with server.client() as client:
        over_http = history(lambda rpc, f: http_call(client, server, server.admin_key, rpc, f), "admin-parity-http")
    over_grpc = history(lambda rpc, f: grpc_call(admin_stub, server, server.admin_key, rpc, f), "admin-parity-grpc")
    assert {rpc for rpc, _ in over_grpc} == set(REQUEST_TYPES)
    for (rpc, http), (_, grpc_answer) in zip(over_http, over_grpc):
        if "error" in http:
            status, code = http["error"].pop("status"), http["error"]["code"]
            assert (status, grpc_answer["error"].pop("status")) == ERROR_TABLE[code][:2], rpc
        assert grpc_answer == http, rpc
    statuses = [answer["error"]["code"] for _, answer in over_grpc if "error" in answer]
    assert {"not_found", "version_conflict", "invalid_argument"} <= set(statuses), statuses
    audit = next(answer for rpc, answer in over_grpc if rpc == "ListAudit")
    assert [e["action"] for e in audit["entries"]] == ["set", "set", "activate", "delete"]


def test_admin_rpcs_refuse_tenant_keys_and_bad_keys(server, admin_stub):
    _, tenant_key = server.store.create_key("admin-denied")
    calls = {
        "CreateKey": {"tenant": "admin-denied", "admin": True},
        "ListKeys": {},
        "RevokeKey": {"id": "x"},
        "PutSafetyConfig": {"tenant": "admin-denied", "config": KIDS},
        "GetSafetyConfig": {"tenant": "x"},
        "ListSafetyConfigVersions": {"tenant": "x"},
        "ActivateSafetyConfig": {"tenant": "x", "version": 1},
        "DeleteSafetyConfig": {"tenant": "x", "expected_version": 1},
        "ListAudit": {},
    }
    assert set(calls) == set(REQUEST_TYPES)
    for rpc, fields in calls.items():
        for key, status in (
            (tenant_key, "PERMISSION_DENIED"),
            (server.other_key, "PERMISSION_DENIED"),
            ("alk_forged", "UNAUTHENTICATED"),
        ):
            answer = grpc_call(admin_stub, server, key, rpc, fields)
            assert answer["error"]["status"] == status, (rpc, answer)
    # Nothing was written by the refused calls.
    assert server.store.get_safety_config("admin-denied") is None
    assert [k.admin for k in server.store.list_keys("admin-denied")] == [False]
