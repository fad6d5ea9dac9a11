"""`aligner bench peers`: Aligner next to what a user would otherwise run, both on their defaults, in one run.

- best-of-N: its_hub's `BestOfN(orm).ainfer(lm, prompt, budget=n)` (n separate chat requests, the
  reward model in the client) driving vLLM's own OpenAI server, against Aligner's `best_of_n` through
  `aligner serve` (`preference_vector {relevance: 1}`); the same model, the same relevance reward
  (all-MiniLM-L6-v2 cosine), the same prompts and clients.
- particle filtering: its_hub's `ParticleFiltering(StepGeneration(tokens_per_step=chunk), prm)` (each step
  one chat request per particle continuing its partial answer, the same relevance reward as its process
  reward model, in the client) on vLLM's server, against Aligner's `particle_filter` (the same particles
  and chunk) through `aligner serve`.
- `sample`: the same greedy chat bodies to both servers' `/v1/chat/completions`, at each client count.

Each server is started by the bench with nothing but its defaults (model path and ports only), measured,
then stopped before the other starts: one engine at a time, since a small machine has no cores to spare.
The chosen answers of both sides are re-scored here by one relevance model, so "mean chosen reward"
is one measure for both. The JSON keeps every figure, the ratios and the targets with `met`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import signal
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from aligner.bench.common import LOAD_PROMPTS, ratio, target, write
from aligner.model_cache import resolve_model
from serve.bench.its_hub_side import (
    RelevanceJudge,
    its_hub_best_of_n,
    its_hub_particle_filter,
    its_hub_process_reward_model,
    its_hub_reward_model,
)
from serve.bench.load import run_load, scratch_store
from serve.bench.local_cluster import free_port
from serve.bench.servers import aligner_command, server, user_environment, vllm_command

TARGETS = {
    "aligner_over_its_hub_best_of_n_requests_per_s": {"min": 1.5},
    "aligner_over_its_hub_particle_filter_requests_per_s": {"min": 1.5},
    "aligner_over_vllm_sample_tokens_per_s_at_max_clients": {"min": 0.9},
}
REWARD = "relevance"


# -- pure helpers (unit-tested) ---------------------------------------------------------------


def mean_and_error(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and its standard error (None for fewer than 2 values)."""
    if not values:
        return None, None
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None)


def reward_not_worse(ours: Sequence[float], theirs: Sequence[float]) -> dict[str, Any]:
    """Is our mean chosen reward equal or better than theirs? Both are means of best-of-n draws from
    the same distribution when the engines sample alike, so "equal" is judged against the noise: met
    when our mean is at least theirs or below it by less than two standard errors of the difference."""
    (a, ea), (b, eb) = mean_and_error(ours), mean_and_error(theirs)
    if a is None or b is None:
        return {"difference": None, "standard_error": None, "met": False}
    error = math.hypot(ea or 0.0, eb or 0.0)
    return {"difference": round(a - b, 4), "standard_error": round(error, 4), "met": a >= b or (b - a) < 2 * error}


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    ratios: dict[str, Any] = {}
    for search in ("best_of_n", "particle_filter"):
        sides = report.get(search, {})
        ours, theirs = sides.get("aligner", {}), sides.get("its_hub", {})
        for measure in ("requests_per_s", "generated_tokens_per_s"):
            ratios[f"aligner_over_its_hub_{search}_{measure}"] = ratio(ours.get(measure), theirs.get(measure))
    sample = report.get("sample", {})
    by_clients = {side: {r["clients"]: r["tokens_per_s"] for r in sample.get(side, [])} for side in ("aligner", "vllm")}
    counts = sorted(set(by_clients["aligner"]) | set(by_clients["vllm"]))
    ratios["aligner_over_vllm_sample_tokens_per_s"] = {
        str(c): ratio(by_clients["aligner"].get(c), by_clients["vllm"].get(c)) for c in counts
    }
    ratios["aligner_over_vllm_sample_tokens_per_s_at_max_clients"] = (
        ratio(by_clients["aligner"].get(counts[-1]), by_clients["vllm"].get(counts[-1])) if counts else None
    )
    targets = {name: target(ratios.get(name), spec) for name, spec in TARGETS.items()}
    for search, suffix in (("best_of_n", ""), ("particle_filter", "_particle_filter")):
        sides = report.get(search, {})
        ours, theirs = sides.get("aligner", {}), sides.get("its_hub", {})
        reward = reward_not_worse(ours.get("chosen_rewards", []), theirs.get("chosen_rewards", []))
        targets[f"aligner_chosen_reward_not_worse_than_its_hub{suffix}"] = reward
        speed = targets[f"aligner_over_its_hub_{search}_requests_per_s"]
        speed["met"] = bool(speed["met"] and reward["met"])  # faster only counts at equal or better reward
    return {"ratios": ratios, "targets": targets}


# -- the shared reward ------------------------------------------------------------------------


# -- servers ----------------------------------------------------------------------------------


# -- loads ------------------------------------------------------------------------------------


def messages(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


async def clients_run(one_request, clients: int, per_client: int) -> tuple[list[dict[str, Any]], float]:
    """`clients` concurrent clients, each `per_client` requests in turn: (each request's record, wall seconds)."""
    records: list[dict[str, Any]] = []

    async def client(c: int) -> None:
        for i in range(per_client):
            prompt = LOAD_PROMPTS[(c + i) % len(LOAD_PROMPTS)]
            t0 = time.perf_counter()
            record = await one_request(prompt)
            records.append({**record, "prompt": prompt, "latency_s": time.perf_counter() - t0})

    started = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(clients)))
    return records, time.perf_counter() - started


async def rounds_of(one_request, args) -> list[tuple[list[dict[str, Any]], float]]:
    """`args.rounds` runs of the best-of-N load, one after another."""
    return [
        await clients_run(one_request, args.clients_best_of_n, args.requests_per_client) for _ in range(args.rounds)
    ]


def best_of_n_summary(
    rounds: list[tuple[list[dict[str, Any]], float]], clients: int, judge: RelevanceJudge
) -> dict[str, Any]:
    """requests/s and generated tokens/s: the medians over rounds (each round's kept under `rounds`); the
    chosen rewards: every request of every round."""
    records = [r for round_records, _ in rounds for r in round_records]
    rewards = [judge.score(r["prompt"], [r["text"]])[0] for r in records]
    per_round = [
        {
            "requests": len(rs),
            "wall_s": round(wall, 3),
            "requests_per_s": round(len(rs) / wall, 3),
            "generated_tokens_per_s": round(sum(r["generated_tokens"] for r in rs) / wall, 2),
        }
        for rs, wall in rounds
    ]
    mean, error = mean_and_error(rewards)
    return {
        "clients": clients,
        "requests": len(records),
        "requests_per_s": statistics.median(r["requests_per_s"] for r in per_round),
        "generated_tokens_per_s": statistics.median(r["generated_tokens_per_s"] for r in per_round),
        "rounds": per_round,
        "mean_latency_s": round(statistics.fmean(r["latency_s"] for r in records), 3),
        "mean_chosen_reward": round(mean, 4) if mean is not None else None,
        "chosen_reward_standard_error": round(error, 4) if error is not None else None,
        "chosen_rewards": [round(v, 4) for v in rewards],
    }


async def measured(lm, one, args) -> list[tuple[list[dict[str, Any]], float]]:
    """`args.rounds` loads of `one` after a warm-up request; `lm` (its_hub's client) closed after."""
    try:
        await one(LOAD_PROMPTS[0])
        return await rounds_of(one, args)
    finally:
        await lm.close()


async def aligner_search(
    base: str, model: str, headers: dict[str, str], args, search: dict[str, Any]
) -> list[tuple[list[dict[str, Any]], float]]:
    async with httpx.AsyncClient(
        timeout=httpx.Timeout(900.0), trust_env=False, limits=httpx.Limits(max_connections=args.clients_best_of_n + 4)
    ) as client:

        async def one(prompt: str) -> dict[str, Any]:
            body = {
                "model": model,
                "messages": messages(prompt),
                "max_tokens": args.max_tokens,
                "temperature": args.temperature,
                "preference_vector": {REWARD: 1.0},
                "search": search,
            }
            r = await client.post(f"{base}/v1/chat/completions", json=body, headers=headers)
            if r.status_code != 200:
                raise RuntimeError(f"aligner answered {r.status_code}: {r.text[:300]}")
            data = r.json()
            return {
                "text": data["choices"][0]["message"]["content"],
                "generated_tokens": data["alignment"]["usage"]["generated_tokens"],
            }

        await one(LOAD_PROMPTS[0])  # warm-up (loads the reward model)
        return await rounds_of(one, args)


async def sample_loads(
    url: str, model: str, headers: dict[str, str], args, progress, label: str
) -> list[dict[str, Any]]:
    """Greedy chat completions at every client count (after one warm-up request)."""

    def body(c: int, i: int) -> dict[str, Any]:
        return {
            "model": model,
            "messages": messages(LOAD_PROMPTS[(c + i) % len(LOAD_PROMPTS)]),
            "max_tokens": args.max_tokens,
            "temperature": 0.0,
        }

    await run_load(url, body, 1, 1, headers)
    rows = []
    for clients in args.clients:
        row = await run_load(url, body, clients, args.requests_per_client, headers)
        progress(f"{label} sample, {clients} client(s): {row['tokens_per_s']} tokens/s")
        rows.append(row)
    return rows


# -- phases -----------------------------------------------------------------------------------


def vllm_phase(model_dir: Path, args, report: dict[str, Any], judge: RelevanceJudge, progress) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    model = str(model_dir)  # vLLM's default served name is the --model value
    with server(vllm_command(model_dir, port), f"{base}/health", "vllm", progress, env=user_environment()):
        rounds = asyncio.run(measured(*its_hub_best_of_n(f"{base}/v1", model, args, its_hub_reward_model(judge)), args))
        report["best_of_n"]["its_hub"] = row = best_of_n_summary(rounds, args.clients_best_of_n, judge)
        progress(
            f"its_hub best-of-{args.n} on vLLM: {row['requests_per_s']} requests/s, "
            f"{row['generated_tokens_per_s']} generated tokens/s, mean chosen {REWARD} {row['mean_chosen_reward']}"
        )
        prm = its_hub_process_reward_model(judge)
        rounds = asyncio.run(measured(*its_hub_particle_filter(f"{base}/v1", model, args, prm), args))
        report["particle_filter"]["its_hub"] = row = best_of_n_summary(rounds, args.clients_best_of_n, judge)
        progress(
            f"its_hub particle filtering ({args.particles} particles) on vLLM: {row['requests_per_s']} requests/s, "
            f"mean chosen {REWARD} {row['mean_chosen_reward']}"
        )
        report["sample"]["vllm"] = asyncio.run(
            sample_loads(f"{base}/v1/chat/completions", model, {}, args, progress, "vllm")
        )


def aligner_phase(model_dir: Path, args, report: dict[str, Any], judge: RelevanceJudge, progress) -> None:
    store, store_url, headers = scratch_store("bench-peers-")
    port, grpc_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    model = model_dir.name  # Aligner's default served name is the directory's name
    try:
        with server(
            aligner_command(model_dir, port, grpc_port, store_url),
            f"{base}/readyz",
            "aligner",
            progress,
            env=user_environment(),
        ):
            best_of_n = {"strategy": "best_of_n", "n": args.n}
            rounds = asyncio.run(aligner_search(base, model, headers, args, best_of_n))
            report["best_of_n"]["aligner"] = row = best_of_n_summary(rounds, args.clients_best_of_n, judge)
            progress(
                f"aligner best_of_n n={args.n}: {row['requests_per_s']} requests/s, "
                f"{row['generated_tokens_per_s']} generated tokens/s, mean chosen {REWARD} {row['mean_chosen_reward']}"
            )
            particles = {"strategy": "particle_filter", "particles": args.particles, "chunk_tokens": args.chunk_tokens}
            rounds = asyncio.run(aligner_search(base, model, headers, args, particles))
            report["particle_filter"]["aligner"] = row = best_of_n_summary(rounds, args.clients_best_of_n, judge)
            progress(
                f"aligner particle_filter ({args.particles} particles): {row['requests_per_s']} requests/s, "
                f"mean chosen {REWARD} {row['mean_chosen_reward']}"
            )
            report["sample"]["aligner"] = asyncio.run(
                sample_loads(f"{base}/v1/chat/completions", model, headers, args, progress, "aligner")
            )
    finally:
        store.close()


def run(args: argparse.Namespace, progress: Callable[[str], None]) -> int:
    """Both phases in `args.order`; the report is written after each. Exit status 1 if one failed."""

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt  # stop the running server on SIGTERM too

    try:  # before minutes go into starting a server
        import its_hub  # noqa: F401
    except ImportError:
        raise SystemExit(
            "aligner bench peers needs its_hub: pip install 'its-hub[lm]==1.2.0' (in the test extra)"
        ) from None
    signal.signal(signal.SIGTERM, on_sigterm)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model_dir = resolve_model(args.model, progress=progress)
    report: dict[str, Any] = {
        "benchmark": "peers",
        "model": model_dir.name,
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "settings": {
            "n": args.n,
            "particles": args.particles,
            "chunk_tokens": args.chunk_tokens,
            "max_tokens": args.max_tokens,
            "temperature": args.temperature,
            "clients_best_of_n": args.clients_best_of_n,
            "requests_per_client": args.requests_per_client,
            "rounds": args.rounds,
            "sample_clients": args.clients,
            "reward": REWARD,
            "order": args.order,
        },
        "notes": {
            "best_of_n": "its_hub BestOfN(orm).ainfer(lm, prompt, budget=n): n chat requests to vLLM's server, the "
            "relevance ORM in the bench process; Aligner: one /v1/chat/completions with preference_vector "
            "{relevance: 1} and search best_of_n. generated_tokens: every candidate's tokens (its_hub's usage, "
            "Aligner's alignment.usage.generated_tokens). Chosen answers of both re-scored by one relevance model.",
            "particle_filter": "its_hub ParticleFiltering(StepGeneration(tokens_per_step=chunk_tokens), relevance "
            "PRM).ainfer(lm, prompt, budget=particles) on vLLM's server; Aligner: search particle_filter with the same "
            "particles and chunk_tokens. its_hub reports no usage here: its generated_tokens is the most it may "
            "generate (particles x max_tokens).",
            "sample": "greedy chat bodies (temperature 0) to /v1/chat/completions; tokens: usage.completion_tokens.",
            "defaults": "each server gets only the model, host/ports (Aligner a scratch tenant store, vLLM the "
            "KV-cache "
            "size of Aligner's default, since its own default of 92% of the memory node does not fit); "
            "VLLM_CPU_NUM_OF_RESERVED_CPU, VLLM_CPU_OMP_THREADS_BIND and OMP_NUM_THREADS are removed from "
            "their environment.",
        },
        "best_of_n": {},
        "particle_filter": {},
        "sample": {},
        "errors": {},
    }
    judge = RelevanceJudge()
    phases = {"vllm": vllm_phase, "aligner": aligner_phase}
    out = Path(args.out or "bench-results/peers-cpu.json")
    started = time.monotonic()
    for name in args.order:
        progress(f"phase {name}")
        try:
            phases[name](model_dir, args, report, judge, progress)
        except Exception as exc:  # keep the other phase's figures
            report["errors"][name] = f"{type(exc).__name__}: {exc}"
            progress(f"phase {name} failed: {report['errors'][name]}")
        report["total_s"] = round(time.monotonic() - started, 1)
        report.update(summarize(report))
        write(report, out)  # after every phase, so an interrupted run keeps what it measured
    print(json.dumps({"ratios": report["ratios"], "targets": report["targets"]}, indent=2))
    progress(f"wrote {out}")
    return 1 if report["errors"] else 0
