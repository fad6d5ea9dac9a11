"""The servers the benches start in their own processes: vLLM's OpenAI server and `aligner serve`.

`server()` runs one (`bench peers`: each on its defaults) until its block ends; `vllm_throughput` runs
vLLM's server configured like the app's engine (`bench serve`). Each is stopped before the next starts
(one engine at a time: a small machine has no cores to spare); its output goes to a log file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aligner.engine.vllm import EngineConfig
from serve.bench.load import sample_throughput, wait_http
from serve.bench.local_cluster import free_port


@contextlib.contextmanager
def server(
    command: list[str], ready_url: str, name: str, progress, env: dict[str, str] | None = None
) -> Iterator[None]:
    """Run `command` until the block ends; ready once `ready_url` answers 200. Its output goes to a log file."""
    fd, log_path = tempfile.mkstemp(prefix=f"bench-peers-{name}-", suffix=".log")
    progress(f"starting {name} (log: {log_path})")
    with os.fdopen(fd, "w") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            t0 = time.monotonic()
            wait_http(ready_url, 900, proc)
            progress(f"{name} ready in {time.monotonic() - t0:.0f}s")
            yield
        finally:
            stop(proc)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM (both servers clean up on it), then SIGKILL of its whole session, which also ends what
    a server that died left running (an engine core, Ray's daemons) before the next phase measures."""
    if proc.poll() is None:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(120)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(30)


def vllm_command(model_dir: Path, port: int) -> list[str]:
    """vLLM's own OpenAI server on its defaults: the model, where to listen, and one memory setting.

    vLLM's CPU default reserves 92% of the NUMA node's memory for the KV cache and refuses to start when
    that much is not free (it is not on a 24 GiB machine that also runs this bench); it gets the KV cache
    Aligner's default reserves instead (`EngineConfig.kv_cache_gib`), which changes no decoding speed.
    """
    kv_bytes = int(EngineConfig.model_fields["kv_cache_gib"].default * (1 << 30))
    return [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--kv-cache-memory-bytes",
        str(kv_bytes),
    ]


def aligner_command(model_dir: Path, port: int, grpc_port: int, store_url: str) -> list[str]:
    """`aligner serve` on its defaults: the model, where to listen and the bench's own tenant store."""
    return [
        sys.executable,
        "-m",
        "serve.cli.main",
        "serve",
        "--model",
        str(model_dir),
        "--http-port",
        str(port),
        "--grpc-port",
        str(grpc_port),
        "--tenant-store",
        store_url,
        "--no-demo-key",
    ]


def user_environment() -> dict[str, str]:
    """This process's environment less the knobs a tuned run would set: both servers run as a user
    starts them."""
    env = dict(os.environ)
    for name in ("VLLM_CPU_NUM_OF_RESERVED_CPU", "VLLM_CPU_OMP_THREADS_BIND", "OMP_NUM_THREADS"):
        env.pop(name, None)
    return env


def vllm_throughput(engine_config, model_dir: Path, args, progress, label: str) -> list[dict[str, Any]]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        model_dir.name,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        engine_config.dtype,
        "--max-model-len",
        str(engine_config.max_model_len),
        "--max-num-seqs",
        str(engine_config.max_num_seqs),
        "--seed",
        str(engine_config.seed),
        "--kv-cache-memory-bytes",
        str(int(engine_config.kv_cache_gib * (1 << 30))),
        *(["--enforce-eager"] if engine_config.enforce_eager else []),
        "--enable-prefix-caching",
        "--disable-uvicorn-access-log",
        "--uvicorn-log-level",
        "warning",
    ]
    if engine_config.block_size:
        command += ["--block-size", str(engine_config.block_size)]
    progress(f"starting vLLM's OpenAI server on 127.0.0.1:{port}")
    log = open(Path(tempfile.gettempdir()) / f"bench-serve-vllm-{port}.log", "w")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", 600, proc)
        progress("vLLM server ready")
        return asyncio.run(
            sample_throughput(f"http://127.0.0.1:{port}/v1/chat/completions", model_dir.name, {}, args, progress, label)
        )
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
        log.close()
