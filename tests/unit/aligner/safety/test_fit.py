"""A safety config must fit the model (issue 19, item 6): refused at PUT and activate when its composed
operator section leaves less than the configured share of max_model_len; at request time an overflow the
config causes is `invalid_config`, not the client's `prompt_too_long`.

The tokenizer and its chat template are the real policy model's (SmolLM2); the generator is the fake (no
request here reaches an engine).
"""

import asyncio

import pytest

from aligner.contract import AlignRequest
from aligner.core import Aligner
from aligner.errors import ConfigError, ErrorInfo, InvalidRequest, NotFound, PromptTooLong, Reported
from aligner.prompting import ModelProfile
from aligner.safety.config import MAX_TEXT_CHARS, SafetyConfig
from aligner.safety.fit import PROBE, check_config_fits, config_prompt_tokens
from aligner.tenants import TenantStore
from serve.gateway.admin import AdminService
from tests.fakes import FakeGenerator

# 20,000 characters of policy: about 4,000 tokens, twice the test model's window.
HUGE = SafetyConfig(text=("Never discuss the weather, sports or any competitor's products. " * 400)[:MAX_TEXT_CHARS])
SHORT = SafetyConfig(text="Only talk about cooking.")


@pytest.fixture
def aligner(tokenizer):
    generator = FakeGenerator(max_model_len=2048)
    generator.tokenizer = tokenizer
    return Aligner(generator, profile=ModelProfile(), safety_min_free_context=0.5)


def test_the_configs_cost_is_the_shortest_requests_prompt_under_it(aligner):
    used = check_config_fits(aligner, SHORT)
    assert used == len(aligner.prepare(PROBE, safety=SHORT).token_ids) == config_prompt_tokens(aligner, SHORT)
    assert used > len(aligner.prepare(PROBE).token_ids)


def test_a_config_that_leaves_less_than_the_share_is_refused_naming_text(aligner):
    with pytest.raises(InvalidRequest) as err:
        check_config_fits(aligner, HUGE)
    assert err.value.field == "text" and err.value.code == "invalid_argument"
    assert "of the model's 2048 tokens" in err.value.reason and "at least 1024" in err.value.reason
    # The share is the server's: a config that fits under a smaller one is refused under a larger one.
    medium = SafetyConfig(text="Be polite and brief. " * 150)  # about 600 tokens: leaves more than half
    assert check_config_fits(aligner, medium) < 1024
    aligner.safety_min_free_context = 0.9
    with pytest.raises(InvalidRequest, match="at least 1844"):
        check_config_fits(aligner, medium)


def request(**fields):
    return AlignRequest.parse({"prompt": "How do I boil an egg?", "max_tokens": 64, **fields})


def test_an_overflow_the_config_causes_is_invalid_config_not_the_clients_prompt_too_long(aligner):
    """Failed before this fix: every request of the tenant was `prompt_too_long` naming its `prompt`."""
    with pytest.raises(ConfigError) as err:
        asyncio.run(aligner.start(request(), safety=HUGE, safety_version=3))
    assert err.value.code == "invalid_config" and "safety config (version 3) does not fit" in err.value.message
    assert aligner.engine.requests == []


def test_an_overflow_the_client_causes_stays_prompt_too_long(aligner):
    long_prompt = request(prompt="Tell me about eggs. " * 600)
    with pytest.raises(PromptTooLong) as err:
        asyncio.run(aligner.start(long_prompt, safety=SHORT))
    assert err.value.code == "prompt_too_long"
    with pytest.raises(PromptTooLong):  # and without a config, as before
        asyncio.run(aligner.start(long_prompt))


def test_prompt_too_long_names_the_field_the_client_sent(aligner):
    """Failed before this fix: a request that sent `prompt` was told its `messages` were too long."""
    text = "Tell me about eggs. " * 600
    with pytest.raises(PromptTooLong) as as_prompt:
        asyncio.run(aligner.start(request(prompt=text)))
    assert as_prompt.value.field == "prompt"
    as_messages = AlignRequest.parse({"messages": [{"role": "user", "content": text}], "max_tokens": 64})
    with pytest.raises(PromptTooLong) as err:
        asyncio.run(aligner.start(as_messages))
    assert err.value.field == "messages"


# --- the admin service: PUT and activate ask a model replica (here: the same check, in process) ---


@pytest.fixture
def admin_service(tmp_path, aligner):
    store = TenantStore.open(f"sqlite:///{tmp_path / 'tenants.db'}")

    async def objectives():
        return []

    async def fits(config):  # what AlignerServer.check_safety_config answers
        try:
            check_config_fits(aligner, config)
        except InvalidRequest as exc:
            return ErrorInfo.of(exc)
        return None

    yield AdminService(store, objectives, fits=fits), store, store.create_key("ops", admin=True)[0]
    store.close()


def test_put_refuses_a_config_too_long_for_the_model_and_stores_nothing(admin_service):
    """Failed before this fix: the 20,000-character config was stored and made active."""
    service, store, admin = admin_service
    body = {"config": HUGE.model_dump(), "expected_version": None}
    with pytest.raises(Reported) as err:  # as the replica's answer arrives: an ErrorInfo, raised
        asyncio.run(service.put_safety_config(admin, "acme", body))
    assert (err.value.info.code, err.value.info.field) == ("invalid_argument", "text")
    assert store.get_safety_config("acme") is None
    short = {"config": SHORT.model_dump(), "expected_version": None}
    assert asyncio.run(service.put_safety_config(admin, "acme", short))["version"] == 1


def test_activate_refuses_a_stored_version_too_long_for_the_model(admin_service):
    service, store, admin = admin_service
    # A version stored before the check (or under a longer context): written to the store directly.
    store.set_safety_config("acme", HUGE, expected_version=None)
    store.set_safety_config("acme", SHORT, expected_version=1)
    with pytest.raises(Reported) as err:
        asyncio.run(service.activate_safety_config(admin, "acme", {"version": 1, "expected_version": 2}))
    assert err.value.info.field == "text" and store.get_safety_config("acme").version == 2
    with pytest.raises(NotFound):  # an unknown version is still the store's NotFound
        asyncio.run(service.activate_safety_config(admin, "acme", {"version": 9, "expected_version": 2}))


def test_activate_refuses_a_stored_version_whose_threshold_rests_on_a_requests_own_objective(admin_service):
    """Found by review: only PUT refused a threshold on `checks`; a version stored before that rule came
    back through a rollback, and every request of the tenant without checks failed with a 500."""
    service, store, admin = admin_service
    store.set_safety_config("acme", SafetyConfig(text="Be kind.", thresholds={"checks": 1.0}), expected_version=None)
    store.set_safety_config("acme", SHORT, expected_version=1)
    with pytest.raises(InvalidRequest) as err:
        asyncio.run(service.activate_safety_config(admin, "acme", {"version": 1, "expected_version": 2}))
    assert err.value.field == "thresholds.checks" and store.get_safety_config("acme").version == 2
