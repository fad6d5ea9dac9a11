"""A Ray cluster of several nodes on this machine, each started with `ray start`, as on real nodes.

Used by the multi-node tests and `aligner bench serve --replicas`. Every node offers the custom
resource `aligner_model: 1` (and one named after the node: `head`, `worker1`, …), so with
`max_replicas_per_node: 1` the model replicas land on different nodes. Serve runs a proxy on every
node; a worker node's proxy takes its own HTTP and gRPC ports (Ray's RAY_SERVE_WORKER_PROXY_*_PORT),
since all nodes share one host here.
Each node's processes are pinned to cores of their own, so replicas on different nodes do not
compete for cores, as on separate machines. `stop()` ends every process the
nodes started (raylets, GCS, workers, engines).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODEL_RESOURCE = "aligner_model"


def _accepts(address: str) -> bool:
    host, _, port = address.rpartition(":")
    with socket.socket() as s:
        return s.connect_ex((host, int(port))) == 0


# Where a port chosen now could be taken by someone else before our server binds it: the kernel
# hands out its ephemeral range to every bind to port 0 and every outgoing connection (Ray's
# raylets, GCS, agents and gRPC servers bind that way), Ray's workers take ports from Ray's worker
# range (`--min-worker-port`/`--max-worker-port`, 10002-19999 by default). Below 20000 are the usual
# services' ports and Ray's and Serve's fixed defaults (GCS 6379, Serve 8000/9000, client 10001).
RAY_WORKER_PORTS = range(10002, 20000)
LOWEST_PORT = 20000
_handed_out: set[int] = set()  # never the same port twice in one process, bound or not


def ephemeral_ports(path: str = "/proc/sys/net/ipv4/ip_local_port_range") -> range:
    try:
        low, high = map(int, Path(path).read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    return range(low, high + 1)


def port_ranges(ephemeral: range, worker_ports: range = RAY_WORKER_PORTS, lowest: int = LOWEST_PORT) -> list[range]:
    """The ports from `lowest` up that neither the kernel nor Ray ever picks by itself."""
    ranges, start = [], lowest
    for block in sorted([ephemeral, worker_ports], key=lambda r: r.start):
        if block.start > start:
            ranges.append(range(start, min(block.start, 65536)))
        start = max(start, block.stop)
    if start < 65536:
        ranges.append(range(start, 65536))
    return ranges


def _is_free(port: int) -> bool:
    """Nothing listens on `port` on any address (binding the wildcard fails if anything holds it)."""
    with socket.socket() as s:
        try:
            s.bind(("", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A free TCP port that nothing on this machine takes by itself before a server binds it.

    Binding port 0 and releasing it, as this did before, returns an ephemeral port, which the
    kernel may give Ray's next process in the moment before the server binds it (`Failed to bind
    to address`). This picks at random outside the ephemeral range and Ray's worker ports, checks
    that the port is free, and never returns one port twice in a process. Another program that
    picks ports the same way may still, rarely, pick the same one: callers that start a server
    retry with fresh ports when it fails to bind.
    """
    ephemeral = ephemeral_ports()
    # Below 20000 only if the ephemeral range leaves nothing above it (a machine tuned that way).
    ports = [port for block in port_ranges(ephemeral) or port_ranges(ephemeral, lowest=1024) for port in block]
    for _ in range(200 if ports else 0):
        port = secrets.choice(ports)  # not `random`: tests seed it, and two processes must not agree
        if port not in _handed_out and _is_free(port):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free port outside the ephemeral range {ephemeral} and Ray's worker ports")


@dataclass
class LocalNode:
    name: str
    process: subprocess.Popen
    http_port: int
    grpc_port: int
    log: Path


@dataclass
class LocalCluster:
    """`nodes` Ray nodes of `cpus_per_node` CPUs each; the head's proxy on `http_port`/`grpc_port`."""

    nodes: int = 2
    cpus_per_node: int = 1
    object_store_bytes: int = 300 * 1024 * 1024
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    gcs_port: int = field(default_factory=free_port)
    started: list[LocalNode] = field(default_factory=list)

    token: str = field(default_factory=lambda: secrets.token_hex(32))
    _saved_env: dict[str, str | None] = field(default_factory=dict)

    @property
    def address(self) -> str:
        from ray._private.services import get_node_ip_address

        return f"{get_node_ip_address()}:{self.gcs_port}"

    def core_env(self, node: int) -> dict[str, str]:
        """Pin node `node`'s processes to cores of their own (as if it were its own machine): the
        engine's OpenMP threads through vLLM's VLLM_CPU_OMP_THREADS_BIND, torch's through
        OMP_NUM_THREADS. Wraps around when the machine has fewer cores than the nodes ask."""
        cores = sorted(os.sched_getaffinity(0))
        mine = [cores[(node * self.cpus_per_node + k) % len(cores)] for k in range(self.cpus_per_node)]
        return {"VLLM_CPU_OMP_THREADS_BIND": ",".join(map(str, mine)), "OMP_NUM_THREADS": str(self.cpus_per_node)}

    @staticmethod
    def routing_env() -> dict[str, str]:
        """Ray Serve routes a request to the replica with the shorter queue among those whose queue
        length answers within 0.1 s. Nodes sharing one machine's cores often miss that while their
        engine steps; the replica that answered then takes every request. A deadline of 1-2 s keeps
        the routing by queue length."""
        return {
            "RAY_SERVE_QUEUE_LENGTH_RESPONSE_DEADLINE_S": "1.0",
            "RAY_SERVE_MAX_QUEUE_LENGTH_RESPONSE_DEADLINE_S": "2.0",
        }

    def auth_env(self) -> dict[str, str]:
        """Ray's token authentication, with this cluster's own token, for its nodes and drivers."""
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}

    def start(self, timeout_s: float = 120, progress=lambda message: None) -> LocalCluster:
        """Start the nodes (head first, once its GCS answers the rest), connect this process to the
        cluster (`ray.init`) and wait until every node is alive."""
        import ray

        logs = Path(tempfile.mkdtemp(prefix="aligner-ray-nodes-"))
        ray_cli = str(Path(sys.executable).parent / "ray")
        common = [
            "--block",
            "--num-cpus",
            str(self.cpus_per_node),
            "--object-store-memory",
            str(self.object_store_bytes),
            "--disable-usage-stats",
        ]
        for i in range(self.nodes):
            name = "head" if i == 0 else f"worker{i}"
            env = {**os.environ, **self.auth_env(), **self.routing_env(), **self.core_env(i)}
            if i == 0:
                args = [
                    "--head",
                    "--port",
                    str(self.gcs_port),
                    "--include-dashboard",
                    "false",
                    "--ray-client-server-port",
                    str(free_port()),
                ]
                http, grpc = self.http_port, self.grpc_port
            else:
                args = ["--address", self.address]
                http, grpc = free_port(), free_port()
                env.update(RAY_SERVE_WORKER_PROXY_HTTP_PORT=str(http), RAY_SERVE_WORKER_PROXY_GRPC_PORT=str(grpc))
            log = logs / f"{name}.log"
            progress(f"ray start: {name} node (log: {log})")
            with open(log, "w") as out:
                process = subprocess.Popen(
                    [ray_cli, "start", *args, *common, "--resources", json.dumps({MODEL_RESOURCE: 1, name: 1})],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.started.append(LocalNode(name, process, http, grpc, log))
            if i == 0:
                self._wait(lambda: _accepts(self.address), timeout_s, "the head's GCS did not answer")
        self._set_env(self.auth_env())  # this process is a driver of the cluster until stop()
        ray.init(address=self.address, logging_level="WARNING", log_to_driver=False)
        self._wait(
            lambda: sum(n["Alive"] for n in ray.nodes()) >= self.nodes,
            timeout_s,
            f"{self.nodes} Ray nodes did not come up",
        )
        return self

    def _set_env(self, values: Mapping[str, str | None]) -> None:
        """Set (None: unset) environment variables, remembering the old values once, and have Ray
        read them again (it caches the auth mode and the token)."""
        # Ray's private config objects (no type stubs list them); imported here, as Ray is heavy.
        from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]

        for name, value in values.items():
            self._saved_env.setdefault(name, os.environ.get(name))
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        Config.initialize("")
        # The token is cached too: a later local Ray in this process must read its own again.
        AuthenticationTokenLoader.instance().reset_cache()

    def _wait(self, ready, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for node in self.started:
                if node.process.poll() is not None:
                    raise RuntimeError(
                        f"ray start ({node.name}) exited with {node.process.returncode}; "
                        f"{node.log}:\n{node.log.read_text()[-2000:]}"
                    )
            if ready():
                return
            time.sleep(0.5)
        raise TimeoutError(f"{what} within {timeout_s:.0f}s")

    def processes(self) -> list[Any]:
        """Every live process the nodes started (their `ray start` and all descendants)."""
        import psutil

        found = []
        for node in self.started:
            with contextlib.suppress(psutil.NoSuchProcess):
                root = psutil.Process(node.process.pid)
                found += [root, *root.children(recursive=True)]
        return [p for p in found if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]

    def stop(self, grace_s: float = 20) -> list[Any]:
        """Disconnect, terminate every node process, then kill what is left; returns what survived (nothing)."""
        import psutil
        import ray

        ray.shutdown()
        self._set_env(self._saved_env)
        for _ in range(2):  # a dying worker can start a child while we look: look twice
            procs = self.processes()
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    proc.terminate()
            _, alive = psutil.wait_procs(procs, timeout=grace_s)
            for proc in alive:
                with contextlib.suppress(psutil.Error):
                    proc.kill()
            psutil.wait_procs(alive, timeout=10)
        for node in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.process.wait(10)
        self._forget_address()
        return self.processes()

    def _forget_address(self) -> None:
        """`ray start` leaves the cluster's address in Ray's temp dir, and a later plain `ray.init()`
        on this machine would try to join the dead cluster instead of starting its own."""
        from ray._common.utils import get_ray_address_file

        path = Path(get_ray_address_file(None))
        with contextlib.suppress(OSError):
            if path.read_text().strip() == self.address:
                path.unlink()
