"""The gRPC API (service aligner.v1.Aligner) on the real app, through Ray Serve's gRPC proxy."""

from __future__ import annotations

import grpc
import pytest

from proto.aligner.v1 import aligner_pb2 as pb
from proto.aligner.v1 import aligner_pb2_grpc
from serve.ingress.grpc_convert import to_plain
from tests.e2e.grpc_calls import field_of, grpc_metadata

QUESTION = "In one sentence, what is the capital of France?"


@pytest.fixture(scope="module")
def stub(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.config['grpc_port']}")
    yield aligner_pb2_grpc.AlignerStub(channel)
    channel.close()


def metadata(server, key=None):
    return grpc_metadata(server, key)


def test_generate_gives_the_same_answer_as_http(server, stub):
    body = {
        "prompt": QUESTION,
        "max_tokens": 24,
        "temperature": 0.8,
        "seed": 5,
        "preference_vector": {"relevance": 1.0, "verbosity": -0.5},
        "search": {"strategy": "best_of_n", "n": 3},
    }
    over_grpc = to_plain(
        stub.Generate(
            pb.GenerateRequest(**{**body, "search": pb.SearchSpec(strategy="best_of_n", n=3)}),
            metadata=metadata(server),
            timeout=300,
        )
    )
    with server.client() as client:
        over_http = client.post("/v1/generate", json=body, headers=server.headers()).json()
    volatile = {"id", "usage"}
    assert {k: v for k, v in over_grpc.items() if k not in volatile} == {
        k: v for k, v in over_http.items() if k not in volatile
    }
    for field in (
        "prompt_tokens",
        "completion_tokens",
        "generated_tokens",
        "candidates",
        "engine_requests",
        "reward_calls",
    ):
        assert over_grpc["usage"][field] == over_http["usage"][field], field


def test_generate_stream_events_add_up_to_the_final_text(server, stub):
    request = pb.GenerateRequest(prompt=QUESTION, max_tokens=24, temperature=0.0, seed=1)
    events = list(stub.GenerateStream(request, metadata=metadata(server), timeout=300))
    assert [e.type for e in events][-1] == "done" and all(e.type == "delta" for e in events[:-1])
    assert "".join(e.text for e in events[:-1]) == events[-1].response.text and events[-1].response.text


def test_list_objectives(server, stub):
    names = {o.name for o in stub.ListObjectives(pb.ListObjectivesRequest(), metadata=metadata(server)).objectives}
    assert {"relevance", "verbosity", "harmlessness", "helpfulness", "policy_compliance", "topic_safety"} <= names


@pytest.mark.parametrize(
    ("request_fields", "key", "code", "field"),
    [
        ({"prompt": "hi"}, "alk_nope", grpc.StatusCode.UNAUTHENTICATED, None),
        ({"prompt": "hi", "max_tokens": 100000}, None, grpc.StatusCode.INVALID_ARGUMENT, "max_tokens"),
        (
            {"prompt": "hi", "preference_vector": {"wit": 1.0}, "search": pb.SearchSpec(strategy="best_of_n")},
            None,
            grpc.StatusCode.INVALID_ARGUMENT,
            "preference_vector",
        ),
        ({"prompt": "hi", "stream": True}, None, grpc.StatusCode.INVALID_ARGUMENT, "stream"),
        ({"prompt": "word " * 1500, "max_tokens": 16}, None, grpc.StatusCode.INVALID_ARGUMENT, "prompt"),
    ],
)
def test_errors_carry_the_mapped_status_and_the_field(server, stub, request_fields, key, code, field):
    with pytest.raises(grpc.RpcError) as err:
        stub.Generate(pb.GenerateRequest(**request_fields), metadata=metadata(server, key), timeout=120)
    assert err.value.code() == code, err.value.details()
    assert field_of(err.value) == field
    if field is None:
        stream_request = pb.GenerateRequest(**{k: v for k, v in request_fields.items() if k != "stream"})
        with pytest.raises(grpc.RpcError) as streamed:
            list(stub.GenerateStream(stream_request, metadata=metadata(server, key), timeout=120))
        assert streamed.value.code() == code


def test_a_cancelled_stream_leaves_no_engine_request(server, stub):
    request = pb.GenerateRequest(
        prompt="Write a very long story about a dragon.", max_tokens=256, temperature=1.0, seed=3
    )
    call = stub.GenerateStream(request, metadata=metadata(server), timeout=300)
    for i, _ in enumerate(call):
        if i == 2:
            break
    assert server.wait_metric("aligner_engine_running_requests", lambda v: v >= 1, timeout=5) >= 1
    call.cancel()
    assert server.wait_metric("aligner_engine_running_requests", lambda v: v == 0, timeout=10) == 0


def test_aligner_generate_against_the_server_over_http_and_grpc(server):
    import json
    import subprocess
    import sys

    def cli(*args):
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "serve.cli",
                "generate",
                QUESTION,
                "--seed",
                "5",
                "--max-tokens",
                "16",
                "--vector",
                "relevance=1,verbosity=-0.5",
                "--strategy",
                "best_of_n",
                "--n",
                "2",
                "--key",
                server.key,
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )

    http_port, grpc_port = server.port, server.config["grpc_port"]
    over_http = cli("--server", f"127.0.0.1:{http_port}{server.prefix}", "--json")
    over_grpc = cli("--server", f"127.0.0.1:{grpc_port}", "--grpc", "--json")
    assert over_http.returncode == 0 and over_grpc.returncode == 0, over_http.stderr + over_grpc.stderr
    http_answer, grpc_answer = json.loads(over_http.stdout), json.loads(over_grpc.stdout)
    assert http_answer["text"] == grpc_answer["text"] and http_answer["scores"] == grpc_answer["scores"]
    streamed = cli("--server", f"127.0.0.1:{grpc_port}", "--grpc", "--stream")
    assert streamed.returncode == 0 and streamed.stdout.strip() == http_answer["text"].strip()
    plain = cli("--server", f"127.0.0.1:{http_port}")
    assert plain.stdout.strip() == http_answer["text"].strip() and "aligner: scores:" in plain.stderr
    for transport in (("--server", f"127.0.0.1:{http_port}"), ("--server", f"127.0.0.1:{grpc_port}", "--grpc")):
        bad = cli(*transport, "--max-tokens", "100000")
        assert bad.returncode == 2 and "max_tokens" in bad.stderr, bad.stderr
        bad_stream = cli(*transport, "--max-tokens", "100000", "--stream")
        assert bad_stream.returncode == 2 and "max_tokens" in bad_stream.stderr, bad_stream.stderr


def test_the_standard_health_service_reports_serving(server):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{server.config['grpc_port']}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        meta = (("application", server.app),)
        for service in ("", "aligner.v1.Aligner"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), metadata=meta, timeout=60)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
        unknown = health.Check(health_pb2.HealthCheckRequest(service="nope.v1.Nope"), metadata=meta, timeout=60)
        assert unknown.status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        first = next(health.Watch(health_pb2.HealthCheckRequest(service=""), metadata=meta, timeout=60))
        assert first.status == health_pb2.HealthCheckResponse.SERVING


def test_a_search_past_its_deadline_fails_with_deadline_exceeded(server, stub):
    request = pb.GenerateRequest(
        prompt="Write a long story about a dragon.",
        max_tokens=128,
        temperature=1.0,
        search=pb.SearchSpec(strategy="best_of_n", n=2),
        budget=pb.Budget(deadline_ms=1),
        preference_vector={"relevance": 1.0},
    )
    with pytest.raises(grpc.RpcError) as err:
        stub.Generate(request, metadata=metadata(server), timeout=120)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, err.value.details()
    assert dict(err.value.trailing_metadata())["aligner-error-code"] == "deadline_exceeded"
    with server.client() as client:
        over_http = client.post("/v1/generate", json=to_plain(request), headers=server.headers())
    assert over_http.status_code == 504 and over_http.json()["error"]["code"] == "deadline_exceeded"


def test_a_client_deadline_ends_the_call_and_cancels_the_search(server, stub):
    _, key = server.store.create_key("grpc-impatient")  # its own tenant, so the cancellation count is its own
    before = server.metric_sum("aligner_requests_total", tenant="grpc-impatient", status="cancelled")
    request = pb.GenerateRequest(
        prompt="Write a very long story about a dragon.",
        max_tokens=256,
        temperature=1.0,
        seed=2,
        search=pb.SearchSpec(strategy="best_of_n", n=4),
        preference_vector={"verbosity": 1.0},
    )
    with pytest.raises(grpc.RpcError) as err:
        stub.Generate(request, metadata=metadata(server, key), timeout=2.5)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # Four 256-token candidates take far longer than 2.5 s on two cores: the proxy cancelled the
    # call, which cancelled the search and aborted its engine requests.
    assert server.wait_metric("aligner_engine_running_requests", lambda v: v == 0, timeout=5) == 0
    assert (
        server.wait_metric("aligner_requests_total", lambda v: v > before, tenant="grpc-impatient", status="cancelled")
        == before + 1
    )


def test_a_burst_beyond_the_queue_gets_resource_exhausted_with_retry_after(server, stub):
    import concurrent.futures

    def generate(seed):
        request = pb.GenerateRequest(
            prompt="Write a long story about a dragon.", max_tokens=48, temperature=1.0, seed=seed
        )
        try:
            stub.Generate(request, metadata=metadata(server), timeout=300)
            return "OK", {}
        except grpc.RpcError as exc:
            return exc.code().name, dict(exc.trailing_metadata() or ())

    with concurrent.futures.ThreadPoolExecutor(14) as pool:
        outcomes = list(pool.map(generate, range(14)))
    codes = [code for code, _ in outcomes]
    assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}, codes
    assert codes.count("RESOURCE_EXHAUSTED") >= 1 and codes.count("OK") >= 4, codes
    for code, trailers in outcomes:
        if code == "RESOURCE_EXHAUSTED":
            assert trailers["aligner-error-code"] == "overloaded" and int(trailers["retry-after"]) >= 1


def test_server_reflection_lists_both_services_and_health(server):
    """What `grpcurl list` asks: the proxy's reflection service names every service it serves."""
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{server.config['grpc_port']}") as channel:
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = list(
            reflection.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=60
            )
        )
        names = {s.name for s in replies[0].list_services_response.service}
        assert {"aligner.v1.Aligner", "aligner.v1.Admin", "grpc.health.v1.Health"} <= names, names
        described = list(
            reflection.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol="aligner.v1.Admin")]), timeout=60
            )
        )
        assert described[0].file_descriptor_response.file_descriptor_proto, "the contract is described"
