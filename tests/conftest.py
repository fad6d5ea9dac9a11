import os

import pytest

# vLLM and transformers are chatty at INFO; failures still show WARNING and up.
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def model_dir():
    """The embedded SmolLM2 as an HF directory (converted once into the user's cache)."""
    from aligner.models import prepare_embedded

    return prepare_embedded()


@pytest.fixture(scope="session")
def tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)
