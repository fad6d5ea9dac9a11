"""Usage metering on the real app: what GET /v1/admin/usage reads back equals the sum of the `usage` of
every response sent (native, OpenAI, gRPC; plain and streamed) on both stores and once the app is
deleted; every answer bills its fan-out in `x-aligner-generated-tokens`; the gRPC GetUsage RPC and
`aligner usage --server` answer as the route; tenants and bad bounds are refused."""

from __future__ import annotations

import json
import time

import grpc
import httpx
import pytest
from google.protobuf.json_format import ParseDict

from proto.aligner.v1 import aligner_pb2 as pb
from proto.aligner.v1 import aligner_pb2_grpc
from serve.cli.main import main as aligner_main
from serve.ingress.grpc_convert import to_plain
from tests.e2e.grpc_calls import failure, grpc_metadata

COUNTERS = (
    "prompt_tokens",
    "completion_tokens",
    "generated_tokens",
    "candidate_tokens",
    "prefill_tokens",
    "reward_calls",
    "engine_requests",
)
SMALL = {"prompt": "Name a colour.", "max_tokens": 8, "temperature": 0.7, "seed": 3}
FANNED_OUT = {**SMALL, "preference_vector": {"verbosity": -1.0}, "search": {"strategy": "best_of_n", "n": 3}}
GENERATED = "x-aligner-generated-tokens"


class Sent:
    """The usage of every response one tenant was sent, summed, and its requests by status."""

    def __init__(self):
        self.totals = dict.fromkeys(COUNTERS, 0)
        self.requests: dict[str, int] = {}

    def add(self, usage: dict, status: str = "ok") -> None:
        for name in COUNTERS:
            self.totals[name] += usage.get(name, 0)
        self.count(status)

    def count(self, status: str) -> None:
        self.requests[status] = self.requests.get(status, 0) + 1


def new_tenant(app, name: str) -> str:
    _, key = app.store.create_key(name)
    return key


def sse_events(stream) -> list[dict]:
    return [json.loads(line[6:]) for line in stream.iter_lines() if line.startswith("data: {")]


def send_traffic(app, grpc_port: int, key: str) -> Sent:
    """Every way a tenant can be answered, each response's usage recorded as the client saw it."""
    sent = Sent()
    with app.client() as client:
        for body in (SMALL, FANNED_OUT):
            reply = client.post("/v1/generate", json=body, headers=app.headers(key))
            assert reply.status_code == 200, reply.text
            usage = reply.json()["usage"]
            assert reply.headers[GENERATED] == str(usage["generated_tokens"]) and usage["generated_tokens"] > 0
            sent.add(usage)
        with client.stream("POST", "/v1/generate", json={**FANNED_OUT, "stream": True}, headers=app.headers(key)) as s:
            assert s.status_code == 200 and GENERATED not in s.headers  # headers leave before the search runs
            done = sse_events(s)[-1]
        assert done["type"] == "done"
        sent.add(done["response"]["usage"])

        chat = {"model": app.model, "messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 8}
        reply = client.post("/v1/chat/completions", json=chat, headers=app.headers(key))
        assert reply.status_code == 200, reply.text
        usage = reply.json()["alignment"]["usage"]
        assert reply.headers[GENERATED] == str(usage["generated_tokens"])
        sent.add(usage)
        streamed = {**chat, "stream": True, "stream_options": {"include_usage": True}}
        with client.stream("POST", "/v1/chat/completions", json=streamed, headers=app.headers(key)) as s:
            chunks = sse_events(s)
        final = next(c for c in chunks if c.get("choices") and c["choices"][0].get("finish_reason"))
        sent.add(final["alignment"]["usage"])

        bad = client.post("/v1/generate", json={**SMALL, "max_tokens": 0}, headers=app.headers(key))
        assert bad.status_code == 400
        sent.count("invalid_argument")
        anonymous = client.post("/v1/generate", json=SMALL, headers={"Authorization": "Bearer alk_forged"})
        assert anonymous.status_code == 401  # no tenant: not metered

    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        stub = aligner_pb2_grpc.AlignerStub(channel)
        metadata = grpc_metadata(app, key)
        answer, call = stub.Generate.with_call(
            ParseDict(FANNED_OUT, pb.GenerateRequest()), metadata=metadata, timeout=300
        )
        usage = to_plain(answer)["usage"]
        assert dict(call.trailing_metadata())[GENERATED] == str(usage["generated_tokens"])
        sent.add(usage)
        stream = stub.GenerateStream(ParseDict(SMALL, pb.GenerateRequest()), metadata=metadata, timeout=300)
        events = list(stream)
        usage = to_plain(events[-1].response)["usage"]
        assert dict(stream.trailing_metadata())[GENERATED] == str(usage["generated_tokens"])
        sent.add(usage)
    return sent


def read_usage(app, tenant: str, **query) -> dict:
    with app.client() as client:
        reply = client.get("/v1/admin/usage", params={"tenant": tenant, **query}, headers=app.headers(app.admin_key))
    assert reply.status_code == 200, reply.text
    return reply.json()


def wait_for_requests(app, tenant: str, expected: int, timeout_s: float = 90) -> dict:
    """The usage once the ingress flushed every request (each flushes every usage_flush_s)."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = read_usage(app, tenant)
        seen = sum(answer["totals"][0]["requests"].values()) if answer["totals"] else 0
        if seen >= expected or time.monotonic() > deadline:
            return answer
        time.sleep(0.5)


def assert_equal_to_sent(answer: dict, tenant: str, sent: Sent) -> None:
    [total] = answer["totals"]
    assert total["tenant"] == tenant
    assert total["requests"] == sent.requests
    assert {name: total[name] for name in COUNTERS} == sent.totals
    assert sent.totals["candidate_tokens"] > 0 and sent.totals["reward_calls"] > 0  # the fan-out is in it
    [hour] = answer["hours"] if len(answer["hours"]) == 1 else [None]  # may straddle an hour: then the sum
    if hour is not None:
        assert {name: hour[name] for name in COUNTERS} == sent.totals


def test_usage_read_back_equals_the_sum_of_every_response_on_both_stores(app, server):
    tenant = "metered"
    key = new_tenant(app, tenant)
    sent = send_traffic(app, server.config["grpc_port"], key)
    answer = wait_for_requests(app, tenant, sum(sent.requests.values()))
    assert_equal_to_sent(answer, tenant, sent)
    # The store holds what the route reads: the ingress wrote it there, batched.
    rows = app.store.usage(tenant)
    assert sum(r.counts.generated_tokens for r in rows) == sent.totals["generated_tokens"]


def test_get_usage_over_grpc_answers_as_the_route(server):
    tenant = "metered"  # the tenant of the test above on this app, or none yet: the answers agree either way
    with grpc.insecure_channel(f"127.0.0.1:{server.config['grpc_port']}") as channel:
        admin = aligner_pb2_grpc.AdminStub(channel)
        request = pb.UsageRequest(tenant=tenant, since="2020-01-01T00:00Z")
        over_grpc = to_plain(admin.GetUsage(request, metadata=grpc_metadata(server, server.admin_key), timeout=60))
        over_http = read_usage(server, tenant, since="2020-01-01T00:00Z")

        def plain(value):
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items() if v not in (None, {}, [])}
            return [plain(v) for v in value] if isinstance(value, list) else value

        assert over_grpc == plain(over_http)

        with pytest.raises(grpc.RpcError) as err:
            admin.GetUsage(pb.UsageRequest(since="2026-02-30"), metadata=grpc_metadata(server, server.admin_key))
        assert failure(err.value)["status"] == "INVALID_ARGUMENT" and failure(err.value)["field"] == "since"
        with pytest.raises(grpc.RpcError) as err:
            admin.GetUsage(pb.UsageRequest(), metadata=grpc_metadata(server))  # a tenant key
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    ("query", "status", "field"),
    [
        ({"since": "2026-12-01T24:00"}, 400, "since"),
        ({"until": "2026-02-29"}, 400, "until"),  # 2026 is not a leap year
        ({"since": "2026-12-02", "until": "2026-12-01"}, 400, "until"),
        ({"tenant": "NOT/A/TENANT"}, 400, "tenant"),
    ],
)
def test_bad_usage_queries_are_400_naming_the_parameter(server, query, status, field):
    with server.client() as client:
        reply = client.get("/v1/admin/usage", params=query, headers=server.headers(server.admin_key))
    assert reply.status_code == status and reply.json()["error"]["field"] == field, reply.text


def test_a_tenant_cannot_read_usage(server):
    with server.client() as client:
        assert client.get("/v1/admin/usage", headers=server.headers()).status_code == 403
        assert client.get("/v1/admin/usage", params={"tenant": "acme"}).status_code == 401


def test_the_cli_reads_the_servers_usage(server, capsys):
    code = aligner_main(["usage", "--server", server.url, "--key", server.admin_key, "--tenant", "acme", "--json"])
    assert code == 0
    assert json.loads(capsys.readouterr().out) == read_usage(server, "acme")
    assert aligner_main(["usage", "--server", server.url, "--key", server.key]) == 1  # a tenant key: refused
    assert "admin" in capsys.readouterr().err


def test_the_tenant_generated_tokens_metric_counts_each_tenants_answers(server):
    key = new_tenant(server, "metered-metric")
    with server.client() as client:
        reply = client.post("/v1/generate", json=FANNED_OUT, headers=server.headers(key))
    generated = reply.json()["usage"]["generated_tokens"]
    deadline = time.monotonic() + 30
    while True:
        text = httpx.get(f"{server.url}/metrics", headers=server.headers(server.admin_key), timeout=30).text
        line = f'aligner_tenant_generated_tokens_total{{tenant="metered-metric"}} {float(generated)}'
        if line in text or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert line in text


def test_a_cancelled_streamed_best_of_n_is_metered_for_what_it_generated(app):
    """A client that goes away mid-search is billed for the tokens its search generated: the model replica
    meters them itself (the ingress never hears from it again), the ingress counts the request (failed
    before this fix: 0 tokens)."""
    tenant = "metered-cancelled"
    key = new_tenant(app, tenant)
    long_search = {
        "prompt": "Write a long story about a lighthouse keeper and the sea.",
        "max_tokens": 256,
        "temperature": 1.0,
        "seed": 5,
        "preference_vector": {"verbosity": 1.0},
        "search": {"strategy": "best_of_n", "n": 8},
        "stream": True,
    }
    with app.client() as client:
        with client.stream("POST", "/v1/generate", json=long_search, headers=app.headers(key)) as stream:
            assert stream.status_code == 200  # accepted: its search runs
            # All 8 candidates decoding (the engines' gauge is set after a step, max_num_seqs is 8): each
            # has a token by now. Waiting for the first alone let the cancel land when 1 token existed.
            running = app.wait_metric("aligner_engine_running_requests", lambda v: v >= 8, timeout=120)
            assert running >= 8
        # Leaving the block closes the connection mid-search: the search is cancelled, its requests aborted.
    deadline = time.monotonic() + 90  # the replica flushes every usage_flush_s
    while True:
        totals = read_usage(app, tenant)["totals"]
        total = totals[0] if totals else None
        # The replica's row (tokens, 0 requests) and the ingress's (the request) are flushed apart.
        flushed = total is not None and total["generated_tokens"] > 0 and total["requests"].get("cancelled", 0) >= 1
        if flushed or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert total is not None and total["requests"] == {"cancelled": 1}
    assert total["generated_tokens"] >= 8 and total["prefill_tokens"] > 0 and total["engine_requests"] >= 1
    assert total["completion_tokens"] == 0  # no answer was chosen
    print(f"a cancelled best_of_n 8 x 256 was metered for {total['generated_tokens']} generated tokens")
