"""The docs stay in step with the code: the configuration reference in docs/configuration.md with the
pydantic models, and every repository path a doc or a docstring names with the files that exist."""

import ast
import re
from pathlib import Path

import pytest

from aligner.contract import SearchLimits
from aligner.engine.vllm import EngineConfig
from aligner.prompting import ModelProfile
from aligner.rewards import RewardsConfig
from aligner.rewards.hf import HFRewardModelConfig
from serve.config import AutoscalingSpec, ServerConfig

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def section(model) -> str:
    text = DOCS.read_text()
    start = text.index(f"### `{model.__name__}`")
    end = text.find("\n### ", start + 1)
    return text[start : end if end > 0 else len(text)]


@pytest.mark.parametrize(
    "model",
    [ServerConfig, AutoscalingSpec, EngineConfig, ModelProfile, RewardsConfig, HFRewardModelConfig, SearchLimits],
    ids=lambda m: m.__name__,
)
def test_every_config_field_is_documented_with_its_description(model):
    table = section(model)
    rows = {line.split("|")[1].strip().strip("`") for line in table.splitlines() if line.startswith("| `")}
    assert rows == set(model.model_fields), f"docs/configuration.md {model.__name__}: fix the table"
    for name, field in model.model_fields.items():
        first_words = " ".join(field.description.split()[:6])
        assert first_words in " ".join(table.split()), f"{model.__name__}.{name}: description differs"


# -- every repository path a doc or a docstring names exists --

ROOT = Path(__file__).resolve().parents[2]
NOT_SOURCE = {"build", "dist", "bench-results"}
# A path starts at one of the repository's top-level folders, not in the middle of another path or
# a URL, and ends before a `:line`, `:attribute`, `#anchor` or a sentence's full stop.
TOP_FOLDERS = sorted(
    p.name
    for p in ROOT.iterdir()
    if p.is_dir()
    and (not p.name.startswith(".") or p.name == ".ci")
    and p.name not in NOT_SOURCE
    and not p.name.endswith(".egg-info")
)
PATH = re.compile(r"(?<![\w./~-])((?:" + "|".join(map(re.escape, TOP_FOLDERS)) + r")/[\w./-]*)")
DOCUMENTS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
GENERATED = ("aligner_pb2.py", "aligner_pb2_grpc.py")


def named_paths(text: str) -> list[str]:
    """The repository paths `text` names (patterns such as `tests/unit/*.py` or `serve/{a,b}` left out)."""
    found = []
    for match in PATH.finditer(text):
        path = match.group(1).rstrip(".")
        if text[match.end() : match.end() + 1] in ("*", "{", "<") or "..." in path:
            continue
        found.append(path)
    return found


def missing(text: str) -> list[str]:
    return sorted({path for path in named_paths(text) if not (ROOT / path).exists()})


def docstrings(path: Path):
    """(line, docstring) of the module and of every class and function in a Python file."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            text = ast.get_docstring(node, clean=False)
            if text:
                yield (node.body[0].lineno, text)


def python_files():
    for folder in ("aligner", "serve", "kernels", "proto", "tests", ".ci"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.name not in GENERATED:
                yield path


def test_paths_are_found_where_docs_name_them():
    text = (
        "see `serve/app.py:build_app`, helm/aligner/values.yaml:12, docs/deploy.md#engine and tests/unit/*.py, "
        "serve/{cli,client}/, https://github.com/ray-project/ray/tree/master/python/ray/serve/llm, .ci/run."
    )
    assert named_paths(text) == ["serve/app.py", "helm/aligner/values.yaml", "docs/deploy.md", ".ci/run"]
    assert missing("the old serve/http.py and aligner/types.py") == ["aligner/types.py", "serve/http.py"]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_file_a_doc_names_exists(document):
    stale = missing(document.read_text())
    assert not stale, f"{document.relative_to(ROOT)} names files that do not exist: {', '.join(stale)}"


def test_every_file_a_docstring_names_exists():
    stale = [
        f"{path.relative_to(ROOT)}:{line}: {name}"
        for path in python_files()
        for line, text in docstrings(path)
        for name in missing(text)
    ]
    assert not stale, "docstrings name files that do not exist:\n" + "\n".join(stale)
