"""serve/deployments/aligner_server.py on the shared engine, without Ray: what the model replica sends
back through the DeploymentHandle is typed (a result naming the replica, an ErrorInfo instead of an
exception, an acknowledgement before a stream's events), and a tenant key sees its safety config only
as a placeholder."""

import pytest

from aligner.contract import AlignRequest, AlignResponse
from aligner.errors import ErrorInfo
from aligner.events import Chunk, Delta, Done
from aligner.safety.config import SafetyConfig
from serve.deployments.aligner_server import AlignerServer
from serve.gateway.messages import Accepted, ModelInfo, ReplicaResult, TenantContext

SAFETY = "Never name a colour."
SHORT = {"prompt": "What is the capital of France?", "temperature": 0, "max_tokens": 8}
UNKNOWN_OBJECTIVE = {
    **SHORT,
    "temperature": 0.7,
    "preference_vector": {"nope": 1.0},
    "search": {"strategy": "best_of_n", "n": 2},
}


@pytest.fixture(scope="module")
def replica(aligner, loop_thread):
    server = AlignerServer.sync_init({}, aligner=aligner)
    loop_thread.run(server.start())
    return server


def collect(run, stream) -> list:
    async def items():
        return [item async for item in stream]

    return run(items())


def test_an_answer_is_a_result_naming_the_replica(replica, run):
    result = run(replica.generate(AlignRequest.parse(SHORT)))
    assert isinstance(result, ReplicaResult) and result.error is None and result.replica == replica.replica
    assert isinstance(result.response, AlignResponse) and "Paris" in result.response.text


def test_an_error_comes_back_as_error_info_with_its_field(replica, run):
    result = run(replica.generate(AlignRequest.parse(UNKNOWN_OBJECTIVE)))
    assert result.response is None and isinstance(result.error, ErrorInfo)
    assert (result.error.code, result.error.field) == ("invalid_argument", "preference_vector")
    with pytest.raises(Exception) as raised:
        result.unwrap()
    assert ErrorInfo.of(raised.value) == result.error


def test_a_stream_is_acknowledged_then_streams_the_core_events(replica, run):
    items = collect(run, replica.stream(AlignRequest.parse({**SHORT, "stream": True})))
    assert isinstance(items[0], Accepted) and items[0].replica == replica.replica
    assert 0 <= items[0].service_s < 60  # phase 1's seconds on the replica's clock: the ingress subtracts them
    assert isinstance(items[-1], Done) and all(isinstance(i, (Delta, Chunk)) for i in items[1:-1])
    assert "".join(i.text for i in items[1:-1]) == items[-1].response.text


def test_a_refused_stream_is_one_error_and_no_acknowledgement(replica, run):
    items = collect(run, replica.stream(AlignRequest.parse({**UNKNOWN_OBJECTIVE, "stream": True})))
    assert len(items) == 1 and isinstance(items[0], ErrorInfo) and items[0].field == "preference_vector"
    too_long = collect(run, replica.stream(AlignRequest.parse({"prompt": "word " * 2500, "max_tokens": 8})))
    assert [i.code for i in too_long] == ["prompt_too_long"]


@pytest.mark.parametrize("reveal", [False, True], ids=["tenant", "admin"])
def test_only_an_admin_reads_the_config_in_the_returned_prompt(replica, run, reveal):
    tenant = TenantContext(version=3, config=SafetyConfig(text=SAFETY), reveal=reveal)
    response = run(replica.generate(AlignRequest.parse({**SHORT, "return_prompt": True}), tenant)).unwrap()
    system = response.prompt[0].content
    assert (SAFETY in system) is reveal
    assert ("[tenant safety config, version 3]" in system) is not reveal
    assert response.safety is not None and response.safety.version == 3


def test_info_and_readiness_are_typed(replica, run):
    info = replica.info()
    assert isinstance(info, ModelInfo) and info.max_model_len == replica.engine.max_model_len
    assert "relevance" in {o.name for o in info.objectives}
    ready = run(replica.ready())
    assert ready.ready is True and ready.model == info.model
