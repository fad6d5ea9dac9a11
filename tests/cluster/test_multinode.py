"""A real two-node Ray cluster on this machine (`ray start` twice: two raylets), the app with one
model replica on each node and its tenant store on a real PostgreSQL.

What a scaled-out deployment needs: requests succeed through either node's proxy (HTTP and
gRPC), a safety-config change and a key revocation are in force on both replicas within a second,
and one metrics scrape covers both replicas. Every Ray process is gone afterwards.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time

import grpc
import httpx
import pytest
from google.protobuf.json_format import ParseDict

from proto.aligner.v1 import aligner_pb2 as pb
from proto.aligner.v1 import aligner_pb2_grpc
from serve.bench.local_cluster import LocalCluster

SMALL = {"prompt": "Name a colour.", "max_tokens": 2, "temperature": 0}
CONFIG = {
    "engine": {
        "dtype": "float32",
        "max_model_len": 512,
        "kv_cache_gib": 0.2,
        "max_num_seqs": 4,
        "block_size": 32,
        "enforce_eager": True,
    },
    "num_replicas": 2,
    "max_replicas_per_node": 1,
    "replica_resources": {"aligner_model": 1},
    "replica_num_cpus": 0,
    "ingress_replicas": 2,
    "metrics_interval_s": 0.25,
    "usage_flush_s": 3600.0,  # usage reaches the store only when an ingress stops (the last test)
    "rewards": {"judge": False},
}


class Cluster:
    def __init__(self, nodes, store, store_url):
        self.nodes, self.store, self.store_url = nodes, store, store_url
        _, self.key = store.create_key("tyrell")
        _, self.admin_key = store.create_key("ops", admin=True)

    def urls(self):
        return [f"http://127.0.0.1:{node.http_port}" for node in self.nodes.started]

    def grpc_targets(self):
        return [f"127.0.0.1:{node.grpc_port}" for node in self.nodes.started]

    def post(self, url, key, body=SMALL):
        return httpx.post(f"{url}/v1/generate", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=300)

    def grpc_generate(self, target, key):
        with grpc.insecure_channel(target) as channel:
            try:
                aligner_pb2_grpc.AlignerStub(channel).Generate(
                    ParseDict(SMALL, pb.GenerateRequest()), metadata=(("authorization", f"Bearer {key}"),), timeout=300
                )
                return "OK"
            except grpc.RpcError as exc:
                return exc.code().name

    def metrics(self, url):
        from prometheus_client.parser import text_string_to_metric_families

        text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {self.admin_key}"}, timeout=30).text
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }


BRING_UP_ATTEMPTS = 3  # fresh ports each time; a port is taken only if another program picked it too


class PortTaken(RuntimeError):
    """A node or proxy could not bind its port, or never answered on it."""


@pytest.fixture(scope="module")
def cluster(model_dir, new_pg_database):
    from aligner.tenants import TenantStore

    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    store_url = new_pg_database()
    store = TenantStore.open(store_url)
    try:
        nodes = bring_up(model_dir, store_url)
        try:
            yield Cluster(nodes, store, store_url)
        finally:
            tear_down(nodes)
    finally:
        store.close()


def bring_up(model_dir, store_url):
    """Two nodes and the app on them, every proxy answering. If a port was taken before its server
    bound it, the whole cluster is stopped and started again on fresh ports."""
    for attempt in range(1, BRING_UP_ATTEMPTS + 1):
        nodes = LocalCluster(nodes=2, cpus_per_node=1)  # every port chosen afresh
        try:
            start_app(nodes, model_dir, store_url)
            return nodes
        except BaseException as exc:  # an interrupt too: no node may outlive a failed attempt
            tear_down(nodes)
            if attempt == BRING_UP_ATTEMPTS or not port_taken(exc):
                raise
            print(f"cluster bring-up {attempt}: a port was taken ({exc}); again on fresh ports")


def start_app(nodes, model_dir, store_url):
    from ray import serve

    from serve.app import build_app, proxy_options
    from serve.config import ServerConfig

    nodes.start()
    config = ServerConfig.load(
        {
            **CONFIG,
            "engine": {**CONFIG["engine"], "model": str(model_dir)},
            "tenant_store": store_url,
            "http_port": nodes.http_port,
            "grpc_port": nodes.grpc_port,
        }
    )
    serve.start(proxy_location="EveryNode", **proxy_options(config))
    serve.run(
        build_app(config),
        name=config.app_name,
        route_prefix="/",
        logging_config={"log_level": "WARNING", "enable_access_log": False},
    )
    wait_for_proxies(nodes)


def wait_for_proxies(nodes, timeout_s=120):
    """Every node's proxy answers on its HTTP and gRPC ports (a proxy that failed to bind never does)."""
    deadline = time.monotonic() + timeout_s
    for node in nodes.started:
        while not (answers_http(node.http_port) and accepts(node.grpc_port)):
            if time.monotonic() > deadline:
                raise PortTaken(f"the {node.name} node's proxy did not answer on :{node.http_port}/:{node.grpc_port}")
            time.sleep(0.5)


def answers_http(port):
    try:
        return httpx.get(f"http://127.0.0.1:{port}/-/healthz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def accepts(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def port_taken(exc: BaseException | None) -> bool:
    """The failure is a port someone else held (`Failed to bind`, `Address already in use`)."""
    while exc is not None:
        if isinstance(exc, PortTaken) or any(text in str(exc) for text in ("Failed to bind", "already in use")):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def tear_down(nodes):
    from ray import serve

    started = time.monotonic()
    try:
        with contextlib.suppress(Exception):  # serve may never have started
            serve.shutdown()
    finally:
        shut = time.monotonic()
        # Nothing here needs a graceful exit (the serve CLI tests check that): a short grace, then kill.
        left = nodes.stop(grace_s=3)
        print(f"cluster teardown: serve.shutdown {shut - started:.1f}s, nodes stopped {time.monotonic() - shut:.1f}s")
        assert left == [], f"Ray processes outlived the cluster: {left}"
        assert_no_stale_address(nodes.address)


def assert_no_stale_address(address: str) -> None:
    """A later plain `ray.init()` (the next tests) must start its own Ray, not join this dead one."""
    from pathlib import Path

    from ray._common.utils import get_ray_address_file

    path = Path(get_ray_address_file(None))
    assert not path.exists() or path.read_text().strip() != address


def test_the_model_replicas_run_on_different_nodes(cluster):
    from ray._private import state

    replicas = [
        a for a in state.actors().values() if a["State"] == "ALIVE" and "AlignerServer" in a.get("ActorClassName", "")
    ]
    assert len(replicas) == 2
    assert len({a["Address"]["NodeID"] for a in replicas}) == 2, "max_replicas_per_node: 1 spreads them"


def until_both_replicas_answered(cluster):
    """Requests through the two proxies in turn until both model replicas have answered one.
    Ray Serve picks the replica with the shorter queue, and between equal queues one at random, so
    sequential requests reach both, but any 8 of them may all go to one (1 in 128)."""
    seen: dict[str, list[httpx.Response]] = {}
    for i in range(MOST_TRIES_FOR_BOTH_REPLICAS):
        url = cluster.urls()[i % 2]
        reply = cluster.post(url, cluster.key)
        assert reply.status_code == 200, (url, reply.text)
        seen.setdefault(reply.headers["x-aligner-replica"], []).append(reply)
        if len(seen) == 2 and i >= 3:  # each proxy has answered twice
            return seen
    raise AssertionError(f"{MOST_TRIES_FOR_BOTH_REPLICAS} requests all went to replica {set(seen)}")


MOST_TRIES_FOR_BOTH_REPLICAS = 40  # all on one replica by chance: 1 in 2**39


def test_requests_succeed_through_either_nodes_proxy(cluster):
    assert len(until_both_replicas_answered(cluster)) == 2
    for target in cluster.grpc_targets():
        assert cluster.grpc_generate(target, cluster.key) == "OK", target


def test_a_safety_config_change_is_in_force_on_both_replicas_within_a_second(cluster):
    worker = cluster.urls()[1]
    admin = {"Authorization": f"Bearer {cluster.admin_key}"}
    route = f"{worker}/v1/admin/tenants/tyrell/safety-config"
    current = httpx.get(route, headers=admin, timeout=30)
    expected = current.json()["version"] if current.status_code == 200 else None
    changed = httpx.put(
        route,
        headers=admin,
        timeout=30,
        json={
            "config": {"text": "Replicants only.", "thresholds": {"harmlessness": 0.0}},
            "expected_version": expected,
        },
    )
    assert changed.status_code == 200, changed.text
    version, changed_at = changed.json()["version"], time.monotonic()
    time.sleep(max(0.0, changed_at + 1.0 - time.monotonic()))
    versions = {
        replica: {reply.headers["x-aligner-safety-version"] for reply in replies}
        for replica, replies in until_both_replicas_answered(cluster).items()
    }
    assert len(versions) == 2 and all(seen == {str(version)} for seen in versions.values()), versions


def test_a_revoked_key_is_refused_on_both_nodes_within_a_second(cluster):
    head, worker = cluster.urls()
    record, key = cluster.store.create_key("tyrell")
    for url in (head, worker):
        assert cluster.post(url, key).status_code == 200  # known (and cached) on both nodes first
    revoked = httpx.delete(
        f"{head}/v1/admin/keys/{record.id}", timeout=30, headers={"Authorization": f"Bearer {cluster.admin_key}"}
    )
    assert revoked.status_code == 200
    time.sleep(1.0)
    for url in (head, worker, head, worker):
        assert cluster.post(url, key).status_code == 401
    for target in cluster.grpc_targets():
        assert cluster.grpc_generate(target, key) == "UNAUTHENTICATED"


def test_one_scrape_through_either_node_covers_both_replicas(cluster):
    head, worker = cluster.urls()
    for url in (head, worker):
        assert cluster.post(url, cluster.key).status_code == 200
    time.sleep(1.0)  # replicas push every metrics_interval_s
    scrapes = [cluster.metrics(url) for url in (head, worker)]
    for scrape in scrapes:
        reporting = {
            dict(labels)["deployment"]: value
            for (name, labels), value in scrape.items()
            if name == "aligner_replicas_reporting"
        }
        assert reporting == {"model": 2.0, "ingress": 2.0}, reporting

    def ok_requests(scrape):
        return sum(
            v
            for (name, labels), v in scrape.items()
            if name == "aligner_requests_total" and dict(labels).get("status") == "ok"
        )

    assert ok_requests(scrapes[0]) == ok_requests(scrapes[1]) >= 2  # the same merged view from either node


def test_usage_keys_and_safety_configs_are_in_the_store_once_the_app_is_deleted(cluster):
    """Last in this module: it deletes the app. The ingress replicas hold usage in memory and flush it
    every `usage_flush_s` (an hour here), so the requests answered before `serve.delete` are in the
    store only if the stopping replicas flush them. The store is read directly, with nothing of the
    app running (`usage_report` is the admin route's answer). A new app reading an existing store is
    what every test app does at start: the keys its tests use are written before it is deployed."""
    from ray import serve

    from aligner.tenants.usage_table import usage_report
    from serve.config import ServerConfig
    from tests.e2e.test_metering import FANNED_OUT, Sent, assert_equal_to_sent

    tenant = "metered-restart"
    _, key = cluster.store.create_key(tenant)
    admin = {"Authorization": f"Bearer {cluster.admin_key}"}
    stored = httpx.put(
        f"{cluster.urls()[1]}/v1/admin/tenants/survivor/safety-config",
        json={"config": {"text": "Only discuss gardening."}, "expected_version": None},
        headers=admin,
        timeout=30,
    )
    assert stored.status_code == 200, stored.text
    sent = Sent()
    for i, body in enumerate((SMALL, {**FANNED_OUT, "max_tokens": 4}, SMALL, SMALL)):
        reply = cluster.post(cluster.urls()[i % 2], key, body)  # through both nodes' proxies
        assert reply.status_code == 200, reply.text
        sent.add(reply.json()["usage"])
    flushed_before = sum(r.counts.requests for r in cluster.store.usage(tenant))
    serve.delete(ServerConfig().app_name)  # at once: the last requests are still only in the ingresses' memory

    assert flushed_before == 0, "a periodic flush ran: the flush on stop went untested"
    assert_equal_to_sent(usage_report(cluster.store.usage(tenant), None, None), tenant, sent)
    assert cluster.store.authenticate(key).tenant == tenant
    assert cluster.store.authenticate(cluster.admin_key).admin
    survivor = cluster.store.get_safety_config("survivor")
    assert survivor is not None and survivor.config.text == "Only discuss gardening."
