"""`aligner generate` end to end: a real engine in a subprocess, as a user runs it."""

import json
import subprocess
import sys

ENGINE_FLAGS = ["--dtype", "float32", "--kv-cache-gib", "0.25", "--max-model-len", "1024"]


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "serve.cli", "generate", *args, *ENGINE_FLAGS],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_generate_json_prints_the_full_response(model_dir):
    result = run_cli(
        "What is the capital of France?",
        "--temperature",
        "0.1",
        "--seed",
        "1",
        "--max-tokens",
        "32",
        "--json",
        "--return-prompt",
        "--safety-config",
        "Be kind.",
        "--strategy",
        "best_of_n",
        "--n",
        "3",
        "--vector",
        "helpfulness=1,verbosity=-0.3",
        "--constraint",
        "harmlessness=0.5",
    )
    assert result.returncode == 0, result.stderr
    response = json.loads(result.stdout)
    assert "Paris" in response["text"]
    assert response["finish_reason"] == "stop"
    assert response["usage"]["generated_tokens"] > 0
    assert response["prompt"][0]["content"].endswith("Be kind.")
    assert set(response["scores"]) == {"helpfulness", "verbosity", "harmlessness"}
    assert response["feasible"] is True and isinstance(response["combined_score"], float)
    assert "starting the vLLM engine" in result.stderr
    assert "Traceback" not in result.stderr


def test_generate_stream_prints_text_as_it_comes(model_dir):
    result = run_cli("What is the capital of France?", "--temperature", "0", "--max-tokens", "32", "--stream")
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout


def test_unknown_objective_fails_before_the_engine_starts(model_dir):
    result = run_cli("hi", "--vector", "wit=1")
    assert result.returncode == 2
    assert "valid objectives: harmlessness, helpfulness" in result.stderr
    assert "starting the vLLM engine" not in result.stderr
