"""A tenant's policy: its validation, and how it applies to a request (pure logic, no store).

The effective limits are the server's, each lowered to the tenant's cap; defaults fill what a request
omits, each at most its cap; a request beyond a tenant's cap is refused naming the field and the
tenant's limit, one beyond the server's limits as without a policy.
"""

from __future__ import annotations

import pytest

from aligner.contract import DEFAULT_LIMITS, AlignRequest, SearchLimits, parse_model
from aligner.errors import InvalidRequest
from aligner.tenants import PolicyCaps, TenantPolicy, effective_limits, parse_request
from aligner.tenants.policy import REPLICA_LIMITS, STORED

SERVER = SearchLimits(n=8, beam_width=4, expansions=4, max_tokens=256, max_candidates=64)
PROMPT = {"prompt": "Name a colour."}
DIRECTION = {"preference_vector": {"helpfulness": 1.0}}


def policy(**data) -> TenantPolicy:
    return parse_model(TenantPolicy, data)


def refused(data, the_policy, server=SERVER) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as err:
        parse_request(data, server, the_policy)
    return err.value


# -- the model --------------------------------------------------------------------------------------


def test_every_server_limit_is_a_tenant_cap_with_its_bounds():
    checked_at_parse = set(SearchLimits.model_fields) - REPLICA_LIMITS
    assert checked_at_parse <= set(PolicyCaps.model_fields)
    assert set(PolicyCaps.model_fields) - checked_at_parse == {"deadline_ms"}
    for name, field in PolicyCaps.model_fields.items():
        assert field.default is None and field.description, name


@pytest.mark.parametrize(
    "data, field",
    [
        ({"caps": {"n": 0}}, "caps.n"),
        ({"caps": {"n": "4"}}, "caps.n"),  # strict: no coercion of a string
        ({"caps": {"n": 4.0}}, "caps.n"),
        ({"caps": {"n": True}}, "caps.n"),
        ({"caps": {"nn": 4}}, "caps.nn"),  # a typo is not "no limit"
        ({"caps": {"deadline_ms": 0}}, "caps.deadline_ms"),
        ({"caps": {"deadline_ms": 3_600_001}}, "caps.deadline_ms"),
        ({"allowed_strategies": []}, "allowed_strategies"),
        ({"allowed_strategies": ["greedy"]}, "allowed_strategies[0]"),
        ({"allowed_strategies": ["beam", "beam"]}, "allowed_strategies[1]"),
        ({"allowed_objectives": ["bad name"]}, "allowed_objectives[0]"),
        ({"defaults": {"search": {"strategy": "greedy"}}}, "defaults.search.strategy"),
        ({"defaults": {"search": {"strategy": "beam", "n": 4}}}, "defaults.search.n"),
        ({"defaults": {"search": {"strategy": "best_of_n", "n": 65}}}, "defaults.search.n"),
        ({"defaults": {"search": {"strategy": "best_of_n", "n": "4"}}}, "defaults.search.n"),
        ({"defaults": {"preference_vector": {}}}, "defaults.preference_vector"),
        ({"defaults": {"preference_vector": {"helpfulness": 0.0}}}, "defaults.preference_vector"),
        ({"defaults": {"budget": {"deadline_ms": -1}}}, "defaults.budget.deadline_ms"),
        ({"defaults": {"max_tokens": 0}}, "defaults.max_tokens"),
        ({"allowed_strategies": ["sample"], "defaults": {"search": {"strategy": "beam"}}}, "defaults.search.strategy"),
        (
            {"allowed_objectives": ["harmlessness"], "defaults": {"preference_vector": {"helpfulness": 1.0}}},
            "defaults.preference_vector.helpfulness",
        ),
        ({"weight": 0}, "weight"),
        ({"weight": 1001}, "weight"),
        # Failed before the fix: a weight of 1e-300 overflowed the fair queue's counters for everyone.
        ({"weight": 1e-300}, "weight"),
        # Failed before the fix: accepted over HTTP, then unreadable over gRPC (int32 / int64 fields).
        ({"max_concurrent_requests": 2**31}, "max_concurrent_requests"),
        ({"requests_per_minute": 2**63}, "requests_per_minute"),
        ({"candidate_tokens_per_minute": 2**63}, "candidate_tokens_per_minute"),
        ({"defaults": {"max_tokens": 2**31}}, "defaults.max_tokens"),
        ({"priority": 10}, "priority"),
        ({"requests_per_minute": 0}, "requests_per_minute"),
        ({"max_concurrent_requests": -1}, "max_concurrent_requests"),
        ({"quota": 1}, "quota"),
    ],
)
def test_a_bad_policy_is_refused_naming_the_field(data, field):
    with pytest.raises(InvalidRequest) as err:
        policy(**data)
    assert err.value.field == field, err.value.message


def test_the_server_refuses_caps_above_its_limits_and_unserved_objectives():
    served = {"helpfulness", "harmlessness"}
    policy(caps={"n": 8}, allowed_objectives=["helpfulness"]).check_server(SERVER, served)
    with pytest.raises(InvalidRequest) as err:
        policy(caps={"n": 9}).check_server(SERVER, served)
    assert err.value.field == "caps.n" and "server's limit is 8" in err.value.message
    with pytest.raises(InvalidRequest) as err:
        policy(allowed_objectives=["helpfulness", "wit"]).check_server(SERVER, served)
    assert err.value.field == "allowed_objectives[1]" and "harmlessness, helpfulness" in err.value.message
    with pytest.raises(InvalidRequest) as err:
        policy(defaults={"preference_vector": {"wit": 1.0}}).check_server(SERVER, served)
    assert err.value.field == "defaults.preference_vector.wit"


def test_canonical_json_and_hash_are_stable():
    one = policy(caps={"n": 4}, weight=2)
    two = parse_model(TenantPolicy, {"weight": 2.0, "caps": {"n": 4}})
    assert one.canonical_json() == two.canonical_json() and one.content_hash() == two.content_hash()
    assert TenantPolicy.model_validate_json(one.canonical_json()) == one


# -- applying it ------------------------------------------------------------------------------------


def test_no_policy_and_the_empty_policy_are_the_server_limits_alone():
    data = {**PROMPT, **DIRECTION, "search": {"strategy": "best_of_n", "n": 8}, "max_tokens": 256}
    assert parse_request(data, SERVER, None) == AlignRequest.parse(data, SERVER)
    assert parse_request(data, SERVER, TenantPolicy()) == AlignRequest.parse(data, SERVER)
    assert effective_limits(SERVER, TenantPolicy()) is SERVER


def test_effective_limits_are_the_lower_of_server_and_tenant():
    limits = effective_limits(SERVER, policy(caps={"n": 4, "max_tokens": 1000, "max_search_tokens": 500}))
    assert (limits.n, limits.max_tokens, limits.max_search_tokens) == (4, 256, 500)
    assert limits.beam_width == SERVER.beam_width


@pytest.mark.parametrize(
    "data, field, words",
    [
        ({**PROMPT, **DIRECTION, "search": {"strategy": "best_of_n", "n": 6}}, "search.n", "at most 4 (n)"),
        ({**PROMPT, "max_tokens": 100}, "max_tokens", "at most 64 (max_tokens)"),
        (
            {**PROMPT, **DIRECTION, "search": {"strategy": "best_of_n", "n": 4}, "max_tokens": 64},
            "search",
            "at most 200 (max_search_tokens)",
        ),
        ({**PROMPT, "budget": {"deadline_ms": 6000}}, "budget.deadline_ms", "at most 5000 (caps.deadline_ms)"),
    ],
)
def test_a_request_beyond_its_tenants_caps_is_refused_naming_the_field_and_the_tenants_limit(data, field, words):
    capped = policy(caps={"n": 4, "max_tokens": 64, "max_search_tokens": 200, "deadline_ms": 5000})
    error = refused(data, capped)
    assert error.field == field and "the tenant's policy allows at most" in error.message, error.message
    assert words in error.message, error.message
    if field != "budget.deadline_ms":
        AlignRequest.parse(data, SERVER)  # within the server's own limits: only the tenant's cap refuses it


def test_a_request_beyond_the_servers_limits_gets_the_servers_error():
    capped = policy(caps={"n": 4})
    data = {**PROMPT, **DIRECTION, "search": {"strategy": "best_of_n", "n": 9}}
    error = refused(data, capped)
    with pytest.raises(InvalidRequest) as server_error:
        AlignRequest.parse(data, SERVER)
    assert error.message == server_error.value.message and "tenant" not in error.message


def test_other_errors_are_the_contracts_own():
    capped = policy(caps={"n": 4})
    for data in ({"prompt": "  "}, {**PROMPT, "max_tokens": "5"}, {**PROMPT, "search": "best_of_n"}, ["x"], None):
        with pytest.raises(InvalidRequest) as plain:
            AlignRequest.parse(data, SERVER)
        assert refused(data, capped).message == plain.value.message


def test_strategies_and_objectives_the_policy_does_not_allow_are_refused():
    narrow = policy(allowed_strategies=["best_of_n"], allowed_objectives=["helpfulness"])
    error = refused({**PROMPT, "search": {"strategy": "beam", "beam_width": 99}}, narrow)
    assert error.field == "search.strategy" and "allows only: best_of_n" in error.message
    assert refused(PROMPT, narrow).field == "search.strategy"  # the implicit `sample` too
    error = refused({**PROMPT, "search": {"strategy": "best_of_n"}, "preference_vector": {"harmlessness": 1}}, narrow)
    assert error.field == "preference_vector.harmlessness" and "allowed: helpfulness" in error.message
    error = refused(
        {**PROMPT, **DIRECTION, "search": {"strategy": "best_of_n"}, "constraints": {"harmlessness": {"min": 0}}},
        narrow,
    )
    assert error.field == "constraints.harmlessness"
    ok = parse_request({**PROMPT, **DIRECTION, "search": {"strategy": "best_of_n"}}, SERVER, narrow)
    assert ok.search.strategy == "best_of_n"


def test_defaults_fill_what_the_request_omits_and_never_override_it():
    defaults = policy(
        defaults={
            "search": {"strategy": "best_of_n", "n": 3},
            "preference_vector": {"helpfulness": 2.0},
            "budget": {"max_candidate_tokens": 500, "deadline_ms": 4000},
            "max_tokens": 32,
        }
    )
    got = parse_request(PROMPT, SERVER, defaults)
    assert got.search.strategy == "best_of_n" and got.search.n == 3
    assert got.preference_vector == {"helpfulness": 1.0}  # normalised, as a request's own
    assert (got.budget.max_candidate_tokens, got.budget.deadline_ms, got.max_tokens) == (500, 4000, 32)
    own = parse_request(
        {
            **PROMPT,
            "search": {"n": 5},  # the default's strategy, its own n
            "preference_vector": {"harmlessness": 1.0},
            "budget": {"deadline_ms": 100},
            "max_tokens": 8,
        },
        SERVER,
        defaults,
    )
    assert (own.search.strategy, own.search.n, own.preference_vector, own.max_tokens) == (
        "best_of_n",
        5,
        {"harmlessness": 1.0},
        8,
    )
    assert (own.budget.deadline_ms, own.budget.max_candidate_tokens) == (100, 500)
    other = parse_request({**PROMPT, "search": {"strategy": "sample"}}, SERVER, defaults)
    assert other.search.strategy == "sample"  # another strategy: the default's parameters do not apply


def test_a_contract_default_above_a_cap_becomes_the_cap():
    # The contract's own defaults: max_tokens 256 is above the cap, and no deadline means the cap.
    bare = parse_request(PROMPT, SERVER, policy(caps={"max_tokens": 16, "deadline_ms": 2000}))
    assert (bare.max_tokens, bare.budget.deadline_ms) == (16, 2000)
    # A strategy's own default (best_of_n's n is 4) above the tenant's cap becomes the cap, as above the server's.
    small = parse_request({**PROMPT, **DIRECTION, "search": {"strategy": "best_of_n"}}, SERVER, policy(caps={"n": 2}))
    assert small.search.n == 2
    # And a server whose limit was lowered after the policy was set.
    capped = policy(caps={"n": 4}, defaults={"search": {"strategy": "best_of_n", "n": 4}})
    lowered = parse_request({**PROMPT, **DIRECTION}, SERVER.model_copy(update={"n": 2}), capped)
    assert lowered.search.n == 2


@pytest.mark.parametrize(
    "data, field, words",
    [
        (
            {"caps": {"n": 4}, "defaults": {"search": {"strategy": "best_of_n", "n": 16}}},
            "defaults.search.n",
            "is 16 but caps.n is 4",
        ),
        ({"caps": {"max_tokens": 64}, "defaults": {"max_tokens": 100}}, "defaults.max_tokens", "caps.max_tokens is 64"),
        (
            {"caps": {"deadline_ms": 3000}, "defaults": {"budget": {"deadline_ms": 9000}}},
            "defaults.budget.deadline_ms",
            "caps.deadline_ms is 3000",
        ),
        (
            {"caps": {"beam_width": 2}, "defaults": {"search": {"strategy": "beam", "beam_width": 3}}},
            "defaults.search.beam_width",
            "caps.beam_width is 2",
        ),
        (
            {"allowed_strategies": ["sample", "best_of_n"], "defaults": {"search": {"strategy": "beam"}}},
            "defaults.search.strategy",
            "allowed_strategies does not allow",
        ),
    ],
)
def test_a_policy_whose_defaults_break_its_own_caps_is_refused(data, field, words):
    """Failed before this fix (all but the strategy): accepted, each default then lowered to the cap."""
    with pytest.raises(InvalidRequest) as err:
        policy(**data)
    assert err.value.field == field and words in err.value.message, err.value.message


def test_a_stored_version_is_read_back_as_it_was_set():
    """A version stored before the defaults were checked stays readable (its tenant's requests go on)."""
    content = '{"caps": {"n": 4}, "defaults": {"search": {"strategy": "best_of_n", "n": 16}}}'
    with pytest.raises(InvalidRequest):
        TenantPolicy.model_validate_json(content)
    stored = TenantPolicy.model_validate_json(content, context=STORED)
    assert parse_request({**PROMPT, **DIRECTION}, SERVER, stored).search.n == 4  # lowered to the cap, as before


def test_the_server_refuses_defaults_above_its_limits_and_a_default_search_its_caps_refuse():
    served = {"helpfulness", "harmlessness"}
    with pytest.raises(InvalidRequest) as err:
        policy(defaults={"search": {"strategy": "best_of_n", "n": 9}}).check_server(SERVER, served)
    assert err.value.field == "defaults.search.n" and "server's limit is 8 (search_limits.n)" in err.value.message
    with pytest.raises(InvalidRequest) as err:
        policy(defaults={"max_tokens": 300}).check_server(SERVER, served)
    assert err.value.field == "defaults.max_tokens" and "server's limit is 256" in err.value.message
    # best_of_n 8 x 256 default tokens is 2048 candidate tokens: every request that omits search and
    # max_tokens would be refused.
    greedy = policy(caps={"max_search_tokens": 1000}, defaults={"search": {"strategy": "best_of_n", "n": 8}})
    with pytest.raises(InvalidRequest) as err:
        greedy.check_server(SERVER, served)
    assert err.value.field == "defaults.search" and "search_limits.max_search_tokens" in err.value.message
    fits = policy(
        caps={"max_search_tokens": 1000}, defaults={"search": {"strategy": "best_of_n", "n": 8}, "max_tokens": 100}
    )
    fits.check_server(SERVER, served)


def test_the_request_dict_is_not_changed():
    data = {**PROMPT, "budget": {}}
    parse_request(data, SERVER, policy(caps={"deadline_ms": 10}, defaults={"max_tokens": 4}))
    assert data == {**PROMPT, "budget": {}}


def test_hostile_shapes_are_reported_by_the_contract_not_crashed_on():
    capped = policy(
        caps={"deadline_ms": 100, "n": 2}, defaults={"search": {"strategy": "best_of_n"}, **{"max_tokens": 8}}
    )
    for data, field in (
        ({**PROMPT, "budget": None}, "budget"),
        ({**PROMPT, "budget": {"deadline_ms": True}}, "budget.deadline_ms"),
        ({**PROMPT, "budget": {"deadline_ms": "9"}}, "budget.deadline_ms"),
        ({**PROMPT, "search": ["best_of_n"]}, "search"),
        ({**PROMPT, "search": {"strategy": 5}}, "search.strategy"),
        ({**PROMPT, **DIRECTION, "search": {"n": 10**30}}, "search.n"),
    ):
        assert refused(data, capped).field == field, data


def test_the_default_limits_are_untouched_by_a_policy():
    parse_request(PROMPT, DEFAULT_LIMITS, policy(caps={"n": 1}))
    assert DEFAULT_LIMITS == SearchLimits()


def test_a_refused_request_is_parsed_once_whatever_caps_the_tenant_lowered(monkeypatch):
    """Failed before this fix: parsed again under each lowered cap to find the one that refuses it (about
    13 parses for one request); now once, every cap checked against the parsed request."""
    parses = []
    parse = AlignRequest.parse.__func__

    def counted(cls, data, limits=DEFAULT_LIMITS):
        parses.append(limits)
        return parse(cls, data, limits)

    monkeypatch.setattr(AlignRequest, "parse", classmethod(counted))
    every_cap = {name: max(1, getattr(SERVER, name) - 1) for name in PolicyCaps.model_fields if name != "deadline_ms"}
    every_cap.update(max_search_tokens=200, max_tokens=64)
    data = {**PROMPT, **DIRECTION, "search": {"strategy": "best_of_n", "n": 4}, "max_tokens": 64}
    error = refused(data, policy(caps=every_cap))
    assert error.field == "search" and "at most 200 (max_search_tokens)" in error.message, error.message
    assert len(parses) == 1
    parses.clear()
    parse_request({**PROMPT, "max_tokens": 8}, SERVER, policy(caps=every_cap))  # admitted: once too
    assert len(parses) == 1


@pytest.mark.parametrize(
    "data, field, words",
    [
        ({**PROMPT, **DIRECTION, "search": {"strategy": "beam", "beam_width": 3}}, "search.beam_width", "(beam_width)"),
        ({"prompt": "x" * 41}, "prompt", "at most 40 (max_input_chars)"),
        (
            {"messages": [{"role": "user", "content": "x" * 30}], "preferences": "y" * 11},
            "messages",
            "(max_input_chars)",
        ),
        (
            {**PROMPT, **DIRECTION, "search": {"strategy": "beam", "beam_width": 2, "expansions": 2}, "max_tokens": 64},
            "search",
            "(max_candidates)",
        ),
    ],
)
def test_every_lowered_cap_is_checked_against_the_parsed_request(data, field, words):
    capped = policy(caps={"beam_width": 2, "max_input_chars": 40, "max_candidates": 3})
    AlignRequest.parse(data, SERVER)  # within the server's own limits
    error = refused(data, capped)
    assert error.field == field and words in error.message and "tenant's policy" in error.message, error.message
    at_the_cap = {"prompt": "x" * 40}
    assert parse_request(at_the_cap, SERVER, capped).prompt == "x" * 40
