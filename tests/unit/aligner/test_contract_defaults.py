"""A default above a configured limit becomes the limit; only a value the client sent is refused."""

import pytest

from aligner.contract import AlignRequest, SearchLimits
from aligner.errors import InvalidRequest
from aligner.tenants.policy import TenantPolicy
from aligner.tenants.policy_apply import parse_request

LOW = SearchLimits(max_tokens=128)


def test_a_request_without_max_tokens_gets_the_configured_maximum():
    # Most OpenAI clients send no max_tokens: the contract's default (256) is above this server's 128.
    request = AlignRequest.parse({"prompt": "hi"}, LOW)
    assert request.max_tokens == 128 and request.shape().max_tokens == 128
    assert "max_tokens" not in request.model_fields_set  # the client still sent none


def test_an_explicit_max_tokens_above_the_maximum_is_refused_naming_it():
    with pytest.raises(InvalidRequest) as err:
        AlignRequest.parse({"prompt": "hi", "max_tokens": 256}, LOW)
    assert err.value.field == "max_tokens" and "128" in err.value.reason
    assert AlignRequest.parse({"prompt": "hi", "max_tokens": 128}, LOW).max_tokens == 128
    assert AlignRequest.parse({"prompt": "hi", "max_tokens": 5}, LOW).max_tokens == 5


def test_a_default_within_the_maximum_is_kept():
    assert AlignRequest.parse({"prompt": "hi"}, SearchLimits(max_tokens=4096)).max_tokens == 256
    assert AlignRequest.parse({"prompt": "hi"}).max_tokens == 256


def test_the_lowered_default_is_what_the_search_is_priced_with():
    # best_of_n n=64 × 256 default tokens is 16384 tokens; under max_tokens 128 it is priced at 8192.
    limits = SearchLimits(max_tokens=128, max_search_tokens=8192)
    data = {"prompt": "hi", "preference_vector": {"helpfulness": 1}, "search": {"strategy": "best_of_n", "n": 64}}
    assert AlignRequest.parse(data, limits).max_tokens == 128


def test_search_defaults_above_the_limits_become_the_limits():
    limits = SearchLimits(beam_width=1, expansions=2, chunk_tokens=8)
    data = {"prompt": "hi", "preference_vector": {"helpfulness": 1}, "search": {"strategy": "beam"}}
    search = AlignRequest.parse(data, limits).search
    assert (search.beam_width, search.expansions, search.chunk_tokens) == (1, 2, 8)
    with pytest.raises(InvalidRequest) as err:
        AlignRequest.parse({**data, "search": {"strategy": "beam", "beam_width": 2}}, limits)
    assert err.value.field == "search.beam_width"


def test_a_tenants_request_without_max_tokens_gets_the_lower_of_the_servers_and_the_tenants_maximum():
    policy = TenantPolicy.model_validate({"caps": {"max_tokens": 64}})
    assert parse_request({"prompt": "hi"}, LOW, policy).max_tokens == 64
    assert parse_request({"prompt": "hi"}, LOW, None).max_tokens == 128
    with pytest.raises(InvalidRequest) as err:
        parse_request({"prompt": "hi", "max_tokens": 100}, LOW, policy)
    assert err.value.field == "max_tokens"
