"""One real Aligner app per test session: Ray Serve + the real vLLM CPU engine + the embedded model.

Two model replicas (each its own engine), so metrics aggregation and routing are
tested across processes. Queues are small so overload is reachable. Ray is shut
down at the end; no process outlives the session.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from serve.bench.local_cluster import free_port

E2E_CONFIG = {
    "engine": {
        "dtype": "float32",
        "max_model_len": 1024,
        "kv_cache_gib": 0.25,
        "max_num_seqs": 8,
        "block_size": 32,
        "enforce_eager": True,
    },  # eager: each engine starts a minute sooner
    "search_limits": {
        "max_tokens": 256,
        "n": 8,
        "batch": 8,
        "max_rounds": 4,
        "beam_width": 4,
        "expansions": 4,
        "chunk_tokens": 64,
        "neighbors": 4,
    },
    "num_replicas": 2,
    "replica_num_cpus": 0,
    "max_ongoing_requests": 2,
    "max_queued_requests": 2,
    "metrics_interval_s": 0.25,
    "usage_flush_s": 1.0,  # usage is read back within a second of a request, not ten
    "max_health_watches": 4,  # the Watch cap is reachable
}


class Server:
    """A running app: its URL, its store, keys, and how to (re)deploy it."""

    def __init__(self, model_dir, port: int, store_url: str, *, app: str = "aligner", prefix: str = "", **overrides):
        from aligner.tenants import TenantStore

        self.port, self.app, self.prefix = port, app, prefix
        self.url = f"http://127.0.0.1:{port}{prefix}"
        self.store_url = store_url
        self.store = TenantStore.open(self.store_url)
        self.config = {
            **E2E_CONFIG,
            "engine": {**E2E_CONFIG["engine"], "model": str(model_dir)},
            "tenant_store": self.store_url,
            "http_port": port,
            "app_name": app,
            **overrides,
        }
        _, self.key = self.store.create_key("acme")
        _, self.other_key = self.store.create_key("globex")
        _, self.admin_key = self.store.create_key("ops", admin=True)
        self.model = model_dir.name

    def deploy(self) -> None:
        from ray import serve

        from serve.app import build_app

        serve.run(
            build_app(self.config),
            name=self.app,
            route_prefix=self.prefix or "/",
            logging_config={"log_level": "WARNING", "enable_access_log": False},
        )

    def undeploy(self) -> None:
        from ray import serve

        serve.delete(self.app)

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}

    def client(self, timeout: float = 300) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def metrics(self) -> dict:
        """{(sample name, frozenset(labels)): value} from one scrape."""
        from prometheus_client.parser import text_string_to_metric_families

        text = httpx.get(f"{self.url}/metrics", headers=self.headers(self.admin_key), timeout=30).text
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def metric_sum(self, name: str, **labels) -> float:
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.metrics().items() if n == name and wanted <= set(ls))

    def wait_metric(self, name: str, predicate, timeout: float = 10, **labels) -> float:
        deadline = time.monotonic() + timeout
        while True:
            value = self.metric_sum(name, **labels)
            if predicate(value) or time.monotonic() > deadline:
                return value
            time.sleep(0.2)


# Package scope: Ray and its two engines go away as soon as the last e2e test is done.
@pytest.fixture(scope="package")
def server(tmp_path_factory, model_dir):
    import ray
    from ray import serve

    from serve.app import proxy_options
    from serve.config import ServerConfig

    srv = Server(
        model_dir, free_port(), f"sqlite:///{tmp_path_factory.mktemp('e2e')}/tenants.db", grpc_port=free_port()
    )
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    try:
        serve.start(**proxy_options(ServerConfig.load(srv.config)))
        srv.deploy()
        yield srv
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            srv.store.close()


@pytest.fixture(scope="package")
def pg_app(server, model_dir, new_pg_database):
    """A second app in the same Serve instance (under /pg), one model replica, its tenant store on a
    real PostgreSQL server: the tenant-facing tests run on both stores."""
    app = Server(model_dir, server.port, new_pg_database(), app="aligner-pg", prefix="/pg", num_replicas=1)
    app.deploy()
    try:
        yield app
    finally:
        app.undeploy()
        app.store.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def app(request, server):
    """The app on each tenant store: SQLite (the shared app, 2 replicas) and PostgreSQL (`pg_app`)."""
    return server if request.param == "sqlite" else request.getfixturevalue("pg_app")


def run_order(item) -> int:
    """`own_ray` tests first (before the shared app exists), `restarts_app` tests last."""
    if item.get_closest_marker("own_ray") is not None:
        return 0
    return 2 if item.get_closest_marker("restarts_app") is not None else 1


def pytest_collection_modifyitems(items):
    """Order the e2e block by `run_order`, in place, so the package's server is torn down before
    the next directory's tests start.
    """
    here = str(Path(__file__).parent)
    slots = [i for i, item in enumerate(items) if str(item.path).startswith(here)]
    ordered = sorted((items[i] for i in slots), key=run_order)
    for i, item in zip(slots, ordered):
        items[i] = item
