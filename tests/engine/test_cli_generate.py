"""`aligner generate` end to end: a real engine in a subprocess, as a user runs it."""

import json
import os
import subprocess
import sys

ENGINE_FLAGS = ["--dtype", "float32", "--kv-cache-gib", "0.25", "--max-model-len", "1024"]


def start_cli(*args, core: int | None = None) -> subprocess.Popen:
    """`aligner generate` started, not waited for. `core`: the index of the one CPU it may use that its
    engine decodes on (VLLM_CPU_OMP_THREADS_BIND, as an operator sets it), so two runs at once do not
    share their cores."""
    env = dict(os.environ)
    if core is not None:
        allowed = sorted(os.sched_getaffinity(0))  # in a container, not always 0..n-1
        env["VLLM_CPU_OMP_THREADS_BIND"] = str(allowed[core % len(allowed)])
    return subprocess.Popen(
        [sys.executable, "-m", "serve.cli", "generate", *args, *ENGINE_FLAGS],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    try:
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def run_cli(*args) -> subprocess.CompletedProcess:
    return finish(start_cli(*args))


def test_generate_prints_the_full_response_as_json_and_streams_text_as_it_comes(model_dir):
    """Two runs at once, each with its own engine, as two users would start them: the engine start is
    most of what either costs, and two of them overlap on two cores."""
    as_json = start_cli(
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
        core=0,
    )
    streamed = start_cli(
        "What is the capital of France?", "--temperature", "0", "--max-tokens", "32", "--stream", core=1
    )
    result, stream = finish(as_json), finish(streamed)

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

    assert stream.returncode == 0, stream.stderr
    assert "Paris" in stream.stdout


def test_unknown_objective_fails_before_the_engine_starts(model_dir):
    result = run_cli("hi", "--vector", "wit=1")
    assert result.returncode == 2
    valid = result.stderr.split("valid objectives: ", 1)[1].split(", ")
    assert {"harmlessness", "helpfulness", "verbosity"} <= {name.strip() for name in valid}
    assert "starting the vLLM engine" not in result.stderr
