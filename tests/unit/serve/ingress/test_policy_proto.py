"""The gRPC messages of tenants' policies mirror the JSON contract's TenantPolicy field for field, and a
policy survives the trip through them unchanged (what the Admin RPCs do with it)."""

from aligner.contract import parse_model
from aligner.tenants import PolicyCaps, PolicyDefaults, TenantPolicy
from proto.aligner.v1 import aligner_pb2 as pb
from serve.ingress.grpc_convert import from_plain, to_plain


def test_every_field_of_the_policy_models_is_in_its_message():
    for model, message in (
        (PolicyCaps, pb.PolicyCaps),
        (PolicyDefaults, pb.PolicyDefaults),
        (TenantPolicy, pb.TenantPolicy),
    ):
        assert {f.name for f in message.DESCRIPTOR.fields} == set(model.model_fields), message.DESCRIPTOR.name


def test_a_policy_round_trips_through_the_proto():
    policy = parse_model(
        TenantPolicy,
        {
            "allowed_strategies": ["best_of_n"],
            "allowed_objectives": ["helpfulness"],
            "caps": {"n": 4, "max_search_tokens": 10_000, "deadline_ms": 2000},
            "defaults": {
                "search": {"strategy": "best_of_n", "n": 2},
                "preference_vector": {"helpfulness": 1.0},
                "budget": {"max_reward_calls": 100},
                "max_tokens": 32,
            },
            "requests_per_minute": 600,
            "candidate_tokens_per_minute": 2**40,  # beyond int32
            "max_concurrent_requests": 4,
            "weight": 2.5,
            "priority": 3,
        },
    )
    message = from_plain(policy.model_dump(mode="json"), pb.TenantPolicy())
    assert parse_model(TenantPolicy, to_plain(message)) == policy
    empty = from_plain(TenantPolicy().model_dump(mode="json"), pb.TenantPolicy())
    assert parse_model(TenantPolicy, to_plain(empty)) == TenantPolicy()
