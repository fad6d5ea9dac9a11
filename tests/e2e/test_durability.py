"""What the app keeps in its tenant store survives a full restart (`serve.delete`, then a new deploy):
the usage of requests answered just before the delete, API keys and tenants' safety configs.

One restart checks all of it, of the app whose store is PostgreSQL (the cluster's store; one model
replica, so one engine start): what is flushed on stop is the ingress's, whatever the store.
"""

from __future__ import annotations

import pytest

from tests.e2e.test_metering import FANNED_OUT, SMALL, Sent, assert_equal_to_sent, new_tenant, read_usage

SURVIVOR = "/v1/admin/tenants/survivor/safety-config"


@pytest.mark.restarts_app
def test_usage_keys_and_safety_configs_survive_a_full_restart_of_the_app(pg_app):
    """Requests answered just before the app is deleted are flushed by the stopping ingress replicas."""
    server = pg_app
    tenant = "metered-restart"
    key = new_tenant(server, tenant)
    sent = Sent()
    with server.client() as client:
        stored = client.put(
            SURVIVOR,
            json={"config": {"text": "Only discuss gardening."}, "expected_version": None},
            headers=server.headers(server.admin_key),
        )
        assert stored.status_code == 200, stored.text
        for body in (SMALL, FANNED_OUT, SMALL):
            reply = client.post("/v1/generate", json=body, headers=server.headers(key))
            assert reply.status_code == 200, reply.text
            sent.add(reply.json()["usage"])
    flushed_before = sum(r.counts.requests for r in server.store.usage(tenant))
    server.undeploy()  # at once: the last requests are still only in the ingress's memory
    server.deploy()

    assert_equal_to_sent(read_usage(server, tenant), tenant, sent)
    print(f"requests flushed before the restart: {flushed_before} of {sum(sent.requests.values())}")
    with server.client() as client:
        assert client.post("/v1/generate", json=SMALL, headers=server.headers()).status_code == 200
        assert client.get("/v1/admin/keys", headers=server.headers(server.admin_key)).status_code == 200
        again = client.get(SURVIVOR, headers=server.headers(server.admin_key))
        assert again.status_code == 200 and again.json()["config"]["text"] == "Only discuss gardening."
