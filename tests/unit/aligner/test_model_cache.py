import json
import shutil

import pytest

from aligner.errors import ModelUnavailable
from aligner.model_cache import (
    MANIFEST,
    _gguf_parsed_once,
    embedded_model_dir,
    prepare_embedded,
    resolve_model,
    verify_manifest,
    write_manifest,
)


def small_build(tmp_path):
    build = tmp_path / "build"
    build.mkdir()
    (build / "config.json").write_text('{"a": 1}')
    (build / "weights.bin").write_bytes(bytes(range(256)) * 64)
    write_manifest(build, source=build / "config.json")
    return build


def test_complete_build_verifies(tmp_path):
    assert verify_manifest(small_build(tmp_path)) is None


def test_missing_directory_and_partial_build_are_detected(tmp_path):
    assert verify_manifest(tmp_path / "nope") == "missing"
    build = small_build(tmp_path)
    (build / MANIFEST).unlink()
    assert "did not finish" in verify_manifest(build)


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda b: (b / "weights.bin").unlink(), "weights.bin is missing"),
        (lambda b: (b / "weights.bin").write_bytes(b"short"), "wrong size"),
        (lambda b: (b / "config.json").write_text('{"a": 2}'), "corrupted"),
        (lambda b: (b / MANIFEST).write_text("{not json"), "did not finish"),
    ],
)
def test_damaged_build_is_detected(tmp_path, damage, words):
    build = small_build(tmp_path)
    damage(build)
    assert words in verify_manifest(build)


class FakeGGUFReader:
    """A fake of gguf.GGUFReader that counts its parses."""

    parses = 0

    def __init__(self, path, mode="r"):
        type(self).parses += 1
        self.path = path


def test_a_conversion_parses_each_gguf_once_and_puts_the_reader_back(tmp_path, monkeypatch):
    import gguf

    monkeypatch.setattr(gguf, "GGUFReader", FakeGGUFReader)
    (tmp_path / "a.gguf").write_bytes(b"")
    with _gguf_parsed_once():
        first = gguf.GGUFReader(tmp_path / "a.gguf")
        assert gguf.GGUFReader(str(tmp_path / "a.gguf")) is first  # tokenizer, config, weights: one parse
        assert gguf.GGUFReader(tmp_path / "b.gguf") is not first
    assert FakeGGUFReader.parses == 2
    assert gguf.GGUFReader is FakeGGUFReader


def test_corrupted_cache_is_rebuilt_not_used(tmp_path, model_dir):
    """A bit flip in a cached file makes prepare_embedded rebuild the whole directory."""
    target = embedded_model_dir(tmp_path)
    target.parent.mkdir(parents=True)
    shutil.copytree(model_dir, target)
    config = json.loads((target / "config.json").read_text())
    (target / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 1}))
    messages = []
    assert prepare_embedded(tmp_path, progress=messages.append) == target
    assert any("unusable" in m and "corrupted" in m for m in messages)
    assert verify_manifest(target) is None
    assert json.loads((target / "config.json").read_text())["num_hidden_layers"] == 30
    assert not list(target.parent.glob("*.partial-*"))
    # A second call reuses the cache without converting.
    messages.clear()
    prepare_embedded(tmp_path, progress=messages.append)
    assert messages == []


def test_resolve_model_rejects_what_is_not_a_model_directory(tmp_path):
    with pytest.raises(ModelUnavailable, match="not a directory"):
        resolve_model(str(tmp_path / "missing"))
    with pytest.raises(ModelUnavailable, match="no config.json"):
        resolve_model(str(tmp_path))


def test_resolve_model_accepts_a_local_hf_directory(model_dir):
    assert resolve_model(str(model_dir)) == model_dir
