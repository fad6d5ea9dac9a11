"""proto/aligner/v1 ⇄ the JSON contract: the stubs are current, names mirror the contract, every
field converts both ways."""

from pathlib import Path

import pytest
from google.protobuf.json_format import ParseDict

from aligner.checks import Check
from aligner.contract import (
    AlignRequest,
    AlignResponse,
    Budget,
    CandidateInfo,
    ChatMessage,
    SafetyInfo,
    SearchSpec,
    Usage,
)
from aligner.errors import ErrorInfo, InvalidRequest
from aligner.events import Chunk, Delta, Done
from proto.aligner.v1 import aligner_pb2 as pb
from serve.gateway.messages import ObjectiveInfo
from serve.ingress import grpc_convert

FULL_REQUEST = {
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}],
    "preferences": "concise",
    "preference_vector": {"relevance": 1.0, "verbosity": -0.5},
    "combination": "and",
    "references": {"relevance": 0.5},
    "constraints": {"harmlessness": {"min": 0.8}},
    "checks": [
        {"id": "length_constraints:number_words", "relation": "less than", "num_words": 60},
        {"id": "keywords:forbidden_words", "forbidden_words": ["very", "really"]},
        {"id": "punctuation:no_comma"},
    ],
    "search": {"strategy": "beam", "beam_width": 2, "expansions": 3, "chunk_tokens": 8, "prune": 0.25},
    "budget": {"max_candidate_tokens": 4096, "max_reward_calls": 64, "deadline_ms": 30000},
    "return_candidates": True,
    "max_tokens": 64,
    "temperature": 0.8,
    "top_p": 0.9,
    "seed": 2**62,
    "stop": ["\n\n", "END"],
    "return_prompt": True,
}

FULL_RESPONSE = AlignResponse(
    id="abc",
    model="m",
    text="Blue.",
    finish_reason="stop",
    usage=Usage(
        prompt_tokens=30,
        completion_tokens=3,
        generated_tokens=40,
        candidate_tokens=36,
        prefill_tokens=90,
        candidates=4,
        wall_time_s=1.25,
        engine_requests=5,
        reward_calls=4,
        rounds=2,
        stopped_by="deadline_ms",
        stage_seconds={"generate": 1.0, "score": 0.2, "select": 0.05},
    ),
    scores={"relevance": 0.7, "verbosity": 0.1},
    combined_score=0.42,
    feasible=True,
    checks=[True, False],
    threshold_met=False,
    candidates=[
        CandidateInfo(
            text="Blue.",
            tokens=3,
            finish_reason="stop",
            scores={"relevance": 0.7},
            combined_score=0.42,
            feasible=True,
            checks=[True, False],
        ),
        CandidateInfo(text="Red", tokens=2, finish_reason="length"),
    ],
    prompt=[ChatMessage(role="system", content="S"), ChatMessage(role="user", content="Name a colour.")],
    safety=SafetyInfo(version=3, verdict="passed", scores={"harmlessness": 0.99}),
)
FULL_RESPONSE_JSON = FULL_RESPONSE.model_dump(exclude_none=True)


def test_committed_stubs_are_the_ones_the_proto_generates(tmp_path):
    from proto.build import GENERATED, PROTO, ROOT, generate

    fresh = generate(tmp_path)
    for path in fresh:
        committed = ROOT / PROTO.parent / path.name
        assert path.read_text() == committed.read_text(), f"{committed} is stale: run `python -m proto.build`"
    assert {p.name for p in fresh} == set(GENERATED)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (AlignRequest, pb.GenerateRequest),
        (SearchSpec, pb.SearchSpec),
        (Budget, pb.Budget),
        (ChatMessage, pb.ChatMessage),
        (AlignResponse, pb.AlignResponse),
        (Usage, pb.Usage),
        (CandidateInfo, pb.CandidateInfo),
        (SafetyInfo, pb.SafetyInfo),
        (Check, pb.Check),
    ],
    ids=lambda x: getattr(x, "__name__", "") or x.DESCRIPTOR.name,
)
def test_messages_mirror_the_json_contract_name_for_name(model, message):
    assert set(message.DESCRIPTOR.fields_by_name) == set(model.model_fields)


def test_a_json_body_parses_into_the_proto_and_back_to_the_same_request():
    message = ParseDict(FULL_REQUEST, pb.GenerateRequest())
    data = grpc_convert.generate_request(message, streaming=False)
    assert data == {**FULL_REQUEST, "stream": False}
    assert AlignRequest.parse(data) == AlignRequest.parse({**FULL_REQUEST, "stream": False})


def test_unset_fields_stay_unset_and_zero_is_not_unset():
    data = grpc_convert.generate_request(pb.GenerateRequest(prompt="hi", seed=0, temperature=0.0), streaming=True)
    assert data == {"prompt": "hi", "seed": 0, "temperature": 0.0, "stream": True}
    only_strategy = pb.GenerateRequest(prompt="hi", search=pb.SearchSpec(strategy="best_of_n"))
    assert grpc_convert.generate_request(only_strategy, streaming=False)["search"] == {"strategy": "best_of_n"}


def test_stream_must_match_the_rpc():
    with pytest.raises(InvalidRequest) as err:
        grpc_convert.generate_request(pb.GenerateRequest(prompt="hi", stream=True), streaming=False)
    assert err.value.field == "stream" and "GenerateStream" in err.value.message


def test_every_response_field_converts_to_the_proto_and_back_to_the_same_json():
    message = grpc_convert.align_response(FULL_RESPONSE)
    assert grpc_convert.to_plain(message) == FULL_RESPONSE_JSON
    minimal = AlignResponse(
        id="x",
        model="m",
        text="",
        finish_reason="content_filter",
        usage=Usage(prompt_tokens=1, generated_tokens=0, wall_time_s=0.0),
    )
    assert grpc_convert.to_plain(grpc_convert.align_response(minimal)) == minimal.model_dump(exclude_none=True)


def test_stream_events_convert_like_the_sse_events():
    for event, sse in (
        (Delta("Bl"), {"type": "delta", "text": "Bl"}),
        (Chunk("ue", scores={"relevance": 0.5}), {"type": "chunk", "text": "ue", "scores": {"relevance": 0.5}}),
        (Done(FULL_RESPONSE), {"type": "done", "response": FULL_RESPONSE_JSON}),
    ):
        assert grpc_convert.to_plain(grpc_convert.generate_event(event)) == sse == event.to_dict()


def test_a_value_of_the_wrong_type_names_the_field():
    with pytest.raises(InvalidRequest) as err:
        grpc_convert.from_plain({"max_tokens": "many"}, pb.GenerateRequest())
    assert err.value.field == "max_tokens"
    with pytest.raises(InvalidRequest) as err:
        grpc_convert.from_plain({"bogus": 1}, pb.GenerateRequest())
    assert err.value.field == "bogus"


def test_objectives_convert():
    items = [
        {"name": "relevance", "description": "d", "low": 0.0, "high": 1.0, "reference": None},
        {"name": "rm", "description": "e", "low": -5.0, "high": 5.0, "reference": 0.5},
    ]
    plain = grpc_convert.to_plain(grpc_convert.objectives([ObjectiveInfo(**o) for o in items]))
    assert plain == {"objectives": [{k: v for k, v in o.items() if v is not None} for o in items]}


def test_the_proto_file_is_the_only_contract():
    protos = sorted(
        str(p.relative_to(Path(__file__).resolve().parents[4]))
        for p in (Path(__file__).resolve().parents[4] / "proto").rglob("*.proto")
    )
    assert protos == ["proto/aligner/v1/aligner.proto"]


class FakeGrpcContext:
    """Records what a method sets on Ray Serve's gRPC context (the mapping is under test, not Ray)."""

    def __init__(self):
        self.code = self.details = None
        self.trailers = []

    def set_code(self, code):
        self.code = code

    def set_details(self, details):
        self.details = details

    def set_trailing_metadata(self, trailers):
        self.trailers = list(trailers)


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"code": "invalid_argument", "field": "max_tokens", "message": "max_tokens: too many"}, "INVALID_ARGUMENT"),
        ({"code": "unauthenticated", "message": "invalid key"}, "UNAUTHENTICATED"),
        ({"code": "permission_denied", "message": "admin only"}, "PERMISSION_DENIED"),
        ({"code": "version_conflict", "message": "changed"}, "ABORTED"),
        ({"code": "overloaded", "message": "full", "retry_after_s": 2}, "RESOURCE_EXHAUSTED"),
        ({"code": "engine_unavailable", "message": "dead"}, "UNAVAILABLE"),
        ({"code": "deadline_exceeded", "message": "late"}, "DEADLINE_EXCEEDED"),
        ({"code": "something_new", "message": "?"}, "INTERNAL"),
    ],
)
def test_errors_map_to_grpc_status_with_the_field_and_trailers(payload, code):
    import grpc
    from google.rpc import error_details_pb2, status_pb2

    from serve.ingress.grpc_methods import set_error

    context = FakeGrpcContext()
    set_error(context, ErrorInfo(**payload))
    assert context.code == grpc.StatusCode[code] and context.details == payload["message"]
    trailers = dict(context.trailers)
    assert trailers["aligner-error-code"] == payload["code"]
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    assert status.code == grpc.StatusCode[code].value[0] and status.message == payload["message"]
    fields = []
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        assert detail.Unpack(bad)
        fields += [v.field for v in bad.field_violations]
    assert fields == ([payload["field"]] if "field" in payload else [])
    assert trailers.get("retry-after") == ("2" if "retry_after_s" in payload else None)
