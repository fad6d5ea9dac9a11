"""The configuration reference in docs/configuration.md stays in step with the pydantic models."""

from pathlib import Path

import pytest

from aligner.engine.vllm import EngineConfig
from aligner.prompting import ModelProfile
from aligner.rewards import RewardsConfig
from aligner.rewards.hf import HFRewardModelConfig
from aligner.contract import SearchLimits
from serve.config import AutoscalingSpec, ServerConfig

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def section(model) -> str:
    text = DOCS.read_text()
    start = text.index(f"### `{model.__name__}`")
    end = text.find("\n### ", start + 1)
    return text[start:end if end > 0 else len(text)]


@pytest.mark.parametrize("model", [ServerConfig, AutoscalingSpec, EngineConfig, ModelProfile, RewardsConfig,
                                   HFRewardModelConfig, SearchLimits], ids=lambda m: m.__name__)
def test_every_config_field_is_documented_with_its_description(model):
    table = section(model)
    rows = {line.split("|")[1].strip().strip("`") for line in table.splitlines() if line.startswith("| `")}
    assert rows == set(model.model_fields), f"docs/configuration.md {model.__name__}: fix the table"
    for name, field in model.model_fields.items():
        first_words = " ".join(field.description.split()[:6])
        assert first_words in " ".join(table.split()), f"{model.__name__}.{name}: description differs"
