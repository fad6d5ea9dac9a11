"""Every model replica of one build gets the same operator secret, so a tenant's marker, prompt and answer
do not depend on the replica (the gRPC/HTTP parity e2e test failed before this: 63 vs 62 prompt tokens)."""

from serve.app import shared_operator_secret


def test_without_a_secret_the_build_gives_every_replica_one_of_its_own_drawing(monkeypatch):
    monkeypatch.delenv("ALIGNER_OPERATOR_SECRET", raising=False)
    options = shared_operator_secret()
    secret = options["runtime_env"]["env_vars"]["ALIGNER_OPERATOR_SECRET"]
    assert len(secret) >= 32  # what the replica requires of a secret
    assert shared_operator_secret()["runtime_env"]["env_vars"]["ALIGNER_OPERATOR_SECRET"] != secret  # per build


def test_a_secret_in_the_environment_is_left_to_it(monkeypatch):
    monkeypatch.setenv("ALIGNER_OPERATOR_SECRET", "k" * 40)
    assert shared_operator_secret() == {}
