"""`aligner bench scoring`: reward-scoring throughput, one-at-a-time vs bucketed vs CUDA graphs.

Every configuration is timed in the same process on the same inputs, so the
ratios compare like with like. Candidates have random lengths between half and
all of the nominal length, as generated responses do.
"""

from __future__ import annotations

import functools
import platform
import random
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForSequenceClassification

from aligner.model_cache import prepare_embedded
from aligner.rewards.hf import pooled_forward
from kernels.scorer import BatchedScorer

TARGETS = {
    "bucketed_over_one_at_a_time": {"candidates": 16, "min": 3.0, "device": "cpu"},
    "graphs_over_eager": {"candidates": 16, "min": 2.0, "device": "cuda"},
}


def build_model(kind: str, device: str):
    """`tiny`: a random 2-layer multi-head Llama reward model; `small`: SmolLM2-135M with a 3-head reward head."""
    torch.manual_seed(0)
    labels = {0: "helpfulness", 1: "verbosity", 2: "is_safe"}
    if kind == "tiny":
        config = LlamaConfig(
            vocab_size=49152,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=2048,
            num_labels=3,
            id2label=labels,
            pad_token_id=2,
        )
        model = LlamaForSequenceClassification(config)
    elif kind == "small":
        model = LlamaForSequenceClassification.from_pretrained(
            prepare_embedded(), num_labels=3, id2label=labels, pad_token_id=2, dtype=torch.float32
        )
    else:
        raise ValueError(f"unknown bench model {kind!r}; allowed: tiny, small")
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    return model.to(device=device, dtype=dtype).eval()


def make_sequences(count: int, max_len: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(3, 49000) for _ in range(rng.randint(max(1, max_len // 2), max_len))] for _ in range(count)]


def median_seconds(fn: Callable[[], Any], repeats: int, sync: Callable[[], None]) -> float:
    fn()  # warm-up
    sync()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def run(
    models: Sequence[str] = ("tiny", "small"),
    candidates: Sequence[int] = (1, 4, 16, 64),
    lengths: Sequence[int] = (64, 128, 256, 512),
    repeats: int = 3,
    device: str | None = None,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    results: list[dict[str, Any]] = []
    for kind in models:
        model = build_model(kind, device)
        params = sum(p.numel() for p in model.parameters())
        forward = pooled_forward(model, pad_id=2)
        scorers = {"bucketed_eager": BatchedScorer(forward, num_outputs=3, pad_id=2, device=device, cuda_graphs=False)}
        if device.startswith("cuda"):
            scorers["bucketed_graphs"] = BatchedScorer(
                forward, num_outputs=3, pad_id=2, device=device, cuda_graphs=True
            )
            scorers["bucketed_graphs"].capture()  # at start-up, as the server does
        for max_len in lengths:
            for count in candidates:
                sequences = make_sequences(count, max_len, seed=count * 1000 + max_len)
                row: dict[str, Any] = {"model": kind, "params": params, "candidates": count, "max_len": max_len}

                def one_at_a_time(sequences=sequences, forward=forward):  # bound now: timed at once, in this loop
                    with torch.inference_mode():
                        for s in sequences:
                            ids = torch.tensor([s], device=device)
                            forward(ids, torch.ones_like(ids), torch.arange(len(s), device=device)[None])

                timings = {"one_at_a_time": median_seconds(one_at_a_time, repeats, sync)}
                for name, scorer in scorers.items():
                    timings[name] = median_seconds(functools.partial(scorer.score, sequences), repeats, sync)
                row["seconds"] = {k: round(v, 6) for k, v in timings.items()}
                row["sequences_per_s"] = {k: round(count / v, 2) for k, v in timings.items()}
                row["bucketed_over_one_at_a_time"] = round(timings["one_at_a_time"] / timings["bucketed_eager"], 3)
                if "bucketed_graphs" in timings:
                    row["graphs_over_eager"] = round(timings["bucketed_eager"] / timings["bucketed_graphs"], 3)
                results.append(row)
                progress(
                    f"{kind} n={count} len<={max_len}: "
                    + ", ".join(f"{k} {v}/s" for k, v in row["sequences_per_s"].items())
                )
        stats = {name: s.stats.to_dict() for name, s in scorers.items()}
        results.append({"model": kind, "scorer_stats": stats})
        del model, scorers
    return {
        "benchmark": "scoring",
        "device": device,
        "device_name": torch.cuda.get_device_name(device)
        if device.startswith("cuda")
        else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "results": results,
        "targets": check_targets(results, device),
    }


def check_targets(results: list[dict[str, Any]], device: str) -> dict[str, Any]:
    """Each target's measured ratios (one per model and length) at its candidate count."""
    out = {}
    kind = "cuda" if device.startswith("cuda") else "cpu"
    for ratio, target in TARGETS.items():
        if target["device"] != kind:
            continue
        measured = [
            {"model": r["model"], "max_len": r["max_len"], "value": r[ratio]}
            for r in results
            if r.get("candidates") == target["candidates"] and ratio in r
        ]
        out[ratio] = {
            "target_min": target["min"],
            "at_candidates": target["candidates"],
            "measured": measured,
            "met_for": [m for m in measured if m["value"] >= target["min"]],
        }
    return out
