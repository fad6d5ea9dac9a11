"""Tenants' policies on the real app: set by an admin over HTTP, gRPC and the CLI, versioned and audited, and
applied to every request of the tenant (caps, defaults, allowed strategies and objectives), in force on
every replica within a second."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import grpc
import httpx
import pytest
from google.protobuf.json_format import ParseDict

from proto.aligner.v1 import aligner_pb2 as pb
from proto.aligner.v1 import aligner_pb2_grpc
from serve.errors import ERROR_TABLE
from serve.ingress.grpc_convert import to_plain
from tests.e2e.grpc_calls import failure, grpc_metadata

SMALL = {"prompt": "Name a colour.", "temperature": 0}
CAPPED = {
    "allowed_strategies": ["sample", "best_of_n"],
    "allowed_objectives": ["relevance", "verbosity"],
    "caps": {"max_tokens": 8, "n": 2},
    "defaults": {"max_tokens": 3},
}


def route(tenant: str) -> str:
    return f"/v1/admin/tenants/{tenant}/policy"


def put(client, app, tenant, policy, key=None):
    """PUT the tenant's policy, expecting the version active now."""
    current = client.get(route(tenant), headers=app.headers(app.admin_key))
    expected = current.json()["version"] if current.status_code == 200 else None
    return client.put(
        route(tenant), json={"policy": policy, "expected_version": expected}, headers=app.headers(key or app.admin_key)
    )


def test_a_policy_set_over_http_caps_and_defaults_every_request_of_its_tenant_only(app):
    _, key = app.store.create_key("capped")
    with app.client() as client:
        stored = put(client, app, "capped", CAPPED)
        assert stored.status_code == 200, stored.text
        version = stored.json()["version"]
        assert stored.json()["policy"]["caps"]["max_tokens"] == 8
        time.sleep(1.0)  # in force on every replica within a second

        def generate(body, who=key):
            return client.post("/v1/generate", json={**SMALL, **body}, headers=app.headers(who))

        over = generate({"max_tokens": 16})
        assert over.status_code == 400, over.text
        error = over.json()["error"]
        assert error["field"] == "max_tokens" and "the tenant's policy allows at most 8" in error["message"]
        wide = generate(
            {"search": {"strategy": "best_of_n", "n": 4}, "preference_vector": {"relevance": 1}, "temperature": 0.7}
        )
        assert wide.status_code == 400 and wide.json()["error"]["field"] == "search.n", wide.text
        assert "the tenant's policy allows at most 2 (n)" in wide.json()["error"]["message"]
        beam = generate({"search": {"strategy": "beam"}, "preference_vector": {"relevance": 1}})
        assert beam.status_code == 400 and beam.json()["error"]["field"] == "search.strategy", beam.text
        judged = generate(
            {"search": {"strategy": "best_of_n"}, "preference_vector": {"harmlessness": 1}, "temperature": 0.7}
        )
        assert judged.json()["error"]["field"] == "preference_vector.harmlessness", judged.text
        chat = client.post(
            "/v1/chat/completions",
            headers=app.headers(key),
            json={"model": app.model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 9},
        )
        assert chat.status_code == 400 and chat.json()["error"]["param"] == "max_tokens", chat.text

        served = generate({})  # max_tokens omitted: the policy's default, 3
        assert served.status_code == 200, served.text
        assert served.headers["x-aligner-policy-version"] == str(version)
        assert served.json()["usage"]["completion_tokens"] <= 3
        ranked = generate(
            {"search": {"strategy": "best_of_n", "n": 2}, "preference_vector": {"relevance": 1}, "temperature": 0.7}
        )
        assert ranked.status_code == 200 and ranked.json()["usage"]["candidates"] == 2, ranked.text

        other = generate({"max_tokens": 16}, who=app.other_key)  # another tenant: the server's limits alone
        assert other.status_code == 200 and "x-aligner-policy-version" not in other.headers


def test_defaults_fill_what_a_request_omits_and_a_default_above_a_cap_becomes_the_cap(app):
    _, key = app.store.create_key("defaulted")
    policy = {
        "caps": {"max_tokens": 4},
        "defaults": {"search": {"strategy": "best_of_n", "n": 2}, "preference_vector": {"verbosity": 1.0}},
    }
    with app.client() as client:
        assert put(client, app, "defaulted", policy).status_code == 200
        time.sleep(1.0)
        reply = client.post(
            "/v1/generate", json={"prompt": "Name a colour.", "seed": 3}, headers=app.headers(key)
        )  # no search, no direction, no max_tokens: best_of_n of 2 by verbosity, 4 tokens (256 > the cap)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["usage"]["candidates"] == 2 and set(body["scores"]) == {"verbosity"}
        assert body["usage"]["completion_tokens"] <= 4


def test_admin_checks_a_policy_against_the_servers_limits_and_objectives_and_refuses_tenants(app):
    _, tenant_key = app.store.create_key("checked")
    with app.client() as client:
        for policy, field in (
            ({"caps": {"n": 9}}, "policy.caps.n"),  # the server's search_limits.n is 8
            ({"allowed_objectives": ["wit"]}, "policy.allowed_objectives[0]"),
            ({"defaults": {"preference_vector": {"wit": 1}}}, "policy.defaults.preference_vector.wit"),
            ({"defaults": {"search": {"strategy": "beam", "n": 2}}}, "policy.defaults.search.n"),
            ({"caps": {"max_tokens": "8"}}, "policy.caps.max_tokens"),
            ({"weight": -1}, "policy.weight"),
            ({"rate": 5}, "policy.rate"),
        ):
            refused = put(client, app, "checked", policy)
            assert refused.status_code == 400 and refused.json()["error"]["field"] == field, refused.text
        for method, path, body in (
            ("PUT", route("checked"), {"policy": {}, "expected_version": None}),
            ("GET", route("checked"), None),
            ("GET", f"{route('checked')}/versions", None),
            ("POST", f"{route('checked')}/activate", {"version": 1, "expected_version": None}),
            ("GET", f"{route('checked')}/audit", None),
        ):
            for key in (tenant_key, app.other_key):
                denied = client.request(method, path, json=body, headers=app.headers(key))
                assert denied.status_code == 403, (method, path, denied.text)
        assert app.store.get_tenant_policy("checked") is None  # nothing was written


def test_a_policy_change_is_in_force_on_both_replicas_within_a_second(server):
    """Measured: after a PUT returns, requests keep flowing to both replicas; none sent a second or more
    after it is admitted under the old version, and both replicas serve requests under the new one."""
    _, key = server.store.create_key("switching")
    with server.client() as client:
        old = put(client, server, "switching", {"caps": {"max_tokens": 2}}).json()["version"]
        time.sleep(1.2)
        new = put(client, server, "switching", {"caps": {"max_tokens": 1}})
        changed_at = time.monotonic()
        assert new.status_code == 200, new.text
        new = new.json()["version"]

    seen: list[tuple[float, str, int, int]] = []  # (sent after the change, replica, version, tokens)

    def probe():
        with httpx.Client(base_url=server.url, timeout=60) as http:
            while time.monotonic() - changed_at < 1.6:
                sent = time.monotonic() - changed_at
                reply = http.post("/v1/generate", json={**SMALL, "max_tokens": 1}, headers=server.headers(key))
                assert reply.status_code == 200, reply.text
                seen.append(
                    (
                        sent,
                        reply.headers["x-aligner-replica"],
                        int(reply.headers["x-aligner-policy-version"]),
                        reply.json()["usage"]["completion_tokens"],
                    )
                )

    threads = [threading.Thread(target=probe) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stale = [sent for sent, _, version, _ in seen if version == old]
    assert max(stale, default=0.0) < 1.0, f"old policy in force {max(stale):.2f}s after the change"
    assert {version for _, _, version, _ in seen} <= {old, new}
    assert len({replica for _, replica, version, _ in seen if version == new}) == 2, seen
    with httpx.Client(base_url=server.url, timeout=60) as http:
        over = http.post("/v1/generate", json={**SMALL, "max_tokens": 2}, headers=server.headers(key))
    assert over.status_code == 400 and "at most 1" in over.json()["error"]["message"]


# -- gRPC: the same admin service ---------------------------------------------------------------------

REQUEST_TYPES = {
    "PutTenantPolicy": pb.PutTenantPolicyRequest,
    "GetTenantPolicy": pb.TenantRequest,
    "ListTenantPolicyVersions": pb.TenantRequest,
    "ActivateTenantPolicy": pb.ActivateTenantPolicyRequest,
    "ListTenantPolicyAudit": pb.TenantRequest,
}
VOLATILE = {"id", "created_at", "at", "actor", "created_by"}


def http_call(client, server, rpc, f):
    path = route(f["tenant"])
    method, path, options = {
        "PutTenantPolicy": (
            "PUT",
            path,
            {"json": {"policy": f.get("policy"), "expected_version": f.get("expected_version")}},
        ),
        "GetTenantPolicy": ("GET", path, {}),
        "ListTenantPolicyVersions": ("GET", f"{path}/versions", {}),
        "ActivateTenantPolicy": (
            "POST",
            f"{path}/activate",
            {"json": {"version": f.get("version"), "expected_version": f.get("expected_version")}},
        ),
        "ListTenantPolicyAudit": ("GET", f"{path}/audit", {}),
    }[rpc]
    reply = client.request(method, path, headers=server.headers(server.admin_key), **options)
    if reply.status_code >= 400:
        error = reply.json()["error"]
        return {"error": {"status": reply.status_code, "code": error["code"], "field": error["field"]}}
    return reply.json()


def grpc_call(stub, server, rpc, f):
    try:
        message = ParseDict(f, REQUEST_TYPES[rpc]())
        answer = getattr(stub, rpc)(message, metadata=grpc_metadata(server, server.admin_key), timeout=60)
    except grpc.RpcError as exc:
        failed = failure(exc)
        return {"error": {"status": failed["status"], "code": failed["code"], "field": failed["field"]}}
    return to_plain(answer)


def comparable(answer, tenant):
    """The answer with the tenant generic, times and ids by presence, null, {} and [] absent (proto3 has
    no null: an unset cap and an absent one are the same)."""
    if isinstance(answer, dict):
        kept = {k: ("<set>" if k in VOLATILE else comparable(v, tenant)) for k, v in answer.items()}
        return {k: v for k, v in kept.items() if v not in (None, [], {})}
    if isinstance(answer, list):
        return [comparable(v, tenant) for v in answer]
    return "<tenant>" if answer == tenant else answer


def history(call, tenant):
    steps = []
    for rpc, fields in (
        ("GetTenantPolicy", {}),  # none yet: not found
        ("PutTenantPolicy", {"policy": CAPPED}),
        ("PutTenantPolicy", {"policy": {"weight": 3.0}}),  # expects none, but version 1 is active: conflict
        ("PutTenantPolicy", {"policy": {"weight": 3.0, "priority": 2}, "expected_version": 1}),
        ("PutTenantPolicy", {"policy": {"caps": {"n": 9}}, "expected_version": 2}),  # above the server
        ("PutTenantPolicy", {"policy": {"allowed_strategies": ["greedy"]}, "expected_version": 2}),
        ("GetTenantPolicy", {}),
        ("ListTenantPolicyVersions", {}),
        ("ActivateTenantPolicy", {"version": 1, "expected_version": 1}),  # stale: conflict
        ("ActivateTenantPolicy", {"version": 9, "expected_version": 2}),  # no such version
        ("ActivateTenantPolicy", {"version": 1, "expected_version": 2}),  # a rollback
        ("GetTenantPolicy", {}),
        ("ListTenantPolicyAudit", {}),
    ):
        steps.append((rpc, comparable(call(rpc, {"tenant": tenant, **fields}), tenant)))
    return steps


@pytest.fixture(scope="module")
def admin_stub(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.config['grpc_port']}") as channel:
        yield aligner_pb2_grpc.AdminStub(channel)


def test_every_policy_rpc_answers_as_its_http_route(server, admin_stub):
    with server.client() as client:
        over_http = history(lambda rpc, f: http_call(client, server, rpc, f), "policy-parity-http")
    over_grpc = history(lambda rpc, f: grpc_call(admin_stub, server, rpc, f), "policy-parity-grpc")
    assert {rpc for rpc, _ in over_grpc} == set(REQUEST_TYPES)
    for (rpc, http), (_, grpc_answer) in zip(over_http, over_grpc):
        if "error" in http:
            status, code = http["error"].pop("status"), http["error"]["code"]
            assert (status, grpc_answer["error"].pop("status")) == ERROR_TABLE[code][:2], rpc
        assert grpc_answer == http, rpc
    codes = [answer["error"]["code"] for _, answer in over_grpc if "error" in answer]
    assert codes == [
        "not_found",
        "version_conflict",
        "invalid_argument",
        "invalid_argument",
        "version_conflict",
        "not_found",
    ]
    active = over_grpc[-2][1]
    assert active["version"] == 1 and active["policy"]["caps"] == {"max_tokens": 8, "n": 2}
    audit = over_grpc[-1][1]["entries"]
    assert [(e["action"], e.get("old_version"), e["new_version"]) for e in audit] == [
        ("set", None, 1),
        ("set", 1, 2),
        ("activate", 2, 1),
    ]
    for key, status in ((server.key, "PERMISSION_DENIED"), ("alk_forged", "UNAUTHENTICATED")):
        try:
            admin_stub.GetTenantPolicy(
                pb.TenantRequest(tenant="policy-parity-grpc"), metadata=grpc_metadata(server, key)
            )
        except grpc.RpcError as exc:
            assert exc.code().name == status
        else:
            raise AssertionError(f"GetTenantPolicy answered a {status} caller")


# -- the CLI ----------------------------------------------------------------------------------------------


def test_the_tenants_cli_manages_policies_through_a_running_server(server, tmp_path):
    # On one store: the CLI speaks only HTTP, and the routes it calls are tested on both stores.
    app = server

    def cli(*args, key=None):
        return subprocess.run(
            [sys.executable, "-m", "serve.cli", "tenants", "policy", *args, "--server", app.url]
            + ["--key", key or app.admin_key],
            capture_output=True,
            text=True,
            timeout=120,
        )

    policy = tmp_path / "policy.yaml"
    policy.write_text("caps: {max_tokens: 8}\nallowed_strategies: [sample]\nweight: 2\n")
    first = cli("set", "cli-tenant", "--file", str(policy), "--expected-version", "none")
    assert first.returncode == 0, first.stderr
    policy.write_text("caps: {max_tokens: 4}\nrequests_per_minute: 60\n")
    assert cli("set", "cli-tenant", "--file", str(policy)).returncode == 0  # expects the version active now: 1
    shown = json.loads(cli("get", "cli-tenant", "--json").stdout)
    assert shown["version"] == 2 and shown["policy"]["caps"]["max_tokens"] == 4
    assert shown["policy"]["requests_per_minute"] == 60 and shown["policy"]["weight"] == 1.0
    assert "max_tokens: 4" in cli("get", "cli-tenant").stdout
    assert cli("activate", "cli-tenant", "1").returncode == 0
    versions = cli("versions", "cli-tenant").stdout.splitlines()
    assert [line.split()[0] for line in versions] == ["*", "2"] and versions[0].split()[1] == "1"
    stale = cli("activate", "cli-tenant", "2", "--expected-version", "2")
    assert stale.returncode == 1 and "version" in stale.stderr
    audit = [json.loads(line) for line in cli("audit", "cli-tenant").stdout.splitlines()]
    assert [e["action"] for e in audit] == ["set", "set", "activate"]
    assert all(e["actor"].startswith("key_") for e in audit)  # the admin key's id, through the app

    denied = cli("get", "cli-tenant", key=app.key)
    assert denied.returncode == 1 and "admin" in denied.stderr
    policy.write_text("caps: {n: 1000}\n")
    bad = cli("set", "cli-tenant", "--file", str(policy))
    assert bad.returncode == 2 and "caps.n" in bad.stderr  # checked against the server's limits
    policy.write_text("caps: {n: zero}\n")
    bad = cli("set", "cli-tenant", "--file", str(policy))
    assert bad.returncode == 2 and "caps.n" in bad.stderr
