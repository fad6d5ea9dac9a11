"""The transport overhead of `aligner bench serve`: the same request in-process, over HTTP and over gRPC.

`InProcessAligner` is the reference: an `Aligner` with its own engine in the bench process, started
before Ray so the two engines never start at once. `interleaved_overhead` times one request on all
three sides in turn; `transport_throughput` compares HTTP and gRPC under load.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import statistics
import threading
import time
from typing import Any

import grpc
import httpx
import psutil
from google.protobuf.json_format import ParseDict

from aligner.bench.common import LOAD_PROMPTS
from aligner.contract import AlignRequest
from aligner.core import Aligner
from aligner.engine.vllm import Engine
from proto.aligner.v1 import aligner_pb2, aligner_pb2_grpc
from serve.bench.load import latency_summary, run_grpc_load, run_load, sample_request


class InProcessAligner:
    """An `Aligner` with its own engine in this process, on a loop thread (the bench's reference)."""

    def __init__(self, engine_config, progress):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="bench-engine-loop", daemon=True)
        self.thread.start()

        async def start():
            return Engine.start(engine_config, progress=progress)

        self.engine = self._run(start())
        self.aligner = Aligner(self.engine)
        self.engine_processes = psutil.Process().children(recursive=True)  # started before anything else

    def _run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(900)

    def timed(self, body: dict[str, Any]) -> tuple[float, int]:
        """(seconds, completion tokens) of one `Aligner.generate`."""
        request = AlignRequest.parse(body)
        t0 = time.perf_counter()
        response = self._run(self.aligner.generate(request))
        return time.perf_counter() - t0, response.usage.completion_tokens

    def close(self) -> None:
        self.engine.shutdown()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        # The engine's processes must be gone (not just told to go) before the next phase measures.
        _, alive = psutil.wait_procs([p for p in self.engine_processes if p.is_running()], timeout=30)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                if proc.status() != psutil.STATUS_ZOMBIE:
                    proc.kill()


def interleaved_overhead(
    local: InProcessAligner,
    url: str,
    grpc_target: str,
    body: dict[str, Any],
    repeats: int,
    headers: dict[str, str],
    grpc_metadata: tuple,
) -> dict[str, Any]:
    """The same request in-process, over HTTP and over gRPC in turn, so all three see the same
    machine state (the server's background processes included). Rounds cycle through all six
    orders, so no side always follows the same other side; one warm-up round is not counted.
    `overhead_ms`: per round, each transport's time minus the in-process time of the same round, median over rounds."""
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


async def transport_throughput(
    base: str, grpc_target: str, headers: dict[str, str], grpc_metadata: tuple, args, progress
) -> dict[str, Any]:
    """`sample` throughput at the largest client count over HTTP (/v1/generate) and gRPC (Generate),
    the same native bodies, alternating transports for `args.transport_rounds` rounds."""
    clients = max(args.clients)

    def body(c: int, i: int) -> dict[str, Any]:
        return {**sample_request(args.max_tokens), "prompt": LOAD_PROMPTS[(c + i) % len(LOAD_PROMPTS)]}

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
        out[side] = {
            "clients": clients,
            "rounds": side_rows,
            "completion_tokens": tokens,
            "wall_s": round(wall, 3),
            "tokens_per_s": round(tokens / wall, 2) if wall > 0 else None,
        }
    return out
