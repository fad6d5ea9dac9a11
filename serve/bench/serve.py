"""`aligner bench serve`: the server against in-process Aligner and vLLM's own OpenAI server, in one run.

Phases; one engine decodes at a time (a small CPU machine has no cores to spare):

1. vLLM's OpenAI server (`python -m vllm.entrypoints.openai.api_server`) on the same
   model and engine settings: `sample` throughput at each client count, `--throughput-rounds` times;
2. the Ray Serve app with the cross-request scoring batcher on (default config):
   greedy `sample` latency through `/v1/generate` and gRPC `Generate` in turn with the same
   request on an in-process `Aligner` (its own engine, started before Ray), `sample` throughput
   over HTTP and gRPC at the largest client count, `sample` throughput through
   `/v1/chat/completions` (`--throughput-rounds` times), and `best_of_n` throughput + mean
   reward-batch size;
3. the app redeployed with the batcher off (`batch_window_ms: null`): `best_of_n` again;
4. vLLM's server again, as in 1: the app's throughput is compared with the median of vLLM's
   runs before and after it, so a machine whose speed drifts during the run (a shared host)
   does not decide the ratio.

With `--replicas 1,2` it runs instead on a local cluster of Ray nodes (`ray start` each, one model
replica per node): `sample` throughput at the largest client count per replica count, and each
strategy's per-request cost, the inputs of the capacity model in docs/deploy.md.

The JSON holds the raw figures, the ratios and the targets with `met`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aligner.bench.scoring import target
from serve.bench.local_cluster import free_port

PROMPTS = (
    "Write a long story about a dragon who learns to bake bread.",
    "Explain in detail how a steam engine works.",
    "Describe a day in the life of a lighthouse keeper.",
    "Give a detailed history of the bicycle.",
)
DIRECTION = {"relevance": 1.0, "verbosity": -0.5}
TARGETS = {
    "http_over_in_process_latency": {"max": 1.10},
    # gRPC overhead <= HTTP overhead, each against the same in-process request: measured with
    # 1-token requests, where the transport is not lost in the decoding time's noise.
    "grpc_over_http_overhead_1_token": {"max": 1.0},
    "aligner_over_vllm_tokens_per_s_at_max_clients": {"min": 0.9},
    "batcher_on_over_off_mean_batch_size": {"min": 1.3},
}
OFF_REWARDS = {"batch_window_ms": None}
OFF_NOTE = "batch_window_ms=null: every scoring call runs alone in its own worker thread, as a batch of one request."
BATCH_METRIC = "aligner_reward_batch_size"


# -- pure helpers (unit-tested) ---------------------------------------------------------------


def parse_counts(text: str) -> list[int]:
    """`1,4,16` -> [1, 4, 16] (client or replica counts)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"counts must be positive integers, got {text!r}")
    return values


def histogram_totals(metrics_text: str, name: str = BATCH_METRIC) -> tuple[float, float]:
    """(sum, count) of a Prometheus histogram, summed over all its label sets."""
    from prometheus_client.parser import text_string_to_metric_families

    total, count = 0.0, 0.0
    for family in text_string_to_metric_families(metrics_text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name == f"{name}_sum":
                total += sample.value
            elif sample.name == f"{name}_count":
                count += sample.value
    return total, count


def mean_between(before: tuple[float, float], after: tuple[float, float]) -> float | None:
    """Mean observation of a histogram between two (sum, count) readings; None if nothing was observed."""
    count = after[1] - before[1]
    return (after[0] - before[0]) / count if count > 0 else None


def ratio(numerator: float | None, denominator: float | None, digits: int = 3) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, digits)


def load_summary(latencies: Sequence[float], tokens: Sequence[int], wall_s: float, clients: int) -> dict[str, Any]:
    return {
        "clients": clients,
        "requests": len(latencies),
        "completion_tokens": int(sum(tokens)),
        "wall_s": round(wall_s, 3),
        "tokens_per_s": round(sum(tokens) / wall_s, 2) if wall_s > 0 else None,
        "requests_per_s": round(len(latencies) / wall_s, 3) if wall_s > 0 else None,
        "mean_latency_s": round(statistics.mean(latencies), 4) if latencies else None,
        "p50_latency_s": round(statistics.median(latencies), 4) if latencies else None,
    }


def throughput_rows(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per client count from `run_load` summaries: the median tokens/s of its runs, with
    every run kept under `runs`."""
    by_clients: dict[int, list[dict[str, Any]]] = {}
    for run in runs:
        by_clients.setdefault(run["clients"], []).append(run)
    return [
        {"clients": clients, "tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in rows), 2), "runs": rows}
        for clients, rows in sorted(by_clients.items())
    ]


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    """Ratios and targets from the raw phases of a report (missing phases give None / met false)."""
    ratios: dict[str, Any] = {}
    overhead = report.get("overhead", {})
    ratios["http_over_in_process_latency"] = ratio(
        overhead.get("http", {}).get("median_s"), overhead.get("in_process", {}).get("median_s")
    )
    aligner_tp = {r["clients"]: r["tokens_per_s"] for r in report.get("throughput", {}).get("aligner", [])}
    vllm_tp = {r["clients"]: r["tokens_per_s"] for r in report.get("throughput", {}).get("vllm", [])}
    ratios["aligner_over_vllm_tokens_per_s"] = {
        str(c): ratio(aligner_tp.get(c), vllm_tp.get(c)) for c in sorted(set(aligner_tp) | set(vllm_tp))
    }
    top = max(set(aligner_tp) | set(vllm_tp), default=None)
    ratios["aligner_over_vllm_tokens_per_s_at_max_clients"] = (
        ratio(aligner_tp.get(top), vllm_tp.get(top)) if top is not None else None
    )
    ratios["grpc_over_in_process_latency"] = ratio(
        overhead.get("grpc", {}).get("median_s"), overhead.get("in_process", {}).get("median_s")
    )
    ratios["grpc_over_http_latency"] = ratio(overhead.get("grpc", {}).get("median_s"), overhead.get("http", {}).get("median_s"))
    short = report.get("overhead_1_token", {}).get("overhead_ms", {})
    ratios["grpc_over_http_overhead_1_token"] = ratio(short.get("grpc"), short.get("http"))
    transports = report.get("transports", {})
    ratios["grpc_over_http_tokens_per_s_at_max_clients"] = ratio(
        transports.get("grpc", {}).get("tokens_per_s"), transports.get("http", {}).get("tokens_per_s")
    )
    by_replicas = {r["replicas"]: r["tokens_per_s"] for r in report.get("replicas", [])}
    if len(by_replicas) >= 2:
        most, fewest = max(by_replicas), min(by_replicas)
        ratios[f"replicas_{most}_over_{fewest}_tokens_per_s"] = ratio(by_replicas[most], by_replicas[fewest])
    best = report.get("best_of_n", {})
    on, off = best.get("batcher_on", {}), best.get("batcher_off", {})
    ratios["batcher_on_over_off_mean_batch_size"] = ratio(on.get("mean_reward_batch_size"), off.get("mean_reward_batch_size"))
    ratios["batcher_on_over_off_tokens_per_s"] = ratio(on.get("tokens_per_s"), off.get("tokens_per_s"))
    targets = {name: target(ratios.get(name), spec) for name, spec in TARGETS.items()}
    return {"ratios": ratios, "targets": targets}


# -- load generation --------------------------------------------------------------------------


def scratch_store(prefix: str) -> tuple[Any, str, dict[str, str]]:
    """A fresh SQLite tenant store in a temporary directory: (store, its URL, auth headers of a new key)."""
    from aligner.tenants import TenantStore

    store_url = f"sqlite:///{tempfile.mkdtemp(prefix=prefix)}/tenants.db"
    store = TenantStore.open(store_url)
    _, key = store.create_key("bench")
    return store, store_url, {"Authorization": f"Bearer {key}"}


def chat_body(model: str, prompt: str, max_tokens: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "seed": 0,
        **(extra or {}),
    }


async def timed_load(
    send: Callable[[dict[str, Any]], Any], bodies: Callable[[int, int], dict[str, Any]], clients: int, per_client: int
) -> dict[str, Any]:
    """`clients` concurrent clients, each sending `per_client` requests one after another through
    `send` (a coroutine function: body -> completion tokens)."""
    latencies: list[float] = []
    tokens: list[int] = []

    async def one_client(c: int) -> None:
        for i in range(per_client):
            t0 = time.perf_counter()
            tokens.append(await send(bodies(c, i)))
            latencies.append(time.perf_counter() - t0)

    started = time.perf_counter()
    await asyncio.gather(*(one_client(c) for c in range(clients)))
    return load_summary(latencies, tokens, time.perf_counter() - started, clients)


async def run_load(
    url: str, bodies: Callable[[int, int], dict[str, Any]], clients: int, per_client: int, headers: dict[str, str]
) -> dict[str, Any]:
    """`timed_load` over HTTP: JSON bodies POSTed to `url`."""
    import httpx

    async with httpx.AsyncClient(
        timeout=httpx.Timeout(900.0), trust_env=False, limits=httpx.Limits(max_connections=clients + 4)
    ) as client:

        async def send(body: dict[str, Any]) -> int:
            r = await client.post(url, json=body, headers=headers)
            if r.status_code != 200:
                raise RuntimeError(f"{url} answered {r.status_code}: {r.text[:300]}")
            return int(r.json()["usage"]["completion_tokens"])

        return await timed_load(send, bodies, clients, per_client)


async def run_grpc_load(
    target: str, bodies: Callable[[int, int], dict[str, Any]], clients: int, per_client: int, metadata: tuple
) -> dict[str, Any]:
    """`timed_load` over gRPC: each body (an AlignRequest's JSON) sent as `aligner.v1.Aligner/Generate`
    on one channel, as a gRPC client would."""
    import grpc
    from google.protobuf.json_format import ParseDict

    from proto.aligner.v1 import aligner_pb2, aligner_pb2_grpc

    async with grpc.aio.insecure_channel(target) as channel:
        stub = aligner_pb2_grpc.AlignerStub(channel)

        async def send(body: dict[str, Any]) -> int:
            reply = await stub.Generate(ParseDict(body, aligner_pb2.GenerateRequest()), metadata=metadata, timeout=900)
            return reply.usage.completion_tokens

        return await timed_load(send, bodies, clients, per_client)


def latency_summary(times: Sequence[float], tokens: Sequence[int]) -> dict[str, Any]:
    return {
        "repeats": len(times),
        "median_s": round(statistics.median(times), 4),
        "min_s": round(min(times), 4),
        "seconds": [round(t, 4) for t in times],
        "completion_tokens": list(tokens),
    }


# -- phases -----------------------------------------------------------------------------------


def sample_request(max_tokens: int) -> dict[str, Any]:
    return {
        "prompt": PROMPTS[0],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "seed": 1234,
        "search": {"strategy": "sample"},
    }


class InProcessAligner:
    """An `Aligner` with its own engine in this process, on a loop thread (the bench's reference)."""

    def __init__(self, engine_config, progress):
        from aligner.core import Aligner
        from aligner.engine.vllm import Engine

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="bench-engine-loop", daemon=True)
        self.thread.start()

        async def start():
            return Engine.start(engine_config, progress=progress)

        self.engine = self._run(start())
        self.aligner = Aligner(self.engine)
        import psutil

        self.engine_processes = psutil.Process().children(recursive=True)  # started before anything else

    def _run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(900)

    def timed(self, body: dict[str, Any]) -> tuple[float, int]:
        """(seconds, completion tokens) of one `Aligner.generate`."""
        from aligner.contract import AlignRequest

        request = AlignRequest.parse(body)
        t0 = time.perf_counter()
        response = self._run(self.aligner.generate(request))
        return time.perf_counter() - t0, response.usage.completion_tokens

    def close(self) -> None:
        import psutil

        self.engine.shutdown()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        # The engine's processes must be gone (not just told to go) before the next phase measures.
        _, alive = psutil.wait_procs([p for p in self.engine_processes if p.is_running()], timeout=30)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                if proc.status() != psutil.STATUS_ZOMBIE:
                    proc.kill()


def interleaved_overhead(local: InProcessAligner, url: str, grpc_target: str, body: dict[str, Any], repeats: int,
                         headers: dict[str, str], grpc_metadata: tuple) -> dict[str, Any]:
    """The same request in-process, over HTTP and over gRPC in turn, so all three see the same
    machine state (the server's background processes included). Rounds cycle through all six
    orders, so no side always follows the same other side; one warm-up round is not counted. `overhead_ms`: per round, each transport's time minus the
    in-process time of the same round, median over rounds."""
    import grpc
    import httpx
    from google.protobuf.json_format import ParseDict

    from proto.aligner.v1 import aligner_pb2, aligner_pb2_grpc

    request = ParseDict(body, aligner_pb2.GenerateRequest())
    sides = ("in_process", "http", "grpc")
    times: dict[str, list[float]] = {side: [] for side in sides}
    tokens: dict[str, list[int]] = {side: [] for side in sides}
    with httpx.Client(timeout=600, trust_env=False) as client, grpc.insecure_channel(grpc_target) as channel:
        stub = aligner_pb2_grpc.AlignerStub(channel)

        def http() -> tuple[float, int]:
            t0 = time.perf_counter()
            r = client.post(url, json=body, headers=headers)
            r.raise_for_status()
            return time.perf_counter() - t0, r.json()["usage"]["completion_tokens"]

        def over_grpc() -> tuple[float, int]:
            t0 = time.perf_counter()
            reply = stub.Generate(request, metadata=grpc_metadata, timeout=600)
            return time.perf_counter() - t0, reply.usage.completion_tokens

        run = {"in_process": lambda: local.timed(body), "http": http, "grpc": over_grpc}
        orders = list(itertools.permutations(sides))
        for i in range(repeats + 1):
            for side in orders[i % len(orders)]:
                seconds, n = run[side]()
                if i:
                    times[side].append(seconds)
                    tokens[side].append(n)
    out: dict[str, Any] = {side: latency_summary(times[side], tokens[side]) for side in sides}
    out["overhead_ms"] = {
        side: round(1000 * statistics.median(t - r for t, r in zip(times[side], times["in_process"])), 2)
        for side in ("http", "grpc")
    }
    return out


async def transport_throughput(base: str, grpc_target: str, headers: dict[str, str], grpc_metadata: tuple, args,
                               progress) -> dict[str, Any]:
    """`sample` throughput at the largest client count over HTTP (/v1/generate) and gRPC (Generate),
    the same native bodies, alternating transports for `args.transport_rounds` rounds."""
    clients = max(args.clients)

    def body(c: int, i: int) -> dict[str, Any]:
        return {**sample_request(args.max_tokens), "prompt": PROMPTS[(c + i) % len(PROMPTS)]}

    loads = {
        "http": lambda n, k: run_load(f"{base}/v1/generate", body, n, k, headers),
        "grpc": lambda n, k: run_grpc_load(grpc_target, body, n, k, grpc_metadata),
    }
    rows: dict[str, list[dict[str, Any]]] = {side: [] for side in loads}
    for side in loads:
        await loads[side](1, 1)  # warm-up
    for _ in range(args.transport_rounds):
        for side, load in loads.items():
            row = await load(clients, args.requests_per_client)
            progress(f"{side} /v1/generate sample, {clients} clients: {row['tokens_per_s']} tokens/s")
            rows[side].append(row)
    out: dict[str, Any] = {}
    for side, side_rows in rows.items():
        tokens = sum(r["completion_tokens"] for r in side_rows)
        wall = sum(r["wall_s"] for r in side_rows)
        out[side] = {"clients": clients, "rounds": side_rows, "completion_tokens": tokens, "wall_s": round(wall, 3),
                     "tokens_per_s": round(tokens / wall, 2) if wall > 0 else None}
    return out


def wait_http(url: str, timeout_s: float, proc: subprocess.Popen | None = None) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode} before {url} answered")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=5, trust_env=False).status_code == 200:
                return
        time.sleep(1)
    raise TimeoutError(f"{url} did not answer 200 within {timeout_s:.0f}s")


def vllm_throughput(engine_config, model_dir: Path, args, progress, label: str) -> list[dict[str, Any]]:
    port = free_port()
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir), "--served-model-name", model_dir.name,
        "--host", "127.0.0.1", "--port", str(port),
        "--dtype", engine_config.dtype, "--max-model-len", str(engine_config.max_model_len),
        "--max-num-seqs", str(engine_config.max_num_seqs), "--seed", str(engine_config.seed),
        "--kv-cache-memory-bytes", str(int(engine_config.kv_cache_gib * (1 << 30))),
        *(["--enforce-eager"] if engine_config.enforce_eager else []),
        "--enable-prefix-caching", "--disable-uvicorn-access-log", "--uvicorn-log-level", "warning",
    ]
    if engine_config.block_size:
        command += ["--block-size", str(engine_config.block_size)]
    progress(f"starting vLLM's OpenAI server on 127.0.0.1:{port}")
    log = open(Path(tempfile.gettempdir()) / f"bench-serve-vllm-{port}.log", "w")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", 600, proc)
        progress("vLLM server ready")
        return asyncio.run(sample_throughput(f"http://127.0.0.1:{port}/v1/chat/completions", model_dir.name, {}, args,
                                             progress, label))
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
        log.close()


async def sample_throughput(url: str, model: str, headers: dict[str, str], args, progress, label: str) -> list[dict[str, Any]]:
    """`run_load` summaries (each tagged with `label`): every client count, `throughput_rounds` times."""
    def body(c: int, i: int) -> dict[str, Any]:
        return chat_body(model, PROMPTS[(c + i) % len(PROMPTS)], args.max_tokens)

    await run_load(url, body, 1, 1, headers)  # warm-up
    runs = []
    for round_ in range(args.throughput_rounds):
        for clients in args.clients:
            run = {**await run_load(url, body, clients, args.requests_per_client, headers), "label": label}
            progress(f"{label} sample, round {round_ + 1}, {clients} client(s): {run['tokens_per_s']} tokens/s")
            runs.append(run)
    return runs


async def best_of_n_phase(base: str, model: str, headers: dict[str, str], args, progress, label: str) -> dict[str, Any]:
    import httpx

    def body(c: int, i: int) -> dict[str, Any]:
        return chat_body(
            model, PROMPTS[(c + i) % len(PROMPTS)], args.max_tokens,
            {"temperature": 1.0, "seed": c * 100 + i, "preference_vector": DIRECTION,
             "search": {"strategy": "best_of_n", "n": args.n}},
        )

    url = f"{base}/v1/chat/completions"
    await run_load(url, body, 1, 1, headers)  # warm-up (loads the reward models)

    async def read_metrics() -> tuple[float, float]:
        await asyncio.sleep(args.metrics_settle_s)  # replicas push metrics every metrics_interval_s
        async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
            r = await client.get(f"{base}/metrics")
            r.raise_for_status()
            return histogram_totals(r.text)

    before = await read_metrics()
    row = await run_load(url, body, args.best_of_n_clients, args.requests_per_client, headers)
    after = await read_metrics()
    mean = mean_between(before, after)
    row.update(
        n=args.n,
        reward_batches=after[1] - before[1],
        reward_batch_sequences=after[0] - before[0],
        mean_reward_batch_size=round(mean, 3) if mean is not None else None,
    )
    progress(f"best_of_n ({label}), {row['clients']} clients: {row['tokens_per_s']} tokens/s, "
             f"mean reward batch {row['mean_reward_batch_size']}")
    return row


def server_phases(engine_config, model_dir: Path, args, report: dict[str, Any], progress) -> None:
    import ray
    from ray import serve

    from serve.app import build_app
    from serve.config import ServerConfig

    from serve.app import proxy_options

    store, store_url, headers = scratch_store("bench-serve-")
    port, grpc_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    grpc_target = f"127.0.0.1:{grpc_port}"
    grpc_metadata = (("authorization", headers["Authorization"]),)

    def config(rewards: dict[str, Any]) -> ServerConfig:
        return ServerConfig.load({
            "engine": engine_config.model_dump(mode="json"),
            "rewards": rewards,
            "tenant_store": store_url,
            "http_host": "127.0.0.1",
            "http_port": port,
            "grpc_port": grpc_port,
            "replica_num_cpus": 0,
            "max_ongoing_requests": max(32, max(args.clients), args.best_of_n_clients),
        })

    def deploy(cfg: ServerConfig, what: str) -> None:
        progress(f"deploying the app ({what}); the engine starts in the replica")
        t0 = time.monotonic()
        serve.run(build_app(cfg), name=cfg.app_name, route_prefix="/",
                  logging_config={"log_level": "WARNING", "enable_access_log": False})
        wait_http(f"{base}/readyz", 600)
        progress(f"app ready in {time.monotonic() - t0:.0f}s")

    progress("starting the in-process reference engine (before Ray, so the two do not start at once)")
    local: InProcessAligner | None = InProcessAligner(engine_config, progress)
    try:  # from here on, whatever fails, the in-process engine and Ray are shut down
        progress("starting Ray")
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING",
                 log_to_driver=bool(os.environ.get("ALIGNER_RAY_LOGS")))
        on_config = config({})
        serve.start(**proxy_options(on_config))
        report["server_config"] = {"rewards_on": on_config.rewards.model_dump(), "rewards_off": OFF_REWARDS}
        deploy(on_config, "scoring batcher on")
        model = model_dir.name
        report["overhead"] = interleaved_overhead(
            local, f"{base}/v1/generate", grpc_target, sample_request(args.max_tokens), args.repeats, headers,
            grpc_metadata,
        )
        report["overhead_1_token"] = interleaved_overhead(
            local, f"{base}/v1/generate", grpc_target, sample_request(1), 10 * args.repeats, headers, grpc_metadata,
        )
        for name in ("overhead", "overhead_1_token"):
            overhead = report[name]
            progress(f"{name}: median latency HTTP {overhead['http']['median_s']}s, gRPC "
                     f"{overhead['grpc']['median_s']}s, in-process {overhead['in_process']['median_s']}s; "
                     f"overhead vs in-process (ms): {overhead['overhead_ms']}")
        local.close()
        local = None
        report["transports"] = asyncio.run(
            transport_throughput(base, grpc_target, headers, grpc_metadata, args, progress))
        report["throughput"]["aligner"] = throughput_rows(asyncio.run(
            sample_throughput(f"{base}/v1/chat/completions", model, headers, args, progress, "aligner")
        ))
        report["best_of_n"]["batcher_on"] = asyncio.run(best_of_n_phase(base, model, headers, args, progress, "batcher on"))
        progress("removing the app before redeploying with the batcher off")
        serve.delete(on_config.app_name)
        deploy(config(OFF_REWARDS), "scoring batcher off: batch_window_ms=null")
        report["best_of_n"]["batcher_off"] = asyncio.run(best_of_n_phase(base, model, headers, args, progress, "batcher off"))
    finally:
        try:
            if local is not None:
                local.close()
            if ray.is_initialized():
                serve.shutdown()
        finally:
            ray.shutdown()
            store.close()


STRATEGY_REQUESTS = {
    "sample": {},
    "best_of_n": {"search": {"strategy": "best_of_n", "n": 4}, "preference_vector": DIRECTION},
    "rejection": {"search": {"strategy": "rejection", "batch": 2, "max_rounds": 2, "threshold": 0.9},
                  "preference_vector": DIRECTION},
    "beam": {"search": {"strategy": "beam", "beam_width": 2, "expansions": 2, "chunk_tokens": 16},
             "preference_vector": DIRECTION},
}


def capacity_inputs(usages: Sequence[dict[str, Any]], tokens_per_s: float | None) -> dict[str, Any]:
    """Per-request cost of one strategy (means over `usages`) and the requests/s one replica can
    serve at `tokens_per_s` of decoding when decoding is the bottleneck."""
    def mean(values):
        values = list(values)
        return round(statistics.mean(values), 4) if values else None

    generated = mean(u["generated_tokens"] for u in usages)
    out = {
        "requests": len(usages),
        "generated_tokens": generated,
        "completion_tokens": mean(u["completion_tokens"] for u in usages),
        "reward_calls": mean(u["reward_calls"] for u in usages),
        "engine_requests": mean(u["engine_requests"] for u in usages),
        "generate_s": mean(u.get("stage_seconds", {}).get("generate", 0.0) for u in usages),
        "score_s": mean(u.get("stage_seconds", {}).get("score", 0.0) for u in usages),
        "wall_s": mean(u["wall_time_s"] for u in usages),
    }
    out["decode_bound_requests_per_s"] = (
        round(tokens_per_s / generated, 3) if tokens_per_s and generated else None)
    return out


def replicas_phase(engine_config, model_dir: Path, args, report: dict[str, Any], progress) -> None:
    """Sample throughput at the largest client count with each replica count, on a local cluster of
    max(replicas) Ray nodes (`ray start` each, one model replica per node), and per-strategy
    request costs for the capacity model."""
    import httpx
    from ray import serve

    from serve.app import build_app, proxy_options
    from serve.config import ServerConfig
    from serve.bench.local_cluster import MODEL_RESOURCE, LocalCluster

    store, store_url, headers = scratch_store("bench-replicas-")
    cluster = LocalCluster(nodes=max(args.replicas), cpus_per_node=1)
    clients = max(args.clients)
    rows = []
    try:
        cluster.start(progress=progress)
        base = f"http://127.0.0.1:{cluster.http_port}"

        def config(replicas: int) -> ServerConfig:
            return ServerConfig.load({
                "engine": engine_config.model_dump(mode="json"), "tenant_store": store_url,
                "http_port": cluster.http_port, "grpc_port": cluster.grpc_port, "num_replicas": replicas,
                "max_replicas_per_node": 1, "replica_resources": {MODEL_RESOURCE: 1}, "replica_num_cpus": 0,
                "max_ongoing_requests": max(32, clients), "max_queued_requests": 4 * clients,
            })

        serve.start(proxy_location="EveryNode", **proxy_options(config(1)))

        def body(c: int, i: int) -> dict[str, Any]:
            return {**sample_request(args.max_tokens), "prompt": PROMPTS[(c + i) % len(PROMPTS)]}

        for replicas in args.replicas:
            progress(f"deploying {replicas} model replica(s), one per node")
            serve.run(build_app(config(replicas)), name="aligner", route_prefix="/",
                      logging_config={"log_level": "WARNING", "enable_access_log": False})
            wait_http(f"{base}/readyz", 600)
            asyncio.run(run_load(f"{base}/v1/generate", body, replicas, 1, headers))  # warm-up
            row = asyncio.run(run_load(f"{base}/v1/generate", body, clients, args.requests_per_client, headers))
            row["replicas"] = replicas
            progress(f"{replicas} replica(s), {clients} clients: {row['tokens_per_s']} tokens/s")
            rows.append(row)
            if replicas == min(args.replicas):
                costs = {}
                with httpx.Client(timeout=900, trust_env=False) as client:
                    for strategy, extra in STRATEGY_REQUESTS.items():
                        usages = []
                        for i in range(args.repeats):
                            r = client.post(f"{base}/v1/generate", headers=headers, json={
                                **sample_request(args.max_tokens), "temperature": 1.0, "seed": i,
                                "prompt": PROMPTS[i % len(PROMPTS)], **extra})
                            r.raise_for_status()
                            usages.append(r.json()["usage"])
                        costs[strategy] = capacity_inputs(usages, row["tokens_per_s"])
                        progress(f"{strategy}: {costs[strategy]}")
                report["capacity"] = {"replica_tokens_per_s": row["tokens_per_s"], "clients": clients,
                                      "strategies": costs}
            serve.delete("aligner")
    finally:
        try:
            serve.shutdown()
        finally:
            cluster.stop()
            store.close()
    report["replicas"] = rows


def run(args: argparse.Namespace) -> int:
    import json

    from aligner.bench.scoring import write
    from serve.cli.commands import status
    from aligner.engine.vllm import EngineConfig
    from aligner.model_cache import resolve_model

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt  # run the phases' cleanup (vLLM server, Serve, Ray) on SIGTERM too

    signal.signal(signal.SIGTERM, on_sigterm)
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model_dir = resolve_model(args.model, progress=status)
    engine_config = EngineConfig(
        model=str(model_dir), dtype="float32", max_model_len=args.max_model_len, kv_cache_gib=args.kv_cache_gib,
        max_num_seqs=args.max_num_seqs, block_size=32,
    )
    report: dict[str, Any] = {
        "benchmark": "serve",
        "model": model_dir.name,
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "engine": engine_config.model_dump(mode="json", exclude={"model", "profile"}),
        "settings": {
            "max_tokens": args.max_tokens, "clients": args.clients, "requests_per_client": args.requests_per_client,
            "repeats": args.repeats, "replicas": args.replicas, "transport_rounds": args.transport_rounds,
            "throughput_rounds": args.throughput_rounds, "best_of_n_clients": args.best_of_n_clients, "n": args.n, "direction": DIRECTION,
        },
        "notes": {
            "overhead": "greedy `sample` (temperature 0, fixed seed), the same body in turn on Aligner.generate "
            "(its own engine in the bench process), /v1/generate and gRPC Generate, while the app runs; medians "
            "after one warm-up of each; overhead_ms: median per-round difference to the in-process time. "
            "overhead_1_token: the same with max_tokens 1. Lengths: usage.completion_tokens (no ignore-eos in the aligner).",
            "transports": "sample throughput at the largest client count: native /v1/generate bodies over HTTP and "
            "the same requests as gRPC Generate calls on one channel, transports alternating round by round.",
            "throughput": "completion tokens (usage.completion_tokens) / wall time; each client sends its requests "
            "one after another; same chat bodies (temperature 0) to both servers; tokens_per_s: the median of "
            "`runs` (vLLM: its runs before and after the app together).",
            "batcher_off": OFF_NOTE,
            "replicas": "native greedy `sample` bodies to /v1/generate at the largest client count, through the "
            "head's proxy; one model replica per Ray node, all nodes on this machine (so they share its cores). "
            "capacity: per-strategy means over `repeats` sequential requests with 1 replica; "
            "decode_bound_requests_per_s = replica tokens/s / generated tokens per request.",
        },
        "overhead": {},
        "overhead_1_token": {},
        "throughput": {},
        "transports": {},
        "best_of_n": {},
        "replicas": [],
        "errors": {},
    }
    started = time.monotonic()
    phases = []
    if args.replicas:
        phases.append(("replicas", lambda: replicas_phase(engine_config, model_dir, args, report, status)))
    else:
        vllm_runs: list[dict[str, Any]] = []

        def vllm_bracket(label: str) -> None:
            vllm_runs.extend(vllm_throughput(engine_config, model_dir, args, status, label))
            report["throughput"]["vllm"] = throughput_rows(vllm_runs)

        if not args.skip_vllm:
            phases.append(("vllm_before", lambda: vllm_bracket("vllm before the app")))
        phases.append(("server", lambda: server_phases(engine_config, model_dir, args, report, status)))
        if not args.skip_vllm:
            phases.append(("vllm_after", lambda: vllm_bracket("vllm after the app")))
    out_path = Path(args.out or ("bench-results/serve-replicas-cpu.json" if args.replicas else "bench-results/serve-cpu.json"))
    for name, phase in phases:
        status(f"phase {name}")
        try:
            phase()
        except Exception as exc:  # keep the other phases' figures
            report["errors"][name] = f"{type(exc).__name__}: {exc}"
            status(f"phase {name} failed: {report['errors'][name]}")
        report["total_s"] = round(time.monotonic() - started, 1)
        report.update(summarize(report))
        if args.replicas:
            report["targets"] = {}  # the targets belong to the phases not run in this mode
        write(report, out_path)  # after every phase, so an interrupted run keeps what it measured
    out = out_path
    print(json.dumps({"ratios": report["ratios"], "targets": report["targets"]}, indent=2))
    status(f"wrote {out}")
    return 1 if report["errors"] else 0


def add_parser(benches: argparse._SubParsersAction) -> None:
    """Register `aligner bench serve`."""
    p = benches.add_parser(
        "serve", help="The server vs in-process Aligner (latency) and vs vLLM's OpenAI server (throughput); batcher on/off."
    )
    p.set_defaults(handler=run)
    p.add_argument("--model", default="embedded", help="A local HF model directory (default: the embedded model).")
    p.add_argument("--max-tokens", type=int, default=64, help="Tokens per response (default 64).")
    p.add_argument("--clients", type=parse_counts, default=[1, 4, 16], help="Concurrent client counts (default 1,4,16).")
    p.add_argument("--requests-per-client", type=int, default=2, help="Requests each client sends per load (default 2).")
    p.add_argument("--repeats", type=int, default=6,
                   help="Timed repeats of the latency request on each side (default 6; x10 for the 1-token one).")
    p.add_argument("--replicas", type=parse_counts, default=None,
                   help="Instead of the other phases: throughput at the largest client count with each number of "
                   "model replicas (e.g. 1,2), on a local cluster of that many Ray nodes, and per-strategy request "
                   "costs for the capacity model (writes bench-results/serve-replicas-cpu.json).")
    p.add_argument("--throughput-rounds", type=int, default=3,
                   help="Chat-completions throughput runs per client count on each side (default 3; vLLM gets "
                   "that many before the app and again after it).")
    p.add_argument("--transport-rounds", type=int, default=2,
                   help="Alternating HTTP/gRPC throughput rounds at the largest client count (default 2).")
    p.add_argument("--best-of-n-clients", type=int, default=16, help="Concurrent clients of the best_of_n phase (default 16).")
    p.add_argument("--n", type=int, default=4, help="best_of_n candidates (default 4).")
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--max-num-seqs", type=int, default=16)
    p.add_argument("--kv-cache-gib", type=float, default=0.5)
    p.add_argument("--metrics-settle-s", type=float, default=4.0,
                   help="Wait before each /metrics read (default 4: twice the replicas' metrics_interval_s).")
    p.add_argument("--skip-vllm", action="store_true", help="Skip the vLLM OpenAI server comparison.")
    p.add_argument("--out", help="Output JSON (default: bench-results/serve-cpu.json).")
