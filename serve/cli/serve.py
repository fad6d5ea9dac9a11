"""`aligner serve`: the Aligner server on Ray Serve (HTTP API, gRPC, metrics) until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from aligner.engine.reaper import Reaper
from aligner.model_cache import resolve_model
from aligner.tenants import TenantStore, default_store_url
from serve.cli.options import status


def add_arguments(run: argparse.ArgumentParser) -> None:
    run.add_argument("--config", help="A YAML file of ServerConfig fields (see docs/http-api.md).")
    run.add_argument("--model", help="A local HF model directory instead of the embedded model.")
    run.add_argument("--http-host", help="Address to listen on (default 127.0.0.1; 0.0.0.0 for every interface).")
    run.add_argument("--http-port", type=int, help="HTTP port (default 8000).")
    run.add_argument("--grpc-port", type=int, help="gRPC port (default 9000).")
    run.add_argument(
        "--tenant-store",
        help="Tenant store URL: sqlite:///PATH or postgresql://… "
        "(default: $ALIGNER_TENANT_STORE, else a SQLite file in the cache).",
    )
    run.add_argument(
        "--address", help="Join this Ray cluster (e.g. ray://head:10001 or auto) instead of starting a local Ray."
    )
    run.add_argument("--replicas", type=int, help="Model replicas (default 1).")
    run.add_argument(
        "--no-demo-key", action="store_true", help="Do not create the temporary key printed with the curl example."
    )


def server_config(args: argparse.Namespace):
    """The ServerConfig of `--config` with the flags given on top."""
    # Here, not at the top: serve.config imports aligner.rewards and so torch, which `aligner --help` never needs.
    from serve.config import ServerConfig, read_yaml

    data: dict[str, Any] = read_yaml(Path(args.config)) if args.config else {}
    if args.model:
        data.setdefault("engine", {})["model"] = args.model
    for flag, field in (
        ("http_host", "http_host"),
        ("http_port", "http_port"),
        ("grpc_port", "grpc_port"),
        ("tenant_store", "tenant_store"),
        ("replicas", "num_replicas"),
    ):
        if getattr(args, flag) is not None:
            data[field] = getattr(args, flag)
    return ServerConfig.load(data)


def run(args: argparse.Namespace) -> int:
    config = server_config(args)
    # Fail fast, before Ray starts: the store must open and the model must exist.
    store_url = config.tenant_store or default_store_url()
    store = TenantStore.open(store_url)
    model_dir = resolve_model(config.engine.model, progress=status)
    config = config.model_copy(
        update={"engine": config.engine.model_copy(update={"model": str(model_dir)}), "tenant_store": store_url}
    )

    # Here, not at the top: Ray (and with serve.app FastAPI and gRPC) come with the [serve] extra, and
    # take seconds to import; no other command needs them.
    import ray
    from ray import serve

    from serve.app import build_app, proxy_options

    stop = StopSignals()
    stop.install()
    demo = None
    # The local Ray that ray.init starts (none when it joins a cluster) dies with this process, even
    # SIGKILLed: its raylet and GCS would, its agents would wait a minute on the dead GCS first.
    reaper = Reaper.start()
    try:
        status("starting Ray" if not args.address else f"joining the Ray cluster at {args.address}")
        ray.init(
            address=args.address,
            include_dashboard=False,
            logging_level="WARNING",
            log_to_driver=bool(os.environ.get("ALIGNER_RAY_LOGS")),
        )
        reaper.started()
        stop.install()  # again: ray.init installs handlers of its own
        serve.start(**proxy_options(config))
        status(
            f"deploying {config.num_replicas} model replica(s) of {model_dir.name}; "
            "the engine starts in each (tens of seconds on CPU)"
        )
        started = time.monotonic()
        with deployment_progress(serve, config.app_name, started):
            serve.run(
                build_app(config),
                name=config.app_name,
                route_prefix="/",
                logging_config={"log_level": "WARNING", "enable_access_log": False},
            )
        status(f"ready in {time.monotonic() - started:.0f}s")
        host = "127.0.0.1" if config.http_host in ("0.0.0.0", "::") else config.http_host
        url = f"http://{host}:{config.http_port}"
        if not args.no_demo_key:
            demo, key = store.create_key("default")
        else:
            key = "$ALIGNER_API_KEY"
        print_ready(
            url,
            key,
            model_dir.name if config.model_name is None else config.model_name,
            demo is not None,
            grpc=f"{host}:{config.grpc_port}",
        )
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        status(f"shutting down ({stop.name})")
    finally:
        # A second Ctrl-C or SIGTERM must not cut the cleanup short (and leave Ray running).
        stop.ignore()
        if demo is not None:
            store.revoke_key(demo.id)
        try:
            if ray.is_initialized():  # not before: serve.shutdown would start a Ray to find a Serve in
                serve.shutdown()
        finally:
            ray.shutdown()
            store.close()
            reaper.reap()  # what ray.shutdown left running
        status("stopped")
    return 0


class StopSignals:
    """SIGINT and SIGTERM stop the server: each raises KeyboardInterrupt in the main thread, once.

    Installed explicitly, whatever this process inherited: a shell starts a script's background jobs
    with SIGINT ignored and Python keeps it ignored, so `kill -INT` did nothing (measured: still
    serving 180 s later). Everything the server started dies with it anyway (the engine's reaper,
    aligner/engine/reaper.py; Ray's processes share the driver's fate), but only a handled signal
    revokes the demo key and lets the replicas finish their requests.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None

    @property
    def name(self) -> str:
        return "interrupted" if self.received is None else signal.Signals(self.received).name

    def install(self) -> None:
        for signum in self.SIGNALS:
            signal.signal(signum, self._on_signal)

    def ignore(self) -> None:
        for signum in self.SIGNALS:
            signal.signal(signum, signal.SIG_IGN)

    def _on_signal(self, signum: int, frame: object) -> None:
        if self.received is None:  # once: a second signal must not cut the cleanup short
            self.received = signum
            raise KeyboardInterrupt


@contextlib.contextmanager
def deployment_progress(serve, app_name: str, started: float, every_s: float = 10.0):
    """While the app deploys, report every `every_s` seconds which deployments are still starting
    (`serve`: the `ray.serve` module, imported by the caller)."""
    done = threading.Event()

    def report() -> None:
        while not done.wait(every_s):
            try:
                app = serve.status().applications.get(app_name)
                waiting = (
                    []
                    if app is None
                    else [
                        f"{name} {d.status.value.lower()}"
                        for name, d in app.deployments.items()
                        if d.status.value != "HEALTHY"
                    ]
                )
            except Exception:  # status is only a progress hint; the deploy itself reports real failures
                waiting = []
            status(
                f"still starting after {time.monotonic() - started:.0f}s"
                + (f": {', '.join(waiting)}" if waiting else "")
            )

    thread = threading.Thread(target=report, name="deploy-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=5)


def print_ready(url: str, key: str, model: str, temporary: bool, grpc: str) -> None:
    note = " (a temporary key for tenant 'default', revoked when this server stops)" if temporary else ""
    print(
        f"""
Aligner is serving {model}
  API        {url}/v1   (OpenAPI docs: {url}/docs)
  gRPC       {grpc}   (service aligner.v1.Aligner; metadata authorization: Bearer <key>)
  metrics    {url}/metrics   (Prometheus text; Authorization: Bearer <admin key>)
  key        {key}{note}
  more keys  aligner keys create --tenant NAME [--admin]

Try it:
  curl -s {url}/v1/chat/completions -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\
    -d '{{"model": "{model}", "messages": [{{"role": "user", "content": "What is decoding-time alignment?"}}],
         "max_tokens": 64, "preference_vector": {{"relevance": 1, "verbosity": -0.5}},
         "search": {{"strategy": "best_of_n", "n": 4}}}}'

Ctrl-C stops the server.
""",
        flush=True,
    )
