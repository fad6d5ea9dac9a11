import subprocess
import sys

import pytest

from aligner.contract import AlignResponse, Usage
from aligner.errors import InvalidRequest
from serve.cli.generate import AnswerPrinter, request_from_args, safety_config_arg
from serve.cli.main import build_parser
from serve.cli.options import parse_vector


def run_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "serve.cli", *args], capture_output=True, text=True, timeout=timeout)


def test_parse_vector():
    assert parse_vector("helpfulness=0.8, verbosity=-0.6") == {"helpfulness": 0.8, "verbosity": -0.6}


@pytest.mark.parametrize("text", ["helpfulness", "=1", "helpfulness=abc"])
def test_parse_vector_rejects_malformed_pairs(text):
    with pytest.raises(InvalidRequest) as err:
        parse_vector(text)
    assert err.value.field == "preference_vector"


def test_flags_map_onto_the_request():
    args = build_parser().parse_args(
        ["generate", "q?", "--system", "s", "--prefer", "concise", "--vector", "a=1,b=1", "--seed", "3", "--stop", "X"]
    )
    request = request_from_args(args)
    assert [m.role for m in request.messages] == ["system", "user"]
    assert request.preferences == "concise"
    assert request.preference_vector == pytest.approx({"a": 2**-0.5, "b": 2**-0.5})
    assert (request.seed, request.stop) == (3, ["X"])


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--vector", "helpfulness=nan"], "preference_vector"),
        (["--vector", "a=0,b=0"], "preference_vector: all weights are zero"),
        (["--strategy", "beam_search"], "search.strategy: unknown strategy 'beam_search'; allowed: sample, best_of_n"),
        (
            ["--strategy", "beam", "--vector", "relevance=1", "--beam-width", "99"],
            "search.beam_width: is 99 but the configured maximum is 16",
        ),
        (["--strategy", "beam", "--vector", "relevance=1", "--chunk-tokens", "0"], "search.chunk_tokens"),
        (["--strategy", "beam", "--vector", "relevance=1", "--prune", "1"], "search.prune"),
        (["--strategy", "rejection", "--threshold", "0.5"], "preference_vector"),
        (["--max-reward-calls", "0"], "budget.max_reward_calls"),
        (["--max-tokens", "0"], "max_tokens"),
        (["--seed", "abc"], "--seed"),
        (["--temperature", "9"], "temperature"),
    ],
)
def test_bad_input_exits_2_with_one_line_naming_the_field(args, words):
    result = run_cli("generate", "hello", *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert words in lines[0]
    assert "Traceback" not in result.stderr


def test_prompt_too_long_is_rejected_before_the_engine_starts(model_dir):
    result = run_cli(
        "generate", "word " * 100, "--max-model-len", "64", "--max-tokens", "32", "--model", str(model_dir)
    )
    assert result.returncode == 2, result.stderr
    assert "max_model_len 64 - max_tokens 32" in result.stderr.strip().splitlines()[-1]


def test_missing_model_directory_exits_1():
    result = run_cli("generate", "hi", "--model", "/nonexistent/model")
    assert result.returncode == 1
    assert "not a directory" in result.stderr


def test_safety_config_argument_is_text_a_text_file_or_a_whole_config_file(tmp_path):
    assert safety_config_arg("Be kind.").text == "Be kind." and safety_config_arg(None) is None
    (tmp_path / "policy.txt").write_text("No gambling.")
    assert safety_config_arg(f"@{tmp_path / 'policy.txt'}").text == "No gambling."
    (tmp_path / "kids.yaml").write_text(
        "text: Users are children.\nthresholds: {harmlessness: 0.9}\naction: resample\n"
    )
    whole = safety_config_arg(f"@{tmp_path / 'kids.yaml'}")
    assert whole.thresholds == {"harmlessness": 0.9} and whole.action == "resample"
    with pytest.raises(InvalidRequest) as err:
        safety_config_arg(f"@{tmp_path / 'missing.txt'}")
    assert err.value.field == "safety_config"
    (tmp_path / "bad.yaml").write_text("text: ok\naction: explode\n")
    with pytest.raises(InvalidRequest) as err:
        safety_config_arg(f"@{tmp_path / 'bad.yaml'}")
    assert err.value.field == "action"


def test_a_safety_threshold_on_an_unknown_objective_fails_before_the_engine_starts(tmp_path):
    (tmp_path / "c.yaml").write_text("text: Be safe.\nthresholds: {wit: 0.5}\n")
    result = run_cli("generate", "hi", "--safety-config", f"@{tmp_path / 'c.yaml'}")
    assert result.returncode == 2 and "thresholds.wit" in result.stderr and "valid objectives" in result.stderr
    assert "starting the vLLM engine" not in result.stderr


def test_only_serve_and_the_server_benches_need_ray_torch_or_vllm(tmp_path):
    """`aligner --help`, `keys`, `safety` and `generate --server` run with ray, torch and vllm unimportable."""
    code = f"""
import sys
for name in ("ray", "torch", "vllm"):
    sys.modules[name] = None  # `import ray` now raises ImportError
from serve.cli.main import main

for argv in (["--help"], ["bench", "--help"], ["bench", "serve", "--help"], ["serve", "--help"]):
    try:
        main(argv)
    except SystemExit as exit:
        assert exit.code == 0, argv
store = ["--tenant-store", "sqlite:///{tmp_path}/tenants.db"]
assert main(["keys", "create", "--tenant", "acme", *store]) == 0
assert main(["safety", "get", "acme", *store]) == 1  # no config yet: a normal answer, not an import error
# Nothing listens on port 9: the request fails as unavailable (exit 1) after building the body.
assert main(["generate", "hi", "--server", "127.0.0.1:9", "--key", "alk_x"]) == 1
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "cannot get an answer from http://127.0.0.1:9/v1/generate" in result.stderr


def test_json_output_keeps_non_ascii_text_as_it_is(capsys):
    response = AlignResponse(
        id="r1",
        model="m",
        text="Grüße, 你好 — café",
        finish_reason="stop",
        usage=Usage(prompt_tokens=1, completion_tokens=1, generated_tokens=1, candidate_tokens=1, wall_time_s=0.5),
    )
    printer = AnswerPrinter(stream=False, as_json=True)
    assert printer.print_all([{"type": "done", "response": response.model_dump(mode="json")}]) == 0
    out = capsys.readouterr().out
    assert '"text": "Grüße, 你好 — café"' in out
    assert out.strip() == response.model_dump_json(indent=2, exclude_none=True)
